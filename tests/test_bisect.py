"""`porter bisect` names the module where a port first diverges.

The proof plants known bugs in a copy of generated/z_image (by editing its source text) and
checks that bisect names the module each bug first shows in, and where its cause ran. The
copies run against one seeded torch model and checkpoint (the basic_batch2 golden case),
built once for this file. Toy models cover the recording itself: repeated calls, complex and
dataclass outputs, shape mismatches and a port that raises.
"""

from __future__ import annotations

import io
import re
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

import mlx.nn as mnn
import pytest
import torch
from diffusers.models.transformers import transformer_z_image as torch_z

from generated.z_image.test_golden_transformer_z_image import BASIC_BATCH2, OMNI_SIGLIP_BATCH2
from porter.bisect import bisect, case_from_port, import_port, print_report
from porter.cli import main
from porter.golden import build_pair, case_inputs, run_golden, state_dict_to_mx

ROOT = Path(__file__).resolve().parent.parent
PORT = ROOT / "generated" / "z_image"

# (file, regex, replacement): each must match exactly once in the generated code.
HALF_SPLIT_ROPE = [
    # Pairs x[i] with x[i + d/2] (the rotate-half convention) instead of x[2i] with x[2i+1].
    (
        "transformer_z_image.py",
        re.escape("x = x_in.astype(mx.float32).reshape(*x_in.shape[:-1], -1, 2)"),
        "x = mx.stack(mx.split(x_in.astype(mx.float32), 2, axis=-1), axis=-1)",
    ),
    (
        "transformer_z_image.py",
        re.escape("x_out = mx.flatten(complex_mul(x, freqs_cis), 3)"),
        "x_out = mx.concatenate(unbind(complex_mul(x, freqs_cis), axis=-1), axis=-1)",
    ),
]
QK_NORM_EPS = [
    # The attention's query/key RMSNorm eps: 1e-2 instead of 1e-5.
    ("transformer_z_image.py", r"(qk_norm=.*\n\s*)eps=1e-5,", r"\1eps=1e-2,"),
]
PAD_TOKENS_DROPPED = [
    # The learned pad token is never written into the padded positions (x, caption, SigLIP).
    (
        "transformer_z_image.py",
        re.escape("feats_cat = mx.where(mask, pad_token, feats_cat)"),
        "feats_cat = feats_cat",
    ),
]
CAPTION_PAD_TOKEN_DROPPED = [
    # Only the caption: an all-False pad mask, so cap_pad_token is written nowhere.
    (
        "transformer_z_image.py",
        r"cap_pad_mask,(\s*)self\.cap_pad_token,",
        r"[mx.zeros_like(m) for m in cap_pad_mask],\1self.cap_pad_token,",
    ),
]
RENAMED_PARAMETER = [("transformer_z_image.py", r"self\.w1 = nn\.Linear", "self.w_1 = nn.Linear")]


def plant(folder: Path, edits: list[tuple[str, str, str]]) -> Path:
    """A copy of generated/z_image in ``folder`` with ``edits`` applied."""
    copy = folder / "z_image"
    shutil.copytree(PORT, copy, ignore=shutil.ignore_patterns("__pycache__"))
    for name, pattern, replacement in edits:
        path = copy / name
        text, count = re.subn(pattern, replacement, path.read_text())
        assert count == 1, f"{name}: {pattern!r} matched {count} times; update the planted bug"
        path.write_text(text)
    return copy


@dataclass(frozen=True)
class Reference:
    torch_model: torch.nn.Module
    config: Path
    weights: Path


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Reference:
    """The basic_batch2 torch model with seeded weights, saved and converted once."""
    folder = tmp_path_factory.mktemp("reference")
    torch_model, _ = build_pair(
        torch_z.ZImageTransformer2DModel, lambda *_: None, BASIC_BATCH2, folder
    )
    return Reference(torch_model, folder / "torch" / "config.json", folder / "mlx.safetensors")


