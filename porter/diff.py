"""`porter diff SOURCE`: the PyTorch source and its MLX port side by side, with rule ids.

The port runs in memory (nothing is written). Both files are cut into blocks: each top-level
class and function, each method, and the module-level code between them. Blocks pair up by
qualified name, with ``forward`` paired to ``__call__`` (the rename that
``rename-forward-to-call`` makes); inside a pair, lines are aligned with difflib, and within
a run of changed lines the most alike lines are paired first.

Each changed line carries the ids of the rules that changed it, read from
``PortContext.touched`` (rule id -> source lines it rewrote):

- a changed or removed source line: the rules that touched that line, else those that touched
  another line of its statement (black may re-wrap a rewritten statement across lines);
- an added line: the rules of the source statement it sits under in its run of changed lines;
- a removed line no rule recorded, or added lines with no source line beside them: the rules
  of the innermost block around them whose header a rule rewrote (a rule that rewrites a class
  or def may drop or add statements in its body), e.g. ``self.config = ...`` added for
  ``@register_to_config``;
- a layout-only change (marked ``~``): indentation only, or a statement re-wrapped by black with
  the same tokens. An indentation change takes the rules of the innermost enclosing compound
  statement whose header a rule rewrote: a body dedented out of a ``with torch.autocast(...)``
  block shows ``unwrap-device-contexts``. A re-wrap shows no rule;
- the generated file's header is a block of its own, first, with no rule.
"""

from __future__ import annotations

import argparse
import ast
import difflib
import io
import os
import re
import shlex
import shutil
import subprocess
import sys
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from porter.errors import PorterError
from porter.locate import Source

if TYPE_CHECKING:
    from rich.table import Table
    from rich.text import Text

# Markers in the gutter between the two sides, as in `diff -y`, plus `~` for layout only.
SAME, CHANGE, DELETE, INSERT, LAYOUT = " ", "|", "<", ">", "~"
_DEFS = (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)
_TOKEN = re.compile(r"\w+|\s+|[^\w\s]")
# Styles for the terminal; rule ids cycle through the palette in rule order.
# templates/diff.html.j2 has one badge colour class (c0, c1, ...) per entry.
_PALETTE = (
    "cyan",
    "magenta",
    "yellow",
    "blue",
    "green",
    "bright_cyan",
    "bright_magenta",
    "bright_yellow",
    "bright_blue",
    "bright_green",
    "dark_orange",
    "purple",
)
_MIN_WIDTH = 40
# Changed lines pair up by the share of their text in matching tokens: first those alike at the
# first threshold, then, between them, at the second; hunks with more line pairs than
# _MAX_PAIRING are paired in order.
_ALIKE = (0.5, 0.25)
_MAX_PAIRING = 2_500
# A run of unchanged lines is folded only when that hides at least this many.
_MIN_FOLD = 3


@dataclass(frozen=True)
class Segment:
    """A block of one file: a class header, a function or method, or module-level code."""

    key: str  # what pairs blocks across the two files (forward and __call__ share one)
    title: str  # what a reader sees: "ZImageTransformerBlock.forward", "module"
    start: int  # first line, 1-based
    end: int  # last line, inclusive


@dataclass(frozen=True)
class Row:
    """One aligned line pair; ``left``/``right`` are 1-based line numbers, None when absent."""

    kind: str  # "same", "change", "delete" or "insert"
    left: int | None
    right: int | None
    left_text: str = ""
    right_text: str = ""
    rules: tuple[str, ...] = ()
    layout: bool = False  # only whitespace or line breaks differ

    @property
    def marker(self) -> str:
        if self.kind == "same":
            return SAME
        if self.layout:
            return LAYOUT
        return {"change": CHANGE, "delete": DELETE, "insert": INSERT}[self.kind]


@dataclass(frozen=True)
class Fold:
    """A run of unchanged rows hidden between changes."""

    rows: list[Row]


@dataclass(frozen=True)
class BlockDiff:
    """A source block and its output block (either may be missing) with their aligned rows."""

    left: Segment | None
    right: Segment | None
    rows: list[Row]

    @property
    def title(self) -> str:
        left, right = self.left, self.right
        if left is None:
            return f"{right.title} (added)" if right else ""
        if right is None:
            return f"{left.title} (removed)"
        if left.title != right.title:
            return f"{left.title} ↔ {right.title.rpartition('.')[2]}"
        return left.title

    @property
    def changed(self) -> bool:
        return any(row.kind != "same" for row in self.rows)


@dataclass(frozen=True)
class PortDiff:
    """A whole diff: the source, the generated module's name, its blocks and the rules."""

    source: Source
    output_name: str
    blocks: list[BlockDiff]
    rules: dict[str, str] = field(default_factory=dict)  # id -> description, in rule order
    # Every file the port read: the source and the library modules ported with it.
    read: list[Path] = field(default_factory=list)

    def rule_counts(self) -> Counter[str]:
        """How many rows each rule annotates."""
        return Counter(rule for block in self.blocks for row in block.rows for rule in row.rules)


