"""Where a port first diverges from PyTorch: ``porter bisect`` and its Python API.

A golden test says *that* the outputs differ; bisect says *where*. It runs the torch model and
its MLX port on the same weights and inputs and records every submodule call on both sides:
forward hooks on the torch side, and on the MLX side each module's class swapped for a subclass
whose ``__call__`` records (MLX looks ``__call__`` up on the type, so a per-instance attribute
would not do). The port keeps PyTorch's module names, so calls pair up by path
(``layers.3.attention``), and a module called more than once pairs up call by call
(``t_embedder#2``). The report lists the calls in execution order, each with its error against
the torch output, and names the first one above the tolerance. Inputs are compared too, which
places the cause: inside that call when its inputs still match, else in the code of the
innermost call around it whose inputs match, between two of its children.

    report = bisect(torch_model, mlx_model, args, kwargs, rel=1e-4)
    print(report.table())
    report.first_divergence  # a Row, or None when every call is within tolerance

Everything that needs torch is imported when used, so ``porter --help`` works without it.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import importlib
import importlib.util
import io
import itertools
import json
import math
import re
import sys
import tempfile
import textwrap
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any, TextIO

import numpy as np

from porter.errors import PorterError

if TYPE_CHECKING:
    import torch

    from porter.golden import GoldenCase
    from porter.recipes import Recipe

__all__ = ["BisectReport", "Cause", "Row", "add_parser", "bisect", "import_port", "print_report"]

# How the root module's call is listed (its path is the empty string).
ROOT = "(model)"

HEADER = ("#", "module", "class", "max abs err", "max |ref|", "rel err", "")

# A leaf of a call's inputs or output: where it sits ("[0][1]", ".sample", "x") and its values.
Leaves = list[tuple[str, np.ndarray]]


@dataclass(frozen=True)
class Call:
    """One recorded module call: ``key`` is its path, with ``#n`` from the second call on."""

    key: str
    path: str
    cls: str
    inputs: Leaves
    output: Leaves


@dataclass(frozen=True)
class Diff:
    """How far one side's leaves are from the reference's; ``note`` says why not comparable."""

    max_abs: float | None
    ref_max: float | None
    note: str = ""

    def rel_err(self) -> float | None:
        if self.max_abs is None or self.ref_max is None:
            return None
        return self.max_abs / max(1.0, self.ref_max)

    def over(self, rel: float) -> bool:
        """Above the tolerance; a shape or structure mismatch counts as above."""
        if self.note:
            return True
        err = self.rel_err()
        return err is not None and not err <= rel


@dataclass(frozen=True)
class Row:
    """One call in the report. ``side`` is "both", "torch" or "mlx" (recorded on one side only)."""

    index: int
    key: str
    path: str
    cls: str
    side: str
    output: Diff
    inputs: Diff | None

    @property
    def max_abs(self) -> float | None:
        return self.output.max_abs

    @property
    def ref_max(self) -> float | None:
        return self.output.ref_max

    @property
    def rel_err(self) -> float | None:
        return self.output.rel_err()


@dataclass(frozen=True)
class Cause:
    """Where a divergence starts: in ``call``'s own code, between its children ``after`` and
    ``before`` (both None when ``call`` is the diverging call itself and its inputs match)."""

    call: Row
    after: Row | None
    before: Row | None


