"""Stage 3: the rule engine. Runs LibCST rules in a fixed order and collects their findings.

A rule never prints. It rewrites the tree and reports through its ``PortContext``: ``count``
for what it applied and ``unported`` for what it could not port. Every node keeps the source
line it came from, even after earlier rules replaced it, so findings always name the line in
the PyTorch file that a user can open.
"""

from __future__ import annotations

import ast
import importlib
import pkgutil
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, ClassVar

import libcst as cst
from libcst.metadata import (
    MetadataWrapper,
    PositionProvider,
    QualifiedName,
    QualifiedNameProvider,
    QualifiedNameSource,
)

from porter.locate import Source
from porter.precedence import fix_precedence

# How much work an unported construct leaves, from least to most.
MECHANICAL = "mechanical"  # a 1:1 mapping is missing: one row in rules/ops.toml or symbols.toml
NEEDS_REVIEW = "needs review"  # porter could not decide what the code means; a person must
BLOCKER = "blocker"  # no MLX form in porter's model of the code: it needs a hand port
CONFIDENCE_CLASSES = (MECHANICAL, NEEDS_REVIEW, BLOCKER)


@dataclass(frozen=True)
class Finding:
    """A construct porter could not port: kept in place, marked inline, listed in the summary.

    ``confidence`` is one of ``CONFIDENCE_CLASSES``.
    """

    rule: str
    line: int
    message: str
    code: str
    confidence: str = BLOCKER

    def where(self, source: Source) -> str:
        return f"{source.path}:{self.line}"