# -- outline: cut a file into blocks ---------------------------------------------------------


def outline(text: str) -> list[Segment]:
    """Cut ``text`` into blocks in file order, covering every line.

    A def or class block starts at its decorators, or at the comment lines just above it, and
    runs up to the next block; module-level (or class-level) code after a def gets a block of
    its own, keyed after the def it follows.
    """
    lines = text.splitlines()
    anchors: list[tuple[int, str, str]] = [(1, "<module>", "module")]
    _anchor_body(ast.parse(text).body, "", lines, len(lines), anchors)
    starts: dict[int, tuple[str, str]] = {}
    for line, key, title in anchors:
        starts[line] = (key, title)  # a later anchor on the same line is the more specific one
    ordered = sorted(starts)
    segments = []
    for i, start in enumerate(ordered):
        end = ordered[i + 1] - 1 if i + 1 < len(ordered) else len(lines)
        if start <= end:
            key, title = starts[start]
            segments.append(Segment(key, title, start, end))
    return segments


def _anchor_body(
    body: list[ast.stmt],
    prefix: str,
    lines: list[str],
    scope_end: int,
    anchors: list[tuple[int, str, str]],
) -> None:
    previous: tuple[int, str, str] | None = None  # (end line, key, title) of the last def
    for node in body:
        if not isinstance(node, _DEFS):
            continue
        start = _block_start(node, lines, previous[0] if previous else 0)
        if previous is not None:
            _anchor_gap(lines, previous, start - 1, anchors)
        key = prefix + _key_name(node.name)
        is_class = isinstance(node, ast.ClassDef) and not prefix
        title = f"class {node.name}" if is_class else prefix + node.name
        anchors.append((start, key, title))
        if is_class:
            _anchor_body(node.body, f"{node.name}.", lines, node.end_lineno or start, anchors)
        previous = (node.end_lineno or start, key, title)
    if previous is not None:
        _anchor_gap(lines, previous, scope_end, anchors)


def _anchor_gap(
    lines: list[str],
    previous: tuple[int, str, str],
    until: int,
    anchors: list[tuple[int, str, str]],
) -> None:
    """Give code between the end of a def and ``until`` a block of its own, if there is any."""
    end, key, title = previous
    for line in range(end + 1, until + 1):
        text = lines[line - 1].strip()
        if text and not text.startswith("#"):
            scope = title.rpartition(".")[0] or "module"
            anchors.append((line, f"{key}+", f"{scope} after {title.rpartition('.')[2]}"))
            return


def _block_start(node: ast.stmt, lines: list[str], floor: int) -> int:
    start = min([node.lineno, *(d.lineno for d in getattr(node, "decorator_list", []))])
    while start - 1 > floor and lines[start - 2].strip().startswith("#"):
        start -= 1
    return start


def _key_name(name: str) -> str:
    return "__call__" if name == "forward" else name


# -- alignment -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Attribution:
    """Which rules rewrote each source line, the statement each line belongs to, and the
    compound statements enclosing it."""

    by_line: dict[int, tuple[str, ...]]
    # line -> header lines of the blocks enclosing it, outer first, up to its def or class
    headers: dict[int, tuple[int, ...]]
    statements: dict[int, tuple[int, int]]  # line -> (first, last) line of its statement
    rank: dict[str, int]  # rule id -> position when several rules are listed

    @classmethod
    def build(
        cls, text: str, touched: Mapping[str, set[int]], order: Iterable[str] = ()
    ) -> Attribution:
        """From ``PortContext.touched``; ``order`` lists rule ids in the order to show them."""
        rank = {rule: i for i, rule in enumerate(order)}
        by_line: dict[int, list[str]] = {}
        for rule in sorted(touched, key=lambda r: (rank.get(r, len(rank)), r)):
            for line in touched[rule]:
                by_line.setdefault(line, []).append(rule)
        headers: dict[int, tuple[int, ...]] = {}
        statements: dict[int, tuple[int, int]] = {}
        # Each chain starts with its def or class line; 0 stands for the module.
        _walk(ast.parse(text).body, (0,), headers, statements)
        return cls({k: tuple(v) for k, v in by_line.items()}, headers, statements, rank)

    def rules(self, line: int | None) -> tuple[str, ...]:
        return self.by_line.get(line, ()) if line is not None else ()

    def enclosing_rules(self, line: int, defs: bool = False) -> tuple[str, ...]:
        """The rules of the innermost enclosing compound statement whose header was rewritten;
        with ``defs``, the def or class that holds ``line`` counts too."""
        chain = self.headers.get(line, ())
        for header in reversed(chain if defs else chain[1:]):
            if header in self.by_line:
                return self.by_line[header]
        return ()

    def statement_rules(self, span: tuple[int, int] | None) -> tuple[str, ...]:
        """Every rule that touched a line of the statement ``span``, in rule order."""
        if span is None:
            return ()
        found = {rule for line in range(span[0], span[1] + 1) for rule in self.rules(line)}
        return tuple(sorted(found, key=lambda r: (self.rank.get(r, len(self.rank)), r)))


