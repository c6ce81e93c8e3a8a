"""Each MLX snippet under templates/snippets against the torch or diffusers API it stands for.

A snippet is rendered after the snippets it requires, executed under the support module's
prelude, and compared with the real implementation on seeded random inputs.
"""

import ast
import dataclasses
import functools
import re
from pathlib import Path

import jinja2
import mlx.core as mx
import mlx.nn as mnn
import numpy as np
import pytest
import torch
from diffusers.models.attention_dispatch import dispatch_attention_fn as torch_dispatch
from diffusers.models.attention_processor import Attention as TorchAttention
from diffusers.models.modeling_outputs import Transformer2DModelOutput as TorchOutput
from diffusers.models.normalization import RMSNorm as TorchRMSNorm
from diffusers.utils import BaseOutput
from mlx.utils import tree_flatten

SNIPPETS = Path(__file__).resolve().parents[1] / "templates" / "snippets"
ENV = jinja2.Environment(loader=jinja2.FileSystemLoader(SNIPPETS), keep_trailing_newline=True)
# What the support module's prelude provides, and all that a snippet may use.
PRELUDE = """\
import math
from dataclasses import dataclass

import numpy as np
import mlx.core as mx
import mlx.nn as nn
"""
REQUIRES = re.compile(r"\{#\s*requires:\s*([\w\s,]*?)\s*#\}")
SNIPPET_IDS = sorted(path.name.removesuffix(".py.j2") for path in SNIPPETS.glob("*.py.j2"))


def requires(name: str) -> list[str]:
    source, _, _ = ENV.loader.get_source(ENV, f"{name}.py.j2")
    match = REQUIRES.search(source)
    return [dep.strip() for dep in match.group(1).split(",")] if match else []


def render(name: str) -> str:
    """Renders `name` after its requirements, each once, in dependency order."""
    order: list[str] = []

    def visit(current: str, path: tuple[str, ...]) -> None:
        if current in path:
            raise AssertionError(f"snippet requires form a cycle: {' -> '.join(path)}")
        if current in order:
            return
        for dep in requires(current):
            visit(dep, (*path, current))
        order.append(current)

    visit(name, ())
    return "\n\n".join(ENV.get_template(f"{n}.py.j2").render().strip("\n") for n in order)


@functools.cache
def load(name: str) -> dict:
    namespace = {"__name__": f"snippet_{name}"}
    code = compile(PRELUDE + "\n\n" + render(name), f"<snippet {name}>", "exec")
    exec(code, namespace)  # noqa: S102 -- running our own rendered template is the test
    return namespace


def to_mx(t: torch.Tensor) -> mx.array:
    if t.dtype == torch.bfloat16:
        return mx.array(t.detach().float().numpy()).astype(mx.bfloat16)
    return mx.array(t.detach().numpy())


def to_np(a: mx.array) -> np.ndarray:
    return np.array(a.astype(mx.float32) if a.dtype == mx.bfloat16 else a)


def max_err(out: mx.array, ref: torch.Tensor) -> tuple[float, float]:
    """Max abs error of `out` against `ref`, and the scale max(1, max|ref|) it is judged by."""
    ref_np = ref.detach().float().numpy()
    out_np = to_np(out).astype(np.float32)
    assert out_np.shape == ref_np.shape, (out_np.shape, ref_np.shape)
    return float(np.abs(out_np - ref_np).max()), max(1.0, float(np.abs(ref_np).max()))


def load_torch_weights(module: mnn.Module, torch_module: torch.nn.Module) -> None:
    """Copies weights under the torch state_dict keys unchanged; strict, so names must match."""
    weights = [(key, to_mx(value)) for key, value in torch_module.state_dict().items()]
    module.load_weights(weights, strict=True)