def bisect_port(reference: Reference, port: Path):
    mlx_model = import_port(port).load_model(reference.config, reference.weights)
    args, kwargs = case_inputs(BASIC_BATCH2)
    return bisect(reference.torch_model, mlx_model, args, kwargs, rel=BASIC_BATCH2.rel)


# Each bug, the call it first shows in, and where its cause ran: the call whose own code holds
# it, and the two children it ran between (None, None: inside the diverging call itself).
PLANTED = [
    pytest.param(
        HALF_SPLIT_ROPE,
        "noise_refiner.0.attention.to_out.0",
        ("noise_refiner.0.attention", "noise_refiner.0.attention.norm_k"),
        id="half-split-rope",
    ),
    pytest.param(
        QK_NORM_EPS,
        "noise_refiner.0.attention.norm_q",
        ("noise_refiner.0.attention.norm_q", None),
        id="qk-norm-eps",
    ),
    pytest.param(
        PAD_TOKENS_DROPPED,
        "noise_refiner.0.attention_norm1",
        ("(model)", "all_x_embedder.2-1"),
        id="pad-tokens-dropped",
    ),
    pytest.param(
        CAPTION_PAD_TOKEN_DROPPED,
        "context_refiner.0.attention_norm1",
        ("(model)", "cap_embedder.1"),
        id="caption-pad-token-dropped",
    ),
]


@pytest.mark.parametrize(("edits", "first", "cause"), PLANTED)
def test_bisect_names_the_module_a_planted_bug_first_shows_in(
    tmp_path, reference, edits, first, cause
) -> None:
    report = bisect_port(reference, plant(tmp_path, edits))
    print(report.diagnosis())

    divergence = report.first_divergence
    assert divergence is not None and divergence.key == first, report.table()
    assert all(not row.output.over(report.rel) for row in report.rows[: divergence.index])
    # The bug reaches the model's output: the golden test would fail, bisect says where.
    assert report.rows[-1].key == "(model)" and report.rows[-1].output.over(report.rel)

    found = report.cause()
    assert found is not None
    assert (found.call.key, found.after.key if found.after else None) == cause


def test_unmodified_port_has_no_divergence_in_execution_order(monkeypatch, capsys) -> None:
    monkeypatch.chdir(ROOT)
    code = main(["bisect", "z-image"])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "no divergence: all 84 calls within rel 0.0001" in out
    keys = [line.split()[1] for line in out.splitlines() if re.match(r"\s*\d+\s", line)]

    # Blocks and embedders in the order the forward runs them, the model's own call last.
    top = [key for key in keys if re.fullmatch(r"[A-Za-z_]+(\.[\w-]+)?|\(model\)", key)]
    assert top == [
        "t_embedder",
        "all_x_embedder.2-1",
        "noise_refiner.0",
        "cap_embedder.0",
        "cap_embedder.1",
        "context_refiner.0",
        "layers.0",
        "layers.1",
        "all_final_layer.2-1",
        "(model)",
    ]
    # Inside a block: each call is listed when it returns, so children come before parents.
    block = [key.removeprefix("layers.0.") for key in keys if key.startswith("layers.0.")]
    assert block == [
        "adaLN_modulation.0",
        "attention_norm1",
        "attention.to_q",
        "attention.to_k",
        "attention.to_v",
        "attention.norm_q",
        "attention.norm_k",
        "attention.to_out.0",
        "attention.to_out.1",
        "attention",
        "attention_norm2",
        "ffn_norm1",
        "feed_forward.w1",
        "feed_forward.w3",
        "feed_forward.w2",
        "feed_forward",
        "ffn_norm2",
    ]


def test_failing_golden_run_prints_the_bisect_table(tmp_path, capsys) -> None:
    package = import_port(plant(tmp_path, HALF_SPLIT_ROPE))
    with pytest.raises(AssertionError, match="max abs err"):
        run_golden(torch_z.ZImageTransformer2DModel, package.load_model, BASIC_BATCH2, tmp_path)
    out = capsys.readouterr().out
    assert "porter bisect ZImageTransformer2DModel basic_batch2: 84 module calls" in out
    assert re.search(r"noise_refiner\.0\.attention\.to_out\.0 .*<- first divergence", out)
    assert "first divergence: #12 noise_refiner.0.attention.to_out.0 (Linear)" in out