def _walk(
    body: list[ast.stmt],
    chain: tuple[int, ...],
    headers: dict[int, tuple[int, ...]],
    statements: dict[int, tuple[int, int]],
) -> None:
    """Record, for each line, its enclosing compound headers and its own statement's span (for
    a compound statement, the header only: its body is made of statements of their own)."""
    for stmt in body:
        last = stmt.end_lineno or stmt.lineno
        for line in range(stmt.lineno, last + 1):
            headers[line] = chain
        nested = list(_bodies(stmt))
        # A def's decorators belong to its header.
        first = min([stmt.lineno, *(d.lineno for d in getattr(stmt, "decorator_list", []))])
        end = max(stmt.lineno, nested[0][0].lineno - 1) if nested else last
        for line in range(first, end + 1):
            statements[line] = (first, end)
        inner = (stmt.lineno,) if isinstance(stmt, _DEFS) else (*chain, stmt.lineno)
        for block in nested:
            _walk(block, inner, headers, statements)


def _bodies(stmt: ast.stmt) -> Iterable[list[ast.stmt]]:
    for name in ("body", "orelse", "finalbody"):
        value = getattr(stmt, name, None)
        if isinstance(value, list) and value and isinstance(value[0], ast.stmt):
            yield value
    for handler in getattr(stmt, "handlers", []):
        yield handler.body
    for case in getattr(stmt, "cases", []):
        yield case.body


def diff_texts(left: str, right: str, attribution: Attribution, header: int = 0) -> list[BlockDiff]:
    """Align ``left`` (the source) and ``right`` (the port) block by block, then line by line.

    The first ``header`` lines of ``right`` are the generated file's header: a block of added
    lines of its own, before the rest is aligned.
    """
    left_lines, right_lines = left.splitlines(), right.splitlines()
    left_blocks = outline(left)
    right_blocks = [
        Segment(s.key, s.title, s.start + header, s.end + header)
        for s in outline("\n".join(right_lines[header:]) + "\n")
    ]
    matcher = difflib.SequenceMatcher(
        None, [s.key for s in left_blocks], [s.key for s in right_blocks], autojunk=False
    )
    out: list[BlockDiff] = []
    if header:
        rows = [Row("insert", None, n, right_text=right_lines[n - 1]) for n in range(1, header + 1)]
        out.append(BlockDiff(None, Segment("<header>", "porter header", 1, header), rows))
    for tag, i1, i2, j1, j2 in matcher.get_opcodes():
        pairs: list[tuple[Segment | None, Segment | None]]
        if tag == "equal" or (tag == "replace" and i2 - i1 == j2 - j1):
            pairs = list(zip(left_blocks[i1:i2], right_blocks[j1:j2], strict=True))
        else:
            pairs = [(s, None) for s in left_blocks[i1:i2]]
            pairs += [(None, s) for s in right_blocks[j1:j2]]
        for a, b in pairs:
            rows = _rows(
                left_lines[a.start - 1 : a.end] if a else [],
                right_lines[b.start - 1 : b.end] if b else [],
                a.start if a else 1,
                b.start if b else 1,
                attribution,
            )
            out.append(BlockDiff(a, b, rows))
    return out


def _rows(a: list[str], b: list[str], a0: int, b0: int, attribution: Attribution) -> list[Row]:
    """Rows for one block pair; ``a0``/``b0`` are the line numbers of ``a[0]``/``b[0]``."""
    matcher = difflib.SequenceMatcher(
        None, [s.strip() for s in a], [s.strip() for s in b], autojunk=False
    )
    rows: list[Row] = []
    for tag, i1, i2, j1, j2 in matcher.get_opcodes():
        if tag == "equal":
            for i, j in zip(range(i1, i2), range(j1, j2), strict=True):
                rows.append(_equal_row(a[i], b[j], a0 + i, b0 + j, attribution))
        else:
            rows.extend(_hunk(a[i1:i2], b[j1:j2], a0 + i1, b0 + j1, attribution))
    return rows


def _equal_row(a: str, b: str, left: int, right: int, attribution: Attribution) -> Row:
    if a.rstrip() == b.rstrip():
        return Row("same", left, right, a, b)
    rules = attribution.enclosing_rules(left)
    return Row("change", left, right, a, b, rules, layout=True)