@dataclass
class BisectReport:
    """Every module call in execution order, compared; ``rel`` is the tolerance used."""

    rows: list[Row]
    rel: float
    crash: str | None = None  # the port's exception, and the call it happened in
    label: str = ""

    @property
    def first_divergence(self) -> Row | None:
        """The first call whose output is above tolerance (or mismatched), or None."""
        over = (row for row in self.rows if row.side == "both" and row.output.over(self.rel))
        return next(over, None)

    def diagnosis(self) -> str:
        """A few sentences: where the difference starts and where to look for its cause."""
        first = self.first_divergence
        lines = []
        if first is not None:
            where = f"#{first.index} {first.key} ({first.cls})"
            lines.append(f"first divergence: {where}, {_what(first, self.rel)}.")
            lines.append(self._explain(self.cause()))
        elif self.crash is None:
            one_sided = sum(row.side != "both" for row in self.rows)
            lines.append(
                f"no divergence: all {len(self.rows) - one_sided} calls within rel {self.rel:g}"
                + (f" ({one_sided} recorded on one side only)" if one_sided else "")
            )
        if self.crash is not None:
            lines.append(
                f"the port raised {self.crash}"
                + ("" if first else f"; every call before it is within rel {self.rel:g}")
            )
        return "\n".join(lines)

    def cause(self) -> Cause | None:
        """Where the cause of the first divergence ran, judged by which inputs still match.

        If the diverging call's inputs match, the cause is inside that call. Otherwise it ran
        in the innermost call around it whose inputs match, between two of that call's
        children. None when nothing diverges.
        """
        first = self.first_divergence
        if first is None:
            return None
        if first.inputs is None or not first.inputs.over(self.rel):
            return Cause(first, None, None)
        child, outer = first, self.enclosing(first)
        while outer is not None and outer.inputs is not None and outer.inputs.over(self.rel):
            child, outer = outer, self.enclosing(outer)
        if outer is None:
            return None
        before = [row for row in self.rows[: first.index] if self.enclosing(row) is outer]
        return Cause(outer, before[-1] if before else None, child)

    def _explain(self, cause: Cause | None) -> str:
        if cause is None:
            return "Its inputs already differ, and no recorded call around it has matching inputs."
        if cause.before is None:
            return (
                f"Its inputs match, so the cause is inside this call: {cause.call.cls}.__call__, "
                "its config or its weights."
            )
        after = f"after #{cause.after.index} {cause.after.key} and " if cause.after else ""
        return (
            "Its inputs already differ; the innermost call around it whose inputs match is "
            f"#{cause.call.index} {cause.call.key}, so the cause is in {cause.call.cls}.__call__, "
            f"{after}before #{cause.before.index} {cause.before.key}."
        )

    def enclosing(self, row: Row) -> Row | None:
        """The call that ``row`` ran inside: the first call after it whose module contains
        its module (calls are listed as they return, so the innermost returns first)."""
        for later in self.rows[row.index + 1 :]:
            if later.path != row.path and _contains(later.path, row.path):
                return later
        return None

    def table(self) -> str:
        """The report as plain text: one line per call, then the diagnosis."""
        header = HEADER
        body = [_cells(row, self) for row in self.rows]
        widths = [max(len(line[i]) for line in [header, *body]) for i in range(len(header))]
        right = {0, 3, 4, 5}

        def fmt(cells: tuple[str, ...]) -> str:
            parts = [
                cell.rjust(width) if i in right else cell.ljust(width)
                for i, (cell, width) in enumerate(zip(cells, widths))
            ]
            return "  ".join(parts).rstrip()

        notes = [textwrap.fill(line, 100) for line in self.diagnosis().splitlines()]
        return "\n".join([self._title(), fmt(header), *(fmt(cells) for cells in body), *notes])

    def _title(self) -> str:
        return (
            f"porter bisect{' ' + self.label if self.label else ''}: {len(self.rows)} module "
            "calls in execution order\n"
            f"rel err = max abs err / max(1, max |ref|), tolerance {self.rel:g}"
        )

    def _top_level_bands(self) -> list[tuple[int, int, str]]:
        """(first row, last row, key) of each call made by the root module's own code."""
        root = self.rows[-1] if self.rows and self.rows[-1].path == "" else None
        bands, start = [], 0
        for row in self.rows:
            if root is not None and row is not root and self.enclosing(row) is root:
                bands.append((start, row.index, row.key))
                start = row.index + 1
        return bands

    def plot(self, path: str | Path) -> Path:
        """Draws the relative error of every call, in execution order, into a PNG at ``path``."""
        try:
            from matplotlib.figure import Figure
        except ImportError:
            raise PorterError("--plot needs matplotlib: pip install 'porter[plot]'") from None

        rows = [row for row in self.rows if row.side == "both"]
        finite = [row.rel_err for row in rows if row.rel_err is not None]
        floor = 1e-12
        ceiling = max([self.rel * 10, *(e for e in finite if math.isfinite(e))]) * 10
        x = [row.index for row in rows]
        y = [_plotted(row, floor, ceiling) for row in rows]
        over = [row.output.over(self.rel) for row in rows]

        fig = Figure(figsize=(8, 4), dpi=100, layout="constrained")
        ax = fig.subplots()
        ax.set_yscale("log")
        ax.set_xlim(-1, len(self.rows))
        ax.set_ylim(min(y, default=floor) / 5, ceiling * 3)

        # Each call the model makes itself (a block, an embedder) as a band; wide ones named.
        bands = self._top_level_bands()
        for i, (start, end, _) in enumerate(bands):
            ax.axvspan(start - 0.5, end + 0.5, color="0.93" if i % 2 else "1.0", zorder=0)
        named = [(start, end, key) for start, end, key in bands if end - start >= 2]
        top = ax.secondary_xaxis("top")
        top.set_xticks([(start + end) / 2 for start, end, _ in named])
        top.set_xticklabels([key for _, _, key in named], rotation=30, ha="left", fontsize=7)
        top.tick_params(length=0)

        ax.plot(x, y, color="0.7", linewidth=0.8, zorder=1)
        for above, color, label in ((False, "tab:blue", "within"), (True, "tab:orange", "above")):
            picked = [(xi, yi) for xi, yi, o in zip(x, y, over) if o == above]
            ax.scatter(
                [xi for xi, _ in picked],
                [yi for _, yi in picked],
                s=12,
                color=color,
                label=f"{label} tolerance",
                zorder=2,
            )
        ax.axhline(
            self.rel, color="tab:red", linestyle="--", linewidth=1, label=f"tolerance {self.rel:g}"
        )
        first = self.first_divergence
        if first is not None:
            fy = _plotted(first, floor, ceiling)
            ax.scatter(
                [first.index], [fy], s=70, color="tab:red", zorder=3, label="first divergence"
            )
            ax.annotate(
                f"first divergence: #{first.index} {first.key}",
                (first.index, fy),
                xytext=(15, -40),
                textcoords="offset points",
                fontsize=8,
                color="tab:red",
                arrowprops={"arrowstyle": "->", "color": "tab:red"},
                bbox={"boxstyle": "round", "fc": "white", "ec": "tab:red", "alpha": 0.9},
                zorder=4,
            )
        ax.set_xlabel(f"module call, in execution order{': ' + self.label if self.label else ''}")
        ax.set_ylabel("max abs err / max(1, max |ref|)")
        ax.legend(fontsize=7, loc="lower right", framealpha=0.9)
        path = Path(path)
        fig.savefig(path)
        return path


