"""Golden tests for generated/z_image beyond the full-model cases.

The full-model comparisons (basic mode and omni mode, batch 2, the user's path through
`save_pretrained`, `porter convert-weights` and a strict `load_model`) are rendered by porter
from the z-image recipe into generated/z_image/test_golden_transformer_z_image.py. This file
checks that those cases really take the padded, masked path, and compares one transformer block
and the RoPE table at the real Z-Image sizes. Every comparison prints the error it saw
(`pytest -s`).

Tolerance for the block: float32 on both sides, 1e-4 × max(1, max |reference|), the bound of
the full-model cases; one block is well inside it (~2e-5), the bound leaves room for BLAS
accumulation order at width 3840.
"""

from __future__ import annotations

import time

import mlx.core as mx
import numpy as np
import pytest
import torch
from diffusers.models.transformers import transformer_z_image as torch_z

import generated.z_image.transformer_z_image as mlx_z
from generated.z_image import RopeEmbedder, ZImageTransformer2DModel, ZImageTransformerBlock
from generated.z_image.test_golden_transformer_z_image import BASIC_BATCH2, OMNI_SIGLIP_BATCH2
from porter.golden import GoldenCase, assert_close, compare, randomize_, state_dict_to_mx, to_mx

# End-to-end float32 bound, relative to the output scale (see the module docstring).
REL_FLOAT32 = 1e-4

# The real Z-Image sizes (diffusers' defaults for ZImageTransformer2DModel).
REAL_DIM, REAL_HEADS = 3840, 30
REAL_ROPE = {"theta": 256.0, "axes_dims": [32, 48, 48], "axes_lens": [1024, 512, 512]}


def randn(gen: torch.Generator, *shape: int) -> torch.Tensor:
    return torch.randn(*shape, generator=gen)


@pytest.fixture
def attention_masks(monkeypatch) -> list[mx.array | None]:
    """Records the mask of every attention call the MLX model makes."""
    seen: list[mx.array | None] = []
    inner = mlx_z.dispatch_attention_fn

    def recording(query, key, value, attn_mask=None, **kwargs):
        seen.append(attn_mask)
        return inner(query, key, value, attn_mask=attn_mask, **kwargs)

    monkeypatch.setattr(mlx_z, "dispatch_attention_fn", recording)
    return seen


def run_mlx(case: GoldenCase, **overrides):
    """The MLX model alone on a golden case's inputs (default init: only control flow matters)."""
    model = ZImageTransformer2DModel(**case.config)
    args, kwargs = case.inputs(torch.Generator().manual_seed(case.seed + 1))
    return model, model(*to_mx(args), **{**to_mx(kwargs), **overrides})


@pytest.mark.parametrize(
    ("case", "calls"),
    [
        (BASIC_BATCH2, 2 * 1 + 2),  # two refiners x 1 layer, then 2 main layers
        (OMNI_SIGLIP_BATCH2, 3 * 1 + 2),  # omni adds the SigLIP refiner
    ],
    ids=["basic", "omni"],
)
def test_golden_cases_take_the_masked_path(case, calls, attention_masks):
    """Each attention call of the rendered golden cases gets a boolean mask that hides keys:
    padding, pad tokens and the mask are all part of what those cases compare."""
    run_mlx(case)
    assert len(attention_masks) == calls, f"{len(attention_masks)} attention calls, not {calls}"
    for i, mask in enumerate(attention_masks):
        assert mask is not None, f"attention call {i} ran without a mask"
        assert mask.dtype == mx.bool_ and not mx.all(mask).item(), f"call {i}: mask hides nothing"


def test_return_dict_gives_the_same_sample():
    model, (output,) = run_mlx(BASIC_BATCH2)
    args, kwargs = BASIC_BATCH2.inputs(torch.Generator().manual_seed(BASIC_BATCH2.seed + 1))
    result = model(*to_mx(args), **{**to_mx(kwargs), "return_dict": True})
    assert all(mx.array_equal(a, b).item() for a, b in zip(output, result.sample, strict=True))


