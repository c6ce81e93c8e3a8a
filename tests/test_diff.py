"""`porter diff`: block alignment, rule ids on changed lines, terminal and HTML output, errors.

The HTML page is also rendered in headless Chromium when `chromium` is on PATH.
"""

from __future__ import annotations

import io
import os
import re
import shutil
import struct
import subprocess
import sys
import threading
import zlib
from pathlib import Path

import pytest

from porter.cli import main
from porter.diff import (
    Attribution,
    PortDiff,
    Row,
    diff_texts,
    fold,
    outline,
    pair_lines,
    port_diff,
)

ROOT = Path(__file__).resolve().parent.parent
ESC = "\x1b["

SOURCE = """\
import torch
from torch import nn


def helper(a, b):
    return torch.cat([a, b], dim=1)


class Block(nn.Module):
    def __init__(self, dim):
        super().__init__()
        self.proj = nn.Linear(dim, dim)

    def extra(self, x):
        return x * 2 if x.ndim > 1 else x

    def forward(self, x):
        with torch.no_grad():
            y = self.proj(x)
        return torch.cat([x, y], dim=1)


SCALE = 2
"""


@pytest.fixture
def source(tmp_path: Path) -> Path:
    path = tmp_path / "block.py"
    path.write_text(SOURCE)
    return path


@pytest.fixture
def diff(source: Path) -> PortDiff:
    return port_diff(str(source))


def rows_of(diff: PortDiff, title: str) -> list[Row]:
    matches = [block for block in diff.blocks if block.title == title]
    assert len(matches) == 1, [block.title for block in diff.blocks]
    return matches[0].rows


def row_with(diff: PortDiff, text: str) -> Row:
    found = [row for b in diff.blocks for row in b.rows if text in row.left_text]
    assert len(found) == 1, f"{text!r} is on {len(found)} source rows"
    return found[0]


# -- alignment -------------------------------------------------------------------------------


def test_outline_keys_blocks_by_qualified_name_with_forward_as_call() -> None:
    segments = outline(SOURCE)
    assert [(s.key, s.title, s.start, s.end) for s in segments] == [
        ("<module>", "module", 1, 4),
        ("helper", "helper", 5, 8),
        ("Block", "class Block", 9, 9),
        ("Block.__init__", "Block.__init__", 10, 13),
        ("Block.extra", "Block.extra", 14, 16),
        ("Block.__call__", "Block.forward", 17, 22),
        ("Block+", "module after class Block", 23, 23),
    ]


def test_outline_keeps_decorators_and_the_comments_above_a_def_with_it() -> None:
    text = "x = 1\n\n# about f\n@decorate\ndef f():\n    pass\n"
    assert [(s.title, s.start) for s in outline(text)] == [("module", 1), ("f", 3)]


def test_blocks_pair_by_class_and_function_with_forward_beside_call(diff: PortDiff) -> None:
    titles = [block.title for block in diff.blocks]
    assert titles == [
        "porter header (added)",
        "module",
        "helper",
        "class Block",
        "Block.__init__",
        "Block.extra",
        "Block.forward ↔ __call__",
        "module after class Block",
    ]
    first = rows_of(diff, "Block.forward ↔ __call__")[0]
    assert "def forward(self, x):" in first.left_text
    assert "def __call__(self, x):" in first.right_text
    assert first.kind == "change" and first.rules == ("rename-forward-to-call",)
    # The unchanged method lines up line for line.
    extra = rows_of(diff, "Block.extra")
    assert [r.kind for r in extra if r.left_text.strip()] == ["same", "same"]


@pytest.mark.parametrize(
    ("left", "right", "expect"),
    [
        pytest.param(
            ["a = f(x)", "b = g(y)"],
            ["u = 1", "v = 2"],
            [(0, 0), (1, 1)],
            id="nothing-alike-pairs-in-order",
        ),
        pytest.param(
            ["with ctx():", "    y = torch.cat([a, b], dim=1)", "    return y.float()"],
            ["y = mx.concatenate([a, b], axis=1)", "return y.astype(mx.float32)"],
            [(0, None), (1, 0), (2, 1)],
            id="removed-header-does-not-shift-the-body",
        ),
        pytest.param(
            ["x = f(a)"],
            ["# a comment porter added", "x = g(a)"],
            [(None, 0), (0, 1)],
            id="added-line-above",
        ),
    ],
)
def test_pair_lines(left: list[str], right: list[str], expect: list) -> None:
    assert pair_lines(left, right) == expect


