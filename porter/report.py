"""The port report: what each rule did, what is left unported, and how every imported name was
resolved. `porter port --report FILE.md|FILE.json` writes it; the summary `porter port` prints
is its short form. The JSON follows `report.schema.json` (shipped beside this module)."""

from __future__ import annotations

import ast
import json
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from porter import __version__
from porter.engine import CONFIDENCE_CLASSES, PortContext, absolute_name, discover_rules
from porter.errors import PorterError
from porter.locate import Source

SCHEMA_VERSION = 1
SCHEMA_FILE = Path(__file__).with_name("report.schema.json")
# How a name imported from elsewhere ended up in the port.
RESOLUTIONS = ("ported transitively", "mapped", "dropped", "kept", "unported")
_STDLIB = set(sys.stdlib_module_names)


@dataclass(frozen=True)
class RuleUse:
    id: str
    order: int
    description: str
    count: int


@dataclass(frozen=True)
class Unported:
    file: str
    line: int
    rule: str
    reason: str
    confidence: str
    code: str


@dataclass(frozen=True)
class NameUse:
    name: str
    line: int
    resolution: str
    via: str
    reason: str


@dataclass(frozen=True)
class Report:
    source: str
    path: str
    sha256: str
    porter_version: str
    written: list[str]
    rules: list[RuleUse]
    unported: list[Unported]
    names: list[NameUse]

    def to_json(self) -> str:
        data = {"schema_version": SCHEMA_VERSION, **asdict(self)}
        data["totals"] = {
            "rules_applied": sum(r.count for r in self.rules),
            "unported": len(self.unported),
            **{
                f"unported_{c.replace(' ', '_')}": sum(u.confidence == c for u in self.unported)
                for c in CONFIDENCE_CLASSES
            },
        }
        return json.dumps(data, indent=2) + "\n"

    def to_markdown(self) -> str:
        out = [f"# Port report: `{self.source}`", ""]
        out.append(f"- source: `{self.path}` (sha256 `{self.sha256}`)")
        out.append(f"- porter {self.porter_version}")
        out += [f"- wrote `{w}`" for w in self.written]
        out += ["", "## Rules applied", "", "| order | rule | count | what it rewrites |"]
        out.append("|---:|---|---:|---|")
        out += [f"| {r.order} | `{r.id}` | {r.count} | {r.description} |" for r in self.rules]
        out += ["", f"## Unported ({len(self.unported)})", ""]
        if self.unported:
            out += ["| where | rule | confidence | reason | code |", "|---|---|---|---|---|"]
            out += [
                f"| `{u.file}:{u.line}` | `{u.rule}` | {u.confidence} | {u.reason} | "
                f"`{_cell(u.code)}` |"
                for u in self.unported
            ]
        else:
            out.append("Nothing: every construct was ported.")
        out += ["", "## Names imported from elsewhere", ""]
        out += ["| name | line | resolution | via | reason |", "|---|---:|---|---|---|"]
        out += [
            f"| `{n.name}` | {n.line} | {n.resolution} | {_cell(n.via)} | {_cell(n.reason)} |"
            for n in self.names
        ]
        return "\n".join(out) + "\n"

    def short(self) -> str:
        """The one-screen summary `porter port` prints."""
        lines = [f"ported {self.source}", f"  from {self.path}"]
        lines += [f"  wrote {w}" for w in self.written]
        lines.append("rules applied:")
        lines += [f"  {r.id:<28} {r.count:>4}" for r in self.rules if r.count]
        # torch itself goes through the op table and the standard library is kept: the names
        # worth a line are the library's own.
        resolved = [n for n in self.names if n.name.split(".")[0] not in _STDLIB | {"torch"}]
        if resolved:
            lines.append("library names:")
            lines += [
                f"  {n.name:<60} {n.resolution}" + (f" ({n.via})" if n.via else "")
                for n in resolved
            ]
        if self.unported:
            lines.append(f"unported ({len(self.unported)}, marked XXX in the output):")
            lines += [
                f"  {u.file}:{u.line}: [{u.rule}, {u.confidence}] {u.reason}" for u in self.unported
            ]
        else:
            lines.append("unported: none")
        return "\n".join(lines)


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def build_report(
    source: Source,
    ctx: PortContext,
    written: list[Path],
    library: list[PortContext] | None = None,
) -> Report:
    """The report of one port: the model file and the library modules ported with it."""
    contexts = [ctx, *(library or [])]
    rules = [
        RuleUse(r.id, r.order, r.description, sum(c.applied.get(r.id, 0) for c in contexts))
        for r in discover_rules()
    ]
    unported = [
        Unported(str(c.source.path), f.line, f.rule, f.message, f.confidence, f.code)
        for c in contexts
        for f in sorted(c.findings, key=lambda f: (f.line, f.rule))
    ]
    return Report(
        source=source.display,
        path=str(source.path),
        sha256=source.sha256,
        porter_version=__version__,
        written=[str(p) for p in written],
        rules=rules,
        unported=unported,
        names=_names(source, ctx),
    )