def test_cli_plot_writes_a_png(tmp_path, capsys) -> None:
    port = plant(tmp_path, QK_NORM_EPS)
    png = tmp_path / "bisect.png"
    code = main(["bisect", "z-image", "--port", str(port), "--plot", str(png)])
    out = capsys.readouterr().out
    assert code == 1, out
    assert "first divergence: #10 noise_refiner.0.attention.norm_q (RMSNorm)" in out
    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    assert (width, height) == (800, 400)


def test_cases_come_from_the_ports_rendered_golden_test() -> None:
    """bisect runs exactly the cases the rendered golden test compares."""
    folder = ROOT / "generated" / "z_image"
    package = import_port(folder)
    assert case_from_port(package, folder, None).name == "basic_batch2"
    case = case_from_port(package, folder, "omni_siglip_batch2")
    assert (case.name, case.seed, case.config) == (
        OMNI_SIGLIP_BATCH2.name,
        OMNI_SIGLIP_BATCH2.seed,
        OMNI_SIGLIP_BATCH2.config,
    )


# Bad input: one line, exit 2 -------------------------------------------------------------------


def one_line_error(argv: list[str], capsys) -> str:
    code = main(argv)
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert len(err.splitlines()) == 1 and err.startswith("porter: error: "), err
    return err


@pytest.mark.parametrize(
    ("argv", "expect"),
    [
        pytest.param(["nope"], "unknown recipe 'nope'; known: z-image", id="recipe"),
        pytest.param(
            ["z-image", "--case", "nope"],
            "unknown case 'nope'; known: basic_batch2, omni_siglip_batch2",
            id="case",
        ),
        pytest.param(["z-image", "--rel", "0"], "--rel must be positive", id="rel"),
    ],
)
def test_bad_arguments(argv, expect, capsys) -> None:
    assert expect in one_line_error(["bisect", *argv], capsys)


def test_port_folder_that_is_not_a_package(tmp_path, capsys) -> None:
    err = one_line_error(["bisect", "z-image", "--port", str(tmp_path)], capsys)
    assert "not a ported package (no __init__.py)" in err


def test_port_of_another_recipe_names_both_sources(capsys) -> None:
    sd3 = ROOT / "generated" / "sd3"
    err = one_line_error(["bisect", "flux", "--port", str(sd3)], capsys)
    assert err == (
        f"porter: error: {sd3} is a port of diffusers.models.transformers.transformer_sd3, "
        "not of flux (diffusers.models.transformers.transformer_flux)"
    )


def test_an_edited_copy_of_another_recipes_port_is_refused(tmp_path, capsys) -> None:
    port = plant(tmp_path, QK_NORM_EPS)
    err = one_line_error(["bisect", "lumina2", "--port", str(port)], capsys)
    assert f"{port} is a port of diffusers.models.transformers.transformer_z_image" in err


def test_port_that_does_not_import_names_file_and_line(tmp_path, capsys) -> None:
    port = plant(tmp_path, [("weights.py", r"\nimport json\n", "\nimport json(\n")])
    err = one_line_error(["bisect", "z-image", "--port", str(port)], capsys)
    assert f"{port / 'weights.py'}:" in err and "cannot import the port" in err


def test_port_with_a_renamed_parameter_names_the_key(tmp_path, capsys) -> None:
    port = plant(tmp_path, RENAMED_PARAMETER)
    err = one_line_error(["bisect", "z-image", "--port", str(port)], capsys)
    assert "strict weight load failed" in err
    assert re.search(r"the port's model has \S+\.feed_forward\.w_1\.weight \(and \d+ more\)", err)
    assert re.search(r"the checkpoint has \S+\.feed_forward\.w1\.weight", err)