def _plotted(row: Row, floor: float, ceiling: float) -> float:
    """A row's relative error on a log axis: zeros at the floor, inf and mismatches at the top."""
    err = row.rel_err
    if row.output.note or err is None or not math.isfinite(err):
        return ceiling
    return min(max(err, floor), ceiling)


def _what(row: Row, rel: float) -> str:
    if row.output.note:
        return row.output.note
    return f"rel err {row.rel_err:.3g} > {rel:g} (max abs err {row.max_abs:.3g})"


def _contains(outer: str, inner: str) -> bool:
    """Whether module path ``outer`` is ``inner`` or one of its ancestors ("" is the root)."""
    return outer == "" or inner == outer or inner.startswith(outer + ".")


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:.2e}"


def _cells(row: Row, report: BisectReport) -> tuple[str, ...]:
    if row.side != "both":
        mark = "torch only" if row.side == "torch" else "MLX only"
    elif row is report.first_divergence:
        mark = "<- first divergence" + (f": {row.output.note}" if row.output.note else "")
    elif row.output.over(report.rel):
        mark = "over" + (f": {row.output.note}" if row.output.note else "")
    else:
        mark = ""
    return (
        str(row.index),
        row.key,
        row.cls,
        _num(row.max_abs),
        _num(row.ref_max),
        _num(row.rel_err),
        mark,
    )


def print_report(report: BisectReport, file: TextIO | None = None) -> None:
    """Prints the report: a rich table on a terminal when rich is installed, else plain text."""
    file = file or sys.stdout
    rich_console = None
    if file.isatty():
        with contextlib.suppress(ImportError):
            from rich.console import Console

            rich_console = Console(file=file)
    if rich_console is None:
        print(report.table(), file=file)
        return

    from rich import box
    from rich.table import Table

    first = report.first_divergence
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False)
    # On a narrow terminal the numbers keep their width; paths and notes fold onto more lines.
    for name in HEADER:
        if name in {"#", "max abs err", "max |ref|", "rel err"}:
            table.add_column(name, justify="right", no_wrap=True)
        else:
            table.add_column(name, overflow="fold", ratio=1 if name == "module" else None)
    for row in report.rows:
        if row is first:
            style = "bold red"
        elif row.side != "both":
            style = "dim"
        elif row.output.over(report.rel):
            style = "yellow"
        else:
            style = None
        table.add_row(*_cells(row, report), style=style)
    rich_console.print(report._title(), highlight=False)
    rich_console.print(table)
    rich_console.print(report.diagnosis(), highlight=False)


