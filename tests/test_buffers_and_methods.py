"""Buffers keep their state-dict role in MLX, and tensor methods MLX lacks are never kept
silently."""

from __future__ import annotations

import importlib.util
import sys
import textwrap
from pathlib import Path

import mlx.core as mx
import numpy as np
import pytest
import torch
from mlx.utils import tree_flatten

from porter.pipeline import port
from tests.porting import port_and_import

BUFFERS = """\
import torch
from torch import nn


class Scaled(nn.Module):
    def __init__(self, dim):
        super().__init__()
        self.proj = nn.Linear(dim, dim)
        self.register_buffer("offset", torch.zeros(dim))
        self.register_buffer("inv_freq", torch.arange(dim).float() / dim, persistent=False)

    def forward(self, x):
        return self.proj(x) * self.inv_freq + self.offset
"""


def _import(path: Path, name: str):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def test_buffers_load_strictly_and_match_torch(tmp_path) -> None:
    src = tmp_path / "scaled.py"
    src.write_text(BUFFERS)
    result = port(str(src), tmp_path / "scaled_port", command="t")
    assert result.ctx.findings == []
    code = result.files["scaled.py"]
    assert "self.offset = mx.zeros" in code and "self._inv_freq = " in code
    assert "* self._inv_freq + self.offset" in code

    torch_model = _import(src, "scaled_torch").Scaled(6)
    with torch.no_grad():
        torch_model.offset.copy_(torch.randn(6))  # a persistent buffer carries real values
    # torch's state dict has offset but not inv_freq; MLX's parameters must match it exactly.
    state = {k: mx.array(v.numpy()) for k, v in torch_model.state_dict().items()}
    assert "offset" in state and "inv_freq" not in state
    sys.path.insert(0, str(tmp_path))
    try:
        mlx_model = importlib.import_module("scaled_port.scaled").Scaled(6)
    finally:
        sys.path.remove(str(tmp_path))
    mlx_model.load_weights(list(state.items()), strict=True)
    x = torch.randn(3, 6)
    with torch.no_grad():
        reference = torch_model(x).numpy()
    err = float(np.abs(np.array(mlx_model(mx.array(x.numpy()))) - reference).max())
    print(f"buffers: max abs err {err:.3g}")
    assert err <= 1e-6  # one small float32 matmul


def test_tensor_methods_mlx_lacks_are_marked(tmp_path) -> None:
    src = tmp_path / "meth.py"
    src.write_text(
        textwrap.dedent(
            """\
            import torch


            def f(x, mask, names):
                y = x.masked_fill(mask, 0.0).addcmul(x, x)
                parts = names.split(".")
                return y.reshape(-1), parts
            """
        )
    )
    result = port(str(src), tmp_path / "out", command="t")
    messages = sorted(f.message.split(" ")[0] for f in result.ctx.findings)
    # masked_fill and addcmul are flagged; reshape (an mx.array method) and str.split are not.
    assert messages == ["Tensor.addcmul()", "Tensor.masked_fill()"]
    assert all(f.confidence == "mechanical" for f in result.ctx.findings)
    assert "# XXX(porter unported, mark-unported): Tensor.addcmul()" in result.files["meth.py"]


OUTSIDE_READ = """
import torch
from torch import nn


class Rope(nn.Module):
    def __init__(self, dim):
        super().__init__()
        self.register_buffer("freqs", torch.arange(dim).float() / dim, persistent=False)

    def forward(self, x):
        return x * self.freqs


class Block(nn.Module):
    def __init__(self, dim):
        super().__init__()
        self.rope = Rope(dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x):
        return self.proj(self.rope(x)) + self.rope.freqs
"""


@pytest.mark.parametrize(
    "register",
    [
        'self.register_buffer("freqs", torch.arange(dim).float() / dim, persistent=False)',
        "self.freqs = nn.Buffer(torch.arange(dim).float() / dim, persistent=False)",
    ],
    ids=["register_buffer", "nn.Buffer"],
)
def test_a_non_persistent_buffer_read_from_another_class_follows_the_rename(
    tmp_path, register: str
) -> None:
    source = OUTSIDE_READ.replace(
        'self.register_buffer("freqs", torch.arange(dim).float() / dim, persistent=False)', register
    )
    tm, mm, _ = port_and_import(tmp_path, "outside", source)
    torch_block = tm.Block(8)
    block = mm.Block(8)
    block.proj.weight = mx.array(torch_block.proj.weight.detach().numpy())
    block.proj.bias = mx.array(torch_block.proj.bias.detach().numpy())
    # The buffer stays out of the parameters, as it stays out of torch's state dict.
    state = {k for k, _ in tree_flatten(block.parameters())}
    assert state == set(torch_block.state_dict()) == {"proj.weight", "proj.bias"}
    x = torch.randn(2, 8, generator=torch.Generator().manual_seed(1))
    ref = torch_block(x).detach().numpy()
    err = float(np.abs(np.array(block(mx.array(x.numpy()))) - ref).max())
    print(f"buffer read from another class: max abs err {err:.2e}")
    assert err <= 1e-5
