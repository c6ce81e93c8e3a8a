"""Checkpoint conversion: PyTorch/diffusers safetensors in, one MLX safetensors file out.

The ported module tree keeps PyTorch's parameter names, so conversion never renames keys. It
gathers the tensors of one file or of an indexed set of shards, applies the model's layout plan
(transposes for channels-last convolutions, dropped non-persistent buffers), casts floating
tensors when asked, and writes a single file atomically so that a failed run leaves nothing
half-written behind.

Example, from Python::

    from porter.weights import convert_weights, load_checkpoint

    report = convert_weights(Path("zimage/transformer"), Path("zimage.safetensors"))
    print(report.summary())
    weights = load_checkpoint("zimage.safetensors")
"""

from __future__ import annotations

import json
import logging
import os
import secrets
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from fnmatch import fnmatchcase
from pathlib import Path

import mlx.core as mx

from porter.errors import PorterError

__all__ = [
    "DTYPES",
    "ConversionReport",
    "KeyTransform",
    "LayoutPlan",
    "convert_weights",
    "load_checkpoint",
]

log = logging.getLogger(__name__)

#: Names accepted by ``--dtype``; "keep" leaves every tensor as the checkpoint stores it.
DTYPES: dict[str, mx.Dtype] = {
    "float32": mx.float32,
    "bfloat16": mx.bfloat16,
    "float16": mx.float16,
}

# Formats that mx.load cannot read; naming them turns "unknown format" into a fix.
_PICKLE_SUFFIXES = {".bin", ".pt", ".pth", ".ckpt", ".pkl"}


# --------------------------------------------------------------------------------------------
# Layout plan


@dataclass(frozen=True)
class KeyTransform:
    """One row of a layout plan: what to do with every tensor whose key matches ``pattern``.

    ``pattern`` is an ``fnmatch`` glob over the full key (``*`` also crosses dots), so
    ``"*.proj.weight"`` matches ``"blocks.0.proj.weight"``; a leading ``*.`` also matches no
    prefix at all, so the same row matches ``"proj.weight"`` of a top-level module. Exactly one action is set:
    ``transpose`` is a permutation of the tensor's axes (``(0, 2, 3, 1)`` turns a PyTorch
    ``[out, in, kh, kw]`` conv weight into MLX's ``[out, kh, kw, in]``), ``drop`` removes
    tensors the MLX module does not own, such as non-persistent buffers.

    ``ndim``, if set, narrows the row to tensors of that rank: ``"*.proj.weight"`` with
    ``ndim`` 4 transposes a conv's ``proj`` and passes a ``Linear`` named ``proj`` elsewhere in
    the tree through. A row without it that matches a tensor of the wrong rank fails.
    """

    pattern: str
    transpose: tuple[int, ...] | None = None
    drop: bool = False
    ndim: int | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.pattern, str) or not self.pattern:
            raise PorterError(
                f"layout plan: pattern must be a non-empty string, got {self.pattern!r}"
            )
        if (self.transpose is None) == (not self.drop):
            raise PorterError(
                f"layout plan: pattern {self.pattern!r} needs exactly one action, "
                '"transpose": [axes...] or "drop": true'
            )
        if self.transpose is not None:
            perm = tuple(self.transpose)
            if not all(isinstance(a, int) for a in perm) or sorted(perm) != list(range(len(perm))):
                raise PorterError(
                    f"layout plan: pattern {self.pattern!r} has transpose {list(perm)}, which is "
                    f"not a permutation of 0..{len(perm) - 1}"
                )
            object.__setattr__(self, "transpose", perm)
        if self.ndim is not None and (
            not isinstance(self.ndim, int) or isinstance(self.ndim, bool) or self.ndim < 0
        ):
            raise PorterError(
                f"layout plan: pattern {self.pattern!r} has ndim {self.ndim!r}, not a rank"
            )

    @classmethod
    def from_mapping(cls, row: Mapping[str, object]) -> KeyTransform:
        """Build a row from plain data, e.g. ``{"pattern": "*.conv.weight", "transpose": [...]}``."""
        unknown = sorted(set(row) - {"pattern", "transpose", "drop", "ndim"})
        if unknown:
            raise PorterError(
                f"layout plan: unknown field(s) {', '.join(map(repr, unknown))} in {dict(row)!r}; "
                'use "pattern" with "transpose" or "drop", and optionally "ndim"'
            )
        transpose = row.get("transpose")
        if transpose is not None and not isinstance(transpose, Sequence):
            raise PorterError(f"layout plan: transpose must be a list of axes, got {transpose!r}")
        return cls(
            pattern=row.get("pattern"),  # type: ignore[arg-type]  # checked in __post_init__
            transpose=tuple(transpose) if transpose is not None else None,
            drop=bool(row.get("drop", False)),
            ndim=row.get("ndim"),  # type: ignore[arg-type]  # checked in __post_init__
        )