# Recording ------------------------------------------------------------------------------------


def _leaves(
    obj: Any, to_np: Callable[[Any], np.ndarray], is_array: Callable[[Any], bool], path: str = ""
) -> Iterator[tuple[str, np.ndarray]]:
    """The arrays in a nested output as (where, float64 copy); other values are skipped."""
    if is_array(obj):
        yield path, np.array(to_np(obj), copy=True)
    elif dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        for f in dataclasses.fields(obj):
            yield from _leaves(getattr(obj, f.name), to_np, is_array, f"{path}.{f.name}")
    elif isinstance(obj, dict):
        for key, value in obj.items():
            yield from _leaves(value, to_np, is_array, f"{path}[{key!r}]")
    elif isinstance(obj, (list, tuple)):
        for i, value in enumerate(obj):
            yield from _leaves(value, to_np, is_array, f"{path}[{i}]")


class _Recorder:
    """Collects calls in the order they finish, numbering repeated calls of one path."""

    def __init__(self, is_array: Callable[[Any], bool]) -> None:
        from porter.golden import to_np

        self.calls: list[Call] = []
        self.active: list[str] = []  # the calls in flight, innermost last
        self._counts: Counter[str] = Counter()
        self._to_np = to_np
        self._is_array = is_array

    def leaves(self, obj: Any) -> Leaves:
        return list(_leaves(obj, self._to_np, self._is_array))

    def record(self, path: str, cls: str, args: tuple, kwargs: dict, output: Any) -> None:
        key = path or ROOT
        self._counts[key] += 1
        if self._counts[key] > 1:
            key = f"{key}#{self._counts[key]}"
        inputs = self.leaves(list(args)) + self.leaves(kwargs)
        self.calls.append(Call(key, path, cls, inputs, self.leaves(output)))


def record_torch(model: torch.nn.Module, args: tuple, kwargs: dict) -> list[Call]:
    """Runs the torch model once, recording every submodule call."""
    import torch

    recorder = _Recorder(lambda obj: isinstance(obj, torch.Tensor))
    # Containers are skipped: the port turns them into plain lists and dicts (the
    # convert_containers rule), so a Sequential's call has no MLX counterpart; its last
    # layer's output is the same array anyway.
    containers = (torch.nn.Sequential, torch.nn.ModuleList, torch.nn.ModuleDict)
    handles = []
    for path, module in model.named_modules():
        if isinstance(module, containers):
            continue

        def hook(module: Any, args: tuple, kwargs: dict, output: Any, path: str = path) -> None:
            recorder.record(path, type(module).__name__, args, kwargs, output)

        handles.append(module.register_forward_hook(hook, with_kwargs=True))
    try:
        with torch.no_grad():
            model(*args, **kwargs)
    finally:
        for handle in handles:
            handle.remove()
    return recorder.calls


def record_mlx(model: Any, args: tuple, kwargs: dict) -> tuple[list[Call], str | None]:
    """Runs the MLX model once, recording every submodule call.

    Returns the calls and, when the port raised, ``"ExcType: message (in <call>)"``: the calls
    recorded up to that point are still returned.
    """
    import mlx.core as mx

    recorder = _Recorder(lambda obj: isinstance(obj, mx.array))
    paths: dict[int, str] = {}
    for path, module in model.named_modules():
        paths.setdefault(id(module), path)

    recording_classes: dict[type, type] = {}

    def recording_class(cls: type) -> type:
        if cls not in recording_classes:

            def __call__(self: Any, *args: Any, **kwargs: Any) -> Any:
                path = paths[id(self)]
                recorder.active.append(path or ROOT)
                output = cls.__call__(self, *args, **kwargs)
                recorder.active.pop()
                recorder.record(path, cls.__name__, args, kwargs, output)
                return output

            recording_classes[cls] = type(cls.__name__, (cls,), {"__call__": __call__})
        return recording_classes[cls]

    swapped = []
    for _, module in model.named_modules():
        if any(module is done for done, _ in swapped):
            continue
        swapped.append((module, type(module)))
        module.__class__ = recording_class(type(module))
    crash = None
    try:
        mx.eval(model(*args, **kwargs))
    except Exception as err:  # noqa: BLE001 - the port's failure is part of the report
        where = recorder.active[-1] if recorder.active else ROOT
        message = str(err).strip().splitlines()[0] if str(err).strip() else ""
        crash = f"{type(err).__name__}: {message} (in {where})"
    finally:
        for module, cls in swapped:
            module.__class__ = cls
    return recorder.calls, crash