def randomize(torch_module: torch.nn.Module, seed: int) -> None:
    """Replaces every parameter, ones and zeros included, with seeded non-trivial values."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in torch_module.parameters():
            param.copy_(torch.randn(param.shape, generator=gen) * 0.5 + 0.1)


def randn(*shape: int, seed: int, scale: float = 1.0) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed)) * scale


# --- every snippet -------------------------------------------------------------------------


def test_snippets_present():
    expected = {
        "attention",
        "chunk",
        "complex_mul",
        "conv",
        "dispatch_attention",
        "group_norm",
        "model_output",
        "pad_sequence",
        "rms_norm",
        "sdpa",
        "sequential",
        "split_sizes",
        "unbind",
    }
    assert expected <= set(SNIPPET_IDS)


@pytest.mark.parametrize("name", [pytest.param(n, id=n) for n in SNIPPET_IDS])
def test_snippet_compiles_without_torch(name):
    code = render(name)
    tree = ast.parse(code)
    imported = [
        alias.name
        for node in ast.walk(tree)
        if isinstance(node, ast.Import)
        for alias in node.names
    ]
    imported += [node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)]
    assert not [m for m in imported if m.split(".")[0] in ("torch", "porter")], imported
    assert "torch" not in [n.id for n in ast.walk(tree) if isinstance(n, ast.Name)]
    compile(code, f"<snippet {name}>", "exec")
    load(name)


@pytest.mark.parametrize("name", [pytest.param(n, id=n) for n in SNIPPET_IDS])
def test_snippet_requires_exist(name):
    for dep in requires(name):
        assert dep in SNIPPET_IDS, f"{name} requires unknown snippet {dep!r}"


# --- RMSNorm -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("eps", "affine", "bias"),
    [
        pytest.param(1e-6, True, False, id="weight"),
        pytest.param(1e-5, True, True, id="weight-bias"),
        pytest.param(1e-6, False, False, id="no-affine"),
    ],
)
def test_rms_norm_matches_diffusers(eps, affine, bias):
    ref_norm = TorchRMSNorm(16, eps=eps, elementwise_affine=affine, bias=bias)
    randomize(ref_norm, seed=0)
    norm = load("rms_norm")["RMSNorm"](16, eps=eps, elementwise_affine=affine, bias=bias)
    load_torch_weights(norm, ref_norm)
    x = randn(2, 5, 16, seed=1, scale=3.0)

    with torch.no_grad():
        ref = ref_norm(x)
    err, scale = max_err(norm(to_mx(x)), ref)
    print(f"RMSNorm max abs err {err:.3g} (|ref| scale {scale:.3g})")
    # float32 throughout; only the reduction order differs.
    assert err <= 1e-5 * scale


@pytest.mark.parametrize(
    ("x_dtype", "w_dtype"),
    [
        pytest.param(torch.float32, torch.float32, id="f32-f32"),
        pytest.param(torch.bfloat16, torch.float32, id="bf16-f32"),
        pytest.param(torch.float32, torch.bfloat16, id="f32-bf16"),
        pytest.param(torch.bfloat16, torch.bfloat16, id="bf16-bf16"),
        pytest.param(torch.bfloat16, None, id="bf16-no-affine"),
    ],
)
def test_rms_norm_dtype_matches_diffusers(x_dtype, w_dtype):
    affine = w_dtype is not None
    ref_norm = TorchRMSNorm(16, eps=1e-6, elementwise_affine=affine)
    randomize(ref_norm, seed=2)
    if affine:
        ref_norm.to(w_dtype)
    norm = load("rms_norm")["RMSNorm"](16, eps=1e-6, elementwise_affine=affine)
    load_torch_weights(norm, ref_norm)
    x = randn(3, 16, seed=3, scale=3.0).to(x_dtype)

    with torch.no_grad():
        ref = ref_norm(x)
    out = norm(to_mx(x))
    assert {mx.float32: torch.float32, mx.bfloat16: torch.bfloat16}[out.dtype] == ref.dtype
    err, scale = max_err(out, ref)
    print(f"RMSNorm {x_dtype} x {w_dtype}: out {out.dtype}, max abs err {err:.3g}")
    # bfloat16 keeps 8 significant bits (relative step 2**-7 = 7.8e-3). diffusers rounds
    # twice where MLX rounds once, so allow two steps; pure float32 gets 1e-5.
    tol = 1e-5 if out.dtype == mx.float32 and x_dtype == torch.float32 else 1.6e-2
    assert err <= tol * scale


# --- dispatch_attention_fn -----------------------------------------------------------------

B, L, H, D = 2, 6, 4, 8


def padding_mask(length: int) -> torch.Tensor:
    """[B, length] bool: sample 0 attends everywhere, sample 1 has its last 2 keys padded."""
    mask = torch.ones(B, length, dtype=torch.bool)
    mask[1, -2:] = False
    return mask


DISPATCH_CASES = [
    pytest.param({}, {}, id="no-mask"),
    pytest.param({"attn_mask": padding_mask(L)[:, None, None, :]}, {}, id="bool-B11S"),
    pytest.param({"attn_mask": padding_mask(L)}, {}, id="bool-BS"),
    pytest.param({"attn_mask": randn(B, 1, L, L, seed=4, scale=2.0)}, {}, id="float-additive"),
    pytest.param({"is_causal": True}, {}, id="causal"),
    pytest.param({"is_causal": True}, {"q_len": 3}, id="causal-short-query"),
    pytest.param({"scale": 0.3}, {}, id="scale"),
    pytest.param({"enable_gqa": True}, {"kv_heads": 2}, id="gqa"),
    pytest.param({"attn_mask": padding_mask(L)[:, None, None, :]}, {"q_len": 3}, id="cross-len"),
]


def attention_inputs(q_len: int = L, kv_heads: int = H) -> list[torch.Tensor]:
    # Scaled so that the softmax is far from uniform and a wrong scale or mask shows.
    return [
        randn(B, q_len, H, D, seed=10, scale=2.0),
        randn(B, L, kv_heads, D, seed=11, scale=2.0),
        randn(B, L, kv_heads, D, seed=12),
    ]


@pytest.mark.parametrize(("kwargs", "shape"), DISPATCH_CASES)
def test_dispatch_attention_matches_diffusers_native(kwargs, shape):
    fn = load("dispatch_attention")["dispatch_attention_fn"]
    qkv = attention_inputs(**shape)
    ref = torch_dispatch(*qkv, **kwargs, backend="native")
    mx_kwargs = {k: to_mx(v) if isinstance(v, torch.Tensor) else v for k, v in kwargs.items()}
    out = fn(*map(to_mx, qkv), **mx_kwargs)
    err, scale = max_err(out, ref)
    print(f"dispatch_attention_fn {sorted(kwargs)}: max abs err {err:.3g}")
    # float32; softmax and matmul order differ between the kernels.
    assert err <= 1e-5 * scale
    if set(kwargs) - {"enable_gqa"}:
        # The option must change the reference, or ignoring it would pass too.
        plain = torch_dispatch(*qkv, enable_gqa="enable_gqa" in kwargs, backend="native")
        assert max_err(out, plain)[0] > 100 * 1e-5 * scale


def test_mlx_causal_string_differs_from_torch_when_lengths_differ():
    """Why the snippet builds its own causal mask when seq_q != seq_k, and that the
    comparison above detects the difference."""
    q, k, v = (x.permute(0, 2, 1, 3) for x in attention_inputs(q_len=3))
    ref = torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True)
    out = mx.fast.scaled_dot_product_attention(*map(to_mx, (q, k, v)), scale=D**-0.5, mask="causal")
    err, scale = max_err(out, ref)
    print(f"MLX 'causal' against torch is_causal, 3 queries x 6 keys: max abs err {err:.3g}")
    assert err > 1e-5 * scale


@pytest.mark.parametrize(
    ("kwargs", "shape", "error"),
    [
        pytest.param({"dropout_p": 0.1}, {}, NotImplementedError, id="dropout"),
        pytest.param({"parallel_config": object()}, {}, NotImplementedError, id="parallel"),
        pytest.param({}, {"kv_heads": 2}, ValueError, id="gqa-not-enabled"),
        pytest.param(
            {"is_causal": True, "attn_mask": padding_mask(L)}, {}, ValueError, id="causal-and-mask"
        ),
    ],
)
def test_dispatch_attention_rejects(kwargs, shape, error):
    fn = load("dispatch_attention")["dispatch_attention_fn"]
    mx_kwargs = {k: to_mx(v) if isinstance(v, torch.Tensor) else v for k, v in kwargs.items()}
    with pytest.raises(error):
        fn(*map(to_mx, attention_inputs(**shape)), **mx_kwargs)


# --- Attention -----------------------------------------------------------------------------

DIM = 32


@pytest.mark.parametrize(
    ("config", "inputs"),
    [
        pytest.param({}, {}, id="default"),
        # The Z-Image block's configuration.
        pytest.param(
            {"qk_norm": "rms_norm", "eps": 1e-5, "out_bias": False}, {}, id="rms-qk-no-out-bias"
        ),
        pytest.param({"qk_norm": "layer_norm", "bias": True}, {}, id="layer-norm-qk-bias"),
        pytest.param({}, {"mask": "BS"}, id="bool-mask-BS"),
        pytest.param({"qk_norm": "rms_norm"}, {"mask": "B1S"}, id="bool-mask-B1S"),
        pytest.param({}, {"mask": "float"}, id="float-mask"),
        pytest.param({"cross_attention_dim": 12}, {"context": 5}, id="cross-attention"),
        pytest.param({"out_dim": 48, "heads": 6}, {}, id="out-dim"),
        pytest.param({"scale_qk": False}, {}, id="no-scale-qk"),
    ],
)
def test_attention_matches_diffusers(config, inputs):
    config = {"query_dim": DIM, "heads": 4, "dim_head": 8, **config}
    ref_attn = TorchAttention(**config).eval()
    randomize(ref_attn, seed=20)
    attn = load("attention")["Attention"](**config)
    load_torch_weights(attn, ref_attn)

    x = randn(B, L, DIM, seed=21, scale=2.0)
    context = None
    seq_k = L
    if "context" in inputs:
        seq_k = inputs["context"]
        context = randn(B, seq_k, config["cross_attention_dim"], seed=22, scale=2.0)
    mask = {
        None: None,
        "BS": padding_mask(seq_k),
        "B1S": padding_mask(seq_k)[:, None, :],
        "float": randn(B, 1, seq_k, seed=23, scale=2.0),
    }[inputs.get("mask")]

    with torch.no_grad():
        ref = ref_attn(x, encoder_hidden_states=context, attention_mask=mask)
    out = attn(
        to_mx(x),
        encoder_hidden_states=None if context is None else to_mx(context),
        attention_mask=None if mask is None else to_mx(mask),
    )
    err, scale = max_err(out, ref)
    print(f"Attention {config} {inputs}: max abs err {err:.3g} (|ref| scale {scale:.3g})")
    # float32; four matmuls and a softmax in a different order.
    assert err <= 1e-5 * scale
    if mask is not None:
        # The mask must change the reference, or ignoring it would pass too.
        with torch.no_grad():
            unmasked = ref_attn(x, encoder_hidden_states=context)
        assert max_err(out, unmasked)[0] > 100 * 1e-5 * scale


def test_attention_passes_processor_kwargs():
    seen = {}

    class Recorder:
        def __call__(self, attn, hidden_states, encoder_hidden_states=None, **kwargs):
            seen.update(attn=attn, encoder_hidden_states=encoder_hidden_states, **kwargs)
            return attn.to_out[0](hidden_states)

    attn = load("attention")["Attention"](DIM, heads=4, dim_head=8, processor=Recorder())
    mask, freqs = mx.ones((B, L), dtype=mx.bool_), mx.zeros((B, L, 4, 2))
    out = attn(mx.zeros((B, L, DIM)), attention_mask=mask, freqs_cis=freqs)
    assert out.shape == (B, L, DIM)
    assert seen["attn"] is attn and seen["encoder_hidden_states"] is None
    assert seen["attention_mask"] is mask and seen["freqs_cis"] is freqs
    assert attn.heads == 4 and isinstance(attn.processor, Recorder)


@pytest.mark.parametrize(
    "kwargs",
    [
        pytest.param({"cross_attention_norm": "layer_norm"}, id="cross-norm"),
        pytest.param({"norm_num_groups": 4}, id="group-norm"),
        pytest.param({"spatial_norm_dim": 4}, id="spatial-norm"),
        pytest.param({"residual_connection": True}, id="residual"),
        pytest.param({"rescale_output_factor": 2.0}, id="rescale"),
        pytest.param({"pre_only": True}, id="pre-only"),
        pytest.param({"qk_norm": "l2"}, id="l2-qk-norm"),
    ],
)
def test_attention_rejects_unsupported_options(kwargs):
    with pytest.raises(NotImplementedError, match=next(iter(kwargs))):
        load("attention")["Attention"](DIM, heads=4, dim_head=8, **kwargs)


@pytest.mark.parametrize("context_pre_only", [False, True, None])
def test_joint_attention_has_diffusers_parameter_names(context_pre_only):
    """added_kv_proj_dim / context_pre_only build the second stream under diffusers' names."""
    kwargs = {
        "heads": 4,
        "dim_head": 8,
        "added_kv_proj_dim": DIM,
        "context_pre_only": context_pre_only,
        "qk_norm": "rms_norm",
        "bias": True,
        "out_dim": DIM,
    }
    torch_attn = TorchAttention(DIM, **kwargs)
    mlx_attn = load("attention")["Attention"](DIM, **kwargs)
    expected = {k: tuple(v.shape) for k, v in torch_attn.state_dict().items()}
    got = {k: tuple(v.shape) for k, v in tree_flatten(mlx_attn.parameters())}
    assert got == expected


