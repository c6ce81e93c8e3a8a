"""Transitive porting: library code a model imports is ported from its own source into the
generated package, once, pruned to what the model needs, and runs like the original."""

from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path

import mlx.core as mx
import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from porter.cli import main
from porter.pipeline import port

# A small package: a model module that imports layers from a sibling module, which in turn
# uses a helper of its own and a layer from a third module.
PACKAGE = {
    "toylib/__init__.py": "",
    "toylib/ops.py": """\
import torch
from torch import nn


def scale_shift(x, scale, shift):
    return x * (1 + scale) + shift


class Unused(nn.Module):
    def forward(self, x):
        return x
""",
    "toylib/layers.py": """\
import math

import torch
import torch.nn.functional as F
from torch import nn

from .ops import scale_shift

HIDDEN_MULT = 2


def _inner(dim):
    return HIDDEN_MULT * dim


class Mlp(nn.Module):
    def __init__(self, dim):
        super().__init__()
        self.up = nn.Linear(dim, _inner(dim))
        self.down = nn.Linear(_inner(dim), dim)

    def forward(self, x):
        return self.down(F.silu(self.up(x)))


class Modulated(nn.Module):
    def __init__(self, dim):
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.mod = nn.Linear(dim, 2 * dim)

    def forward(self, x, c):
        scale, shift = self.mod(c).chunk(2, dim=-1)
        return scale_shift(self.norm(x), scale[:, None], shift[:, None])


class NotNeeded(nn.Module):
    pass


def sinusoid(t, dim):
    half = dim // 2
    freqs = torch.exp(-math.log(10000) * torch.arange(half, dtype=torch.float32) / half)
    args = t[:, None].float() * freqs[None]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
""",
    "toylib/model.py": """\
import torch
from torch import nn

from .layers import Mlp, Modulated, sinusoid


class Toy(nn.Module):
    def __init__(self, dim=16):
        super().__init__()
        self.dim = dim
        self.block = Modulated(dim)
        self.mlp = Mlp(dim)

    def forward(self, x, t):
        c = sinusoid(t, self.dim)
        return self.mlp(self.block(x, c))
""",
}


@pytest.fixture
def toylib(tmp_path, monkeypatch) -> Path:
    for name, text in PACKAGE.items():
        path = tmp_path / "src" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    monkeypatch.syspath_prepend(str(tmp_path / "src"))
    yield tmp_path
    for name in [m for m in sys.modules if m.split(".")[0] in ("toylib", "toy_port")]:
        del sys.modules[name]


def test_library_code_is_ported_once_pruned_and_runs_like_torch(toylib, capsys) -> None:
    out = toylib / "toy_port"
    report = toylib / "report.json"
    code = main(["port", "toylib.model", "-o", str(out), "--report", str(report)])
    assert code == 0, capsys.readouterr().err
    files = sorted(p.name for p in out.glob("*.py"))
    assert files == ["__init__.py", "layers.py", "model.py", "ops.py", "support.py", "weights.py"]

    layers = (out / "layers.py").read_text()
    # Only what the model needs: the two layers, the helper, its constant, the function.
    for kept in ("class Mlp", "class Modulated", "def _inner", "HIDDEN_MULT = 2", "def sinusoid"):
        assert kept in layers, kept
    assert "NotNeeded" not in layers and "class Unused" not in (out / "ops.py").read_text()
    assert "from .ops import scale_shift" in layers
    assert "from .layers import Mlp, Modulated, sinusoid" in (out / "model.py").read_text()
    for path in out.glob("*.py"):
        assert "import torch" not in path.read_text(), path

    data = json.loads(report.read_text())
    names = {n["name"]: n for n in data["names"]}
    assert names["toylib.layers.Mlp"]["resolution"] == "ported transitively"
    assert names["toylib.layers.Mlp"]["via"] == "layers.py"
    assert data["unported"] == []

    # The port runs and matches torch on the same weights.
    torch_model = importlib.import_module("toylib.model").Toy(16).eval()
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for param in torch_model.parameters():
            param.copy_(torch.randn(param.shape, generator=gen) * 0.2)
    sys.path.insert(0, str(toylib))
    try:
        mlx_model = importlib.import_module("toy_port.model").Toy(16)
    finally:
        sys.path.remove(str(toylib))
    weights = [(k, mx.array(v.numpy())) for k, v in torch_model.state_dict().items()]
    mlx_model.load_weights(weights, strict=True)
    x, t = torch.randn(2, 5, 16, generator=gen), torch.tensor([0.3, 7.0])
    with torch.no_grad():
        reference = torch_model(x, t).numpy()
    output = np.array(mlx_model(mx.array(x.numpy()), mx.array(t.numpy())))
    err = float(np.abs(reference - output).max())
    print(f"transitive toy model: max abs err {err:.3g}")
    # float32 through two small linear layers and a layer norm: 1e-5 leaves room for rounding.
    assert err <= 1e-5


def test_porter_check_covers_the_library_modules(toylib, capsys) -> None:
    out = toylib / "toy_port"
    assert main(["port", "toylib.model", "-o", str(out)]) == 0
    assert main(["check", str(out)]) == 0
    assert "6 files from 1 port up to date" in capsys.readouterr().out
    (out / "layers.py").write_text((out / "layers.py").read_text() + "# edited\n")
    assert main(["check", str(out)]) == 1
    assert "layers.py: edited by hand" in capsys.readouterr().out


