"""Golden tests for generated/sd3 beyond the full-model cases.

The full-model comparisons are rendered by porter from the sd3 recipe into
generated/sd3/test_golden_transformer_sd3.py. This file checks that the two cases take the
position-table paths their docs claim (loaded from the checkpoint, or computed by the port), and
compares the computed sin-cos table at SD3's real grid against diffusers'.

Tolerance for the table: 1e-5 absolute on values in [-1, 1]. Both sides compute it in float64
(the port through diffusers' maybe_adjust_dtype_for_device, which keeps float64 on the CPU), but
MLX's float64 sin and cos on the CPU are not float64-accurate: at the table's angles (up to 64
rad) they differ from NumPy's by up to ~2e-6, float32-level. Any mistake in the table (rows and
columns swapped, sin and cos swapped, a wrong scale) is of order 1.
"""

from __future__ import annotations

import mlx.core as mx
import numpy as np
import torch
from diffusers.models.embeddings import PatchEmbed as TorchPatchEmbed
from mlx.utils import tree_flatten

from generated.sd3 import SD3Transformer2DModel
from generated.sd3.embeddings import PatchEmbed
from generated.sd3.test_golden_transformer_sd3 import (
    CROPPED_POS_EMBED_BATCH2,
    DUAL_ATTENTION_RMS_QK_BATCH2,
)
from porter.golden import randomize_


def keys(model) -> set[str]:
    return {key for key, _ in tree_flatten(model.parameters())}


def test_the_cases_take_the_loaded_and_the_computed_position_table() -> None:
    loaded = SD3Transformer2DModel(**CROPPED_POS_EMBED_BATCH2.config)
    computed = SD3Transformer2DModel(**DUAL_ATTENTION_RMS_QK_BATCH2.config)
    assert "pos_embed.pos_embed" in keys(loaded)
    assert "pos_embed.pos_embed" not in keys(computed)
    assert computed.pos_embed.pos_embed.shape == (1, 16, 32)
    # The second case also builds the dual-attention block and the RMS qk-norms.
    assert any(k.startswith("transformer_blocks.0.attn2.") for k in keys(computed))
    assert "transformer_blocks.0.attn.norm_q.weight" in keys(computed)


def test_sincos_table_matches_diffusers_at_the_real_grid() -> None:
    # SD3 medium: a 192 x 192 position grid; a narrow embedding keeps the table small.
    config = {"height": 128, "width": 128, "patch_size": 2, "in_channels": 16, "embed_dim": 64}
    ref = TorchPatchEmbed(**config, pos_embed_max_size=192).pos_embed
    ours = PatchEmbed(**config, pos_embed_max_size=192).pos_embed
    assert ours.dtype == mx.float32 and ours.shape == tuple(ref.shape)
    err = float(np.abs(np.array(ours) - ref.numpy()).max())
    print(f"SD3 sin-cos table, 192 x 192 grid: max abs err {err:.3g}")
    assert err <= 1e-5


def test_randomize_leaves_non_persistent_buffers_alone() -> None:
    # No checkpoint carries a non-persistent buffer to the port, which computes it: noise there
    # would make the reference differ from every port.
    model = TorchPatchEmbed(height=8, width=8, patch_size=2, in_channels=4, embed_dim=8)
    table = model.pos_embed.clone()
    randomize_(model, seed=0)
    assert torch.equal(model.pos_embed, table)
    kept = TorchPatchEmbed(8, 8, 2, 4, 8, pos_embed_max_size=8)
    table = kept.pos_embed.clone()
    randomize_(kept, seed=0)
    assert not torch.equal(kept.pos_embed, table)