def _hunk(a: list[str], b: list[str], a0: int, b0: int, attribution: Attribution) -> list[Row]:
    """A run of changed lines: similar lines paired, the rest paired in order or one-sided.

    Rows are grouped by the source statement they belong to (an added line, a blank or a
    comment joins the statement above it). A group whose text differs only in whitespace is
    layout; otherwise a row takes the rules of its source line, else of its statement. A
    removed line that neither names, and lines added where no source line is, take those of
    the block around them: a rule that rewrites a class or def may drop or add statements in
    its body.
    """
    pairs = pair_lines(a, b)
    owners = _owners([None if i is None else a0 + i for i, _ in pairs], attribution)
    rows: list[Row] = []
    start = 0
    while start < len(pairs):
        end = start
        while end < len(pairs) and owners[end] == owners[start]:
            end += 1
        group = pairs[start:end]
        left_text = [a[i] for i, _ in group if i is not None]
        right_text = [b[j] for _, j in group if j is not None]
        layout = _squash(left_text) == _squash(right_text)
        shared = attribution.statement_rules(owners[start])
        for i, j in group:
            left = None if i is None else a0 + i
            right = None if j is None else b0 + j
            kind = "insert" if left is None else "delete" if right is None else "change"
            rules = () if layout else attribution.rules(left) or shared
            if not rules and not layout and (right is None or owners[start] is None):
                rules = _block_rules(owners[start], left or a0 - 1, attribution)
            text_a = "" if i is None else a[i]
            text_b = "" if j is None else b[j]
            rows.append(Row(kind, left, right, text_a, text_b, rules, layout))
        start = end
    return rows


def _block_rules(
    owner: tuple[int, int] | None, line: int, attribution: Attribution
) -> tuple[str, ...]:
    """The rules of the block around a removed line, or around lines added with no source line
    in their hunk (``line`` is then the source line above them)."""
    return attribution.enclosing_rules(owner[0] if owner else line, defs=True) if line else ()


def _owners(lines: list[int | None], attribution: Attribution) -> list[tuple[int, int] | None]:
    """The source statement of each row; rows without one take the one above (else below)."""
    owners = [None if line is None else attribution.statements.get(line) for line in lines]
    for k in range(1, len(owners)):
        owners[k] = owners[k] or owners[k - 1]
    for k in range(len(owners) - 2, -1, -1):
        owners[k] = owners[k] or owners[k + 1]
    return owners


def pair_lines(
    a: list[str], b: list[str], thresholds: tuple[float, ...] = _ALIKE
) -> list[tuple[int | None, int | None]]:
    """Pair the lines of two changed runs, in order: first the pairs that look most alike
    (similarity >= ``thresholds[0]``, largest total), then within the gaps between them the
    same with the next threshold, and what is left one to one from the top."""
    if not thresholds:
        return [
            (i if i < len(a) else None, i if i < len(b) else None)
            for i in range(max(len(a), len(b)))
        ]
    pairs: list[tuple[int | None, int | None]] = []
    i = j = 0
    for ai, bj in [*_similar_pairs(a, b, thresholds[0]), (len(a), len(b))]:
        for x, y in pair_lines(a[i:ai], b[j:bj], thresholds[1:]):
            pairs.append((None if x is None else i + x, None if y is None else j + y))
        if ai < len(a):
            pairs.append((ai, bj))
        i, j = ai + 1, bj + 1
    return pairs


def _similar_pairs(a: list[str], b: list[str], threshold: float) -> list[tuple[int, int]]:
    """The in-order pairs of lines at least ``threshold`` alike with the largest total."""
    if not a or not b or len(a) * len(b) > _MAX_PAIRING:
        return []
    ta = [_TOKEN.findall(line.strip()) for line in a]
    tb = [_TOKEN.findall(line.strip()) for line in b]
    alike = [[_alike(x, y, threshold) for y in tb] for x in ta]
    best = [[0.0] * (len(b) + 1) for _ in range(len(a) + 1)]
    for i in range(len(a) - 1, -1, -1):
        for j in range(len(b) - 1, -1, -1):
            score = max(best[i + 1][j], best[i][j + 1])
            best[i][j] = max(score, best[i + 1][j + 1] + alike[i][j])
    pairs, i, j = [], 0, 0
    while i < len(a) and j < len(b):
        if alike[i][j] and best[i][j] == best[i + 1][j + 1] + alike[i][j]:
            pairs.append((i, j))
            i, j = i + 1, j + 1
        elif best[i][j] == best[i + 1][j]:
            i += 1
        else:
            j += 1
    return pairs