# --- tensor helpers ------------------------------------------------------------------------


def assert_same_pieces(pieces: list[mx.array], ref: tuple[torch.Tensor, ...]) -> None:
    assert len(pieces) == len(ref)
    for piece, ref_piece in zip(pieces, ref, strict=True):
        assert piece.shape == tuple(ref_piece.shape)
        np.testing.assert_array_equal(np.array(piece), ref_piece.numpy())


@pytest.mark.parametrize(
    ("shape", "split", "axis"),
    [
        pytest.param((7, 3), 3, 0, id="int-shorter-last"),
        pytest.param((4, 10), 4, 1, id="int-axis1"),
        pytest.param((6, 2), 2, 0, id="int-even"),
        pytest.param((5, 2), 9, 0, id="int-larger-than-axis"),
        pytest.param((7, 3), [2, 0, 5], 0, id="sections-with-empty"),
        pytest.param((2, 3, 6), [1, 2, 3], -1, id="sections-last-axis"),
        pytest.param((0, 3), 2, 0, id="empty-axis"),
    ],
)
def test_split_sizes_matches_torch(shape, split, axis):
    x = torch.arange(int(np.prod(shape)), dtype=torch.float32).reshape(shape)
    pieces = load("split_sizes")["split_sizes"](to_mx(x), split, axis=axis)
    assert isinstance(pieces, list)
    assert_same_pieces(pieces, torch.split(x, split, dim=axis))