def test_transformer_block_at_real_dims_matches_diffusers():
    start = time.perf_counter()
    torch.manual_seed(20)
    args = {
        "dim": REAL_DIM,
        "n_heads": REAL_HEADS,
        "n_kv_heads": REAL_HEADS,
        "norm_eps": 1e-5,
        "qk_norm": True,
    }
    torch_block = torch_z.ZImageTransformerBlock(0, modulation=True, **args).eval()
    randomize_(torch_block, seed=20)
    mlx_block = ZImageTransformerBlock(0, modulation=True, **args)
    mlx_block.load_weights(state_dict_to_mx(torch_block), strict=True)
    mlx_block.eval()

    gen = torch.Generator().manual_seed(21)
    seq = 32
    x = randn(gen, 1, seq, REAL_DIM)
    adaln = randn(gen, 1, torch_z.ADALN_EMBED_DIM)
    ids = torch.stack(
        [torch.randint(0, n, (seq,), generator=gen) for n in REAL_ROPE["axes_lens"]], dim=-1
    ).to(torch.int32)
    mask = torch.ones(1, seq, dtype=torch.bool)
    mask[0, 3] = False
    mask[0, 25:] = False

    # torch's table is complex (..., 64); the port's is real (..., 64, 2) holding (cos, sin).
    torch_freqs = torch_z.RopeEmbedder(**REAL_ROPE)(ids).unsqueeze(0)
    mlx_freqs = RopeEmbedder(**REAL_ROPE)(to_mx(ids))[None]

    with torch.no_grad():
        reference = torch_block(x, mask, torch_freqs, adaln)
    output = mlx_block(to_mx(x), to_mx(mask), mlx_freqs, to_mx(adaln))
    mx.eval(output)

    assert_close(reference, output, rel=REL_FLOAT32, label="block 3840 x 30 heads, seq 32")
    print(f"real-dims block: {time.perf_counter() - start:.1f} s")


def test_rope_at_real_dims_keeps_float64_angles():
    # Every position of every axis: 0..1023 on axis 0, 0..511 (twice) on the others.
    positions = np.arange(REAL_ROPE["axes_lens"][0])
    ids = np.stack([positions, positions % 512, (positions * 7) % 512], axis=-1).astype(np.int32)

    reference = torch_z.RopeEmbedder(**REAL_ROPE)(torch.from_numpy(ids))
    output = RopeEmbedder(**REAL_ROPE)(mx.array(ids))
    assert output.shape == (len(ids), sum(REAL_ROPE["axes_dims"]) // 2, 2)

    # Both sides build angles in float64, round them once to float32, then take float32
    # cos/sin; what is left is the two libraries' cos/sin rounding, a few ulp (~1e-7) of
    # values in [-1, 1]. 1e-6 allows that and nothing more.
    assert_close(reference, output, atol=1e-6, label="rope 1024 x 64 table entries")

    # The bound is tight enough to catch a float32 angle table: at position 1023 a float32
    # product position × frequency is off by up to ~6e-5 rad.
    theta, dims = REAL_ROPE["theta"], REAL_ROPE["axes_dims"]
    cos_sin = []
    for axis, dim in enumerate(dims):
        freqs = (1.0 / theta ** (np.arange(0, dim, 2, dtype=np.float32) / dim)).astype(np.float32)
        angles = np.outer(ids[:, axis].astype(np.float32), freqs)
        cos_sin.append(np.stack([np.cos(angles), np.sin(angles)], axis=-1))
    float32_table = mx.array(np.concatenate(cos_sin, axis=-2))
    float32_error = compare(reference, float32_table).max_abs
    print(f"rope: a float32 angle table would be off by {float32_error:.3g}")
    assert float32_error > 1e-5