def _alike(a: list[str], b: list[str], threshold: float) -> float:
    """How alike two tokenised lines are, weighting tokens by length (so that shared ``from``,
    ``import`` and brackets count for little); 0 when below ``threshold``."""
    total = sum(map(len, a)) + sum(map(len, b))
    if not total:
        return 0.0
    matcher = difflib.SequenceMatcher(None, a, b, autojunk=False)
    same = sum(len(t) for m in matcher.get_matching_blocks() for t in a[m.a : m.a + m.size])
    ratio = 2 * same / total
    return ratio if ratio >= threshold else 0.0


def _squash(lines: list[str]) -> str:
    return "".join("".join(line.split()) for line in lines)


def fold(rows: list[Row], context: int | None) -> list[Row | Fold]:
    """Hide unchanged rows more than ``context`` rows away from a change (None: hide none)."""
    if context is None:
        return list(rows)
    keep = [False] * len(rows)
    for i, row in enumerate(rows):
        if row.kind != "same":
            for j in range(max(0, i - context), min(len(rows), i + context + 1)):
                keep[j] = True
    items: list[Row | Fold] = []
    i = 0
    while i < len(rows):
        j = i
        while j < len(rows) and not keep[j]:
            j += 1
        if j - i >= _MIN_FOLD:
            items.append(Fold(rows[i:j]))
        else:
            items.extend(rows[i:j])
        if j < len(rows):
            items.append(rows[j])
        i = j + 1
    return items


def emphasis(a: str, b: str) -> tuple[list[tuple[str, bool]], list[tuple[str, bool]]]:
    """Split two changed lines into (text, differs) runs, token by token; a change of
    indentation alone is not marked."""
    indent_a, indent_b = a[: len(a) - len(a.lstrip())], b[: len(b) - len(b.lstrip())]
    ta, tb = _TOKEN.findall(a.lstrip()), _TOKEN.findall(b.lstrip())
    left: list[tuple[str, bool]] = []
    right: list[tuple[str, bool]] = []
    _append(left, indent_a, False)
    _append(right, indent_b, False)
    matcher = difflib.SequenceMatcher(None, ta, tb, autojunk=False)
    for tag, i1, i2, j1, j2 in matcher.get_opcodes():
        _append(left, "".join(ta[i1:i2]), tag != "equal")
        _append(right, "".join(tb[j1:j2]), tag != "equal")
    return left, right


def _append(runs: list[tuple[str, bool]], text: str, differs: bool) -> None:
    if not text:
        return
    if runs and runs[-1][1] == differs:
        runs[-1] = (runs[-1][0] + text, differs)
    else:
        runs.append((text, differs))


# -- the port, in memory ---------------------------------------------------------------------


def port_diff(spec: str) -> PortDiff:
    """Port ``spec`` (a .py path, a dotted module name or a recipe) in memory and diff it."""
    from porter.engine import discover_rules
    from porter.locate import locate
    from porter.pipeline import render_files, rewrite
    from porter.recipes import recipes

    recipe = recipes().get(spec)
    source = locate(recipe.source if recipe else spec)
    module, ctx = rewrite(source, recipe.keep if recipe else None)
    command = shlex.join(["porter", "port", spec])
    files = render_files(source, module, ctx, command, recipe.model_class if recipe else None)
    name = _module_file(source, files)
    rules = {rule.id: rule.description for rule in discover_rules()}
    attribution = Attribution.build(source.text, ctx.touched, rules)
    header = header_length(module.code, files[name])
    blocks = diff_texts(source.text, files[name], attribution, header)
    read = [source.path, *(lib_ctx.source.path for _, lib_ctx in ctx.library)]
    return PortDiff(source, name, blocks, rules, read)


def header_length(code: str, rendered: str) -> int:
    """How many comment lines the module template puts before ``code`` in ``rendered``."""
    first = next((line.rstrip() for line in code.splitlines() if line.strip()), None)
    for n, line in enumerate(rendered.splitlines()):
        if line.rstrip() == first:
            return n
        if not line.startswith("#"):
            return 0
    return 0


def _module_file(source: Source, files: Mapping[str, str]) -> str:
    """The rendered file that holds the ported module (the others surround it)."""
    stem = source.path.parent.name if source.path.name == "__init__.py" else source.path.stem
    if f"{stem}.py" not in files:
        raise RuntimeError(f"porter rendered no {stem}.py for {source.display}")
    return f"{stem}.py"


# -- terminal --------------------------------------------------------------------------------