@pytest.mark.parametrize(
    "split",
    [pytest.param([2, 2], id="sum-too-small"), pytest.param(0, id="zero-size")],
)
def test_split_sizes_rejects(split):
    with pytest.raises(ValueError):
        load("split_sizes")["split_sizes"](mx.zeros((5,)), split)


@pytest.mark.parametrize(
    ("shape", "chunks", "axis"),
    [
        pytest.param((8, 3), 4, 0, id="even"),
        pytest.param((6,), 4, 0, id="fewer-chunks-back"),
        pytest.param((5, 2), 4, 0, id="uneven"),
        pytest.param((2, 7), 3, 1, id="uneven-axis1"),
        pytest.param((2, 3, 2), 5, -2, id="more-chunks-than-rows"),
        pytest.param((0, 2), 3, 0, id="empty-axis"),
    ],
)
def test_chunk_matches_torch(shape, chunks, axis):
    x = torch.arange(int(np.prod(shape)), dtype=torch.float32).reshape(shape)
    pieces = load("chunk")["chunk"](to_mx(x), chunks, axis=axis)
    assert_same_pieces(pieces, torch.chunk(x, chunks, dim=axis))


@pytest.mark.parametrize(
    ("shape", "axis"),
    [
        pytest.param((3, 4, 2), 0, id="axis0"),
        pytest.param((3, 4, 2), 1, id="axis1"),
        pytest.param((3, 4, 2), -1, id="last-axis"),
        pytest.param((1, 5), 0, id="single"),
    ],
)
def test_unbind_matches_torch(shape, axis):
    x = randn(*shape, seed=30)
    assert_same_pieces(load("unbind")["unbind"](to_mx(x), axis=axis), torch.unbind(x, dim=axis))