@dataclass(frozen=True)
class LayoutPlan:
    """The weight half of a model's layout plan, as data.

    Rows are tried in order and the first matching row wins, so a narrow pattern placed before
    a broad one overrides it. Keys that match no row pass through unchanged, which is the whole
    plan for models such as Z-Image whose MLX tree has no convolutions.
    """

    transforms: tuple[KeyTransform, ...] = ()

    @classmethod
    def coerce(cls, plan: LayoutPlan | Sequence[Mapping[str, object]] | None) -> LayoutPlan:
        """Accept a ``LayoutPlan``, a list of row mappings, or ``None`` (no transforms)."""
        if plan is None:
            return cls()
        if isinstance(plan, LayoutPlan):
            return plan
        if isinstance(plan, (str, bytes, Mapping)) or not isinstance(plan, Sequence):
            raise PorterError(
                "layout plan: expected a list of rows such as "
                f'[{{"pattern": "*.conv.weight", "transpose": [0, 2, 3, 1]}}], got {plan!r}'
            )
        rows = tuple(
            row if isinstance(row, KeyTransform) else KeyTransform.from_mapping(row) for row in plan
        )
        return cls(rows)

    def match(self, key: str, ndim: int | None = None) -> KeyTransform | None:
        """Return the first row whose pattern matches ``key`` and, where the row names a rank,
        whose rank is ``ndim``."""
        for row in self.transforms:
            if row.ndim is not None and ndim is not None and row.ndim != ndim:
                continue
            if fnmatchcase(key, row.pattern) or (
                row.pattern.startswith("*.") and fnmatchcase(key, row.pattern[2:])
            ):
                return row
        return None


# --------------------------------------------------------------------------------------------
# Report


@dataclass(frozen=True)
class ConversionReport:
    """What a conversion read and wrote; ``summary()`` is what the CLI prints."""

    source: Path
    output: Path
    files_read: tuple[Path, ...]
    dtypes_in: Mapping[str, int]
    dtypes_out: Mapping[str, int]
    bytes_in: int
    bytes_out: int
    transposed: tuple[str, ...] = ()
    dropped: tuple[str, ...] = ()
    overflowed: tuple[str, ...] = ()
    unmatched_patterns: tuple[str, ...] = ()

    @property
    def tensors_in(self) -> int:
        return sum(self.dtypes_in.values())

    @property
    def tensors_out(self) -> int:
        return sum(self.dtypes_out.values())

    def summary(self) -> str:
        """A few lines for a person: counts, dtypes, sizes, the output path, and any warning."""
        files = f"{len(self.files_read)} file" + ("s" if len(self.files_read) != 1 else "")
        read = f"{_dtype_counts(self.dtypes_in)}, {_human_bytes(self.bytes_in)}"
        wrote = f"{_dtype_counts(self.dtypes_out)}, {_human_bytes(self.bytes_out)}"
        lines = [
            f"read {self.tensors_in} tensors ({read}) from {files} in {self.source}",
            f"wrote {self.tensors_out} tensors ({wrote}) to {self.output}",
        ]
        if self.transposed or self.dropped:
            lines.append(
                f"layout plan: transposed {len(self.transposed)}, dropped {len(self.dropped)}"
            )
        if self.unmatched_patterns:
            lines.append(
                "warning: layout plan pattern(s) matched no tensor: "
                + ", ".join(self.unmatched_patterns)
            )
        if self.overflowed:
            lines.append(
                f"warning: {len(self.overflowed)} tensor(s) have values beyond float16's range, "
                f"now inf (first: {self.overflowed[0]}); use --dtype bfloat16 or keep"
            )
        return "\n".join(lines)


def _dtype_name(dtype: mx.Dtype) -> str:
    return str(dtype).rsplit(".", 1)[-1]


def _dtype_counts(counts: Mapping[str, int]) -> str:
    return ", ".join(f"{name} x{n}" for name, n in sorted(counts.items())) or "none"