def test_plot_without_matplotlib_names_the_extra(tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib raises
    err = one_line_error(["bisect", "z-image", "--plot", str(tmp_path / "a.png")], capsys)
    assert "--plot needs matplotlib: pip install 'porter[plot]'" in err


# The recording on toy models -------------------------------------------------------------------


@dataclass
class Output:
    sample: object
    note: str = "not compared"


class TorchToy(torch.nn.Module):
    """Calls ``proj`` twice, returns a complex tensor from ``rot`` and a dataclass at the end."""

    def __init__(self) -> None:
        super().__init__()
        self.proj = torch.nn.Linear(4, 4)
        self.rot = TorchRot()
        self.head = torch.nn.Linear(4, 2)

    def forward(self, x):
        h = self.proj(self.proj(x))
        z = self.rot(h)
        return Output(self.head(h) + torch.view_as_real(z).sum())


class TorchRot(torch.nn.Module):
    def forward(self, h):
        return torch.view_as_complex(h.reshape(*h.shape[:-1], -1, 2))


class MlxToy(mnn.Module):
    """The port of TorchToy; complex values are (re, im) pairs on a trailing axis."""

    def __init__(self, bug: str | None = None) -> None:
        super().__init__()
        self.proj = mnn.Linear(4, 4)
        self.rot = MlxRot(bug)
        self.head = mnn.Linear(4, 2)
        self.bug = bug

    def __call__(self, x):
        h = self.proj(self.proj(x))
        z = self.rot(h)
        sample = self.head(h) + z.sum()
        return Output(sample[..., :1] if self.bug == "shape" else sample)


class MlxRot(mnn.Module):
    def __init__(self, bug: str | None) -> None:
        super().__init__()
        self.bug = bug

    def __call__(self, h):
        if self.bug == "raise":
            raise ValueError("planted")
        return h.reshape(*h.shape[:-1], -1, 2)


def toy_report(bug: str | None = None):
    torch.manual_seed(0)
    torch_model = TorchToy().eval()
    mlx_model = MlxToy(bug)
    mlx_model.load_weights(state_dict_to_mx(torch_model), strict=True)
    report = bisect(torch_model, mlx_model, (torch.randn(3, 4),), rel=1e-5)
    assert type(mlx_model) is MlxToy and type(mlx_model.proj) is mnn.Linear  # classes restored
    return report


def test_toy_repeated_calls_complex_and_dataclass_outputs_match() -> None:
    report = toy_report()
    assert [row.key for row in report.rows] == ["proj", "proj#2", "rot", "head", "(model)"]
    assert [row.cls for row in report.rows] == [
        "Linear",
        "Linear",
        "TorchRot",
        "Linear",
        "TorchToy",
    ]
    assert all(row.side == "both" and row.max_abs < 1e-6 for row in report.rows)
    assert report.rows[2].ref_max > 0  # the complex output was compared as (re, im)
    assert report.first_divergence is None and report.crash is None


def test_toy_shape_mismatch_is_reported_not_raised() -> None:
    report = toy_report("shape")
    first = report.first_divergence
    assert first is not None and first.key == "(model)"
    assert first.output.note == "shape (3, 2) vs (3, 1) at .sample"
    assert "<- first divergence: shape (3, 2) vs (3, 1) at .sample" in report.table()


def test_toy_port_that_raises_keeps_the_calls_before_it() -> None:
    report = toy_report("raise")
    assert report.crash == "ValueError: planted (in rot)"
    assert [(row.key, row.side) for row in report.rows] == [
        ("proj", "both"),
        ("proj#2", "both"),
        ("rot", "torch"),
        ("head", "torch"),
        ("(model)", "torch"),
    ]
    assert report.first_divergence is None
    assert "the port raised ValueError: planted (in rot)" in report.diagnosis()


def test_terminal_output_is_a_rich_table() -> None:
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    terminal = Terminal()
    print_report(toy_report("shape"), terminal)
    out = terminal.getvalue()
    assert "\x1b[" in out and "proj#2" in out  # styled by rich
    assert "first divergence: #4 (model) (TorchToy), shape (3, 2) vs (3, 1) at .sample" in out
