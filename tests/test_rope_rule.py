"""rewrite_complex_rope on spellings other than diffusers', executed against PyTorch.

Each source below is written for these tests in a different style from Z-Image's: a Meta-style
``reshape_for_broadcast`` helper with ``freqs_cis`` passed in from outside, and a class-based
axial table with other names, ``unflatten``, Ellipsis indexing and a negative ``flatten``. Both
are ported by porter to a package in a temporary folder, imported, and run on the same inputs.
"""

from __future__ import annotations

from pathlib import Path

import mlx.core as mx
import numpy as np
import pytest
import torch

from tests.porting import port_and_import

META_STYLE = """
import torch


def precompute_freqs_cis(dim: int, end: int, theta: float = 10000.0):
    freqs = 1.0 / (theta ** (torch.arange(0, dim, 2)[: (dim // 2)].float() / dim))
    t = torch.arange(end, device=freqs.device)
    freqs = torch.outer(t, freqs).float()
    freqs_cis = torch.polar(torch.ones_like(freqs), freqs)
    return freqs_cis


def reshape_for_broadcast(freqs_cis, x):
    ndim = x.ndim
    assert 0 <= 1 < ndim
    assert freqs_cis.shape == (x.shape[1], x.shape[-1])
    shape = [d if i == 1 or i == ndim - 1 else 1 for i, d in enumerate(x.shape)]
    return freqs_cis.view(*shape)


def apply_rotary_emb(xq, xk, freqs_cis):
    xq_ = torch.view_as_complex(xq.float().reshape(*xq.shape[:-1], -1, 2))
    xk_ = torch.view_as_complex(xk.float().reshape(*xk.shape[:-1], -1, 2))
    freqs_cis = reshape_for_broadcast(freqs_cis, xq_)
    xq_out = torch.view_as_real(xq_ * freqs_cis).flatten(3)
    xk_out = torch.view_as_real(xk_ * freqs_cis).flatten(3)
    return xq_out.type_as(xq), xk_out.type_as(xk)
"""

AXIAL_STYLE = """
import torch
from torch import nn


class AxialRotary(nn.Module):
    def __init__(self, dims, base=10000.0):
        super().__init__()
        self.dims = dims
        self.base = base

    def table(self, positions, dim):
        inv = self.base ** (-torch.arange(0, dim, 2, dtype=torch.float64) / dim)
        angles = positions[:, None].float() * inv[None, :].float()
        return torch.polar(torch.ones_like(angles), angles).to(torch.complex64)

    def forward(self, pos):
        parts = [self.table(pos[:, i], d) for i, d in enumerate(self.dims)]
        return torch.cat(parts, dim=-1)


def rotate(q, rot):
    qc = torch.view_as_complex(q.float().unflatten(-1, (-1, 2)))
    out = qc * rot[None, None, ...]
    return torch.view_as_real(out).flatten(-2).to(q.dtype)
"""

# float32 rotations of O(1) values: both sides compute the same products and sums, so only
# rounding of cos/sin and of two products differs. 1e-5 x max(1, max|ref|) leaves room for that
# and nothing else; a half-split pairing or a wrong axis is off by O(1).
TOLERANCE = 1e-5


def _check(name: str, ref: torch.Tensor, out: mx.array) -> None:
    ref_np, out_np = ref.detach().numpy(), np.array(out)
    assert ref_np.shape == out_np.shape
    err = float(np.abs(ref_np - out_np).max())
    bound = TOLERANCE * max(1.0, float(np.abs(ref_np).max()))
    print(f"{name}: max abs err {err:.3e} (bound {bound:.3e})")
    assert err <= bound, f"{name}: max abs err {err:.3e} > {bound:.3e}"


def test_meta_style_reshape_for_broadcast(tmp_path: Path) -> None:
    tm, mm, _ = port_and_import(tmp_path, "meta_rope", META_STYLE)
    code = (tmp_path / "meta_rope" / "meta_rope_src.py").read_text()
    assert "view_as_complex" not in code and "polar" not in code and "complex_mul(" in code
    torch.manual_seed(0)
    xq, xk = torch.randn(2, 16, 4, 32), torch.randn(2, 16, 4, 32)
    ref_q, ref_k = tm.apply_rotary_emb(xq, xk, tm.precompute_freqs_cis(32, 16))
    out_q, out_k = mm.apply_rotary_emb(
        mx.array(xq.numpy()), mx.array(xk.numpy()), mm.precompute_freqs_cis(32, 16)
    )
    _check("meta q", ref_q, out_q)
    _check("meta k", ref_k, out_k)


def test_axial_style_other_names_and_ellipsis(tmp_path: Path) -> None:
    tm, mm, _ = port_and_import(tmp_path, "axial_rope", AXIAL_STYLE)
    torch.manual_seed(1)
    pos = torch.stack([torch.arange(12) // 4, torch.arange(12) % 4 + 100, torch.arange(12)], -1)
    q = torch.randn(2, 3, 12, 40)
    ref_rot = tm.AxialRotary([8, 16, 16])(pos)
    out_rot = mm.AxialRotary([8, 16, 16])(mx.array(pos.numpy()))
    _check("axial table", torch.view_as_real(ref_rot), out_rot)
    _check("axial rotate", tm.rotate(q, ref_rot), mm.rotate(mx.array(q.numpy()), out_rot))


def test_half_split_pairing_would_be_caught() -> None:
    """The metric above separates interleaved from half-split pairing by far more than TOLERANCE."""
    torch.manual_seed(2)
    x = torch.randn(1, 8, 1, 16)
    angles = torch.randn(8, 8)
    cis = torch.polar(torch.ones_like(angles), angles)[None, :, None, :]
    inter = torch.view_as_real(torch.view_as_complex(x.reshape(1, 8, 1, 8, 2)) * cis).flatten(3)
    x1, x2 = x[..., :8], x[..., 8:]
    cos, sin = cis.real, cis.imag
    half = torch.cat([x1 * cos - x2 * sin, x1 * sin + x2 * cos], -1)
    with pytest.raises(AssertionError):
        _check("half-split", inter, mx.array(half.numpy()))
