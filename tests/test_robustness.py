"""Bad or unusual input to `porter port` and friends: one-line errors, nothing half written,
ordinary file modes, odd source names and encodings, Ctrl-C."""

from __future__ import annotations

import ast
import os
from pathlib import Path

import pytest

from porter.cli import main
from tests.porting import GATE


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    code = main(argv)
    return code, capsys.readouterr().err


def one_error(err: str) -> str:
    """The single line of a one-line error (and no traceback)."""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("porter: error: "), err
    return lines[0]


@pytest.fixture
def gate(tmp_path: Path) -> Path:
    src = tmp_path / "gate.py"
    src.write_text(GATE)
    return src


@pytest.fixture
def umask_022():
    old = os.umask(0o022)
    yield
    os.umask(old)


def test_nothing_is_written_when_one_target_cannot_be_replaced(gate, tmp_path, capsys) -> None:
    out = tmp_path / "out"
    (out / "weights.py").mkdir(parents=True)
    code, err = run(["port", str(gate), "-o", str(out), "--force"], capsys)
    assert code == 2
    assert one_error(err) == (
        f"porter: error: {out / 'weights.py'}: exists and is not a regular file; not replacing it"
    )
    assert [p.name for p in out.iterdir()] == ["weights.py"]  # no module, no temp file


@pytest.mark.parametrize(
    ("report", "message"),
    [
        pytest.param("report.txt", "--report wants a .md or .json file", id="suffix"),
        pytest.param("nowhere/report.md", "--report: no such folder", id="no-folder"),
    ],
)
def test_a_bad_report_path_fails_before_anything_is_written(
    gate, tmp_path, capsys, report, message
) -> None:
    out = tmp_path / "out"
    code, err = run(["port", str(gate), "-o", str(out), "--report", str(tmp_path / report)], capsys)
    assert code == 2 and message in one_error(err)
    assert not out.exists()


def test_written_files_get_the_mode_of_a_new_file(gate, tmp_path, capsys, umask_022) -> None:
    out = tmp_path / "out"
    report = tmp_path / "report.md"
    assert run(["port", str(gate), "-o", str(out), "--report", str(report)], capsys)[0] == 0
    html = tmp_path / "diff.html"
    assert run(["diff", str(gate), "--html", str(html)], capsys)[0] == 0
    for path in [*out.iterdir(), report, html]:
        assert path.stat().st_mode & 0o777 == 0o644, path


@pytest.mark.parametrize(
    ("name", "module"),
    [
        pytest.param("my-model.py", "my_model", id="dash"),
        pytest.param("sp ace.py", "sp_ace", id="space"),
        pytest.param("class.py", "_class", id="keyword"),
        pytest.param("1mlp.py", "_1mlp", id="leading-digit"),
        pytest.param("support.py", "support_model", id="support"),
        pytest.param("weights.py", "weights_model", id="weights"),
        pytest.param("test_golden_gate.py", "test_golden_gate_model", id="golden-test-name"),
    ],
)
def test_a_source_name_that_is_no_module_name_ports(tmp_path, capsys, name, module) -> None:
    src = tmp_path / name
    src.write_text(GATE)
    out = tmp_path / "out"
    code, err = run(["port", str(src), "-o", str(out)], capsys)
    assert code == 0, err
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [f"{module}.py", "support.py", "weights.py", "__init__.py"]
    )
    for path in out.iterdir():
        ast.parse(path.read_text())
    assert f"from .{module} import" in (out / "__init__.py").read_text()
    assert "class Gate" in (out / f"{module}.py").read_text()
    assert run(["check", str(out)], capsys)[0] == 0


def test_the_source_is_never_overwritten(gate, capsys, monkeypatch) -> None:
    monkeypatch.chdir(gate.parent)
    code, err = run(["port", "gate.py", "-o", ".", "--force"], capsys)
    assert code == 2
    assert "would overwrite the source being ported" in one_error(err)
    assert gate.read_text() == GATE
    assert sorted(p.name for p in gate.parent.iterdir()) == ["gate.py"]


@pytest.mark.parametrize(
    ("output", "message"),
    [
        pytest.param("", "-o: the output folder is empty", id="empty"),
        pytest.param("gate.py", "output path is a file, not a folder", id="a-file"),
    ],
)
def test_a_bad_output_folder_is_one_line(gate, capsys, monkeypatch, output, message) -> None:
    monkeypatch.chdir(gate.parent)
    code, err = run(["port", "gate.py", "-o", output], capsys)
    assert code == 2 and message in one_error(err)
    assert sorted(p.name for p in gate.parent.iterdir()) == ["gate.py"]


def test_bisect_wants_an_image_file_for_its_plot_before_it_runs(tmp_path, capsys) -> None:
    pytest.importorskip("matplotlib")
    code, err = run(["bisect", "z-image", "--plot", str(tmp_path / "out.txt")], capsys)
    assert code == 2 and "--plot wants an image file, such as .png" in one_error(err)


