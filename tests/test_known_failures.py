"""Bugs that hand ports of PyTorch models keep making, each ported by porter and executed.

Every test ports a small torch source with porter into a package in a temporary folder,
imports the generated MLX module next to the torch original, runs both on the same seeded
random input and compares them with a stated tolerance, printing the error it measured. The
comment above each test names the classic hand-port bug it guards against.
"""

from __future__ import annotations

import importlib
import importlib.util
from pathlib import Path

import mlx.core as mx
import numpy as np
import pytest
import torch
from mlx.utils import tree_flatten
from safetensors.torch import save_file

from porter.weights import convert_weights
from tests.porting import port_and_import


def _code(tmp_path: Path, name: str) -> str:
    return (tmp_path / name / f"{name}_src.py").read_text()


def _mx(t: torch.Tensor) -> mx.array:
    return mx.array(t.detach().numpy())


def _err(label: str, ref: torch.Tensor, out: mx.array, tol: float, absolute: bool = False) -> float:
    """Max abs error of ``out`` against ``ref``; fails above ``tol`` x max(1, max |ref|), or
    above ``tol`` itself when ``absolute``."""
    ref_np = ref.detach().float().numpy()
    out_np = np.array(out.astype(mx.float32))
    assert ref_np.shape == out_np.shape, (ref_np.shape, out_np.shape)
    err = float(np.abs(ref_np - out_np).max()) if ref_np.size else 0.0
    scale = max(1.0, float(np.abs(ref_np).max())) if ref_np.size and not absolute else 1.0
    bound = tol * scale
    print(f"{label}: max abs err {err:.3e} (bound {bound:.3e})")
    assert err <= bound, f"{label}: max abs err {err:.3e} > {bound:.3e}"
    return err


def _same_pieces(label: str, ref, out) -> None:
    assert len(ref) == len(out), f"{label}: {len(out)} pieces, torch has {len(ref)}"
    for r, o in zip(ref, out):
        _err(label, r, o, 0.0)


