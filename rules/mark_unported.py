"""mark_unported: keep what porter could not port, and mark it where it stands.

Every finding a rule reported, and every reference to a torch or library name that no rule
mapped, gets a comment on the statement that holds it::

    # XXX(porter unported, map-ops): torch.nn.functional.unfold has no MLX mapping
    patches = F.unfold(x, 2)

Fix safety: nothing is dropped; the code is left as it was so a reviewer sees exactly what
needs a hand port, and ``porter port --strict`` fails while any marker remains.
"""

from __future__ import annotations

import sys

import libcst as cst

from porter.engine import BLOCKER, MECHANICAL, NEEDS_REVIEW, Finding, Rule

from ._common import code, is_tensor_receiver
from ._table import OpRow, mlx_outputs, op_table, torch_only_methods

_ALLOWED_ROOTS = {"mlx", "numpy"} | set(sys.stdlib_module_names)
_PORT_ALIASES = {"mx": "mlx.core", "nn": "mlx.nn", "np": "numpy"}
# Imports that bind an alias to what the port means by it (torch.nn is replaced by mlx.nn).
_SAME_MEANING = {"mx": set(), "nn": {"torch.nn"}, "np": {"numpy"}}
_STATEMENTS = (
    cst.SimpleStatementLine,
    cst.If,
    cst.For,
    cst.While,
    cst.With,
    cst.Try,
    cst.FunctionDef,
    cst.ClassDef,
)