def test_ctrl_c_is_one_line_and_exit_130(gate, tmp_path, capsys, monkeypatch) -> None:
    def interrupted(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr("porter.pipeline.generate", interrupted)
    code, err = run(["port", str(gate), "-o", str(tmp_path / "out")], capsys)
    assert code == 130 and err == "porter: interrupted\n"


def _key_error_during_interrupt() -> None:
    """What LibCST raises when Ctrl-C lands in metadata resolution."""
    try:
        raise KeyboardInterrupt
    except KeyboardInterrupt:
        raise KeyError("ScopeProvider")  # its context is the interrupt


def _error_caused_by_a_chained_interrupt() -> None:
    try:
        _key_error_during_interrupt()
    except KeyError as err:
        raise RuntimeError("metadata resolution failed") from err


@pytest.mark.parametrize(
    "raise_",
    [
        pytest.param(_key_error_during_interrupt, id="context"),
        pytest.param(_error_caused_by_a_chained_interrupt, id="cause-of-context"),
    ],
)
def test_an_error_raised_while_handling_ctrl_c_is_an_interrupt(
    gate, tmp_path, capsys, monkeypatch, raise_
) -> None:
    def interrupted(*args: object, **kwargs: object) -> None:
        raise_()

    monkeypatch.setattr("porter.pipeline.generate", interrupted)
    code, err = run(["port", str(gate), "-o", str(tmp_path / "out")], capsys)
    assert code == 130 and err == "porter: interrupted\n"
    assert not (tmp_path / "out").exists()


def test_an_error_without_an_interrupt_is_not_called_one(gate, tmp_path, monkeypatch) -> None:
    def fails(*args: object, **kwargs: object) -> None:
        try:
            raise ValueError("inner")
        except ValueError:
            raise KeyError("outer")

    monkeypatch.setattr("porter.pipeline.generate", fails)
    with pytest.raises(KeyError, match="outer"):
        main(["port", str(gate), "-o", str(tmp_path / "out")])


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(b"\xef\xbb\xbf" + GATE.encode(), id="utf-8-bom"),
        pytest.param(
            b"# -*- coding: latin-1 -*-\n"
            + GATE.replace("(nn.Module):", "(nn.Module):  # \xe9t\xe9").encode("latin-1"),
            id="latin-1-coding-line",
        ),
    ],
)
def test_a_source_with_a_bom_or_a_coding_line_ports(tmp_path, capsys, data) -> None:
    src = tmp_path / "gate.py"
    src.write_bytes(data)
    out = tmp_path / "out"
    code, err = run(["port", str(src), "-o", str(out)], capsys)
    assert code == 0, err
    text = (out / "gate.py").read_text(encoding="utf-8")
    assert "\ufeff" not in text and "mx.tanh" in text
    assert "été" in text or b"\xe9t\xe9" not in data


@pytest.mark.parametrize(
    ("data", "expect"),
    [
        pytest.param(b"x = 1\ny = '\xe9'\n", "bad.py:2: not UTF-8 text", id="not-utf-8"),
        pytest.param(b"# coding: nope\nx = 1\n", "bad.py:1: unknown encoding: nope", id="cookie"),
        pytest.param(b"\x00x = 1\n", "bad.py:1: contains a NUL byte", id="nul"),
        pytest.param(b"x = 1\n\x00\n", "bad.py:2: contains a NUL byte", id="nul-line-2"),
    ],
)
def test_an_undecodable_source_is_one_line_with_its_line(tmp_path, capsys, data, expect) -> None:
    src = tmp_path / "bad.py"
    src.write_bytes(data)
    code, err = run(["port", str(src), "-o", str(tmp_path / "out")], capsys)
    assert code == 2 and expect in one_error(err)


@pytest.mark.parametrize(
    "make",
    [
        pytest.param(lambda d: (d / "adir.py").mkdir() or d / "adir.py", id="folder"),
        pytest.param(lambda d: Path("/dev/null"), id="device"),
        pytest.param(lambda d: os.mkfifo(d / "fifo.py") or d / "fifo.py", id="fifo"),
    ],
)
def test_a_source_that_is_not_a_regular_file_says_so(tmp_path, capsys, make) -> None:
    if not hasattr(os, "mkfifo"):
        pytest.skip("no FIFOs here")
    spec = make(tmp_path)
    code, err = run(["port", str(spec), "-o", str(tmp_path / "out")], capsys)
    assert code == 2
    assert one_error(err) == f"porter: error: {spec}: not a regular file; pass a .py file"


UNPORTED_IMPORTS = """
import torch
from torch import nn
from some_library.layers import FancyHead, fancy_fn


class Base(nn.Module):
    def __init__(self, dim):
        super().__init__()
        self.proj = nn.Linear(dim, dim)

    def forward(self, x):
        return self.proj(x)


class WithHead(FancyHead, Base):
    pass


def uses(x):
    return fancy_fn(x) + torch.special.erfcx(x)
"""


def test_a_port_with_unported_names_still_imports_and_they_raise_when_used(tmp_path) -> None:
    import importlib
    import sys

    import mlx.core as mx

    from porter.pipeline import port

    src = tmp_path / "partial_src.py"
    src.write_text(UNPORTED_IMPORTS)  # some_library is not installed: only the port is run
    result = port(str(src), tmp_path / "partial", command="test")
    assert {f.code for f in result.ctx.findings} >= {"FancyHead", "fancy_fn"}  # each use marked
    sys.path.insert(0, str(tmp_path))
    try:
        mm = importlib.import_module("partial.partial_src")
    finally:
        sys.path.remove(str(tmp_path))
    assert mm.Base(4)(mx.ones((1, 4))).shape == (1, 4)  # what ported works
    with pytest.raises(NotImplementedError, match="some_library.layers.FancyHead"):
        mm.WithHead(4)
    with pytest.raises(NotImplementedError, match="some_library.layers.fancy_fn"):
        mm.uses(mx.ones((2,)))