@pytest.mark.parametrize(
    ("lengths", "trailing", "dtype", "kwargs"),
    [
        pytest.param([3, 1, 4], (), torch.float32, {}, id="1d-time-first"),
        pytest.param([3, 1, 4], (2,), torch.float32, {"batch_first": True}, id="2d-batch-first"),
        pytest.param(
            [2, 5, 0],
            (2, 3),
            torch.float32,
            {"batch_first": True, "padding_value": -1.5},
            id="3d-empty-sequence-value",
        ),
        pytest.param(
            [3, 1, 4], (2,), torch.float32, {"padding_side": "left"}, id="left-time-first"
        ),
        pytest.param(
            [2, 4],
            (),
            torch.int32,
            {"batch_first": True, "padding_value": 7, "padding_side": "left"},
            id="int-left",
        ),
        pytest.param([2, 3], (), torch.bool, {"batch_first": True}, id="bool"),
    ],
)
def test_pad_sequence_matches_torch(lengths, trailing, dtype, kwargs):
    sequences = [randn(n, *trailing, seed=40 + i, scale=5.0) for i, n in enumerate(lengths)]
    sequences = [s > 0 if dtype == torch.bool else s.to(dtype) for s in sequences]
    ref = torch.nn.utils.rnn.pad_sequence(sequences, **kwargs)
    out = load("pad_sequence")["pad_sequence"]([to_mx(s) for s in sequences], **kwargs)
    assert out.shape == tuple(ref.shape)
    assert np.array(out).dtype == ref.numpy().dtype
    np.testing.assert_array_equal(np.array(out), ref.numpy())