# Comparing ------------------------------------------------------------------------------------


def compare_leaves(reference: Leaves, candidate: Leaves) -> Diff | None:
    """Max abs error over paired leaves; None when neither side has an array."""
    if not reference and not candidate:
        return None
    ref_paths = [where for where, _ in reference]
    cand_paths = [where for where, _ in candidate]
    if ref_paths != cand_paths:
        missing = sorted(set(ref_paths) - set(cand_paths)) or sorted(
            set(cand_paths) - set(ref_paths)
        )
        return Diff(None, None, f"structure differs at {missing[0] if missing else 'order'}")
    worst, ref_max = 0.0, 0.0
    for (where, ref), (_, cand) in zip(reference, candidate):
        if ref.shape != cand.shape:
            return Diff(None, None, f"shape {ref.shape} vs {cand.shape} at {where or 'output'}")
        if ref.size == 0:
            continue
        if np.isfinite(ref).all() and np.isfinite(cand).all():
            worst = max(worst, float(np.max(np.abs(ref - cand))))
        else:
            worst = math.inf
        ref_max = max(ref_max, float(np.max(np.abs(np.nan_to_num(ref)))))
    return Diff(worst, ref_max)


def compare_calls(
    reference: list[Call], candidate: list[Call], rel: float, crash: str | None = None
) -> BisectReport:
    """Pairs the calls by key and lists them in the reference's order.

    A call recorded only by the port is listed after the last call both sides made before it.
    """
    by_key = {call.key: call for call in candidate}
    ref_keys = {call.key for call in reference}
    after: dict[str | None, list[Call]] = {}
    last = None
    for call in candidate:
        if call.key in ref_keys:
            last = call.key
        else:
            after.setdefault(last, []).append(call)

    ordered: list[tuple[Call, Call | None, str]] = [(c, None, "mlx") for c in after.get(None, [])]
    for call in reference:
        other = by_key.get(call.key)
        ordered.append((call, other, "both" if other else "torch"))
        ordered.extend((c, None, "mlx") for c in after.get(call.key, []))

    rows = []
    for index, (call, other, side) in enumerate(ordered):
        if side == "both":
            output = compare_leaves(call.output, other.output) or Diff(None, None)
            inputs = compare_leaves(call.inputs, other.inputs)
        else:
            output, inputs = Diff(None, None), None
        rows.append(Row(index, call.key, call.path, call.cls, side, output, inputs))
    return BisectReport(rows, rel, crash)


def bisect(
    torch_model: torch.nn.Module,
    mlx_model: Any,
    args: tuple,
    kwargs: dict | None = None,
    *,
    rel: float = 1e-4,
    label: str = "",
) -> BisectReport:
    """Runs both models on ``args``/``kwargs`` (torch tensors; the port gets them through
    ``porter.golden.to_mx``) and compares every submodule call. ``rel`` is the tolerance on
    max abs err / max(1, max |ref|), as in the golden tests."""
    from porter.golden import to_mx

    kwargs = kwargs or {}
    reference = record_torch(torch_model, args, kwargs)
    candidate, crash = record_mlx(mlx_model, to_mx(args), to_mx(kwargs))
    report = compare_calls(reference, candidate, rel, crash)
    report.label = label
    return report


# The command line ------------------------------------------------------------------------------

_imported = itertools.count()