# -- rule attribution ------------------------------------------------------------------------


def test_changed_lines_name_the_rules_that_changed_them(diff: PortDiff) -> None:
    cat = row_with(diff, "return torch.cat([a, b], dim=1)")
    assert cat.kind == "change" and cat.marker == "|"
    assert "mx.concatenate([a, b], axis=1)" in cat.right_text
    assert cat.rules == ("map-ops",)
    assert row_with(diff, "import torch").rules == ("rewrite-imports",)
    assert row_with(diff, "def extra").rules == ()


def test_a_removed_block_header_and_its_dedented_body(diff: PortDiff) -> None:
    header = row_with(diff, "with torch.no_grad():")
    assert header.kind == "delete" and header.right is None
    assert header.rules == ("unwrap-device-contexts",)
    body = row_with(diff, "y = self.proj(x)")
    assert body.layout and body.marker == "~"
    assert body.right_text == "        y = self.proj(x)"
    assert body.rules == ("unwrap-device-contexts",)


def test_a_rewritten_statement_black_joined_and_a_plain_rewrap() -> None:
    left = "y = torch.cat([a,\n               b], dim=1)\nz = g(a,\n      b)\n"
    right = "y = mx.concatenate([a, b], axis=1)\nz = g(a, b)\n"
    attribution = Attribution.build(left, {"map-ops": {1}})
    (block,) = diff_texts(left, right, attribution)
    cat_first, cat_rest, g_first, g_rest = block.rows
    assert (cat_first.kind, cat_first.rules) == ("change", ("map-ops",))
    # Line 2 was not recorded by the rule; it belongs to the same rewritten statement.
    assert (cat_rest.kind, cat_rest.left, cat_rest.rules) == ("delete", 2, ("map-ops",))
    assert g_first.layout and g_rest.layout and g_first.rules == g_rest.rules == ()


def test_fold_hides_unchanged_runs_beyond_the_context() -> None:
    rows = [Row("same", i, i) for i in range(1, 11)] + [Row("change", 11, 11, "a", "b")]
    items = fold(rows, 2)
    assert [getattr(item, "left", None) for item in items] == [None, 9, 10, 11]
    assert len(items[0].rows) == 8  # type: ignore[union-attr]
    assert fold(rows, None) == rows


# -- terminal --------------------------------------------------------------------------------


def test_plain_text_when_stdout_is_not_a_terminal(
    source: Path, tmp_path: Path, capsys, monkeypatch
) -> None:
    marker = tmp_path / "paged"
    monkeypatch.setenv("PORTER_PAGER", f"tee {marker} >/dev/null")
    monkeypatch.delenv("NO_COLOR", raising=False)
    assert main(["diff", str(source), "--width", "120"]) == 0
    out = capsys.readouterr().out
    assert ESC not in out and not marker.exists()
    assert max(len(line) for line in out.splitlines()) <= 120
    line = next(line for line in out.splitlines() if "torch.cat([a, b]" in line)
    assert re.search(r"\|\s+9 +return mx\.concatenate\(\[a, b\], axis=1\)\s+map-ops$", line)
    assert "── Block.forward ↔ __call__ ─" in out


def test_color_always_and_never(source: Path, capsys, monkeypatch) -> None:
    monkeypatch.setenv("NO_COLOR", "1")  # a flag on the command line wins over NO_COLOR
    assert main(["diff", str(source), "--color", "always"]) == 0
    coloured = capsys.readouterr().out
    assert ESC in coloured and "map-ops" in coloured
    assert main(["diff", str(source), "--color", "never"]) == 0
    assert ESC not in capsys.readouterr().out


def test_width_and_context_flags(source: Path, capsys, monkeypatch) -> None:
    monkeypatch.setenv("COLUMNS", "90")
    assert main(["diff", str(source)]) == 0
    narrow = capsys.readouterr().out
    assert max(len(line) for line in narrow.splitlines()) <= 90
    assert main(["diff", str(source), "--context", "all", "--width", "200"]) == 0
    full = capsys.readouterr().out
    assert "unchanged lines" in narrow and "unchanged lines" not in full
    assert "super().__init__()" in full and "super().__init__()" not in narrow