def test_pad_sequence_rejects_unknown_side():
    with pytest.raises(ValueError, match="padding_side"):
        load("pad_sequence")["pad_sequence"]([mx.zeros((2,))], padding_side="middle")


def test_sequential_keeps_checkpoint_names():
    class TorchMLP(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.mlp = torch.nn.Sequential(
                torch.nn.Linear(6, 10), torch.nn.SiLU(), torch.nn.Linear(10, 4)
            )

    class MLP(mnn.Module):
        def __init__(self):
            super().__init__()
            self.mlp = [mnn.Linear(6, 10), mnn.SiLU(), mnn.Linear(10, 4)]

    ref_mlp, mlp = TorchMLP(), MLP()
    randomize(ref_mlp, seed=50)
    load_torch_weights(mlp, ref_mlp)
    x = randn(3, 6, seed=51, scale=2.0)
    with torch.no_grad():
        ref = ref_mlp.mlp(x)
    err, scale = max_err(load("sequential")["sequential"](mlp.mlp, to_mx(x)), ref)
    print(f"sequential max abs err {err:.3g}")
    # float32; two small matmuls.
    assert err <= 1e-5 * scale


@pytest.mark.parametrize(
    ("a_shape", "b_shape"),
    [
        pytest.param((5, 2), (5, 2), id="same-shape"),
        # The RoPE case: x [B, S, H, D/2] times freqs [B, S, 1, D/2].
        pytest.param((2, 3, 4, 5, 2), (2, 3, 1, 5, 2), id="broadcast-heads"),
    ],
)
def test_complex_mul_matches_torch(a_shape, b_shape):
    a, b = randn(*a_shape, seed=60, scale=3.0), randn(*b_shape, seed=61, scale=3.0)
    ref = torch.view_as_real(torch.view_as_complex(a) * torch.view_as_complex(b))
    err, scale = max_err(load("complex_mul")["complex_mul"](to_mx(a), to_mx(b)), ref)
    print(f"complex_mul max abs err {err:.3g}")
    # float32; one product and one sum per component, as in torch's complex64.
    assert err <= 1e-6 * scale


def test_model_output_reads_like_diffusers():
    namespace = load("model_output")
    sample = mx.arange(6).reshape(2, 3)
    out = namespace["Transformer2DModelOutput"](sample=sample)
    ref = TorchOutput(sample=torch.arange(6).reshape(2, 3))

    field_names = [f.name for f in dataclasses.fields(out)]
    assert field_names == [f.name for f in dataclasses.fields(ref)]
    assert out.sample is sample and out["sample"] is sample and out[0] is sample
    assert len(out.to_tuple()) == len(ref.to_tuple()) == 1 and out.to_tuple()[0] is sample
    assert isinstance(out, namespace["BaseOutput"])


def test_base_output_skips_none_fields_like_diffusers():
    @dataclasses.dataclass
    class Pair(load("model_output")["BaseOutput"]):
        first: object = None
        second: object = None

    @dataclasses.dataclass
    class RefPair(BaseOutput):
        first: object = None
        second: object = None

    out, ref = Pair(second="kept"), RefPair(second="kept")
    assert out.to_tuple() == ref.to_tuple() == ("kept",)
    assert out[0] == ref[0] == "kept"


# --- scaled_dot_product_attention ----------------------------------------------------------


def _sdpa_inputs(q_len: int, kv_heads: int = H, lead: tuple[int, ...] = (B,)):
    return [
        randn(*lead, H, q_len, D, seed=60, scale=2.0),
        randn(*lead, kv_heads, L, D, seed=61, scale=2.0),
        randn(*lead, kv_heads, L, D, seed=62),
    ]


@pytest.mark.parametrize(
    ("kwargs", "q_len", "kv_heads", "lead"),
    [
        pytest.param({}, L, H, (B,), id="default-scale"),
        pytest.param({"attn_mask": padding_mask(L)[:, None, None, :]}, 3, H, (B,), id="bool"),
        pytest.param({"attn_mask": randn(L, L, seed=63, scale=2.0)}, L, H, (B,), id="float-2d"),
        pytest.param({"is_causal": True}, L, H, (B,), id="causal"),
        pytest.param({"is_causal": True}, 3, H, (B,), id="causal-top-left"),
        pytest.param({"scale": 0.3}, L, H, (), id="3d-scale"),
        pytest.param({"enable_gqa": True}, L, 2, (B,), id="gqa"),
    ],
)
def test_sdpa_matches_torch(kwargs, q_len, kv_heads, lead):
    fn = load("sdpa")["scaled_dot_product_attention"]
    qkv = _sdpa_inputs(q_len, kv_heads, lead)
    ref = torch.nn.functional.scaled_dot_product_attention(*qkv, **kwargs)
    mx_kwargs = {k: to_mx(v) if isinstance(v, torch.Tensor) else v for k, v in kwargs.items()}
    err, scale = max_err(fn(*map(to_mx, qkv), **mx_kwargs), ref)
    print(f"scaled_dot_product_attention {sorted(kwargs)}: max abs err {err:.3g}")
    # float32; softmax and matmul order differ between the kernels.
    assert err <= 1e-5 * scale


# --- GroupNorm -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("shape", "groups", "affine"),
    [
        pytest.param((2, 6, 5), 3, True, id="NCL"),
        pytest.param((2, 8, 3, 4), 2, True, id="NCHW"),
        pytest.param((1, 4, 7), 4, False, id="no-affine"),
    ],
)
def test_group_norm_matches_torch(shape, groups, affine):
    ns = load("group_norm")
    ref_norm = torch.nn.GroupNorm(groups, shape[1], eps=1e-3, affine=affine)
    randomize(ref_norm, seed=70)
    norm = ns["GroupNorm"](groups, shape[1], eps=1e-3, affine=affine)
    load_torch_weights(norm, ref_norm)
    x = randn(*shape, seed=71, scale=3.0) + 1
    with torch.no_grad():
        err, scale = max_err(norm(to_mx(x)), ref_norm(x))
    print(f"GroupNorm {shape} groups={groups}: max abs err {err:.3g}")
    assert err <= 1e-5 * scale