def import_port(folder: Path) -> ModuleType:
    """Imports a ported package from its folder under a fresh module name, so that an edited
    copy and the original can both be loaded in one process."""
    init = folder / "__init__.py"
    if not init.is_file():
        raise PorterError(
            "not a ported package (no __init__.py); pass the folder `porter port` wrote",
            str(folder),
        )
    name = "_porter_port_{}_{}".format(re.sub(r"\W", "_", folder.name), next(_imported))
    spec = importlib.util.spec_from_file_location(
        name, init, submodule_search_locations=[str(folder)]
    )
    assert spec is not None and spec.loader is not None
    package = importlib.util.module_from_spec(spec)
    sys.modules[name] = package
    try:
        spec.loader.exec_module(package)
    except SyntaxError as err:
        del sys.modules[name]
        raise PorterError(
            f"cannot import the port: {err.msg}", f"{err.filename}:{err.lineno}"
        ) from None
    except Exception as err:  # noqa: BLE001 - any failure of a user's port is reported as input
        del sys.modules[name]
        raise PorterError(
            f"cannot import the port: {type(err).__name__}: {err}", str(folder)
        ) from None
    return package


def check_port_source(folder: Path, recipe: Recipe) -> None:
    """Raise if the port in ``folder`` records (in its ``__init__.py`` header) another source
    than ``recipe``'s. A folder without a readable header is left to the import to judge."""
    from porter.header import read_header

    try:
        header = read_header((folder / "__init__.py").read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError):
        return
    if header is not None and header.source != recipe.source:
        raise PorterError(
            f"{folder} is a port of {header.source}, not of {recipe.name} ({recipe.source})"
        )


def case_from_port(package: ModuleType, folder: Path, name: str | None) -> GoldenCase:
    """The golden case ``name`` (default: the first) from the golden test porter rendered into
    the port (``test_golden_<module>.py``): bisect runs exactly what that test compares."""
    from porter.golden import GoldenCase

    tests = sorted(folder.glob("test_golden_*.py"))
    if not tests:
        raise PorterError("the port has no test_golden_*.py with golden cases", str(folder))
    module = importlib.import_module(f"{package.__name__}.{tests[0].stem}")
    cases = [value for value in vars(module).values() if isinstance(value, GoldenCase)]
    if not cases:
        raise PorterError("no golden case defined here", f"{tests[0]}:1")
    if name is None:
        return cases[0]
    for case in cases:
        if case.name == name:
            return case
    known = ", ".join(case.name for case in cases)
    raise PorterError(f"unknown case {name!r}; known: {known}", str(tests[0]))


def _strict_load_error(
    package: ModuleType,
    model_class: str,
    config_path: Path,
    weights_path: Path,
    err: Exception,
    config_class: Any = None,
) -> PorterError:
    """Names the first key on which the port's model and the converted checkpoint disagree."""
    import mlx.core as mx
    from mlx.utils import tree_flatten

    config = json.loads(Path(config_path).read_text())
    kwargs = {key: value for key, value in config.items() if not key.startswith("_")}
    try:
        if config_class is not None:  # a transformers model: one config object
            port_config = getattr(package, config_class.__name__, None)
            if port_config is None:
                weights_module = importlib.import_module(f"{package.__name__}.weights")
                port_config = getattr(weights_module, config_class.__name__)
            model = getattr(package, model_class)(port_config(**config))
        else:
            model = getattr(package, model_class)(**kwargs)
    except (AttributeError, TypeError) as build_err:
        return PorterError(f"cannot build the port's {model_class} from config.json: {build_err}")
    expected = [key for key, _ in tree_flatten(model.parameters())]
    found = list(mx.load(str(weights_path)).keys())
    missing = [key for key in expected if key not in set(found)]
    extra = [key for key in found if key not in set(expected)]

    def first(keys: list[str]) -> str:
        return keys[0] + (f" (and {len(keys) - 1} more)" if len(keys) > 1 else "")

    parts = []
    if missing:
        parts.append(f"the port's model has {first(missing)}, which the checkpoint lacks")
    if extra:
        parts.append(f"the checkpoint has {first(extra)}, which the port's model lacks")
    if not parts:  # same keys: a shape or dtype mismatch, which MLX names in one line
        parts.append(str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__)
    return PorterError("strict weight load failed: " + "; ".join(parts))


def _check_plot_path(path: Path) -> None:
    """Raise unless ``--plot`` names a file matplotlib can draw (by its suffix) in a folder."""
    from matplotlib.backend_bases import FigureCanvasBase

    formats = FigureCanvasBase.get_supported_filetypes()
    if path.suffix.lstrip(".").lower() not in formats:
        known = ", ".join(f".{name}" for name in sorted(formats))
        raise PorterError(f"--plot wants an image file, such as .png ({known})", str(path))
    if not path.parent.is_dir():
        raise PorterError("--plot: no such folder", str(path.parent))