def _human_bytes(n: int) -> str:
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")


def _one_line(err: object) -> str:
    """Library errors sometimes span lines; the CLI promises a one-line message."""
    return " ".join(str(err).split())


# --------------------------------------------------------------------------------------------
# Reading


def _is_index(name: str) -> bool:
    # diffusers names a variant's index "<weights>.safetensors.index.<variant>.json".
    return fnmatchcase(name, "*.safetensors.index.json") or fnmatchcase(
        name, "*.safetensors.index.*.json"
    )


def _reject_duplicate_keys(pairs: list[tuple[str, object]]) -> dict[str, object]:
    # json.loads keeps the last of two equal keys; a key listed twice in weight_map is a key in
    # two shards, which must not be resolved silently.
    out: dict[str, object] = {}
    for key, value in pairs:
        if key in out and out[key] != value:
            raise ValueError(f"tensor {key!r} is listed in two shards, {out[key]} and {value}")
        out[key] = value
    return out


def _read_index(index: Path) -> dict[str, Path]:
    """Map each tensor key to its shard path, checking that the index is well formed."""
    try:
        data = json.loads(
            index.read_text(encoding="utf-8"), object_pairs_hook=_reject_duplicate_keys
        )
    except ValueError as err:  # JSONDecodeError, UnicodeDecodeError and duplicates
        raise PorterError(
            f"bad shard index ({_one_line(err)}); re-download it", str(index)
        ) from err
    except OSError as err:
        raise PorterError(f"cannot read the shard index ({err.strerror})", str(index)) from err
    weight_map = data.get("weight_map") if isinstance(data, dict) else None
    if not isinstance(weight_map, dict) or not weight_map:
        raise PorterError(
            'the index has no "weight_map" object mapping tensor names to shard files; '
            "re-download it or pass a single .safetensors file",
            str(index),
        )
    shards: dict[str, Path] = {}
    for key, name in weight_map.items():
        if (
            not isinstance(name, str)
            or not name.endswith(".safetensors")
            or Path(name).is_absolute()
            or ".." in Path(name).parts
        ):
            raise PorterError(
                f"weight_map[{key!r}] = {name!r} is not a .safetensors file beside the index",
                str(index),
            )
        shards[key] = index.parent / name
    return shards


def _load_file(path: Path) -> dict[str, mx.array]:
    try:
        # An explicit format keeps mx.load from guessing by suffix.
        return mx.load(str(path), format="safetensors")
    except (RuntimeError, ValueError, OSError) as err:
        raise PorterError(
            f"not a readable safetensors file ({_one_line(err)}); re-download or re-save it",
            str(path),
        ) from err


def _pick_in_folder(folder: Path) -> Path:
    """Choose the one checkpoint in a folder: an index, or a .safetensors file no index claims."""
    # Hidden names are skipped: they include the temporary file of an interrupted conversion.
    entries = sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))
    indexes = [p for p in entries if _is_index(p.name)]
    claimed = {path for index in indexes for path in _read_index(index).values()}
    singles = [p for p in entries if p.suffix == ".safetensors" and p not in claimed]
    candidates = indexes + singles
    if len(candidates) == 1:
        return candidates[0]
    if len(candidates) > 1:
        names = ", ".join(p.name for p in candidates)
        raise PorterError(
            f"several checkpoints in this folder ({names}); pass the one to convert as SRC, "
            f"e.g. {candidates[0]}",
            str(folder),
        )
    hint = "pass a diffusers model folder, a .safetensors file or its .safetensors.index.json"
    if (folder / "model_index.json").is_file():
        parts = sorted(p.name for p in folder.iterdir() if (p / "config.json").is_file())
        example = folder / (parts[0] if parts else "transformer")
        hint = f"this is a pipeline folder; pass one of its model subfolders, e.g. {example}"
    raise PorterError(f"no *.safetensors file in this folder; {hint}", str(folder))


def _resolve(src: Path) -> Path:
    """Return the .safetensors file or shard index that ``src`` names."""
    if not src.exists():
        raise PorterError(
            "no such file or folder; pass a diffusers model folder, a .safetensors file "
            "or its .safetensors.index.json",
            str(src),
        )
    if src.is_dir():
        return _pick_in_folder(src)
    if _is_index(src.name) or src.suffix == ".safetensors":
        return src
    hint = ""
    if src.suffix in _PICKLE_SUFFIXES:
        hint = (
            "; pickle checkpoints are not read, "
            "re-save with save_pretrained(safe_serialization=True)"
        )
    raise PorterError(
        f"not a safetensors checkpoint (expected *.safetensors or *.safetensors.index.json){hint}",
        str(src),
    )