def test_mlx_group_norm_is_channels_last():
    """Why the snippet exists: mlx.nn.GroupNorm on torch's NCHW input is wrong."""
    x = randn(2, 8, 3, 4, seed=72)
    ref = torch.nn.functional.group_norm(x, 2)
    out = mnn.GroupNorm(2, 8, affine=False, pytorch_compatible=True)(to_mx(x))
    assert max_err(out, ref)[0] > 1e-2


# --- Conv1d / Conv2d -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("cls", "args", "kwargs", "shape"),
    [
        pytest.param("Conv2d", (4, 6, 1), {}, (2, 4, 5, 7), id="2d-1x1"),
        pytest.param("Conv2d", (4, 6, 3), {"padding": 1}, (2, 4, 5, 7), id="2d-3x3"),
        pytest.param(
            "Conv2d", (4, 4, (3, 2)), {"stride": 2, "groups": 2}, (1, 4, 9, 8), id="2d-groups"
        ),
        pytest.param("Conv2d", (4, 6, 4), {"padding": "same"}, (1, 4, 6, 6), id="2d-same-even"),
        pytest.param("Conv1d", (3, 5, 3), {"dilation": 2, "bias": False}, (2, 3, 12), id="1d"),
    ],
)
def test_conv_matches_torch(cls, args, kwargs, shape):
    ref_conv = getattr(torch.nn, cls)(*args, **kwargs)
    randomize(ref_conv, seed=80)
    conv = load("conv")[cls](*args, **kwargs)
    # MLX layout [out, *kernel, in]: the transpose LAYOUT_PLAN makes convert-weights apply.
    weights = [
        (k, to_mx(v.permute(0, *range(2, v.ndim), 1) if k == "weight" else v))
        for k, v in ref_conv.state_dict().items()
    ]
    conv.load_weights(weights, strict=True)
    x = randn(*shape, seed=81)
    with torch.no_grad():
        err, scale = max_err(conv(to_mx(x)), ref_conv(x))
    print(f"{cls} {args} {kwargs}: max abs err {err:.3g}")
    assert err <= 1e-5 * scale