def _randomize(module: torch.nn.Module, seed: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in module.parameters():
            param.copy_(torch.randn(param.shape, generator=gen) * 0.5 + 0.1)


def _load_state_dict(model, torch_model: torch.nn.Module) -> None:
    weights = [(k, _mx(v)) for k, v in torch_model.state_dict().items()]
    model.load_weights(weights, strict=True)


# 1. GroupNorm: a hand port writes mlx.nn.GroupNorm(groups, C), which normalizes the last axis
# (channels-last) and groups channels strided unless pytorch_compatible=True, and drops eps.
# Porter keeps torch's channels-first layout (support GroupNorm, same grouping, `weight`/`bias`).
GROUP_NORM = """
import torch
import torch.nn.functional as F
from torch import nn


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.norm = nn.GroupNorm(4, 8, eps=1e-2)

    def forward(self, x):
        return self.norm(x)


def functional(x, w, b):
    return F.group_norm(x, 2, w, b, eps=1e-3)
"""


@pytest.mark.parametrize("shape", [(2, 8, 5), (2, 8, 3, 4)], ids=["NCL", "NCHW"])
def test_group_norm_channels_first_torch_grouping(tmp_path: Path, shape) -> None:
    tm, mm, _ = port_and_import(tmp_path, "gn", GROUP_NORM)
    torch_net = tm.Net()
    _randomize(torch_net, 0)
    net = mm.Net()
    _load_state_dict(net, torch_net)
    assert sorted(k for k, _ in tree_flatten(net.parameters())) == ["norm.bias", "norm.weight"]
    x = torch.randn(*shape, generator=torch.Generator().manual_seed(1)) * 3 + 1
    _err(f"GroupNorm {shape}", torch_net(x), net(_mx(x)), 1e-5)
    w, b = torch.randn(8), torch.randn(8)
    _err(
        f"F.group_norm {shape}",
        tm.functional(x, w, b),
        mm.functional(_mx(x), *map(_mx, (w, b))),
        1e-5,
    )


# 2. LayerNorm(dim, elementwise_affine=False): MLX spells it affine=False; a hand port that
# keeps the default affine=True gets parameters the checkpoint lacks, and a dropped eps shows
# on small-variance input.
LAYER_NORM = """
from torch import nn


class Net(nn.Module):
    def __init__(self, dim):
        super().__init__()
        self.plain = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-2)
        self.no_bias = nn.LayerNorm(dim, 1e-3, bias=False)

    def forward(self, x):
        return self.no_bias(self.plain(x))
"""


def test_layer_norm_without_affine_and_eps(tmp_path: Path) -> None:
    tm, mm, _ = port_and_import(tmp_path, "ln", LAYER_NORM)
    torch_net = tm.Net(16)
    _randomize(torch_net, 2)
    net = mm.Net(16)
    _load_state_dict(net, torch_net)
    assert sorted(k for k, _ in tree_flatten(net.parameters())) == ["no_bias.weight"]
    x = torch.randn(3, 5, 16, generator=torch.Generator().manual_seed(3)) * 0.05
    _err("LayerNorm affine=False eps=1e-2", torch_net(x), net(_mx(x)), 1e-5)


# 2b. Norm classes as models use them: diffusers' FP32LayerNorm subclasses nn.LayerNorm and reads
# normalized_shape, weight and bias (None without affine), which mlx.nn.LayerNorm spells dims and
# affine and leaves unset; torch.nn.RMSNorm's eps=None means the dtype's machine epsilon.
NORM_CLASSES = """
import torch
import torch.nn.functional as F
from torch import nn


class FP32LayerNorm(nn.LayerNorm):
    def forward(self, x):
        return F.layer_norm(
            x.float(),
            self.normalized_shape,
            self.weight.float() if self.weight is not None else None,
            self.bias.float() if self.bias is not None else None,
            self.eps,
        ).to(x.dtype)


class Net(nn.Module):
    def __init__(self, dim):
        super().__init__()
        self.affine = FP32LayerNorm(dim, eps=1e-3)
        self.plain = FP32LayerNorm(dim, 1e-2, elementwise_affine=False)
        self.rms = torch.nn.RMSNorm(dim, eps=1e-4)
        self.rms_default = torch.nn.RMSNorm([dim])
        self.rms_plain = torch.nn.RMSNorm(dim, elementwise_affine=False)

    def forward(self, x):
        head, tail = x.split_with_sizes([3, x.shape[1] - 3], dim=1)
        x = torch.cat([tail, head], dim=1)
        return self.rms_plain(self.rms_default(self.rms(self.plain(self.affine(x)))))
"""


def test_norm_subclasses_and_torch_rms_norm(tmp_path: Path) -> None:
    tm, mm, _ = port_and_import(tmp_path, "norms", NORM_CLASSES)
    torch_net = tm.Net(16)
    _randomize(torch_net, 4)
    net = mm.Net(16)
    _load_state_dict(net, torch_net)
    assert sorted(k for k, _ in tree_flatten(net.parameters())) == [
        "affine.bias",
        "affine.weight",
        "rms.weight",
        "rms_default.weight",
    ]
    # Small-variance rows make a wrong or dropped eps visible.
    x = torch.randn(3, 7, 16, generator=torch.Generator().manual_seed(5)) * 0.01
    _err("LayerNorm subclass + torch.nn.RMSNorm", torch_net(x), net(_mx(x)), 1e-5)


# 3. GELU(approximate="tanh"): MLX's nn.gelu is the exact erf form; torch's tanh form is MLX's
# gelu_approx ("precise"/"tanh"), not gelu_fast_approx ("fast", a sigmoid form). A hand port
# that picks either wrong one is off by up to 5e-4 or 1.5e-2.
GELU = """
import torch.nn.functional as F
from torch import nn


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.tanh = nn.GELU(approximate="tanh")
        self.exact = nn.GELU()

    def forward(self, x):
        return self.tanh(x), self.exact(x)


def functional(x):
    return F.gelu(x, approximate="tanh"), F.gelu(x), F.gelu(x, approximate="none")
"""

GELU_RUNTIME = """
import torch.nn.functional as F


def activate(x, approximate):
    return F.gelu(x, approximate=approximate)
"""


def test_gelu_tanh_approximation(tmp_path: Path) -> None:
    tm, mm, _ = port_and_import(tmp_path, "gelu", GELU)
    code = _code(tmp_path, "gelu")
    assert "nn.gelu_approx(x)" in code and 'nn.GELU(approx="tanh")' in code
    x = torch.linspace(-6, 6, 2001)
    refs = [*tm.Net()(x), *tm.functional(x)]
    outs = [*mm.Net()(_mx(x)), *mm.functional(_mx(x))]
    for label, ref, out in zip(["nn tanh", "nn exact", "F tanh", "F exact", "F none"], refs, outs):
        _err(f"GELU {label}", ref, out, 1e-6, absolute=True)


def test_gelu_runtime_approximate_dispatches_like_torch(tmp_path: Path) -> None:
    # Which form applies depends on a value known only at run time: the support gelu takes it.
    tm, mm, _ = port_and_import(tmp_path, "gelu_rt", GELU_RUNTIME)
    assert "gelu(x, approximate=approximate)" in _code(tmp_path, "gelu_rt")
    x = torch.linspace(-6, 6, 241)
    for approximate in ("none", "tanh"):
        ref = tm.activate(x, approximate)
        out = mm.activate(_mx(x), approximate)
        _err(f"GELU approximate={approximate!r} at run time", ref, out, 1e-6, absolute=True)


# 4. scaled_dot_product_attention: a hand port forgets the default scale 1/sqrt(head_dim),
# inverts a boolean mask (True means attend in torch and in MLX), or passes mask="causal",
# which MLX aligns bottom-right where torch's is_causal aligns top-left (they differ when
# seq_q != seq_k).
SDPA = """
import torch.nn.functional as F


def attend(q, k, v, mask=None, causal=False):
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal)
"""


def _bool_mask(q_len: int, k_len: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(7)
    mask = torch.rand(2, 1, q_len, k_len, generator=gen) > 0.4
    mask[..., 0] = True  # every query keeps one key: a fully masked row is undefined
    return mask


@pytest.mark.parametrize(
    ("q_len", "mask", "causal"),
    [
        pytest.param(6, None, False, id="default-scale"),
        pytest.param(6, "bool", False, id="bool-mask"),
        pytest.param(4, "bool", False, id="bool-mask-cross-len"),
        pytest.param(6, "float", False, id="additive-mask"),
        pytest.param(6, None, True, id="causal"),
        pytest.param(3, None, True, id="causal-short-query-top-left"),
    ],
)
def test_sdpa_masks_causal_and_scale(tmp_path: Path, q_len: int, mask, causal: bool) -> None:
    tm, mm, _ = port_and_import(tmp_path, "sdpa", SDPA)
    gen = torch.Generator().manual_seed(5)
    q = torch.randn(2, 3, q_len, 16, generator=gen) * 2
    k, v = torch.randn(2, 3, 6, 16, generator=gen) * 2, torch.randn(2, 3, 6, 16, generator=gen)
    m = None
    if mask == "bool":
        m = _bool_mask(q_len, 6)
    elif mask == "float":
        m = torch.randn(2, 1, q_len, 6, generator=gen) * 2
    ref = tm.attend(q, k, v, m, causal)
    out = mm.attend(*map(_mx, (q, k, v)), None if m is None else _mx(m), causal)
    _err(f"sdpa q_len={q_len} mask={mask} causal={causal}", ref, out, 1e-5)


# 5. split with a list of sizes: torch takes piece lengths, mx.split takes split indices, so a
# hand port passing [2, 3] to mx.split cuts at 2 and 3 (pieces of 2, 1, 2).
# 6. chunk of an uneven size: torch gives ceil(n / k)-long pieces with a shorter last one (and
# possibly fewer than k pieces); mx.split(x, k) raises. Porter always calls the support chunk:
# whether k divides is a run-time fact.
# 7. repeat vs repeat_interleave: x.repeat tiles the whole tensor (mx.tile), repeat_interleave
# repeats each element (mx.repeat); a hand port swaps them.
# 8. expand with -1: -1 keeps that axis; mx.broadcast_to has no -1.
SHAPE_OPS = """
import torch


def splits(x):
    return torch.split(x, [2, 3], dim=1), x.split([1, 4], 1), x.split(2, dim=1)


def chunks(x):
    return torch.chunk(x, 3, dim=1), x.chunk(4, dim=1), x.chunk(5, -1)


def repeats(x):
    return x.repeat(2, 1, 3), x.repeat_interleave(2, dim=1), torch.repeat_interleave(x, 3, dim=-1)


def expands(x):
    return x[:, None].expand(-1, 4, -1, -1), x[:1].expand(3, -1, -1)
"""


@pytest.mark.parametrize("fn", ["splits", "chunks", "repeats", "expands"])
def test_shape_ops(tmp_path: Path, fn: str) -> None:
    tm, mm, _ = port_and_import(tmp_path, "shape_ops", SHAPE_OPS)
    x = torch.randn(2, 5, 7, generator=torch.Generator().manual_seed(9))
    refs, outs = getattr(tm, fn)(x), getattr(mm, fn)(_mx(x))
    for i, (ref, out) in enumerate(zip(refs, outs)):
        if isinstance(ref, tuple):
            _same_pieces(f"{fn}[{i}]", ref, out)
        else:
            _err(f"{fn}[{i}]", ref, out, 0.0)


# 9. Integer positions cast to the model dtype: in bfloat16 position 4095 is 4096, so every
# sin/cos row past 256 is off. compute_positions_in_float32 casts proven-integer positions to
# float32, so the ported table in a bfloat16 model matches torch's float32 table.
POSITIONS = """
import torch


def sincos_table(x, seq_len, dim):
    inv_freq = 1.0 / (10000 ** (torch.arange(0, dim, 2).float() / dim))
    t = torch.arange(seq_len, device=x.device).to(x.dtype)
    freqs = t[:, None] * inv_freq[None, :]
    return torch.cat([freqs.cos(), freqs.sin()], dim=-1)
"""


def test_integer_positions_stay_float32_in_a_bf16_model(tmp_path: Path) -> None:
    tm, mm, _ = port_and_import(tmp_path, "positions", POSITIONS)
    assert "mx.arange(seq_len).astype(mx.float32)" in _code(tmp_path, "positions")
    ref = tm.sincos_table(torch.zeros(1, dtype=torch.float32), 4096, 64)
    out = mm.sincos_table(mx.zeros((1,), dtype=mx.bfloat16), 4096, 64)
    assert out.dtype == mx.float32
    # Both compute the same float32 angles; sin/cos of angles up to 4096 rad may still differ
    # in the last bits between the two libraries.
    _err("sin-cos table, bf16 model vs torch float32", ref, out, 1e-5)
    wrong = tm.sincos_table(torch.zeros(1, dtype=torch.bfloat16), 4096, 64)
    lost = float((wrong - ref).abs().max())
    print(f"torch itself with bf16 positions: max abs err {lost:.3e}")
    assert lost > 0.5


# 10. float64 frequency tables: MLX has no float64 on the GPU, and a hand port that computes
# the table in float32 is off by ~1e-3 at large positions. compute_float64_in_numpy builds it
# in NumPy float64, which matches torch's float64 to the last bit.
FLOAT64 = """
import torch


def sincos64(n, dim, theta=10000.0):
    freqs = 1.0 / (theta ** (torch.arange(0, dim, 2, dtype=torch.float64) / dim))
    t = torch.arange(n, dtype=torch.float64)
    angles = torch.outer(t, freqs)
    return torch.cat([torch.cos(angles), torch.sin(angles)], dim=-1).float()
"""


def test_float64_tables_match_torch(tmp_path: Path) -> None:
    tm, mm, _ = port_and_import(tmp_path, "float64", FLOAT64)
    assert "np.float64" in _code(tmp_path, "float64")
    ref = tm.sincos64(8192, 64)
    _err("float64 sin-cos table", ref, mm.sincos64(8192, 64), 1e-6)
    inv = 1.0 / (10000.0 ** (torch.arange(0, 64, 2, dtype=torch.float32) / 64))
    angles32 = torch.outer(torch.arange(8192, dtype=torch.float32), inv)
    in32 = torch.cat([torch.cos(angles32), torch.sin(angles32)], dim=-1)
    err32 = float((in32 - ref).abs().max())
    print(f"the same table in float32: max abs err {err32:.3e}")
    assert err32 > 1e-4


# 10b. A float64 dtype chosen at run time: models pick float32 when torch's MPS backend is
# available (it has no float64) and float64 elsewhere, then pass the dtype on. MLX's GPU lacks
# float64 as MPS does; folding the probe to False sends a Mac down the float64 path, which
# fails there. The port asks MLX's default device instead.
MPS_PROBE = """
import torch


def angles(n, dim, theta=10000.0):
    dtype = torch.float32 if torch.backends.mps.is_available() else torch.float64
    freqs = 1.0 / (theta ** (torch.arange(0, dim, 2, dtype=dtype) / dim))
    return torch.outer(torch.arange(n, dtype=dtype), freqs)
"""


def test_mps_probe_chooses_float32_on_the_gpu(tmp_path: Path, monkeypatch) -> None:
    tm, mm, _ = port_and_import(tmp_path, "mps_probe", MPS_PROBE)
    code = _code(tmp_path, "mps_probe")
    assert "mx.float32 if mps_is_available() else mx.float64" in code
    ref = tm.angles(64, 16)
    out = mm.angles(64, 16)
    assert out.dtype == mx.float64  # MLX on the CPU: torch's non-MPS path
    _err("float64 angles on the CPU", ref, out, 1e-12)
    support = importlib.import_module("mps_probe.support")
    monkeypatch.setattr(support.mx, "default_device", lambda: mx.Device(mx.DeviceType.gpu))
    assert support.mps_is_available()
    assert support.maybe_adjust_dtype_for_device(mx.float64) == mx.float32
    assert support.maybe_adjust_dtype_for_device(mx.float16) == mx.float16


# 11. nn.Sequential / nn.ModuleList: a hand port writes nn.Sequential in MLX (keys become
# mlp.layers.0.weight) or renames blocks, so torch's state_dict no longer loads strictly.
CONTAINERS = """
import torch
from torch import nn


class Block(nn.Module):
    def __init__(self, dim):
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x):
        return x + self.proj(self.norm(x))


class Net(nn.Module):
    def __init__(self, dim):
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(approximate="tanh"), nn.Linear(2 * dim, dim))
        self.blocks = nn.ModuleList([Block(dim) for _ in range(2)])

    def forward(self, x):
        x = self.mlp(x)
        for block in self.blocks:
            x = block(x)
        return x
"""


def test_sequential_and_module_list_keep_torch_names(tmp_path: Path) -> None:
    tm, mm, _ = port_and_import(tmp_path, "containers", CONTAINERS)
    torch_net = tm.Net(8)
    _randomize(torch_net, 11)
    net = mm.Net(8)
    keys = {k for k, _ in tree_flatten(net.parameters())}
    assert keys == set(torch_net.state_dict())
    assert {"mlp.0.weight", "mlp.2.bias", "blocks.1.proj.weight"} <= keys
    _load_state_dict(net, torch_net)
    x = torch.randn(2, 3, 8, generator=torch.Generator().manual_seed(12))
    _err("Sequential + ModuleList", torch_net(x), net(_mx(x)), 1e-5)


# 12. Convolutions: MLX convolves channels-last with weights [out, kH, kW, in]; a hand port
# feeds NCHW activations or torch-layout weights. Porter's Conv2d/Conv1d take torch's
# channels-first input and hold MLX-layout weights, and plan_conv_layouts writes the
# LAYOUT_PLAN rows that convert_weights applies: save -> convert -> strict load -> same output.
CONV = """
import torch
from torch import nn


class Net(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.proj = nn.Conv2d(c, 2 * c, kernel_size=1)
        self.body = nn.Sequential(nn.Conv2d(2 * c, c, 3, padding=1), nn.SiLU())
        self.stride = nn.Conv2d(c, c, 3, stride=2, padding="valid", bias=False)

    def forward(self, x):
        return self.stride(self.body(self.proj(x)))


class Net1d(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.convs = nn.ModuleList([nn.Conv1d(c, c, 3, padding="same") for _ in range(2)])

    def forward(self, x):
        for conv in self.convs:
            x = conv(x)
        return x
"""


@pytest.mark.parametrize(
    ("cls", "shape"), [("Net", (2, 4, 9, 7)), ("Net1d", (2, 4, 11))], ids=["conv2d", "conv1d"]
)
def test_conv_layout_plan_end_to_end(tmp_path: Path, cls: str, shape) -> None:
    tm, mm, _ = port_and_import(tmp_path, "conv", CONV)
    weights_mod = importlib.import_module("conv.weights")
    assert weights_mod.LAYOUT_PLAN == [
        {"pattern": "*.proj.weight", "transpose": [0, 2, 3, 1], "ndim": 4},
        {"pattern": "*.body.0.weight", "transpose": [0, 2, 3, 1], "ndim": 4},
        {"pattern": "*.stride.weight", "transpose": [0, 2, 3, 1], "ndim": 4},
        {"pattern": "*.convs.*.weight", "transpose": [0, 2, 1], "ndim": 3},
    ]
    torch_net = getattr(tm, cls)(4)
    _randomize(torch_net, 13)
    save_file(torch_net.state_dict(), str(tmp_path / "torch.safetensors"))
    plan = [
        row for row in weights_mod.LAYOUT_PLAN if (cls == "Net1d") == ("convs" in row["pattern"])
    ]
    report = convert_weights(
        tmp_path / "torch.safetensors", tmp_path / "mlx.safetensors", plan=plan
    )
    assert report.transposed and not report.unmatched_patterns
    net = getattr(mm, cls)(4)
    net.load_weights(str(tmp_path / "mlx.safetensors"), strict=True)
    x = torch.randn(*shape, generator=torch.Generator().manual_seed(14))
    _err(f"{cls} NC* in, NC* out", torch_net(x), net(_mx(x)), 1e-5)


def test_convert_weights_command_applies_the_ports_layout_plan(tmp_path: Path, capsys) -> None:
    """The command-line path a user takes: `porter convert-weights SRC -o DST --port DIR`."""
    from porter.cli import main

    source = CONV.split("class Net1d")[0]
    tm, mm, _ = port_and_import(tmp_path, "conv", source)
    torch_net = tm.Net(4)
    _randomize(torch_net, 21)
    save_file(torch_net.state_dict(), str(tmp_path / "torch.safetensors"))
    argv = ["convert-weights", str(tmp_path / "torch.safetensors"), "-o"]
    assert main([*argv, str(tmp_path / "mlx.safetensors"), "--port", str(tmp_path / "conv")]) == 0
    assert "transposed 3" in capsys.readouterr().out
    net = mm.Net(4)
    net.load_weights(str(tmp_path / "mlx.safetensors"), strict=True)
    x = torch.randn(2, 4, 9, 7, generator=torch.Generator().manual_seed(22))
    _err("Net via the convert-weights command", torch_net(x), net(_mx(x)), 1e-5)

    # Without --port the torch layout is kept and the strict load fails on the first conv.
    assert main([*argv, str(tmp_path / "raw.safetensors")]) == 0
    with pytest.raises(ValueError):
        mm.Net(4).load_weights(str(tmp_path / "raw.safetensors"), strict=True)
    capsys.readouterr()
    assert main([*argv, str(tmp_path / "x.safetensors"), "--port", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert (
        err
        == f"porter: error: {tmp_path / 'weights.py'}: cannot read the port's weights.py: No such file or directory"
    )


# 13. A model function named like a support helper: `def chunk(x)` beside `x.chunk(2)` would
# call itself once the support import shadowed it (or be shadowed). The support name is
# imported under an alias instead.
NAME_CLASH = """
import torch
import torch.nn.functional as F


def chunk(x):
    a, b = x.chunk(2, dim=-1)
    return a * F.gelu(b, approximate="tanh")


def gelu(x, layer_norm=None):
    return F.gelu(chunk(x)) + F.layer_norm(x[..., :4], (4,))
"""


def test_support_names_do_not_shadow_model_functions(tmp_path: Path) -> None:
    tm, mm, _ = port_and_import(tmp_path, "clash", NAME_CLASH)
    code = _code(tmp_path, "clash")
    assert "from .support import chunk as chunk_, layer_norm as layer_norm_" in code
    x = torch.randn(3, 8, generator=torch.Generator().manual_seed(11))
    _err("model functions named chunk and gelu", tm.gelu(x), mm.gelu(_mx(x)), 1e-5)