def test_lumina2_ports_its_library_code_transitively(tmp_path) -> None:
    result = port("diffusers.models.transformers.transformer_lumina2", tmp_path, command="t")
    assert set(result.files) >= {"embeddings.py", "normalization.py", "attention.py"}
    resolved = {
        name for name, (how, _, _) in result.ctx.resolutions.items() if how.startswith("ported")
    }
    assert "diffusers.models.embeddings.apply_rotary_emb" in resolved
    assert "diffusers.models.normalization.LuminaRMSNormZero" in resolved
    embeddings = result.files["embeddings.py"]
    assert "def apply_rotary_emb" in embeddings and "class PatchEmbed" not in embeddings
    for name, text in result.files.items():
        compile(text, name, "exec")


# A library conv (a patch embedding in a sibling module) beside a Linear of the same attribute
# name elsewhere in the tree, and a position table whose persistence is a constructor argument.
CONV_PACKAGE = {
    "convlib/__init__.py": "",
    "convlib/embed.py": """\
import torch
from torch import nn


class Patchify(nn.Module):
    def __init__(self, c, dim, p, keep_table):
        super().__init__()
        self.proj = nn.Conv2d(c, dim, kernel_size=p, stride=p)
        table = torch.arange(16 * dim, dtype=torch.float32).reshape(1, 16, dim) / (16 * dim)
        self.register_buffer("table", table, persistent=keep_table)

    def forward(self, x):
        x = self.proj(x).flatten(2).transpose(1, 2)
        return x + self.table[:, : x.shape[1]]
""",
    "convlib/model.py": """\
import torch
from torch import nn

from .embed import Patchify


class Ff(nn.Module):
    def __init__(self, dim):
        super().__init__()
        self.proj = nn.Linear(dim, dim)

    def forward(self, x):
        return self.proj(x)


class ConvToy(nn.Module):
    def __init__(self, c=3, dim=8, keep_table=True):
        super().__init__()
        self.embed = Patchify(c, dim, 2, keep_table)
        self.ff = Ff(dim)

    def forward(self, x):
        return self.ff(self.embed(x))
""",
}


@pytest.mark.parametrize("keep_table", [True, False], ids=["persistent", "non-persistent"])
def test_library_convs_join_the_ports_layout_plan(tmp_path, monkeypatch, keep_table) -> None:
    for name, text in CONV_PACKAGE.items():
        path = tmp_path / "src" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    monkeypatch.syspath_prepend(str(tmp_path / "src"))
    monkeypatch.syspath_prepend(str(tmp_path))
    for name in [m for m in sys.modules if m.split(".")[0] in ("convlib", "conv_port")]:
        del sys.modules[name]
    out = tmp_path / "conv_port"
    result = port("convlib.model", out, command="t")
    assert [c.findings for c in [result.ctx, *result.library]] == [[], []]
    weights_py = (out / "weights.py").read_text()
    assert '{"pattern": "*.proj.weight", "transpose": [0, 2, 3, 1], "ndim": 4}' in weights_py

    torch_model = importlib.import_module("convlib.model").ConvToy(keep_table=keep_table).eval()
    gen = torch.Generator().manual_seed(5)
    with torch.no_grad():
        for param in torch_model.parameters():
            param.copy_(torch.randn(param.shape, generator=gen) * 0.3)
    assert ("embed.table" in torch_model.state_dict()) == keep_table
    save_file(torch_model.state_dict(), str(tmp_path / "torch.safetensors"))
    # The user's path: convert with the port's plan (the conv transposed, ff.proj passed
    # through), then a strict load.
    argv = ["convert-weights", str(tmp_path / "torch.safetensors")]
    assert main([*argv, "-o", str(tmp_path / "mlx.safetensors"), "--port", str(out)]) == 0
    mlx_model = importlib.import_module("conv_port.model").ConvToy(keep_table=keep_table)
    mlx_model.load_weights(str(tmp_path / "mlx.safetensors"), strict=True)

    x = torch.randn(2, 3, 8, 6, generator=gen)
    with torch.no_grad():
        reference = torch_model(x).numpy()
    output = np.array(mlx_model(mx.array(x.numpy())))
    err = float(np.abs(reference - output).max())
    print(f"library conv, NCHW in ({'persistent' if keep_table else 'computed'} table): {err:.3g}")
    assert err <= 1e-5


def test_a_sibling_module_is_followed_when_the_package_is_not_importable(tmp_path) -> None:
    """A user's project folder is not on sys.path: `from .helpers import scale` is still
    found beside the file, and ported."""
    from porter.pipeline import port

    pkg = tmp_path / "userpkg_not_on_path"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "helpers.py").write_text(
        "import torch\n\n\ndef scale(x):\n    return torch.cat([x, x], dim=-1)\n"
    )
    (pkg / "model.py").write_text(
        "from .helpers import scale\n\n\ndef f(x):\n    return scale(x) * 2\n"
    )
    result = port(str(pkg / "model.py"), tmp_path / "out", command="test")
    assert result.ctx.findings == []
    assert "mx.concatenate" in (tmp_path / "out" / "helpers.py").read_text()
    assert "from .helpers import scale" in (tmp_path / "out" / "model.py").read_text()