class MarkUnported(Rule):
    id = "mark-unported"
    description = "mark every construct left unported with an inline comment"
    order = 90

    def visit_Module(self, node: cst.Module) -> None:
        self._claimed: set[Finding] = set()
        # Names the rules wrote: MLX targets share spellings with torch aliases (nn.Linear),
        # and support names shadow the library imports they replace, until rewrite_imports.
        self._support = {n for ns in self.ctx.support.values() for n in ns}
        self._ported = mlx_outputs() | self._support

    def visit_Call(self, node: cst.Call) -> None:
        # A tensor method no rule rewrote and MLX arrays lack: kept, but never silently.
        func = node.func
        if not isinstance(func, cst.Attribute) or func.attr.value not in torch_only_methods():
            return
        receiver = func.value
        if not is_tensor_receiver(receiver) or self.imported(receiver) is not None:
            return
        if isinstance(receiver, cst.Name) and receiver.value == "self":
            return  # a method of the model's own class
        line, method = self.ctx.line_of(node), f".{func.attr.value}("
        if any(
            f.line == line and f.rule != self.id and method in f.code for f in self.ctx.findings
        ):
            return  # an earlier rule already reported this call, with its reason
        self.unported(
            node,
            f"Tensor.{func.attr.value}() has no MLX mapping (mx.array has no such method)",
            MECHANICAL,
        )

    # -- names the port's own imports need ----------------------------------------------------

    def visit_Param(self, node: cst.Param) -> None:
        self._reserved(node.name, node)

    def visit_AssignTarget(self, node: cst.AssignTarget) -> None:
        self._reserved(node.target, node)

    def visit_AnnAssign(self, node: cst.AnnAssign) -> None:
        self._reserved(node.target, node)

    def visit_For(self, node: cst.For) -> None:
        self._reserved(node.target, node.target)

    def visit_WithItem(self, node: cst.WithItem) -> None:
        if node.asname is not None:
            self._reserved(node.asname.name, node)

    def visit_FunctionDef(self, node: cst.FunctionDef) -> None:
        self._reserved(node.name, node.name)

    def visit_ClassDef(self, node: cst.ClassDef) -> None:
        self._reserved(node.name, node.name)

    def _reserved(self, target: cst.BaseExpression, where: cst.CSTNode) -> None:
        """A source name that the port's ``import mlx.core as mx`` (or ``mlx.nn as nn``, ``numpy
        as np``) would take: the generated code would call the source's object instead."""
        names = [target] if isinstance(target, cst.Name) else []
        if isinstance(target, (cst.Tuple, cst.List)):
            names = [e.value for e in target.elements if isinstance(e.value, cst.Name)]
        for name in names:
            if name.value in _PORT_ALIASES:
                self.unported(
                    where,
                    f"the source binds `{name.value}`, the name the port imports "
                    f"{_PORT_ALIASES[name.value]} as; rename it in the source",
                    BLOCKER,
                )

    def visit_CompFor(self, node: cst.CompFor) -> None:
        self._reserved(node.target, node)

    def visit_NamedExpr(self, node: cst.NamedExpr) -> None:
        self._reserved(node.target, node)

    def visit_ExceptHandler(self, node: cst.ExceptHandler) -> None:
        if node.name is not None:
            self._reserved(node.name.name, node)

    def visit_Import(self, node: cst.Import) -> bool:
        self._imported_as(node)
        return False

    def visit_ImportFrom(self, node: cst.ImportFrom) -> bool:
        self._imported_as(node)
        return False

    def _imported_as(self, node: cst.Import | cst.ImportFrom) -> None:
        """``import numpy as mx``: an import that binds a port alias to something else than
        what the port binds it to (torch.nn's ``nn`` is replaced, numpy's ``np`` kept)."""
        if isinstance(node.names, cst.ImportStar):
            return
        module = code(node.module) if isinstance(node, cst.ImportFrom) and node.module else ""
        for alias in node.names:
            bound = alias.asname.name if alias.asname else None
            if not isinstance(bound, cst.Name) and isinstance(node, cst.ImportFrom):
                bound = alias.name if isinstance(alias.name, cst.Name) else None
            if not isinstance(bound, cst.Name) or bound.value not in _PORT_ALIASES:
                continue
            full = ".".join(p for p in (module, code(alias.name)) if p)
            if full not in _SAME_MEANING[bound.value]:
                self._reserved(bound, node)

    def visit_Attribute(self, node: cst.Attribute) -> bool:
        return not self._check(node)

    def visit_Name(self, node: cst.Name) -> None:
        self._check(node)

    def _check(self, node: cst.Name | cst.Attribute) -> bool:
        name = self.imported(node)
        if name is None or name.split(".")[0] in _ALLOWED_ROOTS:
            return False
        if name in self.ctx.transitive:  # ported beside this module
            return isinstance(node, cst.Attribute)
        if code(node) in self._ported:
            return isinstance(node, cst.Attribute)
        if isinstance(node, cst.Attribute) and code(node).split(".")[0] in self._support:
            return True  # a member of a support object: ALL_ATTENTION_FUNCTIONS.get_interface
        # A torch op usually has a 1:1 MLX op (a row in ops.toml); a library name needs a
        # symbol mapping or a port of its own, and someone must decide which.
        confidence = MECHANICAL if name.split(".")[0] == "torch" else NEEDS_REVIEW
        rows = op_table().rows.get(("function", name), [])
        if rows:  # mapped, but only for other arguments (a `when`/`unless` row)
            fits = "; ".join(_row_condition(row) for row in rows)
            self.unported(node, f"{name} is mapped only when {fits}; not for this call", confidence)
        else:
            self.unported(node, f"{name} has no MLX mapping", confidence)
        return True

    def on_leave(self, original_node, updated_node):  # type: ignore[no-untyped-def]
        result = super().on_leave(original_node, updated_node)
        if isinstance(original_node, _STATEMENTS) and isinstance(result, cst.CSTNode):
            result = self._mark(original_node, result)
        return result

    def _mark(self, original: cst.CSTNode, node: cst.CSTNode) -> cst.CSTNode:
        span = self.ctx.span_of(original)
        if span is None:
            return node
        if isinstance(
            original, (cst.FunctionDef, cst.ClassDef, cst.If, cst.For, cst.While, cst.With, cst.Try)
        ):
            body_start = self.ctx.span_of(original.body)
            if body_start:
                span = (span[0], max(span[0], body_start[0] - 1))
        mine = [
            f for f in self.ctx.findings if f not in self._claimed and span[0] <= f.line <= span[1]
        ]
        if not mine:
            return node
        self._claimed.update(mine)
        comments = [
            cst.EmptyLine(comment=cst.Comment(f"# XXX(porter unported, {f.rule}): {f.message}"))
            for f in mine
        ]
        return node.with_changes(leading_lines=[*node.leading_lines, *comments])  # type: ignore[attr-defined]


def _row_condition(row: OpRow) -> str:
    """What a conditional op row needs of a call: ``padding_mode="zeros"``, ``no generator``."""
    parts = [f"{key}={value!r}" for key, value in row.when.items()]
    parts += [f"no {key}" for key in row.unless]
    return ", ".join(parts) or "always"


RULE = MarkUnported