def bound_names(tree: ast.Module) -> frozenset[str]:
    """Names ``tree`` binds in module or function scope: functions, classes, parameters and
    assignment targets, which a module-level import of the same name would shadow or be
    shadowed by. Methods and class attributes live in a class's namespace and are left out."""
    found: set[str] = set()

    def visit(node: ast.AST, class_body: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                if not class_body:
                    found.add(child.name)
                visit(child, class_body=isinstance(child, ast.ClassDef))
            elif isinstance(child, ast.arg):
                found.add(child.arg)
            elif isinstance(child, ast.Name) and isinstance(child.ctx, ast.Store):
                if not class_body:
                    found.add(child.id)
            else:
                visit(child, class_body)

    visit(tree, class_body=False)
    return frozenset(found)


@dataclass
class PortContext:
    """What the rules share while porting one source file."""

    source: Source
    applied: Counter[str] = field(default_factory=Counter)
    findings: list[Finding] = field(default_factory=list)
    # Names the generated code needs from the rendered support module, keyed by snippet id.
    support: dict[str, set[str]] = field(default_factory=dict)
    # How rules resolved names imported from elsewhere: qualified name -> (how, via, reason),
    # how being "dropped" or "mapped" and via the target ("support: rms_norm.RMSNorm").
    resolutions: dict[str, tuple[str, str, str]] = field(default_factory=dict)
    # Extra imports the generated module needs ("numpy", "types.SimpleNamespace", ...).
    imports: set[str] = field(default_factory=set)
    # Rows for the weights' LAYOUT_PLAN (see porter.weights.KeyTransform), e.g. conv transposes.
    layout_plan: list[dict] = field(default_factory=list)
    # Library names ported transitively: qualified name -> the generated module stem holding it.
    transitive: dict[str, str] = field(default_factory=dict)
    # The transitive port of the model's library code (porter.transitive.Plan), main file only.
    plan: Any = None
    # The library modules ported with it, as (rewritten tree, context), main file only.
    library: list[tuple[cst.Module, PortContext]] = field(default_factory=list)
    # Qualified names of ported functions that return complex values, shared across the
    # modules of one port so the complex-RoPE rule follows tables built in library code.
    complex_returns: set[str] = field(default_factory=set)
    # Source lines each rule rewrote, by rule id: what `porter diff` annotates changed lines with.
    touched: dict[str, set[int]] = field(default_factory=dict)
    # id(node) -> (node, first line, last line in the source); holding the node keeps its id
    # unique for the whole port.
    _origin: dict[int, tuple[cst.CSTNode, int, int]] = field(default_factory=dict)
    # id(node) -> (node, its qualified names in the source: a set, or LibCST's lazy value that
    # computes it), carried to the nodes that replace it.
    _names: dict[int, tuple[cst.CSTNode, Any]] = field(default_factory=dict)
    # Module-level import aliases of the source ("F" -> "torch.nn.functional"), for names in
    # code the rules made up.
    _aliases: dict[str, str] = field(default_factory=dict)
    # Names the port's source binds (see bound_names); computed from the source on first use
    # unless set (a library module sets those of its pruned source).
    bound: frozenset[str] | None = None

    def need(self, snippet: str, name: str) -> cst.Name:
        """Record that the output uses ``name`` from support snippet ``snippet``; the name the
        output calls it by, which is ``name`` unless the source defines that name itself (a
        model function called ``chunk``), in which case the import is aliased (``chunk_``)."""
        local = name
        if self.bound is None:
            self.bound = bound_names(ast.parse(self.source.text))
        while local in self.bound:
            local += "_"
        self.support.setdefault(snippet, set()).add(name if local == name else f"{name} as {local}")
        return cst.Name(local)

    def line_of(self, node: cst.CSTNode) -> int:
        hit = self._origin.get(id(node))
        return hit[1] if hit else 0

    def span_of(self, node: cst.CSTNode) -> tuple[int, int] | None:
        hit = self._origin.get(id(node))
        return (hit[1], hit[2]) if hit else None

    def names_of(self, node: cst.CSTNode) -> frozenset[QualifiedName]:
        """The qualified names ``node`` had in the source (empty for nodes rules made up)."""
        hit = self._names.get(id(node))
        if hit is None:
            return self._made_up_names(node)
        names = hit[1]() if callable(hit[1]) else hit[1]
        return frozenset(names)

    def _made_up_names(self, node: cst.CSTNode) -> frozenset[QualifiedName]:
        """A rule wrote ``torch.stack(...)`` for a later rule to map: it means what the
        source's module-level imports say."""
        parts: list[str] = []
        while isinstance(node, cst.Attribute):
            parts.append(node.attr.value)
            node = node.value
        if not isinstance(node, cst.Name) or node.value not in self._aliases:
            return frozenset()
        name = ".".join([self._aliases[node.value], *reversed(parts)])
        return frozenset({QualifiedName(name, QualifiedNameSource.IMPORT)})

    def inherit(self, original: cst.CSTNode, updated: cst.CSTNode) -> None:
        """``updated`` replaces ``original``: it keeps its source lines and qualified names."""
        if original is updated or id(updated) in self._origin:
            return
        hit = self._origin.get(id(original))
        if hit:
            self._origin[id(updated)] = (updated, hit[1], hit[2])
        # Names carry over only to a node spelled the same: `torch.cat` whose children were
        # rebuilt. A node a rule put in its place means something else.
        names = self._names.get(id(original))
        if names and _spelling(updated) == _spelling(original):
            self._names[id(updated)] = (updated, names[1])

    def record_source(self, module: cst.Module) -> None:
        """Source lines and qualified names of every node of the parsed source.

        Scopes are analysed once, on the source: rules never add or rename imports before
        rewrite_imports runs last, so a name means in the rewritten tree what it meant in the
        source, and nodes a rule makes up (``mx.concatenate``) have no torch meaning at all.
        """
        wrapper = MetadataWrapper(module, unsafe_skip_copy=True)
        for node, pos in wrapper.resolve(PositionProvider).items():
            self._origin[id(node)] = (node, pos.start.line, pos.end.line)
        for node, names in wrapper.resolve(QualifiedNameProvider).items():
            if _spelling(node) is not None:
                self._names[id(node)] = (node, names)
        self._aliases = _module_aliases(module)


class Rule(cst.CSTTransformer):
    """Base of every rule: a LibCST transformer with an id, a description and a context.

    Subclasses set ``id`` (stable, used in findings and markers) and ``description``.
    """

    id: ClassVar[str]
    description: ClassVar[str]
    order: ClassVar[int]

    def __init__(self, ctx: PortContext) -> None:
        super().__init__()
        self.ctx = ctx
        self._callees: set[int] = set()

    def on_visit(self, node: cst.CSTNode) -> bool:
        if isinstance(node, cst.Call):
            self._callees.add(id(node.func))
        return super().on_visit(node)

    def is_callee(self, node: cst.CSTNode) -> bool:
        """Whether ``node`` (an original node) is the function part of a call, as in ``x.f()``."""
        return id(node) in self._callees

    # -- helpers for subclasses -------------------------------------------------------------

    def qualified(self, node: cst.CSTNode, imports_only: bool = False) -> str | None:
        """The fully qualified, absolute name ``node`` refers to, or None.

        ``f(x).to`` is a method on a value, not a name, so it has none.
        """
        if not _is_dotted(node):
            return None
        for qn in sorted(self.ctx.names_of(node), key=lambda q: q.name):
            if not imports_only or qn.source is QualifiedNameSource.IMPORT:
                return absolute_name(qn.name, self.ctx.source.package)
        return None

    def imported(self, node: cst.CSTNode) -> str | None:
        """Like ``qualified``, but only for names that come from an import."""
        return self.qualified(node, imports_only=True)

    def applied(self, n: int = 1) -> None:
        self.ctx.applied[self.id] += n

    def unported(self, node: cst.CSTNode, message: str, confidence: str = BLOCKER) -> None:
        """Report ``node`` as left unported; ``confidence`` says how much work it leaves."""
        if confidence not in CONFIDENCE_CLASSES:
            raise ValueError(f"unknown confidence class {confidence!r}")
        code = cst.Module([]).code_for_node(node).strip().splitlines()[0][:80]
        finding = Finding(self.id, self.ctx.line_of(node), message, code, confidence)
        if finding not in self.ctx.findings:
            self.ctx.findings.append(finding)

    def on_leave(self, original_node, updated_node):  # type: ignore[no-untyped-def]
        self.ctx.inherit(original_node, updated_node)
        result = super().on_leave(original_node, updated_node)
        if isinstance(result, cst.BaseExpression) and result is not updated_node:
            result = _keep_parentheses(updated_node, result)
        if isinstance(result, cst.CSTNode):
            self.ctx.inherit(original_node, result)
        if result is not updated_node and not isinstance(original_node, cst.Module):
            self._touch(original_node, removed=isinstance(result, cst.RemovalSentinel))
        return result

    def _touch(self, node: cst.CSTNode, removed: bool) -> None:
        """Record the source lines this rule rewrote: a removed node's whole span, a rewritten
        compound statement's header line only (its body is attributed node by node)."""
        span = self.ctx.span_of(node)
        if span is None:
            return
        first, last = span
        if not removed and isinstance(getattr(node, "body", None), cst.BaseSuite):
            last = first
        self.ctx.touched.setdefault(self.id, set()).update(range(first, last + 1))


def _keep_parentheses(old: cst.CSTNode, new: cst.BaseExpression) -> cst.BaseExpression:
    """A replacement keeps the parentheses around what it replaced: they may hold a
    multi-line chain such as ``(x.transpose(1, 2)\n.contiguous())`` together."""
    lpar = getattr(old, "lpar", None)
    if not lpar or new.lpar:
        return new
    return new.with_changes(lpar=lpar, rpar=old.rpar)  # type: ignore[attr-defined]


def _module_aliases(module: cst.Module) -> dict[str, str]:
    """Names bound by the module's top-level imports, with the dotted names they stand for."""
    aliases: dict[str, str] = {}
    for stmt in module.body:
        if not isinstance(stmt, cst.SimpleStatementLine):
            continue
        for small in stmt.body:
            if isinstance(small, cst.Import):
                for alias in small.names:
                    dotted = _dotted_text(alias.name)
                    if alias.asname:
                        aliases[_dotted_text(alias.asname.name)] = dotted
                    else:
                        root = dotted.split(".")[0]
                        aliases[root] = root
            elif isinstance(small, cst.ImportFrom) and not isinstance(small.names, cst.ImportStar):
                base = "." * len(small.relative) + (
                    _dotted_text(small.module) if small.module else ""
                )
                for alias in small.names:
                    name = _dotted_text(alias.name)
                    bound = _dotted_text(alias.asname.name) if alias.asname else name
                    aliases[bound] = f"{base}.{name}" if small.module else base + name
    return aliases


def _spelling(node: cst.CSTNode) -> str | None:
    """``"torch.nn.functional"`` for a dotted name, None for anything else."""
    return _dotted_text(node) if _is_dotted(node) else None  # type: ignore[arg-type]


def _dotted_text(node: cst.BaseExpression) -> str:
    if isinstance(node, cst.Attribute):
        return f"{_dotted_text(node.value)}.{node.attr.value}"
    return node.value if isinstance(node, cst.Name) else ""


def _is_dotted(node: cst.CSTNode) -> bool:
    """``a.b.c`` is a name; ``f(x).to`` is a method on a value, not a qualified name."""
    while isinstance(node, cst.Attribute):
        node = node.value
    return isinstance(node, cst.Name)


def absolute_name(name: str, package: str) -> str:
    """Resolve a relative qualified name such as ``...models.normalization.RMSNorm``."""
    if not name.startswith("."):
        return name
    dots = len(name) - len(name.lstrip("."))
    base = package.split(".") if package else []
    if dots > 1:
        base = base[: len(base) - (dots - 1)]
    rest = name[dots:]
    return ".".join([*base, rest]) if rest else ".".join(base)


def discover_rules() -> list[type[Rule]]:
    """Every rule module in ``porter.rules``, sorted by its declared ``order``."""
    import porter.rules as pkg

    found: list[type[Rule]] = []
    for info in pkgutil.iter_modules(pkg.__path__):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"porter.rules.{info.name}")
        rule = getattr(module, "RULE", None)
        if rule is not None:
            found.append(rule)
    ids = [r.id for r in found]
    if len(ids) != len(set(ids)):
        raise RuntimeError(f"duplicate rule ids: {sorted(ids)}")
    return sorted(found, key=lambda r: (r.order, r.id))


def run_rules(module: cst.Module, ctx: PortContext, rules: list[type[Rule]]) -> cst.Module:
    """Apply ``rules`` in order, each as one pass over the tree the previous one left.

    The tree's source lines and names are recorded first, unless the caller already did (a
    library module is recorded whole, then pruned to what the port needs).
    """
    if not ctx._origin:
        ctx.record_source(module)
    for rule_cls in rules:
        module = module.visit(rule_cls(ctx))
    return fix_precedence(module)
