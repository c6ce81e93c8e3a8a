"""generated/llama beyond its rendered golden cases, and the transformers support snippets it
uses, each against transformers itself.

The recipe's cases (generated/llama/test_golden_modeling_llama.py) compare full forwards with
SDPA and no cache. Here: the eager attention path, decoding token by token through the port's
cache, the causal and sliding-window masks with a cache and padding, the attention interface, RoPE scaling types,
activations, logits slicing and the causal LM loss.
"""

from __future__ import annotations

import mlx.core as mx
import numpy as np
import pytest
import torch
from transformers import LlamaConfig, masking_utils
from transformers import activations as hf_activations
from transformers.cache_utils import DynamicCache as TorchCache
from transformers.integrations.sdpa_attention import sdpa_attention_forward as torch_sdpa
from transformers.loss.loss_utils import ForCausalLMLoss
from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS as TORCH_ROPE_INIT
from transformers.modeling_utils import slice_logits_to_keep as torch_slice
from transformers.models.llama import modeling_llama as torch_llama

import generated.llama.modeling_llama as mlx_llama
from generated.llama import support
from generated.llama.configuration_llama import LlamaConfig as MlxConfig
from porter.golden import randomize_, state_dict_to_mx, to_mx, to_np

CONFIG = {
    "vocab_size": 100,
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "max_position_embeddings": 64,
}
# Float32 through two decoder layers, as in the recipe's tolerance note.
REL = 1e-4


def assert_close(out, ref, rel: float = REL) -> float:
    out_np, ref_np = to_np(out), to_np(ref)
    assert out_np.shape == ref_np.shape, (out_np.shape, ref_np.shape)
    err = float(np.abs(out_np - ref_np).max())
    bound = rel * max(1.0, float(np.abs(ref_np).max()))
    print(f"max abs err {err:.3g}, bound {bound:.3g}")
    assert err <= bound
    return err


def pair(model_class: str, seed: int = 0, **overrides):
    """The torch model with seeded weights and the port with the same weights and config."""
    config = {**CONFIG, **overrides}
    torch.manual_seed(seed)
    torch_model = getattr(torch_llama, model_class)(LlamaConfig(**config)).eval()
    randomize_(torch_model, seed)
    mlx_model = getattr(mlx_llama, model_class)(MlxConfig(**config))
    mlx_model.load_weights(state_dict_to_mx(torch_model), strict=True)
    mlx_model.eval()
    return torch_model, mlx_model


def left_padded(batch: int = 2, length: int = 9, pad: int = 3, seed: int = 5):
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, CONFIG["vocab_size"], (batch, length), generator=gen)
    mask = torch.ones(batch, length, dtype=torch.long)
    mask[0, :pad] = 0
    return ids, mask


# -- the port -------------------------------------------------------------------------------


def test_eager_attention_matches_torch_eager_with_left_padding():
    torch_model, mlx_model = pair("LlamaModel", attn_implementation="eager")
    assert mlx_model.config._attn_implementation == "eager"
    ids, mask = left_padded()
    with torch.no_grad():
        ref = torch_model(ids, attention_mask=mask, use_cache=False).last_hidden_state
    out = mlx_model(to_mx(ids), attention_mask=to_mx(mask)).last_hidden_state
    assert_close(out, ref)


def test_sdpa_and_eager_ports_differ_only_on_fully_masked_rows():
    # torch's SDPA gives a query that sees no key zeros, eager an average of all values: the
    # port follows each, so the two agree on every row that sees a key.
    _, sdpa = pair("LlamaModel")
    _, eager = pair("LlamaModel", attn_implementation="eager")
    ids, mask = left_padded(pad=3)
    a = np.array(sdpa(to_mx(ids), attention_mask=to_mx(mask)).last_hidden_state)
    b = np.array(eager(to_mx(ids), attention_mask=to_mx(mask)).last_hidden_state)
    assert np.abs(a[:, 3:] - b[:, 3:]).max() < 1e-4
    assert np.abs(a[0, :3] - b[0, :3]).max() > 1e-2


def test_decoding_through_the_cache_matches_torch_full_forward():
    torch_model, mlx_model = pair("LlamaForCausalLM", seed=3)
    ids, mask = left_padded(length=8, pad=2)
    with torch.no_grad():
        ref = torch_model(ids, attention_mask=mask, use_cache=False).logits
    cache = support.DynamicCache()
    prefill = mlx_model(
        to_mx(ids[:, :6]), attention_mask=to_mx(mask[:, :6]), cache=cache, use_cache=True
    )
    assert prefill.cache is cache and cache.get_seq_length() == 6
    steps = [prefill.logits]
    for t in (6, 7):
        position_ids = mx.array([[t], [t]])
        out = mlx_model(
            to_mx(ids[:, t : t + 1]),
            attention_mask=to_mx(mask[:, : t + 1]),
            position_ids=position_ids,
            cache=cache,
            use_cache=True,
        )
        steps.append(out.logits)
    assert_close(mx.concatenate(steps, axis=1), ref)