def _cmd_bisect(args: argparse.Namespace) -> int:
    from porter.recipes import recipes

    recipe = recipes().get(args.recipe)
    if recipe is None:
        known = ", ".join(name for name, r in recipes().items() if r.golden)
        raise PorterError(f"unknown recipe {args.recipe!r}; known: {known}")
    if args.rel is not None and not args.rel > 0:
        raise PorterError(f"--rel must be positive, not {args.rel:g}")
    if args.plot:
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            raise PorterError("--plot needs matplotlib: pip install 'porter[plot]'") from None
        _check_plot_path(Path(args.plot))
    folder = Path(args.port or recipe.outdir)
    check_port_source(folder, recipe)
    try:
        from porter.golden import build_pair, case_inputs

        torch_module = importlib.import_module(recipe.source)
    except ImportError as err:
        raise PorterError(
            f"bisect needs torch and the model's library ({err}): pip install 'porter[test]'"
        ) from None

    package = import_port(folder)
    case = case_from_port(package, folder, args.case)
    if not hasattr(package, "load_model"):
        raise PorterError("the port's package has no load_model", str(folder / "__init__.py"))
    model_class = case.model_class or recipe.model_class
    torch_class = getattr(torch_module, model_class)

    def load_strictly(config_path: Path, weights_path: Path) -> Any:
        try:
            return package.load_model(
                config_path, weights_path, model_class=getattr(package, model_class)
            )
        except (ValueError, TypeError) as err:
            raise _strict_load_error(
                package, model_class, config_path, weights_path, err, case.config_class
            ) from None

    with tempfile.TemporaryDirectory(prefix="porter-bisect-") as tmp:
        # build_pair runs `porter convert-weights`, whose summary is not part of this output.
        with contextlib.redirect_stdout(io.StringIO()):
            torch_model, mlx_model = build_pair(
                torch_class, load_strictly, case, Path(tmp), port=folder
            )
        report = bisect(
            torch_model,
            mlx_model,
            *case_inputs(case),
            rel=args.rel if args.rel is not None else case.rel,
            label=f"{recipe.name} {case.name}" + (f" ({args.port})" if args.port else ""),
        )
    print_report(report)
    if args.plot:
        print(f"wrote {report.plot(args.plot)}")
    return 1 if report.first_divergence or report.crash else 0


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Registers ``porter bisect``."""
    bp = subparsers.add_parser(
        "bisect",
        help="find the first module where a port's outputs diverge from PyTorch",
        description=(
            "Run a recipe's PyTorch model and its MLX port on the same seeded weights and the\n"
            "inputs of one of its golden cases, record every submodule call on both sides and\n"
            "print the calls in execution order with their error. The first call above the\n"
            "tolerance is marked, with where its cause ran: inside that call when its inputs\n"
            "still match, else in the innermost call around it whose inputs match.\n\n"
            "Exit status: 0 when every call is within tolerance, 1 when one diverges or the\n"
            "port raises, 2 on bad input.\n\n"
            "examples:\n"
            "  porter bisect z-image\n"
            "  porter bisect z-image --case omni_siglip_batch2 --rel 1e-3\n"
            "  cp -r generated/z_image my_z_image  # edit it, then:\n"
            "  porter bisect z-image --port my_z_image --plot bisect.png"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    from porter.cli import recipe_names

    bp.add_argument(
        "recipe", help=f"a built-in recipe with golden cases ({recipe_names(golden_only=True)})"
    )
    bp.add_argument("--case", help="the golden case to run (default: the recipe's first)")
    bp.add_argument(
        "--port",
        metavar="DIR",
        help="the ported package to check, e.g. an edited copy (default: the recipe's folder)",
    )
    bp.add_argument(
        "--rel",
        type=float,
        help="tolerance on max abs err / max(1, max |ref|) (default: the recipe's, 1e-4)",
    )
    bp.add_argument(
        "--plot", metavar="FILE.png", help="also draw the error per call (needs matplotlib)"
    )
    bp.set_defaults(func=_cmd_bisect)
    return bp
