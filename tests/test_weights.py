"""Tests for ``porter convert-weights`` and ``porter.weights``.

Checkpoints are written with torch and safetensors exactly as PyTorch users write them, then
converted through the CLI entry point or the Python function and compared bit for bit with the
torch tensors. Casts are compared bit for bit too: torch and MLX both round to nearest even.
"""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import mlx.core as mx
import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from porter.cli import main
from porter.errors import PorterError
from porter.weights import LayoutPlan, convert_weights, load_checkpoint

# torch dtype -> (mx dtype, integer dtype of the same width used to compare bit patterns)
_BITS: dict[torch.dtype, tuple[mx.Dtype, torch.dtype, mx.Dtype]] = {
    torch.float32: (mx.float32, torch.int32, mx.int32),
    torch.bfloat16: (mx.bfloat16, torch.int16, mx.int16),
    torch.float16: (mx.float16, torch.int16, mx.int16),
}


def _tensors(dtype: torch.dtype = torch.float32, seed: int = 0) -> dict[str, torch.Tensor]:
    """A small state dict with the kinds of tensors a transformer checkpoint holds."""
    gen = torch.Generator().manual_seed(seed)
    return {
        "x_pad_token": torch.randn(1, 6, generator=gen).to(dtype),
        "layers.0.attention.to_q.weight": torch.randn(8, 6, generator=gen).to(dtype),
        "layers.0.attention.to_q.bias": torch.randn(8, generator=gen).to(dtype),
        "layers.0.attention_norm1.weight": (1 + torch.randn(6, generator=gen)).to(dtype),
        "layers.1.feed_forward.w1.weight": torch.randn(12, 6, generator=gen).to(dtype),
        "layers.1.feed_forward.w2.weight": torch.randn(6, 12, generator=gen).to(dtype),
        "rope.positions": torch.arange(7, dtype=torch.int64),
        "rope.mask": torch.tensor([True, False, True]),
    }


def _save(path: Path, tensors: dict[str, torch.Tensor]) -> Path:
    save_file(tensors, str(path), metadata={"format": "pt"})
    return path


def _save_folder(folder: Path, tensors: dict[str, torch.Tensor]) -> Path:
    """A diffusers-style folder: config.json and diffusion_pytorch_model.safetensors."""
    folder.mkdir()
    (folder / "config.json").write_text('{"_class_name": "Tiny"}')
    _save(folder / "diffusion_pytorch_model.safetensors", tensors)
    return folder


def _save_sharded(
    folder: Path, tensors: dict[str, torch.Tensor], shards: int = 3, index_extra: dict | None = None
) -> Path:
    """Split ``tensors`` round-robin over shards and write the index that maps key -> shard."""
    folder.mkdir(exist_ok=True)
    (folder / "config.json").write_text('{"_class_name": "Tiny"}')
    names = [
        f"diffusion_pytorch_model-{i:05d}-of-{shards:05d}.safetensors" for i in range(1, shards + 1)
    ]
    parts: list[dict[str, torch.Tensor]] = [{} for _ in names]
    weight_map = {}
    for i, (key, value) in enumerate(tensors.items()):
        parts[i % shards][key] = value
        weight_map[key] = names[i % shards]
    for name, part in zip(names, parts):
        _save(folder / name, part)
    index = {"metadata": {"total_size": 0}, "weight_map": weight_map, **(index_extra or {})}
    (folder / "diffusion_pytorch_model.safetensors.index.json").write_text(json.dumps(index))
    return folder


def _assert_bit_equal(got: mx.array, want: torch.Tensor, key: str) -> None:
    assert tuple(got.shape) == tuple(want.shape), key
    if want.dtype in _BITS:
        mx_dtype, torch_int, mx_int = _BITS[want.dtype]
        assert got.dtype == mx_dtype, (key, got.dtype, want.dtype)
        np.testing.assert_array_equal(
            np.array(got.view(mx_int)), want.view(torch_int).numpy(), err_msg=key
        )
    else:
        np.testing.assert_array_equal(np.array(got), want.numpy(), err_msg=key)