def render_terminal(diff: PortDiff, width: int, color: bool, context: int | None) -> str:
    """The side-by-side diff as text ``width`` columns wide, with ANSI colour when ``color``."""
    from rich.console import Console

    console = Console(
        file=io.StringIO(),
        width=width,
        color_system=_color_system() if color else None,
        force_terminal=color,
        no_color=not color,
        highlight=False,
        markup=False,
        emoji=False,
        soft_wrap=False,
        legacy_windows=False,
        force_jupyter=False,
        force_interactive=False,
    )
    layout = _Layout.fit(diff, width)
    console.print(_title_line(diff))
    for block in diff.blocks:
        console.print(_block_header(block, width))
        console.print(layout.table(block, context))
    text = console.file.getvalue()  # type: ignore[attr-defined]
    if color:
        return text
    # Without colour, the padding rich adds to the last column is only trailing blanks.
    return "".join(line.rstrip() + "\n" for line in text.splitlines())


def _color_system() -> str:
    if os.environ.get("COLORTERM", "").lower() in ("truecolor", "24bit"):
        return "truecolor"
    return "256" if "256" in os.environ.get("TERM", "") else "standard"


def _title_line(diff: PortDiff) -> Text:
    from rich.text import Text

    return Text.assemble(
        ("porter diff ", "bold"),
        (diff.source.display, "bold red"),
        " -> ",
        (diff.output_name, "bold green"),
        ("\ngutter: | changed  < removed  > added  ~ layout only", "dim"),
    )


def _block_header(block: BlockDiff, width: int) -> Text:
    from rich.text import Text

    head = f"── {block.title} "
    return Text(head + "─" * max(0, width - len(head)), style="bold blue")