# --- layer_norm, rand, maybe_adjust_dtype_for_device, register_buffer ---------------------


@pytest.mark.parametrize(
    ("shape", "normalized", "affine"),
    [
        pytest.param((2, 5, 8), (8,), True, id="last-axis"),
        pytest.param((2, 5, 8), 8, False, id="int-no-affine"),
        pytest.param((2, 3, 4, 6), (4, 6), True, id="two-axes"),
    ],
)
def test_layer_norm_matches_torch(shape, normalized, affine):
    x = randn(*shape, seed=90, scale=3.0) + 1.5
    dims = (normalized,) if isinstance(normalized, int) else normalized
    weight = randn(*dims, seed=91) if affine else None
    bias = randn(*dims, seed=92) if affine else None
    ref = torch.nn.functional.layer_norm(x, dims, weight, bias, 1e-5)
    out = load("layer_norm")["layer_norm"](
        to_mx(x), normalized, to_mx(weight) if affine else None, to_mx(bias) if affine else None
    )
    err, scale = max_err(out, ref)
    assert err <= 1e-5 * scale


def test_layer_norm_rejects_a_shape_that_is_not_trailing():
    with pytest.raises(ValueError, match="normalized_shape"):
        load("layer_norm")["layer_norm"](mx.zeros((2, 3, 4)), (3,))


@pytest.mark.parametrize(
    "size", [pytest.param((5,), id="int"), pytest.param(((2, 3),), id="tuple")]
)
def test_rand_takes_torch_sizes(size):
    out = load("rand")["rand"](*size)
    assert out.shape == torch.rand(*size).shape and out.dtype == mx.float32
    assert 0.0 <= float(out.min()) and float(out.max()) < 1.0
    assert load("rand")["rand"](3, dtype=mx.float16).dtype == mx.float16
    normal = load("rand")["randn"](*size)
    assert normal.shape == torch.randn(*size).shape and normal.dtype == mx.float32


def test_dtype_for_device_downcasts_float64_only_on_the_gpu():
    adjust = load("dtypes")["maybe_adjust_dtype_for_device"]
    cpu, gpu = mx.Device(mx.DeviceType.cpu), mx.Device(mx.DeviceType.gpu)
    assert adjust(mx.float64, cpu) == mx.float64
    assert adjust(mx.float64, gpu) == mx.float32
    assert adjust(mx.float32, gpu) == mx.float32
    assert adjust(mx.int64, gpu) == mx.int64  # MLX's GPU has int64


@pytest.mark.parametrize("persistent", [True, False])
def test_register_buffer_keeps_the_state_dict_role(persistent):
    register_buffer = load("register_buffer")["register_buffer"]

    class TorchNet(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = torch.nn.Linear(2, 2)
            self.register_buffer("table", torch.ones(3), persistent=persistent)

    class Net(mnn.Module):
        def __init__(self):
            super().__init__()
            self.lin = mnn.Linear(2, 2)
            register_buffer(self, "table", mx.ones(3), persistent=persistent)

    net = Net()
    assert sorted(k for k, _ in tree_flatten(net.parameters())) == sorted(TorchNet().state_dict())
    assert net.table.shape == (3,)
    load_torch_weights(net, TorchNet())  # strict: the same keys on both sides