class _Terminal:
    """A pseudo-terminal for sys.stdout; what reaches it is drained in the background."""

    def __init__(self) -> None:
        master, slave = os.openpty()
        self.master = master
        self.stream = io.TextIOWrapper(os.fdopen(slave, "wb"), encoding="utf-8")
        self.received = bytearray()
        self._reader = threading.Thread(target=self._drain, daemon=True)
        self._reader.start()

    def _drain(self) -> None:
        while True:
            try:
                chunk = os.read(self.master, 4096)
            except OSError:
                return
            if not chunk:
                return
            self.received += chunk

    def close(self) -> bytes:
        self.stream.close()
        self._reader.join(timeout=5)
        os.close(self.master)
        return bytes(self.received)


@pytest.mark.parametrize(
    ("no_color", "coloured"),
    [pytest.param("", True, id="colour"), pytest.param("1", False, id="NO_COLOR")],
)
def test_a_terminal_gets_the_pager_and_colour_unless_no_color(
    source: Path, tmp_path: Path, monkeypatch, no_color: str, coloured: bool
) -> None:
    paged = tmp_path / "paged.txt"
    monkeypatch.setenv("PORTER_PAGER", f"tee {paged} >/dev/null")
    monkeypatch.setenv("NO_COLOR", no_color)
    monkeypatch.setenv("TERM", "xterm-256color")
    terminal = _Terminal()
    monkeypatch.setattr(sys, "stdout", terminal.stream)
    try:
        assert main(["diff", str(source), "--width", "100"]) == 0
    finally:
        received = terminal.close()
    text = paged.read_text(encoding="utf-8")
    assert "mx.concatenate" in re.sub(r"\x1b\[[0-9;]*m", "", text)
    assert (ESC in text) == coloured
    assert received == b""


def test_no_pager_prints_to_the_terminal(source: Path, tmp_path: Path, monkeypatch) -> None:
    paged = tmp_path / "paged.txt"
    monkeypatch.setenv("PORTER_PAGER", f"tee {paged} >/dev/null")
    terminal = _Terminal()
    monkeypatch.setattr(sys, "stdout", terminal.stream)
    try:
        assert main(["diff", str(source), "--no-pager", "--width", "100"]) == 0
    finally:
        received = terminal.close()
    assert not paged.exists()
    assert "mx.concatenate" in re.sub(r"\x1b\[[0-9;]*m", "", received.decode("utf-8"))


# -- HTML ------------------------------------------------------------------------------------


def write_html(source: Path, tmp_path: Path, capsys) -> str:
    out = tmp_path / "report" / "diff.html"
    out.parent.mkdir(exist_ok=True)
    assert main(["diff", str(source), "--html", str(out)]) == 0
    captured = capsys.readouterr()
    assert captured.out == "" and f"wrote {out}" in captured.err
    assert [p.name for p in out.parent.iterdir()] == ["diff.html"]  # no temp file left
    return out.read_text(encoding="utf-8")


def test_html_is_self_contained(source: Path, tmp_path: Path, capsys) -> None:
    html = write_html(source, tmp_path, capsys)
    assert html.startswith("<!DOCTYPE html>") and "<style>" in html
    assert "http://" not in html and "https://" not in html
    assert not re.search(r"<script|<link|<img|<iframe|\bsrc=|url\(|@import", html)
    assert all(href.startswith("#") for href in re.findall(r'href="([^"]*)"', html))


def test_html_shows_rule_badges_and_the_legend(source: Path, tmp_path: Path, capsys) -> None:
    from porter.rules.map_ops import RULE

    html = write_html(source, tmp_path, capsys)
    row = re.search(
        r'<div class="row change">.*?<mark>torch</mark>\.<mark>cat</mark>.*?</div>', html
    )
    assert row is not None
    assert "<mark>mx</mark>.<mark>concatenate</mark>([a, b], <mark>axis</mark>=1)" in row.group(0)
    assert re.search(r'<span class="badge c\d+" title="[^"]+">map-ops</span>', row.group(0))
    assert RULE.description in html  # the legend
    assert "Block.forward ↔ __call__" in html
    assert "x.ndim &gt; 1" in html  # code is escaped, not markup


GENERATOR = re.compile(r'<meta name="generator" content="porter diff [^"]+">')


def test_html_names_porter_diff_as_its_generator(source: Path, tmp_path: Path, capsys) -> None:
    head = write_html(source, tmp_path, capsys).split("</head>")[0]
    assert GENERATOR.search(head)