def _names(source: Source, ctx: PortContext) -> list[NameUse]:
    """Every name the source imports, with how the port resolved it."""
    unported = sorted({f.message.split(" ")[0] for f in ctx.findings if " " in f.message})
    read_from = _attribute_owners(source)
    names = []
    for name, line in _imported_names(source):
        root = name.split(".")[0]
        rows = _op_rows_under(name) if name.rpartition(".")[2] in read_from else ""
        if name in ctx.resolutions:
            how, via, reason = ctx.resolutions[name]
            use = NameUse(name, line, how, via, reason)
        elif name in unported:
            use = NameUse(name, line, "unported", "", f"{name} has no MLX mapping")
        elif root in _STDLIB:
            use = NameUse(name, line, "kept", "", "standard library")
        elif root == "torch":
            via, reason = _op_target(name)
            use = NameUse(name, line, "mapped", via, reason)
        elif root == "numpy":
            use = NameUse(name, line, "kept", "", "NumPy runs beside MLX; the import is kept")
        elif rows:  # a module whose attributes the source reads and ops.toml maps
            use = NameUse(
                name, line, "mapped", "ops.toml", f"its uses map through rules/ops.toml ({rows})"
            )
        else:
            use = NameUse(name, line, "dropped", "", "not used by the ported code; import removed")
        # A module whose attributes are left unported (torch.special.erfcx under torch).
        left = [u for u in unported if u.startswith(name + ".")]
        if left and use.resolution != "unported":
            use = NameUse(
                name, line, use.resolution, use.via, f"{use.reason}; unported: {', '.join(left)}"
            )
        names.append(use)
    return names


def _attribute_owners(source: Source) -> set[str]:
    """Names the source reads an attribute of (``logging`` in ``logging.get_logger``)."""
    return {
        node.value.id
        for node in ast.walk(ast.parse(source.text))
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
    }


def _op_rows_under(name: str) -> str:
    """The op-table rows for attributes of module ``name`` (diffusers.utils.logging's
    get_logger), as "a -> b" text; empty when there are none."""
    from porter.rules._table import op_table

    rows = [
        f"{key} -> {row.mlx or row.expr}"
        for (kind, key), found in sorted(op_table().rows.items())
        if kind == "function" and key.startswith(name + ".")
        for row in found[:1]
    ]
    return ", ".join(rows)


def _op_target(name: str) -> tuple[str, str]:
    """(via, reason) for a torch name: its row in the op table, or, for a module such as
    torch.nn, the op table as a whole."""
    from porter.rules._table import op_table

    table = op_table()
    row = table.lookup("function", name)
    target = (row.mlx or row.expr) if row else table.names.get(name)
    if target:
        return f"ops.toml: {target}", "a row of rules/ops.toml"
    return "ops.toml", "a torch module: each use maps through rules/ops.toml; import removed"


def _imported_names(source: Source) -> list[tuple[str, int]]:
    """(absolute qualified name, line) for every import in the source, in source order."""
    found: dict[str, int] = {}
    for node in ast.walk(ast.parse(source.text)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                found.setdefault(alias.name, node.lineno)
        elif isinstance(node, ast.ImportFrom):
            module = "." * node.level + (node.module or "")
            for alias in node.names:
                dotted = f"{module}.{alias.name}" if node.module else module + alias.name
                found.setdefault(absolute_name(dotted, source.package), node.lineno)
    return sorted(found.items(), key=lambda item: (item[1], item[0]))


def write_report(report: Report, path: Path) -> None:
    """Write the report as Markdown (.md) or JSON (.json), atomically."""
    from porter.write import write_text_atomic

    if path.suffix == ".json":
        text = report.to_json()
    elif path.suffix in (".md", ".markdown"):
        text = report.to_markdown()
    else:
        raise PorterError("--report wants a .md or .json file", str(path))
    write_text_atomic(path, text)


def load_schema() -> dict[str, Any]:
    return json.loads(SCHEMA_FILE.read_text(encoding="utf-8"))