def _load_sharded(index: Path) -> tuple[dict[str, mx.array], tuple[Path, ...]]:
    shard_of = _read_index(index)
    shards = sorted(set(shard_of.values()))
    for shard in shards:
        if not shard.is_file():
            key = next(k for k, s in shard_of.items() if s == shard)
            raise PorterError(
                f"the index names shard {shard.name!r} (for {key!r}) but it does not exist; "
                "re-download the checkpoint",
                str(index),
            )
    tensors: dict[str, mx.array] = {}
    found_in: dict[str, Path] = {}
    for shard in shards:
        for key, array in _load_file(shard).items():
            if key in found_in:
                raise PorterError(
                    f"tensor {key!r} is in two shards, {found_in[key].name} and {shard.name}; "
                    "re-download or re-save the checkpoint",
                    str(index),
                )
            if key not in shard_of:
                raise PorterError(
                    f"shard {shard.name} holds tensor {key!r}, which the index does not list; "
                    "re-download or re-save the checkpoint",
                    str(index),
                )
            if shard_of[key] != shard:
                raise PorterError(
                    f"the index puts tensor {key!r} in {shard_of[key].name} but it is in "
                    f"{shard.name}; re-download or re-save the checkpoint",
                    str(index),
                )
            found_in[key] = shard
            tensors[key] = array
    missing = [k for k in shard_of if k not in tensors]
    if missing:
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise PorterError(
            f"the index puts tensor {missing[0]!r} in {shard_of[missing[0]].name} but that shard "
            f"does not hold it{more}; re-download the checkpoint",
            str(index),
        )
    return tensors, tuple(shards)


def _read(src: Path) -> tuple[dict[str, mx.array], tuple[Path, ...]]:
    """Load every tensor of ``src``, sorted by key, and the files they came from."""
    target = _resolve(src)
    if _is_index(target.name):
        tensors, files = _load_sharded(target)
    else:
        tensors, files = _load_file(target), (target,)
    if not tensors:
        raise PorterError("the checkpoint holds no tensors", str(target))
    return {key: tensors[key] for key in sorted(tensors)}, files


def load_checkpoint(src: str | os.PathLike[str]) -> dict[str, mx.array]:
    """Load a checkpoint folder, shard index or .safetensors file as ``{key: mx.array}``.

    Keys come back sorted and exactly as stored; no plan or cast is applied. Bad input raises
    ``PorterError`` naming the file, like ``convert_weights``.
    """
    return _read(Path(src))[0]


# --------------------------------------------------------------------------------------------
# Converting and writing


def _target_dtype(dtype: str) -> mx.Dtype | None:
    if dtype == "keep":
        return None
    if dtype not in DTYPES:
        choices = ", ".join(["keep", *DTYPES])
        raise PorterError(f"unknown dtype {dtype!r}; choose one of {choices}")
    return DTYPES[dtype]


def _check_output(dst: Path) -> None:
    """Refuse an output path before spending time reading the checkpoint."""
    if dst.is_dir():
        raise PorterError(
            f"the output is a folder; give a file path such as {dst / 'model.safetensors'}",
            str(dst),
        )
    if dst.suffix != ".safetensors":
        raise PorterError(
            "the output name must end in .safetensors, which is how mx.load recognises it",
            str(dst),
        )
    parent = dst.parent
    if not parent.is_dir():
        what = "is not a folder" if parent.exists() else "does not exist; create it first"
        raise PorterError(f"the output folder {what}", str(parent))


def _write_atomic(dst: Path, arrays: dict[str, mx.array]) -> None:
    """Write to a hidden temporary file beside ``dst``, flush it, then rename it into place.

    The rename is atomic within one folder, so readers see either the old file or the complete
    new one. The temporary name ends in ``.safetensors`` because ``mx.save_safetensors``
    appends that suffix to any other name.
    """
    tmp = dst.with_name(f".{dst.name}.{os.getpid()}-{secrets.token_hex(4)}.tmp.safetensors")
    try:
        mx.save_safetensors(str(tmp), arrays, metadata={"format": "mlx"})
        with open(tmp, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, dst)
    except (OSError, RuntimeError, ValueError) as err:
        raise PorterError(
            f"cannot write the output ({_one_line(err)}); check free space and permissions",
            str(dst),
        ) from err
    finally:
        tmp.unlink(missing_ok=True)