def test_logits_to_keep_and_loss_match_torch():
    torch_model, mlx_model = pair("LlamaForCausalLM", seed=4, tie_word_embeddings=True)
    ids, _ = left_padded(pad=0)
    labels = ids.clone()
    labels[1, :4] = -100
    with torch.no_grad():
        ref = torch_model(ids, labels=labels, use_cache=False)
        ref_last = torch_model(ids, logits_to_keep=3, use_cache=False)
    out = mlx_model(to_mx(ids), labels=to_mx(labels))
    out_last = mlx_model(to_mx(ids), logits_to_keep=3)
    assert_close(out.logits, ref.logits)
    assert_close(out.loss, ref.loss)
    assert_close(out_last.logits, ref_last.logits)
    assert out_last.logits.shape[1] == 3


def test_a_planted_swap_in_rotate_half_fails():
    # The check above can fail: rotate_half with its halves swapped (x1, -x2) moves the error
    # far past the bound.
    torch_model, mlx_model = pair("LlamaModel")
    ids, mask = left_padded()
    with torch.no_grad():
        ref = torch_model(ids, attention_mask=mask, use_cache=False).last_hidden_state
    original = mlx_llama.rotate_half
    try:
        mlx_llama.rotate_half = lambda x: mx.concatenate(
            (x[..., : x.shape[-1] // 2], -x[..., x.shape[-1] // 2 :]), axis=-1
        )
        out = mlx_model(to_mx(ids), attention_mask=to_mx(mask)).last_hidden_state
    finally:
        mlx_llama.rotate_half = original
    with pytest.raises(AssertionError):
        assert_close(out, ref)


# -- support snippets -----------------------------------------------------------------------


def _torch_config(impl: str) -> LlamaConfig:
    config = LlamaConfig(**CONFIG)
    config._attn_implementation = impl
    return config


def _torch_cache(past: int) -> TorchCache | None:
    if not past:
        return None
    cache = TorchCache(config=LlamaConfig(**CONFIG))
    cache.update(torch.zeros(2, 2, past, 16), torch.zeros(2, 2, past, 16), 0)
    return cache


def _mlx_cache(past: int):
    if not past:
        return None
    cache = support.DynamicCache()
    cache.update(mx.zeros((2, 2, past, 16)), mx.zeros((2, 2, past, 16)), 0)
    return cache


@pytest.mark.parametrize("impl", ["sdpa", "eager"])
@pytest.mark.parametrize(
    ("past", "q_len", "padding"),
    [
        pytest.param(0, 5, None, id="no-padding"),
        pytest.param(0, 5, "left", id="left"),
        pytest.param(0, 5, "right", id="right"),
        pytest.param(4, 1, "left", id="decode-step"),
        pytest.param(4, 3, None, id="chunk-after-cache"),
        pytest.param(4, 3, "left", id="chunk-after-cache-left"),
    ],
)
def test_causal_mask_matches_transformers(impl, past, q_len, padding):
    kv_len = past + q_len
    mask = None
    if padding:
        mask = torch.ones(2, kv_len, dtype=torch.long)
        if padding == "left":
            mask[0, :2] = 0
        else:
            mask[1, -2:] = 0
    embeds = torch.zeros(2, q_len, 64)
    ref = masking_utils.create_causal_mask(
        config=_torch_config(impl),
        inputs_embeds=embeds,
        attention_mask=mask,
        cache=_torch_cache(past),
        position_ids=torch.arange(past, kv_len)[None].expand(2, -1),
    )
    config = MlxConfig(**CONFIG, attn_implementation=impl)
    out = support.create_causal_mask(
        config, to_mx(embeds), to_mx(mask), cache=_mlx_cache(past), position_ids=None
    )
    if ref is None:
        assert out is None
        return
    assert out is not None
    np.testing.assert_array_equal(to_np(out), to_np(ref.expand(2, 1, q_len, kv_len)))


@pytest.mark.parametrize("impl", ["sdpa", "eager"])
@pytest.mark.parametrize(
    ("past", "q_len", "padding"),
    [
        pytest.param(0, 2, None, id="inside-the-window"),
        pytest.param(0, 7, None, id="no-padding"),
        pytest.param(0, 7, "left", id="left"),
        pytest.param(5, 1, "left", id="decode-step"),
    ],
)
def test_sliding_window_mask_matches_transformers(impl, past, q_len, padding):
    from transformers import MistralConfig

    kv_len = past + q_len
    mask = None
    if padding:
        mask = torch.ones(2, kv_len, dtype=torch.long)
        mask[0, :2] = 0
    config = {**CONFIG, "sliding_window": 3}
    torch_config = MistralConfig(**config)
    torch_config._attn_implementation = impl
    embeds = torch.zeros(2, q_len, 64)
    ref = masking_utils.create_sliding_window_causal_mask(
        config=torch_config,
        inputs_embeds=embeds,
        attention_mask=mask,
        cache=_torch_cache(past),
        position_ids=torch.arange(past, kv_len)[None].expand(2, -1),
    )
    out = support.create_sliding_window_causal_mask(
        MlxConfig(**config, attn_implementation=impl),
        to_mx(embeds),
        to_mx(mask),
        cache=_mlx_cache(past),
    )
    if ref is None:
        assert out is None
        return
    np.testing.assert_array_equal(to_np(out), to_np(ref.expand(2, 1, q_len, kv_len)))


@pytest.mark.parametrize("masked", ["none", "bool", "float"])
def test_sdpa_attention_interface_matches_transformers(masked):
    gen = torch.Generator().manual_seed(0)
    q = torch.randn(2, 4, 5, 16, generator=gen)
    k = torch.randn(2, 2, 5, 16, generator=gen)
    v = torch.randn(2, 2, 5, 16, generator=gen)
    mask = None
    if masked != "none":
        seen = torch.ones(2, 1, 5, 5, dtype=torch.bool).tril()
        seen[0, :, :, :2] = False  # item 0: two padded keys, so two queries see nothing
        mask = seen if masked == "bool" else torch.where(seen, 0.0, -1e9)
    module = torch.nn.Module()
    module.is_causal, module.num_key_value_groups = True, 2
    ref, _ = torch_sdpa(module, q, k, v, mask, scaling=0.3)
    attention = support.ALL_ATTENTION_FUNCTIONS.get_interface("sdpa", None)
    out, weights = attention(module, *to_mx([q, k, v, mask]), scaling=0.3)
    assert weights is None
    if masked == "float":  # torch averages the values of a fully masked row here
        ref, out = ref[:, 2:], out[:, 2:]
    assert_close(out, ref, rel=1e-5)


def test_attention_interface_eager_is_the_default_and_unknown_names_raise():
    eager = object()
    assert support.ALL_ATTENTION_FUNCTIONS.get_interface("eager", eager) is eager
    assert support.ALL_ATTENTION_FUNCTIONS.get_interface(None, eager) is eager
    with pytest.raises(KeyError, match="not ported"):
        support.ALL_ATTENTION_FUNCTIONS.get_interface("paged|eager", eager)


@pytest.mark.parametrize(
    "rope",
    [
        pytest.param({"rope_type": "linear", "rope_theta": 10000.0, "factor": 4.0}, id="linear"),
        pytest.param(
            {
                "rope_type": "llama3",
                "rope_theta": 500000.0,
                "factor": 8.0,
                "low_freq_factor": 1.0,
                "high_freq_factor": 4.0,
                "original_max_position_embeddings": 64,
            },
            id="llama3",
        ),
    ],
)
def test_rope_init_functions_match_transformers(rope):
    config = {**CONFIG, "rope_parameters": rope}
    ref, ref_scale = TORCH_ROPE_INIT[rope["rope_type"]](LlamaConfig(**config))
    out, scale = support.ROPE_INIT_FUNCTIONS[rope["rope_type"]](MlxConfig(**config))
    assert scale == ref_scale
    assert_close(out, ref, rel=1e-6)


def test_unported_rope_type_and_activation_name_what_is_ported():
    with pytest.raises(KeyError, match="yarn.*ported: linear, llama3"):
        support.ROPE_INIT_FUNCTIONS["yarn"]
    with pytest.raises(KeyError, match="xielu.*not ported"):
        support.ACT2FN["xielu"]


@pytest.mark.parametrize("name", sorted(support.ACT2FN))
def test_activations_match_transformers(name):
    x = torch.linspace(-6, 6, 241)
    ref = hf_activations.ACT2FN[name](x)
    assert_close(support.ACT2FN[name](to_mx(x)), ref, rel=1e-5)


@pytest.mark.parametrize(
    "keep",
    [0, 1, 3, torch.tensor([0, 2]), torch.tensor([[1, 4], [0, 3]])],
    ids=["all", "last", "last-3", "index", "per-item"],
)
def test_slice_logits_to_keep_matches_transformers(keep):
    hidden = torch.randn(2, 5, 8, generator=torch.Generator().manual_seed(1))
    assert_close(
        support.slice_logits_to_keep(to_mx(hidden), to_mx(keep)), torch_slice(hidden, keep)
    )


def test_causal_lm_loss_matches_transformers():
    gen = torch.Generator().manual_seed(2)
    logits = torch.randn(2, 6, 11, generator=gen)
    labels = torch.randint(0, 11, (2, 6), generator=gen)
    labels[0, :2] = -100
    model = mlx_llama.LlamaForCausalLM.__new__(mlx_llama.LlamaForCausalLM)
    for items in (None, 7):
        ref = ForCausalLMLoss(logits, labels, 11, num_items_in_batch=items)
        out = model.loss_function(to_mx(logits), to_mx(labels), 11, num_items_in_batch=items)
        assert_close(out, ref, rel=1e-6)


def test_config_fills_rope_parameters_and_keeps_extra_keys_like_transformers():
    ref = LlamaConfig(**CONFIG, rope_theta=5000.0)
    config = MlxConfig(**CONFIG, rope_theta=5000.0, architectures=["LlamaForCausalLM"])
    assert config.rope_parameters == ref.rope_parameters
    assert config.head_dim == ref.head_dim == 16
    assert config.architectures == ["LlamaForCausalLM"]
    assert config._attn_implementation == "sdpa"