def test_html_replaces_a_page_porter_diff_wrote(source: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "diff.html"
    out.write_text('<!DOCTYPE html>\n<meta name="generator" content="porter diff 0.0.1">\nold')
    assert main(["diff", str(source), "--html", str(out)]) == 0
    assert "Block.forward" in out.read_text(encoding="utf-8")


@pytest.mark.parametrize("force", [[], ["--force"]], ids=["plain", "force"])
def test_html_never_overwrites_the_source(source: Path, capsys, force: list[str]) -> None:
    before = source.read_bytes()
    assert main(["diff", str(source), "--html", str(source), *force]) == 2
    assert "a source the port reads" in one_error_line(capsys)
    assert source.read_bytes() == before


def test_html_never_overwrites_a_library_module_the_port_reads(tmp_path: Path, capsys) -> None:
    pkg = tmp_path / "userpkg_html"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    helpers = pkg / "helpers.py"
    helpers.write_text("import torch\n\n\ndef twice(x):\n    return torch.cat([x, x], dim=-1)\n")
    (pkg / "model.py").write_text(
        "from .helpers import twice\n\n\ndef f(x):\n    return twice(x)\n"
    )
    before = helpers.read_bytes()
    assert main(["diff", str(pkg / "model.py"), "--html", str(helpers), "--force"]) == 2
    assert "a source the port reads" in one_error_line(capsys)
    assert helpers.read_bytes() == before


def test_html_never_overwrites_the_source_through_a_link(
    source: Path, tmp_path: Path, capsys
) -> None:
    link = tmp_path / "link.html"
    link.symlink_to(source)
    before = source.read_bytes()
    assert main(["diff", str(source), "--html", str(link), "--force"]) == 2
    assert "a source the port reads" in one_error_line(capsys)
    assert source.read_bytes() == before and link.is_symlink()


def test_html_refuses_a_file_porter_diff_did_not_write_unless_forced(
    source: Path, tmp_path: Path, capsys
) -> None:
    notes = tmp_path / "notes.html"
    notes.write_text("<html>my notes</html>")
    assert main(["diff", str(source), "--html", str(notes)]) == 2
    err = one_error_line(capsys)
    assert err.startswith(f"porter: error: {notes}: ") and "--force" in err
    assert notes.read_text() == "<html>my notes</html>"

    assert main(["diff", str(source), "--html", str(notes), "--force"]) == 0
    assert GENERATOR.search(notes.read_text(encoding="utf-8"))


def test_html_into_a_missing_folder_fails_and_creates_none(
    source: Path, tmp_path: Path, capsys
) -> None:
    missing = tmp_path / "nonexist"
    assert main(["diff", str(source), "--html", str(missing / "d.html")]) == 2
    assert one_error_line(capsys) == f"porter: error: {missing}: --html: no such folder"
    assert not missing.exists()


# -- a real browser --------------------------------------------------------------------------


def read_png(data: bytes) -> tuple[int, int, list[bytes]]:
    """Width, height and the rows of pixels (3 or 4 bytes each) of an 8-bit RGB(A) PNG."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG file"
    pos, idat, header = 8, bytearray(), None
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos : pos + 8])
        body = data[pos + 8 : pos + 8 + length]
        pos += 12 + length
        if kind == b"IHDR":
            header = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            idat += body
        elif kind == b"IEND":
            break
    assert header is not None
    width, height, depth, color_type, _, _, interlace = header
    assert depth == 8 and color_type in (2, 6) and interlace == 0, header
    bpp = 3 if color_type == 2 else 4
    raw = zlib.decompress(bytes(idat))
    stride = width * bpp
    rows, previous = [], bytearray(stride)
    for y in range(height):
        start = y * (stride + 1)
        line = bytearray(raw[start + 1 : start + 1 + stride])
        _unfilter(raw[start], line, previous, bpp)
        rows.append(bytes(line))
        previous = line
    return width, height, rows


def _unfilter(kind: int, line: bytearray, up: bytearray, bpp: int) -> None:
    if kind == 2:
        line[:] = bytes((a + b) & 0xFF for a, b in zip(line, up, strict=True))
        return
    for i in range(len(line)):
        left = line[i - bpp] if i >= bpp else 0
        corner = up[i - bpp] if i >= bpp else 0
        if kind == 1:
            line[i] = (line[i] + left) & 0xFF
        elif kind == 3:
            line[i] = (line[i] + (left + up[i]) // 2) & 0xFF
        elif kind == 4:
            p = left + up[i] - corner
            pa, pb, pc = abs(p - left), abs(p - up[i]), abs(p - corner)
            pred = left if pa <= pb and pa <= pc else up[i] if pb <= pc else corner
            line[i] = (line[i] + pred) & 0xFF


@pytest.mark.skipif(
    shutil.which("chromium") is None,
    reason="chromium is not on PATH (apt-get install chromium); the HTML page is not rendered",
)
def test_chromium_renders_the_page(source: Path, tmp_path: Path) -> None:
    shot = tmp_path / "diff.png"
    env = {**os.environ, "PYTHON": sys.executable}
    proc = subprocess.run(
        ["bash", str(ROOT / "scripts" / "screenshot_diff.sh"), str(source), str(shot), "1200,1000"],
        capture_output=True,
        text=True,
        env=env,
        timeout=180,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    width, height, rows = read_png(shot.read_bytes())
    assert (width, height) == (1200, 1000)
    bpp = len(rows[0]) // width
    colours = {row[x : x + 3] for row in rows for x in range(0, len(row), bpp)}
    assert len(colours) > 50, "the page rendered as a few flat colours"
    # The page's own colours: added (green), removed (red) lines and the header band.
    for rgb in ((0xE6, 0xFF, 0xEC), (0xFF, 0xEB, 0xE9), (0xF6, 0xF8, 0xFA)):
        assert bytes(rgb) in colours, f"no pixel of #{bytes(rgb).hex()} in the screenshot"


# -- the real Z-Image source -----------------------------------------------------------------


def test_z_image_diff_attributes_the_polar_line_to_the_rope_rule() -> None:
    diff = port_diff("z-image")
    polar = row_with(diff, "torch.polar(")
    assert "rewrite-complex-rope" in polar.rules
    assert "mx.stack([mx.cos(freqs), mx.sin(freqs)], axis=-1)" in polar.right_text
    # Dropped from a class body, and added for a dropped decorator: the class's or def's rule.
    assert row_with(diff, "_no_split_modules = ").rules == ("resolve-library-symbols",)
    config = [r for b in diff.blocks for r in b.rows if "self.config = " in r.right_text]
    assert len(config) == 1 and config[0].rules == ("resolve-library-symbols",)
    titles = [block.title for block in diff.blocks]
    assert "ZImageTransformer2DModel.forward ↔ __call__" in titles
    # The one block the port removes: a constructor left empty once its PyTorch version check
    # is gone (drop_no_op_code).
    changed = [t for t in titles if t.endswith(("(removed)", "(added)")) and "header" not in t]
    assert len(changed) == 1 and "ZSingleStreamAttnProcessor.__init__" in changed[0], changed


# -- bad input -------------------------------------------------------------------------------


def one_error_line(capsys) -> str:
    captured = capsys.readouterr()
    err = captured.err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("porter: error: "), err
    assert captured.out == ""
    return err[0]


@pytest.mark.parametrize(
    ("spec", "expect"),
    [
        pytest.param("/nonexistent/model.py", "/nonexistent/model.py: no such file", id="file"),
        pytest.param("not_a_package_xyz.m", "not_a_package_xyz.m: module", id="module"),
        pytest.param("a b", "a b: not a .py path", id="not-a-name"),
        pytest.param("flux2", "unknown recipe or module 'flux2'; recipes: z-image", id="recipe"),
    ],
)
def test_a_missing_source_is_one_line_and_exit_2(capsys, spec: str, expect: str) -> None:
    assert main(["diff", spec]) == 2
    assert expect in one_error_line(capsys)


def test_a_syntax_error_names_file_and_line(tmp_path: Path, capsys) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text("x = 1\ndef f(:\n    pass\n")
    assert main(["diff", str(bad)]) == 2
    assert f"{bad}:2: syntax error" in one_error_line(capsys)


def test_html_to_an_unwritable_place_is_one_line(source: Path, tmp_path: Path, capsys) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    assert main(["diff", str(source), "--html", str(blocker / "diff.html")]) == 2
    assert one_error_line(capsys).startswith(f"porter: error: {blocker}")


@pytest.mark.parametrize("flag", [["--width", "10"], ["--context", "some"], ["--color", "x"]])
def test_bad_flags_exit_2(source: Path, capsys, flag: list[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["diff", str(source), *flag])
    assert exit_.value.code == 2
    assert "porter diff: error: argument" in capsys.readouterr().err


def test_help_has_an_example(capsys) -> None:
    with pytest.raises(SystemExit):
        main(["diff", "--help"])
    out = capsys.readouterr().out
    assert "porter diff z-image --html" in out and "--no-pager" in out and "NO_COLOR" in out