def _warn_without_plan(tensors: Mapping[str, mx.array], src: Path) -> None:
    """Warn when a conversion without a layout plan keeps 3-D or 4-D tensors (likely conv
    kernels) in torch's layout, which an MLX convolution does not take."""
    kernels = [key for key, array in tensors.items() if array.ndim in (3, 4, 5)]
    if kernels:
        log.warning(
            "warning: %d tensor(s) of rank 3 to 5 in %s (first: %s) kept in torch's layout; "
            "if they are convolution weights, pass --port DIR to apply the port's LAYOUT_PLAN",
            len(kernels),
            src,
            kernels[0],
        )


def _overflows(before: mx.array, after: mx.array) -> bool:
    return bool(mx.any(mx.isinf(after) & ~mx.isinf(before)).item())


def convert_weights(
    src: Path,
    dst: Path,
    dtype: str = "keep",
    plan: LayoutPlan | Sequence[Mapping[str, object]] | None = None,
) -> ConversionReport:
    """Convert the checkpoint at ``src`` into one safetensors file at ``dst``.

    ``dtype`` is "keep" or a name in ``DTYPES``; only floating tensors are cast, because integer
    and boolean tensors (indices, masks) carry exact values. ``plan`` transposes or drops tensors
    by key pattern, see ``LayoutPlan``. Every bad input raises ``PorterError`` with a one-line
    message naming the path, and ``dst`` is untouched unless the whole write succeeds.
    """
    src, dst = Path(src), Path(dst)
    target = _target_dtype(dtype)
    layout = LayoutPlan.coerce(plan)
    _check_output(dst)
    tensors, files = _read(src)
    if dst.exists() and any(dst.samefile(f) for f in files):
        raise PorterError("the output would overwrite an input file; choose another path", str(dst))

    out: dict[str, mx.array] = {}
    transposed: list[str] = []
    dropped: list[str] = []
    overflowed: list[str] = []
    used: set[str] = set()
    for key, array in tensors.items():
        row = layout.match(key, array.ndim)
        if row is not None:
            used.add(row.pattern)
            if row.drop:
                dropped.append(key)
                continue
            assert row.transpose is not None
            if len(row.transpose) != array.ndim:
                raise PorterError(
                    f"layout plan pattern {row.pattern!r} transposes axes {list(row.transpose)} "
                    f"but tensor {key!r} has shape {tuple(array.shape)}; narrow the pattern",
                    str(src),
                )
            array = mx.transpose(array, row.transpose)
            transposed.append(key)
        if target is not None and mx.issubdtype(array.dtype, mx.floating) and array.dtype != target:
            cast = array.astype(target)
            if target == mx.float16 and _overflows(array, cast):
                overflowed.append(key)
            array = cast
        out[key] = array

    unmatched = tuple(r.pattern for r in layout.transforms if r.pattern not in used)
    if plan is None:
        _warn_without_plan(tensors, src)
    elif layout.transforms and not used:
        log.warning(
            "warning: the layout plan matched no tensor in %s (none of its %d rows); "
            "is it the plan of another model? check --port",
            src,
            len(layout.transforms),
        )
    else:
        for pattern in unmatched:
            log.warning("layout plan pattern %r matched no tensor in %s", pattern, src)
    if overflowed:
        log.warning(
            "%d tensor(s) overflow float16 and now hold inf, first %r; use --dtype bfloat16",
            len(overflowed),
            overflowed[0],
        )
    if not out:
        raise PorterError("the layout plan dropped every tensor; nothing to write", str(src))

    _write_atomic(dst, out)
    return ConversionReport(
        source=src,
        output=dst,
        files_read=files,
        dtypes_in=Counter(_dtype_name(a.dtype) for a in tensors.values()),
        dtypes_out=Counter(_dtype_name(a.dtype) for a in out.values()),
        bytes_in=sum(a.nbytes for a in tensors.values()),
        bytes_out=sum(a.nbytes for a in out.values()),
        transposed=tuple(transposed),
        dropped=tuple(dropped),
        overflowed=tuple(overflowed),
        unmatched_patterns=unmatched,
    )