@dataclass(frozen=True)
class _Layout:
    """Column widths of the terminal view: number, text, gutter, number, text, rules."""

    digits: int
    text: int
    rules: int
    palette: dict[str, str]

    @classmethod
    def fit(cls, diff: PortDiff, width: int) -> _Layout:
        last = max([1, *(r.left or r.right or 1 for b in diff.blocks for r in b.rows)])
        longest = max((len(rule) for rule in diff.rule_counts()), default=0)
        digits = len(str(last))
        # Rule ids stay whole while each text column keeps 40 columns; below that they wrap.
        room = width - 2 * digits - 6 - 2 * 40
        rules = longest if room >= longest else min(longest, max(room, width // 8))
        text = max(4, (width - 2 * digits - rules - 6) // 2)
        palette = {rule: _PALETTE[i % len(_PALETTE)] for i, rule in enumerate(diff.rules)}
        return cls(digits, text, rules, palette)

    def table(self, block: BlockDiff, context: int | None) -> Table:
        from rich.table import Table
        from rich.text import Text

        table = Table.grid(padding=(0, 1, 0, 0), expand=False)
        table.add_column(justify="right", width=self.digits, style="dim")
        table.add_column(width=self.text, overflow="fold")
        table.add_column(width=1)
        table.add_column(justify="right", width=self.digits, style="dim")
        table.add_column(width=self.text, overflow="fold")
        table.add_column(width=self.rules, overflow="fold")
        for item in fold(block.rows, context):
            if isinstance(item, Fold):
                first, last = item.rows[0], item.rows[-1]
                hidden = f"⋯ {len(item.rows)} unchanged lines"
                left = Text(f"{hidden} ({first.left}-{last.left})", style="dim italic")
                right = Text(f"⋯ ({first.right}-{last.right})", style="dim italic")
                table.add_row("", left, "", "", right, "")
                continue
            left, right = _styled_sides(item)
            rules = Text("\n").join(Text(r, style=self.palette.get(r, "")) for r in item.rules)
            if item.layout:
                rules.stylize("dim")
            marker = Text(item.marker, style=_MARKER_STYLE.get(item.marker, ""))
            table.add_row(_number(item.left), left, marker, _number(item.right), right, rules)
        return table


_MARKER_STYLE = {CHANGE: "bold yellow", DELETE: "bold red", INSERT: "bold green", LAYOUT: "dim"}


def _number(line: int | None) -> str:
    return "" if line is None else str(line)


def _styled_sides(row: Row) -> tuple[Text, Text]:
    from rich.text import Text

    left, right = Text(row.left_text.expandtabs()), Text(row.right_text.expandtabs())
    if row.kind == "same":
        return left, right
    if row.layout:
        left.stylize("dim")
        right.stylize("dim")
        return left, right
    if row.kind != "change":
        left.stylize("red")
        right.stylize("green")
        return left, right
    runs_left, runs_right = emphasis(row.left_text.expandtabs(), row.right_text.expandtabs())
    return _runs(runs_left, "red"), _runs(runs_right, "green")


def _runs(runs: list[tuple[str, bool]], color: str) -> Text:
    from rich.text import Text

    text = Text(style=color)
    for part, differs in runs:
        text.append(part, style=f"bold underline {color}" if differs else color)
    return text


# -- HTML ------------------------------------------------------------------------------------


def render_html(diff: PortDiff, context: int | None) -> str:
    """One self-contained HTML page (inline CSS, no scripts, no network assets), marked with
    a generator tag by which a later ``--html`` knows it may replace the file."""
    from porter import __version__
    from porter.render import render

    counts = diff.rule_counts()
    legend = [
        {"id": rule, "n": i % len(_PALETTE), "description": text, "count": counts[rule]}
        for i, (rule, text) in enumerate(diff.rules.items())
        if counts[rule]
    ]
    badge = {item["id"]: item["n"] for item in legend}
    blocks = [
        {
            "anchor": f"b{i}",
            "title": block.title,
            "changed": block.changed,
            "items": [_html_item(item, badge, diff.rules) for item in fold(block.rows, context)],
        }
        for i, block in enumerate(diff.blocks)
    ]
    return render(
        "diff.html.j2",
        generator=f"porter diff {__version__}",
        source=str(diff.source.path),
        module=diff.source.display,
        output=diff.output_name,
        legend=legend,
        blocks=blocks,
    )


def _html_item(
    item: Row | Fold, badge: Mapping[str, int], descriptions: Mapping[str, str]
) -> dict[str, Any]:
    if isinstance(item, Fold):
        return {"fold": True, "rows": [_html_row(r, badge, descriptions) for r in item.rows]}
    return _html_row(item, badge, descriptions)


def _html_row(
    row: Row, badge: Mapping[str, int], descriptions: Mapping[str, str]
) -> dict[str, Any]:
    if row.kind == "change" and not row.layout:
        left, right = emphasis(row.left_text, row.right_text)
    else:
        left, right = [(row.left_text, False)], [(row.right_text, False)]
    kind = "layout" if row.layout else row.kind
    return {
        "fold": False,
        "kind": kind,
        "marker": row.marker,
        "left_no": _number(row.left),
        "right_no": _number(row.right),
        "left": left,
        "right": right,
        "rules": [(r, badge.get(r, 0), descriptions.get(r, "")) for r in row.rules],
    }


# -- command line ----------------------------------------------------------------------------


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register ``porter diff`` on the ``porter`` command line."""
    parser = subparsers.add_parser(
        "diff",
        help="show a port side by side with its source, each changed line with its rule ids",
        description=(
            "Port SOURCE in memory (nothing is written) and show the PyTorch source and the\n"
            "generated MLX module side by side, aligned by class and function (forward beside\n"
            "__call__) and line by line within each. Each changed line names the rules that\n"
            "changed it.\n\n"
            "gutter: '|' changed, '<' removed, '>' added, '~' layout only (indentation, or a\n"
            "line re-wrapped by black)\n\n"
            "On a terminal the output is coloured (unless NO_COLOR is set) and paged through\n"
            "$PORTER_PAGER or $PAGER (default: less); piped, it is plain text.\n\n"
            "examples:\n"
            "  porter diff z-image\n"
            "  porter diff ./my_model.py --no-pager --width 160 --context 5\n"
            "  porter diff z-image --html z_image_port.html"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    from porter.cli import recipe_names

    parser.add_argument(
        "source", help=f"a .py path, a dotted module name, or a recipe ({recipe_names()})"
    )
    parser.add_argument(
        "--color",
        choices=["auto", "always", "never"],
        default="auto",
        help="colour the output: auto (default) when stdout is a terminal and NO_COLOR is unset",
    )
    parser.add_argument(
        "--no-pager", action="store_true", help="print to stdout even on a terminal"
    )
    parser.add_argument(
        "--width",
        type=_width_arg,
        metavar="N",
        help=f"columns to use (at least {_MIN_WIDTH}; default: the terminal's, $COLUMNS, or 80)",
    )
    parser.add_argument(
        "-U",
        "--context",
        type=_context_arg,
        default=3,
        metavar="N",
        help="unchanged lines shown around each change (default 3; 'all' shows every line)",
    )
    parser.add_argument(
        "--html",
        metavar="FILE",
        help=(
            "write one self-contained HTML page to FILE instead of printing the diff; an "
            "existing FILE is replaced only if porter diff wrote it"
        ),
    )
    parser.add_argument(
        "--force",
        action="store_true",
        help="with --html, replace FILE even if porter diff did not write it (never the source)",
    )
    parser.set_defaults(func=_cmd_diff)
    return parser


def _width_arg(text: str) -> int:
    if not text.isdigit() or int(text) < _MIN_WIDTH:
        raise argparse.ArgumentTypeError(f"expected a number of columns >= {_MIN_WIDTH}")
    return int(text)


def _context_arg(text: str) -> int | None:
    if text == "all":
        return None
    if not text.isdigit():
        raise argparse.ArgumentTypeError("expected a number of lines or 'all'")
    return int(text)


def _cmd_diff(args: argparse.Namespace) -> int:
    from porter.cli import check_source
    from porter.recipes import recipes

    if args.html:
        check_html_folder(Path(args.html))
    if args.source not in recipes():
        check_source(args.source)
    diff = port_diff(args.source)
    if args.html:
        from porter.write import write_text_atomic

        target = Path(args.html)
        check_html_target(target, diff.read, args.force)
        write_text_atomic(target, render_html(diff, args.context))
        print(f"porter: wrote {target}", file=sys.stderr)
        return 0
    stream = sys.stdout
    color = use_color(args.color, stream, os.environ)
    text = render_terminal(
        diff, terminal_width(args.width, stream, os.environ), color, args.context
    )
    pager = None if args.no_pager or not _isatty(stream) else pager_command(os.environ)
    if pager is None:
        _write(stream, text)
    else:
        page(text, pager)
    return 0


def check_html_folder(target: Path) -> None:
    """Raise unless ``--html`` names a file in a folder that exists (none is created)."""
    folder = target.parent
    if folder.exists() and not folder.is_dir():
        raise PorterError("--html: not a folder", str(folder))
    if not folder.is_dir():
        raise PorterError("--html: no such folder", str(folder))
    if target.is_dir() or (target.exists() and not target.is_file()):
        raise PorterError("--html: exists and is not a regular file; not replacing it", str(target))


def check_html_target(target: Path, sources: Path | list[Path], force: bool) -> None:
    """Raise unless ``--html`` may write ``target``: never a source the port read (the file
    being diffed or a library module ported with it), and an existing file only if it is a
    page porter diff wrote, or with ``--force``."""
    check_html_folder(target)
    if not target.exists():
        return
    for source in [sources] if isinstance(sources, Path) else sources:
        if _same_file(target, source):
            raise PorterError(
                "--html: this is a source the port reads; not overwriting it", str(target)
            )
    if not force and not is_diff_page(target):
        raise PorterError(
            "--html: exists and is not a page porter diff wrote; pass --force to replace it",
            str(target),
        )


def is_diff_page(path: Path) -> bool:
    """Whether ``path`` starts like a page ``porter diff --html`` wrote (its generator tag)."""
    try:
        with path.open("rb") as handle:
            head = handle.read(4096)
    except OSError:
        return False
    return re.search(rb'<meta name="generator" content="porter diff [^"]*">', head) is not None


def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.resolve() == b.resolve() or os.path.samefile(a, b)
    except OSError:
        return False


def _write(stream: TextIO, text: str) -> None:
    try:
        stream.write(text)
        stream.flush()
    except BrokenPipeError:
        # The reader stopped early (`porter diff ... | head`): that is not an error. Point
        # stdout at devnull so that the flush at interpreter exit does not fail again.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, stream.fileno())
        os.close(devnull)


def use_color(mode: str, stream: TextIO, environ: Mapping[str, str]) -> bool:
    """``--color``: always, never, or auto (a terminal, NO_COLOR unset, TERM not dumb)."""
    if mode != "auto":
        return mode == "always"
    if environ.get("NO_COLOR") or environ.get("TERM") == "dumb":
        return False
    return _isatty(stream)


def terminal_width(requested: int | None, stream: TextIO, environ: Mapping[str, str]) -> int:
    """``--width``, else $COLUMNS, else the terminal's width, else 80."""
    if requested:
        return requested
    columns = environ.get("COLUMNS", "")
    if columns.isdigit() and int(columns) > 0:
        return max(_MIN_WIDTH, int(columns))
    if _isatty(stream):
        try:
            return max(_MIN_WIDTH, os.get_terminal_size(stream.fileno()).columns)
        except (OSError, ValueError):
            pass
    return 80


def pager_command(environ: Mapping[str, str]) -> str | None:
    """$PORTER_PAGER, else $PAGER, else less; None when it is empty, ``cat`` or not found."""
    command = environ.get("PORTER_PAGER", environ.get("PAGER", "less")).strip()
    try:
        program = shlex.split(command)[0] if command else ""
    except ValueError:
        return None
    if program in ("", "cat") or shutil.which(program) is None:
        return None
    return command


def page(text: str, command: str) -> None:
    """Pipe ``text`` through the pager ``command`` (run by the shell, as git does)."""
    env = dict(os.environ)
    env.setdefault("LESS", "FRX")  # quit if one screen, pass colours, keep the screen
    env.setdefault("LV", "-c")
    proc = subprocess.Popen(command, shell=True, stdin=subprocess.PIPE, env=env)
    try:
        assert proc.stdin is not None
        proc.stdin.write(text.encode("utf-8"))
        proc.stdin.close()
    except BrokenPipeError:  # the reader quit the pager before the end
        pass
    while True:
        try:
            proc.wait()
            return
        except KeyboardInterrupt:  # the pager handles Ctrl-C itself; wait for it to exit
            continue


def _isatty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False