def _assert_same_checkpoint(path: Path, want: dict[str, torch.Tensor]) -> None:
    got = mx.load(str(path))
    assert sorted(got) == sorted(want)
    for key, tensor in want.items():
        _assert_bit_equal(got[key], tensor, key)


# --------------------------------------------------------------------------------------------
# Round trips


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16], ids=str)
def test_single_file_keeps_every_bit(tmp_path: Path, dtype: torch.dtype) -> None:
    tensors = _tensors(dtype)
    src = _save(tmp_path / "model.safetensors", tensors)
    dst = tmp_path / "out.safetensors"

    report = convert_weights(src, dst)

    _assert_same_checkpoint(dst, tensors)
    name = str(dtype).removeprefix("torch.")
    assert report.tensors_in == report.tensors_out == len(tensors)
    assert report.dtypes_in == report.dtypes_out == {name: 6, "int64": 1, "bool": 1}
    assert report.bytes_in == report.bytes_out == sum(t.nbytes for t in tensors.values())
    assert report.files_read == (src,)


def test_cli_converts_a_diffusers_folder(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    tensors = _tensors(torch.bfloat16)
    src = _save_folder(tmp_path / "transformer", tensors)
    dst = tmp_path / "out.safetensors"

    assert main(["convert-weights", str(src), "-o", str(dst)]) == 0

    _assert_same_checkpoint(dst, tensors)
    out = capsys.readouterr().out
    assert "read 8 tensors" in out and "bfloat16 x6" in out and str(dst) in out


def test_cli_converts_a_sharded_folder(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    tensors = _tensors(torch.float32, seed=3)
    src = _save_sharded(tmp_path / "transformer", tensors)
    dst = tmp_path / "out.safetensors"

    assert main(["convert-weights", str(src), "-o", str(dst)]) == 0

    _assert_same_checkpoint(dst, tensors)
    assert "from 3 files" in capsys.readouterr().out


def test_shard_index_can_be_passed_directly(tmp_path: Path) -> None:
    tensors = _tensors(seed=4)
    src = _save_sharded(tmp_path / "ckpt", tensors)
    index = src / "diffusion_pytorch_model.safetensors.index.json"

    loaded = load_checkpoint(index)

    assert list(loaded) == sorted(tensors)
    for key, tensor in tensors.items():
        _assert_bit_equal(loaded[key], tensor, key)


def test_load_checkpoint_reads_a_folder_and_a_file_alike(tmp_path: Path) -> None:
    tensors = _tensors(torch.bfloat16, seed=5)
    folder = _save_folder(tmp_path / "folder", tensors)

    from_folder = load_checkpoint(folder)
    from_file = load_checkpoint(str(folder / "diffusion_pytorch_model.safetensors"))

    assert list(from_folder) == list(from_file) == sorted(tensors)
    for key, tensor in tensors.items():
        _assert_bit_equal(from_folder[key], tensor, key)


def test_output_is_byte_for_byte_reproducible(tmp_path: Path) -> None:
    tensors = _tensors(seed=6)
    single = _save(tmp_path / "model.safetensors", tensors)
    sharded = _save_sharded(tmp_path / "sharded", dict(reversed(list(tensors.items()))))

    convert_weights(single, tmp_path / "a.safetensors")
    convert_weights(single, tmp_path / "b.safetensors")
    convert_weights(sharded, tmp_path / "c.safetensors")

    a = (tmp_path / "a.safetensors").read_bytes()
    assert a == (tmp_path / "b.safetensors").read_bytes()
    assert a == (tmp_path / "c.safetensors").read_bytes()


def test_an_existing_output_is_replaced(tmp_path: Path) -> None:
    tensors = _tensors(seed=7)
    src = _save(tmp_path / "model.safetensors", tensors)
    dst = tmp_path / "out.safetensors"
    dst.write_bytes(b"old")

    convert_weights(src, dst)

    _assert_same_checkpoint(dst, tensors)


# --------------------------------------------------------------------------------------------
# Casting


@pytest.mark.parametrize(
    ("src_dtype", "target"),
    [
        (torch.float32, "bfloat16"),
        (torch.float32, "float16"),
        (torch.bfloat16, "float32"),
        (torch.float16, "float32"),
        (torch.bfloat16, "float16"),
    ],
    ids=lambda v: str(v).removeprefix("torch."),
)
def test_dtype_casts_floating_tensors_like_torch(
    tmp_path: Path, src_dtype: torch.dtype, target: str
) -> None:
    tensors = _tensors(src_dtype, seed=8)
    src = _save(tmp_path / "model.safetensors", tensors)
    dst = tmp_path / "out.safetensors"

    assert main(["convert-weights", str(src), "-o", str(dst), "--dtype", target]) == 0

    torch_target = getattr(torch, target)
    # Both libraries round to nearest even, so the cast is compared bit for bit.
    want = {k: t.to(torch_target) if t.is_floating_point() else t for k, t in tensors.items()}
    _assert_same_checkpoint(dst, want)


def test_float16_overflow_is_reported(tmp_path: Path) -> None:
    src = _save(
        tmp_path / "model.safetensors",
        {"big": torch.tensor([1.0, 1e5]), "small": torch.tensor([1.0, -2.0])},
    )

    report = convert_weights(src, tmp_path / "out.safetensors", dtype="float16")

    assert report.overflowed == ("big",)
    assert "beyond float16's range" in report.summary()
    assert "big" in report.summary()


def test_unknown_dtype_is_refused(tmp_path: Path) -> None:
    src = _save(tmp_path / "model.safetensors", _tensors())
    with pytest.raises(PorterError, match="unknown dtype 'float8'"):
        convert_weights(src, tmp_path / "out.safetensors", dtype="float8")
    assert not (tmp_path / "out.safetensors").exists()


# --------------------------------------------------------------------------------------------
# Layout plan


def _conv_checkpoint(tmp_path: Path) -> tuple[Path, dict[str, torch.Tensor]]:
    gen = torch.Generator().manual_seed(9)
    tensors = {
        "patch.proj.weight": torch.randn(8, 3, 2, 2, generator=gen),  # [out, in, kh, kw]
        "patch.proj.bias": torch.randn(8, generator=gen),
        "rope.inv_freq": torch.randn(4, generator=gen),  # non-persistent buffer
        "head.weight": torch.randn(5, 8, generator=gen),
    }
    return _save(tmp_path / "model.safetensors", tensors), tensors


def test_plan_transposes_conv_weights_to_channels_last(tmp_path: Path) -> None:
    src, tensors = _conv_checkpoint(tmp_path)
    dst = tmp_path / "out.safetensors"
    plan = [
        {"pattern": "*.proj.weight", "transpose": [0, 2, 3, 1]},
        {"pattern": "*.inv_freq", "drop": True},
    ]

    report = convert_weights(src, dst, plan=plan)

    got = mx.load(str(dst))
    assert sorted(got) == ["head.weight", "patch.proj.bias", "patch.proj.weight"]
    assert got["patch.proj.weight"].shape == (8, 2, 2, 3)
    _assert_bit_equal(
        got["patch.proj.weight"], tensors["patch.proj.weight"].permute(0, 2, 3, 1), "proj"
    )
    _assert_bit_equal(got["head.weight"], tensors["head.weight"], "head")
    assert report.transposed == ("patch.proj.weight",)
    assert report.dropped == ("rope.inv_freq",)
    assert "transposed 1, dropped 1" in report.summary()


def test_plan_first_matching_row_wins_and_unused_rows_are_reported(tmp_path: Path) -> None:
    src, tensors = _conv_checkpoint(tmp_path)
    dst = tmp_path / "out.safetensors"
    plan = LayoutPlan.coerce(
        [
            {"pattern": "patch.proj.weight", "transpose": [0, 2, 3, 1]},
            # Also matches the 4-D conv weight, where [1, 0] would fail: the row above wins.
            {"pattern": "*.weight", "transpose": [1, 0]},
            {"pattern": "*.norm.weight", "drop": True},
        ]
    )

    report = convert_weights(src, dst, plan=plan)

    got = mx.load(str(dst))
    assert got["patch.proj.weight"].shape == (8, 2, 2, 3)
    _assert_bit_equal(got["head.weight"], tensors["head.weight"].T, "head")
    assert report.transposed == ("head.weight", "patch.proj.weight")
    assert report.dropped == ()
    assert report.unmatched_patterns == ("*.norm.weight",)
    assert "matched no tensor: *.norm.weight" in report.summary()


def test_plan_transpose_of_the_wrong_rank_names_the_key(tmp_path: Path) -> None:
    src, _ = _conv_checkpoint(tmp_path)
    dst = tmp_path / "out.safetensors"

    with pytest.raises(PorterError) as info:
        convert_weights(src, dst, plan=[{"pattern": "*.weight", "transpose": [1, 0]}])

    message = str(info.value)
    assert "'patch.proj.weight'" in message and "(8, 3, 2, 2)" in message and str(src) in message
    assert not dst.exists()


@pytest.mark.parametrize(
    ("plan", "fragment"),
    [
        pytest.param([{"pattern": "*", "transpose": [0, 0]}], "not a permutation", id="dup-axis"),
        pytest.param([{"pattern": "*"}], "exactly one action", id="no-action"),
        pytest.param(
            [{"pattern": "*", "drop": True, "transpose": [1, 0]}], "exactly one action", id="both"
        ),
        pytest.param([{"pattern": "*", "flip": True}], "unknown field(s) 'flip'", id="unknown"),
        pytest.param([{"drop": True}], "non-empty string", id="no-pattern"),
        pytest.param({"pattern": "*", "drop": True}, "expected a list of rows", id="not-a-list"),
    ],
)
def test_bad_plan_rows_are_refused(tmp_path: Path, plan: object, fragment: str) -> None:
    src, _ = _conv_checkpoint(tmp_path)
    with pytest.raises(PorterError) as info:
        convert_weights(src, tmp_path / "out.safetensors", plan=plan)  # type: ignore[arg-type]
    assert fragment in str(info.value)
    assert "\n" not in str(info.value)


# --------------------------------------------------------------------------------------------
# Atomic writes


def test_failed_write_leaves_no_output_and_no_temporary(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "in").mkdir()
    src = _save(tmp_path / "in" / "model.safetensors", _tensors())
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    dst = out_dir / "model.safetensors"
    written: list[str] = []

    def half_write(path: str, arrays: dict, metadata: dict | None = None) -> None:
        written.append(path)
        Path(path).write_bytes(b"\x00" * 64)  # a partial file, then the disk fills up
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(mx, "save_safetensors", half_write)

    assert main(["convert-weights", str(src), "-o", str(dst)]) == 2

    assert written and Path(written[0]).parent == out_dir  # the temporary sits beside dst
    assert list(out_dir.iterdir()) == []


def test_failed_write_keeps_the_previous_output(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    src = _save(tmp_path / "model.safetensors", _tensors())
    dst = tmp_path / "out.safetensors"
    convert_weights(src, dst)
    before = dst.read_bytes()

    def fail(path: str, arrays: dict, metadata: dict | None = None) -> None:
        Path(path).write_bytes(b"partial")
        raise RuntimeError("[save_safetensors] write failed")

    monkeypatch.setattr(mx, "save_safetensors", fail)

    with pytest.raises(PorterError, match="cannot write the output"):
        convert_weights(src, dst, dtype="bfloat16")
    assert dst.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.safetensors", "out.safetensors"]


# --------------------------------------------------------------------------------------------
# Bad input: one line, names the path, exit code 2


Case = Callable[[Path], tuple[Path, Path, str]]  # tmp_path -> (src, path named, fragment)


def _missing(tmp: Path) -> tuple[Path, Path, str]:
    return tmp / "nope", tmp / "nope", "no such file or folder"


def _empty_folder(tmp: Path) -> tuple[Path, Path, str]:
    (tmp / "ckpt").mkdir()
    (tmp / "ckpt" / "config.json").write_text("{}")
    return tmp / "ckpt", tmp / "ckpt", "no *.safetensors file in this folder"


def _pipeline_folder(tmp: Path) -> tuple[Path, Path, str]:
    (tmp / "pipe" / "transformer").mkdir(parents=True)
    (tmp / "pipe" / "model_index.json").write_text("{}")
    (tmp / "pipe" / "transformer" / "config.json").write_text("{}")
    return tmp / "pipe", tmp / "pipe", f"e.g. {tmp / 'pipe' / 'transformer'}"


def _two_checkpoints(tmp: Path) -> tuple[Path, Path, str]:
    folder = _save_folder(tmp / "ckpt", _tensors())
    _save(folder / "diffusion_pytorch_model.fp16.safetensors", _tensors(torch.float16))
    return folder, folder, "several checkpoints in this folder"


def _missing_shard(tmp: Path) -> tuple[Path, Path, str]:
    folder = _save_sharded(tmp / "ckpt", _tensors())
    (folder / "diffusion_pytorch_model-00002-of-00003.safetensors").unlink()
    index = folder / "diffusion_pytorch_model.safetensors.index.json"
    return folder, index, "shard 'diffusion_pytorch_model-00002-of-00003.safetensors'"


def _key_in_two_shards(tmp: Path) -> tuple[Path, Path, str]:
    tensors = _tensors()
    folder = _save_sharded(tmp / "ckpt", tensors)
    # Shard 3 also carries a key that the index places in shard 1.
    third = folder / "diffusion_pytorch_model-00003-of-00003.safetensors"
    part = {k: torch.from_numpy(np.array(v)) for k, v in mx.load(str(third)).items()}
    _save(third, {**part, "x_pad_token": tensors["x_pad_token"]})
    index = folder / "diffusion_pytorch_model.safetensors.index.json"
    return folder, index, "tensor 'x_pad_token' is in two shards"


def _key_twice_in_index(tmp: Path) -> tuple[Path, Path, str]:
    folder = _save_sharded(tmp / "ckpt", _tensors())
    index = folder / "diffusion_pytorch_model.safetensors.index.json"
    text = index.read_text().replace(
        '"weight_map": {',
        '"weight_map": {"x_pad_token": "diffusion_pytorch_model-00003-of-00003.safetensors", ',
    )
    index.write_text(text)
    return folder, index, "'x_pad_token' is listed in two shards"


def _index_without_weight_map(tmp: Path) -> tuple[Path, Path, str]:
    folder = _save_sharded(tmp / "ckpt", _tensors())
    index = folder / "diffusion_pytorch_model.safetensors.index.json"
    index.write_text('{"metadata": {}}')
    return index, index, 'no "weight_map"'


def _index_not_json(tmp: Path) -> tuple[Path, Path, str]:
    folder = _save_sharded(tmp / "ckpt", _tensors())
    index = folder / "diffusion_pytorch_model.safetensors.index.json"
    index.write_text('{"weight_map": {')
    return folder, index, "bad shard index"


def _index_escapes_folder(tmp: Path) -> tuple[Path, Path, str]:
    folder = _save_sharded(tmp / "ckpt", _tensors())
    index = folder / "diffusion_pytorch_model.safetensors.index.json"
    index.write_text('{"weight_map": {"a": "../elsewhere.safetensors"}}')
    return folder, index, "is not a .safetensors file beside the index"


def _key_missing_from_index(tmp: Path) -> tuple[Path, Path, str]:
    folder = _save_sharded(tmp / "ckpt", _tensors())
    index = folder / "diffusion_pytorch_model.safetensors.index.json"
    data = json.loads(index.read_text())
    del data["weight_map"]["rope.mask"]
    index.write_text(json.dumps(data))
    return folder, index, "holds tensor 'rope.mask', which the index does not list"


def _key_missing_from_shard(tmp: Path) -> tuple[Path, Path, str]:
    folder = _save_sharded(tmp / "ckpt", _tensors())
    index = folder / "diffusion_pytorch_model.safetensors.index.json"
    data = json.loads(index.read_text())
    data["weight_map"]["ghost.weight"] = "diffusion_pytorch_model-00001-of-00003.safetensors"
    index.write_text(json.dumps(data))
    return folder, index, "puts tensor 'ghost.weight' in diffusion_pytorch_model-00001-of-00003"


def _key_in_the_wrong_shard(tmp: Path) -> tuple[Path, Path, str]:
    folder = _save_sharded(tmp / "ckpt", _tensors())
    index = folder / "diffusion_pytorch_model.safetensors.index.json"
    data = json.loads(index.read_text())
    data["weight_map"]["x_pad_token"] = "diffusion_pytorch_model-00002-of-00003.safetensors"
    index.write_text(json.dumps(data))
    return folder, index, "puts tensor 'x_pad_token' in diffusion_pytorch_model-00002-of-00003"


def _pickle_file(tmp: Path) -> tuple[Path, Path, str]:
    torch.save(_tensors(), tmp / "pytorch_model.bin")
    return tmp / "pytorch_model.bin", tmp / "pytorch_model.bin", "pickle checkpoints are not read"


def _garbage_file(tmp: Path) -> tuple[Path, Path, str]:
    (tmp / "model.safetensors").write_bytes(b"this is not a safetensors file\n at all")
    return tmp / "model.safetensors", tmp / "model.safetensors", "not a readable safetensors file"


def _truncated_file(tmp: Path) -> tuple[Path, Path, str]:
    data = _save(tmp / "full.safetensors", _tensors()).read_bytes()
    (tmp / "model.safetensors").write_bytes(data[: len(data) - 16])
    return tmp / "model.safetensors", tmp / "model.safetensors", "not a readable safetensors file"


def _no_tensors(tmp: Path) -> tuple[Path, Path, str]:
    src = _save(tmp / "model.safetensors", {})
    return src, src, "holds no tensors"


@pytest.mark.parametrize(
    "case",
    [
        _missing,
        _empty_folder,
        _pipeline_folder,
        _two_checkpoints,
        _missing_shard,
        _key_in_two_shards,
        _key_twice_in_index,
        _index_without_weight_map,
        _index_not_json,
        _index_escapes_folder,
        _key_missing_from_index,
        _key_missing_from_shard,
        _key_in_the_wrong_shard,
        _pickle_file,
        _garbage_file,
        _truncated_file,
        _no_tensors,
    ],
    ids=lambda f: f.__name__.lstrip("_"),
)
def test_bad_source_is_one_line_naming_the_path(
    tmp_path: Path, capsys: pytest.CaptureFixture, case: Case
) -> None:
    src, named, fragment = case(tmp_path)
    dst = tmp_path / "out.safetensors"

    code = main(["convert-weights", str(src), "-o", str(dst)])

    captured = capsys.readouterr()
    assert code == 2
    assert captured.out == ""
    assert captured.err.startswith(f"porter: error: {named}: ")
    assert captured.err.count("\n") == 1 and captured.err.endswith("\n")
    assert fragment in captured.err
    assert not dst.exists()


@pytest.mark.parametrize(
    ("output", "named", "fragment"),
    [
        pytest.param("missing/out.safetensors", "missing", "does not exist; create it", id="dir"),
        pytest.param("afile/out.safetensors", "afile", "is not a folder", id="parent-is-file"),
        pytest.param("folder", "folder", "the output is a folder", id="is-folder"),
        pytest.param("out.npz", "out.npz", "must end in .safetensors", id="suffix"),
        pytest.param("model.safetensors", "model.safetensors", "overwrite an input", id="same"),
    ],
)
def test_bad_output_is_one_line_naming_the_path(
    tmp_path: Path, capsys: pytest.CaptureFixture, output: str, named: str, fragment: str
) -> None:
    src = _save(tmp_path / "model.safetensors", _tensors())
    before = src.read_bytes()
    (tmp_path / "afile").write_text("")
    (tmp_path / "folder").mkdir()

    code = main(["convert-weights", str(src), "-o", str(tmp_path / output)])

    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith(f"porter: error: {tmp_path / named}: ")
    assert err.count("\n") == 1
    assert fragment in err
    assert src.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile", "folder", "model.safetensors"]


# --------------------------------------------------------------------------------------------
# A real diffusers model


@pytest.fixture(scope="module")
def zimage_state() -> tuple[torch.nn.Module, dict[str, torch.Tensor]]:
    """A tiny Z-Image transformer whose every parameter holds seeded random values.

    Default initialisation leaves some tensors at zero or one, which would round-trip even if
    conversion mixed up keys; random values make every key distinct.
    """
    diffusers = pytest.importorskip("diffusers")
    model = diffusers.ZImageTransformer2DModel(
        all_patch_size=(2,),
        all_f_patch_size=(1,),
        in_channels=4,
        dim=64,
        n_layers=1,
        n_refiner_layers=1,
        n_heads=2,
        n_kv_heads=2,
        cap_feat_dim=32,
        axes_dims=[8, 12, 12],
        axes_lens=[64, 32, 32],
    )
    gen = torch.Generator().manual_seed(1234)
    with torch.no_grad():
        for tensor in model.state_dict().values():
            tensor.copy_(torch.randn(tensor.shape, generator=gen))
    return model, {k: v.clone() for k, v in model.state_dict().items()}


@pytest.mark.parametrize(
    "save_kwargs",
    [
        pytest.param({}, id="fp32-single"),
        pytest.param({"max_shard_size": "300KB"}, id="fp32-sharded"),
        pytest.param({"max_shard_size": "300KB", "variant": "bf16"}, id="bf16-variant-sharded"),
    ],
)
def test_zimage_save_pretrained_round_trips_every_key(
    tmp_path: Path,
    zimage_state: tuple[torch.nn.Module, dict[str, torch.Tensor]],
    save_kwargs: dict,
) -> None:
    model, state = zimage_state
    if save_kwargs.get("variant") == "bf16":
        # A copy, so that the shared fp32 model never passes through bf16.
        model = copy.deepcopy(model).to(torch.bfloat16)
        state = {k: v.to(torch.bfloat16) for k, v in state.items()}
    model.save_pretrained(tmp_path / "transformer", **save_kwargs)
    shards = list((tmp_path / "transformer").glob("*.safetensors"))
    assert (len(shards) > 1) == ("max_shard_size" in save_kwargs), shards
    dst = tmp_path / "zimage.safetensors"

    assert main(["convert-weights", str(tmp_path / "transformer"), "-o", str(dst)]) == 0

    _assert_same_checkpoint(dst, state)


def test_plan_leading_star_dot_also_matches_a_top_level_key() -> None:
    # The rows plan_conv_layouts writes serve a conv on the model itself and nested at any depth.
    plan = LayoutPlan.coerce([{"pattern": "*.proj.weight", "transpose": [0, 2, 3, 1]}])
    assert plan.match("proj.weight") is not None
    assert plan.match("blocks.0.proj.weight") is not None
    assert plan.match("out_proj.weight") is None
    assert plan.match("blocks.0.out_proj.weight") is None


def test_plan_row_with_ndim_passes_other_ranks_through(tmp_path: Path) -> None:
    # plan_conv_layouts writes "*.proj.weight" for a conv; a Linear called proj elsewhere in the
    # tree (2-D) is no conv weight: with ndim the row passes it through instead of failing.
    gen = torch.Generator().manual_seed(11)
    tensors = {
        "patch.proj.weight": torch.randn(8, 3, 2, 2, generator=gen),
        "ff.net.0.proj.weight": torch.randn(6, 8, generator=gen),
    }
    src = _save(tmp_path / "model.safetensors", tensors)
    row = {"pattern": "*.proj.weight", "transpose": [0, 2, 3, 1]}

    with pytest.raises(PorterError, match="ff.net.0.proj.weight"):
        convert_weights(src, tmp_path / "no_ndim.safetensors", plan=[row])
    report = convert_weights(src, tmp_path / "out.safetensors", plan=[{**row, "ndim": 4}])

    got = mx.load(str(tmp_path / "out.safetensors"))
    _assert_bit_equal(
        got["patch.proj.weight"], tensors["patch.proj.weight"].permute(0, 2, 3, 1), "conv"
    )
    _assert_bit_equal(got["ff.net.0.proj.weight"], tensors["ff.net.0.proj.weight"], "linear")
    assert report.transposed == ("patch.proj.weight",)


@pytest.mark.parametrize("ndim", [pytest.param(-1, id="negative"), pytest.param("4", id="str")])
def test_plan_row_ndim_must_be_a_rank(ndim) -> None:
    with pytest.raises(PorterError, match="not a rank"):
        LayoutPlan.coerce([{"pattern": "*.w", "transpose": [1, 0], "ndim": ndim}])


def _convert_cli(*argv: str) -> subprocess.CompletedProcess[str]:
    """``porter convert-weights`` in a child process, so that its stderr is the real one."""
    return subprocess.run(
        [sys.executable, "-m", "porter", "convert-weights", *argv],
        capture_output=True,
        text=True,
        check=False,
        cwd=Path(__file__).resolve().parent.parent,
    )


def test_conv_shaped_tensors_without_a_port_are_warned_about(tmp_path: Path) -> None:
    src, _ = _conv_checkpoint(tmp_path)
    proc = _convert_cli(str(src), "-o", str(tmp_path / "out.safetensors"))
    assert proc.returncode == 0, proc.stderr
    warnings = [line for line in proc.stderr.splitlines() if "--port" in line]
    assert len(warnings) == 1 and "1 tensor(s) of rank 3 to 5" in warnings[0], proc.stderr


def test_no_warning_without_conv_shaped_tensors(tmp_path: Path) -> None:
    src = _save(tmp_path / "model.safetensors", _tensors())
    proc = _convert_cli(str(src), "-o", str(tmp_path / "out.safetensors"))
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr


def test_a_port_whose_plan_matches_no_tensor_is_warned_about(tmp_path: Path) -> None:
    src, _ = _conv_checkpoint(tmp_path)
    port = tmp_path / "other_port"
    port.mkdir()
    (port / "weights.py").write_text(
        'LAYOUT_PLAN = [\n    {"pattern": "*.conv_in.weight", "transpose": [0, 2, 3, 1], "ndim": 4},\n'
        '    {"pattern": "*.conv_out.weight", "transpose": [0, 2, 3, 1], "ndim": 4},\n]\n'
    )
    proc = _convert_cli(str(src), "-o", str(tmp_path / "out.safetensors"), "--port", str(port))
    assert proc.returncode == 0, proc.stderr
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and "layout plan matched no tensor" in lines[0], proc.stderr
