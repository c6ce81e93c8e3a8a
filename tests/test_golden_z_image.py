"""Golden tests: generated/z_image against diffusers' transformer_z_image on the same inputs.

The full-model tests take the path a user takes: seeded torch weights, `save_pretrained`,
`porter convert-weights`, then the MLX model built from the saved config.json with a strict
load. The block and RoPE tests run at the real Z-Image sizes. Every test prints the error it saw
(`pytest -s`).

Tolerances, all float32 on both sides: end to end the bound is 1e-4 × max(1, max |reference|).
MLX's CPU BLAS and torch's accumulate in different orders through ~50 matmuls, and the
timestep embedding takes cos/sin of float32 angles up to t_scale = 1000 rad, where a 1-ulp
difference in exp (the two libraries' exp differ in the last bit for most inputs) moves an
angle by ~6e-5. With t well inside (0, 1) that is the largest single contribution: the
basic-mode error is ~4.4e-5 × |reference| at t = (0.3, 0.85) and ~3e-6 × |reference| at
t = (0, 0.001), on the same weights and inputs.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import mlx.core as mx
import numpy as np
import pytest
import torch
from diffusers.models.transformers import transformer_z_image as torch_z
from mlx.utils import tree_flatten

import generated.z_image.transformer_z_image as mlx_z
from generated.z_image import (
    RopeEmbedder,
    ZImageTransformer2DModel,
    ZImageTransformerBlock,
    load_model,
)
from porter.cli import main as porter_main
from tests.golden import assert_close, compare, randomize_, state_dict_to_mx, to_mx

SEQ_MULTI_OF = torch_z.SEQ_MULTI_OF
# End-to-end float32 bound, relative to the output scale (see the module docstring).
REL_FLOAT32 = 1e-4

SMALL = {
    "all_patch_size": (2,),
    "all_f_patch_size": (1,),
    "in_channels": 4,
    "dim": 128,
    "n_heads": 2,
    "n_kv_heads": 2,
    "n_layers": 2,
    "n_refiner_layers": 1,
    "cap_feat_dim": 32,
    "axes_dims": [16, 24, 24],
    "axes_lens": [128, 32, 32],
}
# Omni mode fills a missing condition image with X_PAD_DIM (64) zeros per token, which the
# x embedder only accepts when 2 * 2 * in_channels == 64.
OMNI = {**SMALL, "in_channels": 16, "siglip_feat_dim": 24}

# The real Z-Image sizes (diffusers' defaults for ZImageTransformer2DModel).
REAL_DIM, REAL_HEADS = 3840, 30
REAL_ROPE = {"theta": 256.0, "axes_dims": [32, 48, 48], "axes_lens": [1024, 512, 512]}


def randn(gen: torch.Generator, *shape: int) -> torch.Tensor:
    return torch.randn(*shape, generator=gen)


def port(tmp_path: Path, config: dict, seed: int):
    """The torch model with seeded weights, and its MLX port loaded the way a user loads it."""
    torch.manual_seed(seed)
    torch_model = torch_z.ZImageTransformer2DModel(**config).eval()
    randomize_(torch_model, seed)
    folder = tmp_path / "transformer"
    torch_model.save_pretrained(folder)

    weights = tmp_path / "z_image.safetensors"
    assert porter_main(["convert-weights", str(folder), "-o", str(weights)]) == 0

    config_path = folder / "config.json"
    saved = json.loads(config_path.read_text())
    mlx_model = ZImageTransformer2DModel(
        **{k: v for k, v in saved.items() if not k.startswith("_")}
    )
    mlx_model.load_weights(str(weights), strict=True)
    mlx_model.eval()
    return torch_model, mlx_model, config_path, weights


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


def assert_every_call_masked(masks: list[mx.array | None], calls: int) -> None:
    """Each attention call got a boolean mask that hides some keys: the padded-batch path ran."""
    assert len(masks) == calls, f"{len(masks)} attention calls, expected {calls}"
    for i, mask in enumerate(masks):
        assert mask is not None, f"attention call {i} ran without a mask"
        assert mask.dtype == mx.bool_ and not mx.all(mask).item(), f"call {i}: mask hides nothing"


def padded(n: int) -> int:
    return n + (-n) % SEQ_MULTI_OF


def test_full_model_basic_mode_matches_diffusers(tmp_path, attention_masks):
    start = time.perf_counter()
    torch_model, mlx_model, config_path, weights = port(tmp_path, SMALL, seed=0)

    gen = torch.Generator().manual_seed(1)
    # Token counts 16 and 35, caption lengths 7 and 40: none is a multiple of SEQ_MULTI_OF, so
    # x and caption pad tokens fill the tail of every item, and the padded lengths differ at
    # every stage (x 32 vs 64, caption 32 vs 64, unified 64 vs 128), so every attention call
    # takes the masked path.
    images = [randn(gen, 4, 1, 8, 8), randn(gen, 4, 1, 10, 14)]
    captions = [randn(gen, 7, 32), randn(gen, 40, 32)]
    t = torch.tensor([0.3, 0.85])
    tokens = [(h // 2) * (w // 2) for *_, h, w in (img.shape for img in images)]
    assert all(n % SEQ_MULTI_OF for n in tokens + [len(c) for c in captions])
    assert len({padded(n) for n in tokens}) == len({padded(len(c)) for c in captions}) == 2

    with torch.no_grad():
        reference = torch_model(images, t, captions, return_dict=False)[0]
    (output,) = mlx_model(to_mx(images), to_mx(t), to_mx(captions), return_dict=False)
    mx.eval(output)

    assert isinstance(output, list) and all(o.dtype == mx.float32 for o in output)
    assert_every_call_masked(
        attention_masks, calls=SMALL["n_refiner_layers"] * 2 + SMALL["n_layers"]
    )
    assert_close(reference, output, rel=REL_FLOAT32, label="z_image basic, batch 2")

    # The packaged loader builds the same model from the same files.
    loaded = load_model(config_path, weights)
    expected = dict(tree_flatten(mlx_model.parameters()))
    got = dict(tree_flatten(loaded.parameters()))
    assert expected.keys() == got.keys()
    assert all(mx.array_equal(expected[k], got[k]).item() for k in expected)

    result = loaded(to_mx(images), to_mx(t), to_mx(captions), return_dict=True)
    assert_close(
        reference, result.sample, rel=REL_FLOAT32, label="z_image basic, load_model .sample"
    )
    print(f"basic mode: {time.perf_counter() - start:.1f} s")


def test_full_model_omni_mode_matches_diffusers(tmp_path, attention_masks):
    start = time.perf_counter()
    torch_model, mlx_model, _, _ = port(tmp_path, OMNI, seed=10)

    gen = torch.Generator().manual_seed(11)
    c, sig_dim, cap_dim = OMNI["in_channels"], OMNI["siglip_feat_dim"], OMNI["cap_feat_dim"]
    # Per item: a condition image then the target (the last one), one caption per image and
    # one SigLIP grid or None per image. Item 1 has no condition image, which omni mode fills
    # with SEQ_MULTI_OF masked pad tokens. noise mask 0 marks the clean condition, 1 the noisy
    # target, so both per-token modulations run. Lengths per stage (x 64 vs 96, caption 64 vs
    # 96, SigLIP 64 vs 96) differ, so every attention call is masked.
    images = [
        [randn(gen, c, 1, 4, 6), randn(gen, c, 1, 8, 8)],
        [None, randn(gen, c, 1, 10, 14)],
    ]
    captions = [
        [randn(gen, 5, cap_dim), randn(gen, 9, cap_dim)],
        [randn(gen, 3, cap_dim), randn(gen, 40, cap_dim)],
    ]
    # The target's SigLIP grid in item 1 has its positions rescaled to the target's size.
    siglip = [
        [randn(gen, 3, 4, sig_dim), None],
        [None, randn(gen, 5, 8, sig_dim)],
    ]
    noise_mask = [[0, 1], [0, 1]]
    t = torch.tensor([0.25, 0.7])

    with torch.no_grad():
        reference = torch_model(
            images, t, captions, return_dict=False, siglip_feats=siglip, image_noise_mask=noise_mask
        )[0]
    (output,) = mlx_model(
        to_mx(images),
        to_mx(t),
        to_mx(captions),
        return_dict=False,
        siglip_feats=to_mx(siglip),
        image_noise_mask=noise_mask,
    )
    mx.eval(output)

    assert [tuple(o.shape) for o in output] == [(c, 1, 8, 8), (c, 1, 10, 14)]
    calls = OMNI["n_refiner_layers"] * 3 + OMNI["n_layers"]
    assert_every_call_masked(attention_masks, calls=calls)
    assert_close(reference, output, rel=REL_FLOAT32, label="z_image omni, batch 2")
    print(f"omni mode: {time.perf_counter() - start:.1f} s")


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
