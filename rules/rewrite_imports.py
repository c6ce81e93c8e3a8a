"""rewrite_imports: torch and library imports give way to MLX, NumPy and the support module.

Before::

    import torch
    import torch.nn as nn
    from ...models.normalization import RMSNorm

After::

    import mlx.core as mx
    import mlx.nn as nn

    from .support import RMSNorm

Fix safety: runs last, after every rule that needed the torch imports to resolve names.
Standard-library imports are kept. Anything still referring to a removed import was marked
by mark_unported.
"""

from __future__ import annotations

import ast
import builtins
import sys

import libcst as cst

from porter.engine import Rule, absolute_name
from porter.transitive import import_bindings

from ._common import code

_KEEP_ROOTS = set(sys.stdlib_module_names)


def _root(node: cst.Import | cst.ImportFrom) -> str:
    if isinstance(node, cst.ImportFrom):
        if node.relative:
            return "."
        module = node.module
    else:
        module = node.names[0].name  # type: ignore[index]
    while isinstance(module, cst.Attribute):
        module = module.value
    return module.value if isinstance(module, cst.Name) else ""


class RewriteImports(Rule):
    id = "rewrite-imports"
    description = "replace torch/library imports with mlx, numpy and support imports"
    order = 95

    def visit_Module(self, node: cst.Module) -> None:
        # Names ported transitively into a generated module beside this one: stem -> imports.
        self._ported: dict[str, set[str]] = {}
        self._numpy: set[str] = set()

    def leave_SimpleStatementLine(self, original_node, updated_node):  # type: ignore[no-untyped-def]
        kept = []
        for small in updated_node.body:
            if isinstance(small, (cst.Import, cst.ImportFrom)) and _root(small) not in _KEEP_ROOTS:
                if _root(small) == "numpy":  # NumPy runs beside MLX; re-emitted with the rest
                    self._numpy.add(code(small))
                self._keep_ported(small)
                self.applied()
                continue
            kept.append(small)
        if len(kept) == len(updated_node.body):
            return updated_node
        if not kept:
            return cst.RemoveFromParent()
        return updated_node.with_changes(body=kept)

    def leave_Module(self, original_node: cst.Module, updated_node: cst.Module) -> cst.Module:
        used = _names_used(updated_node)
        missing = self._unported_imports(updated_node, used)
        helper = code(self.ctx.need("unported", "unported")) if missing else ""
        lines = []
        if "mx" in used:
            lines.append("import mlx.core as mx")
        if "nn" in used:
            lines.append("import mlx.nn as nn")
        imports = self.ctx.imports | self._numpy
        lines += sorted(i for i in imports if i.startswith("import "))
        lines += sorted(i for i in imports if i.startswith("from "))
        # Only names the output still uses: a later fold may have dropped a call a rule wrote.
        names = sorted(
            n
            for n in {n for names in self.ctx.support.values() for n in names}
            if n.rpartition(" as ")[2] in used | {helper}
        )
        if names:
            lines.append(f"from .support import {', '.join(names)}")
        for stem, bound in sorted(self._ported.items()):
            lines.append(f"from .{stem} import {', '.join(sorted(bound))}")
        lines += [f"{local} = {helper}({name!r})" for local, name in sorted(missing.items())]
        new = [cst.parse_statement(line + "\n") for line in lines]
        body = list(updated_node.body)
        at = 0
        while at < len(body) and _is_header(body[at]):
            at += 1
        if new:
            new[0] = new[0].with_changes(leading_lines=[cst.EmptyLine()] if at else [])
        elif at == 0 and body:
            body[0] = body[0].with_changes(leading_lines=[])
        return updated_node.with_changes(body=[*body[:at], *new, *body[at:]])

    def _unported_imports(self, module: cst.Module, used: set[str]) -> dict[str, str]:
        """Imported names the output still uses but no longer binds (their import was removed
        and mark_unported marked each use): local name -> qualified name. Each gets a stand-in
        that raises when used, so the rest of the module still imports."""
        bound = _bound_anywhere(module) | set(dir(builtins))
        bound |= {"mx", "nn"} | {
            n.rpartition(" as ")[2] for ns in self.ctx.support.values() for n in ns
        }
        for names in self._ported.values():
            bound |= {n.rpartition(" as ")[2] for n in names}
        for line in self.ctx.imports | self._numpy:  # imports this rule adds (logging, numpy)
            bound |= _bound_anywhere(cst.parse_module(line + "\n"))
        source = self.ctx.source
        return {
            local: name
            for local, name in import_bindings(ast.parse(source.text), source.package).items()
            if local in used and local not in bound
        }

    def _keep_ported(self, node: cst.Import | cst.ImportFrom) -> None:
        """An import of a name porter ported transitively becomes an import of its port."""
        if not isinstance(node, cst.ImportFrom) or isinstance(node.names, cst.ImportStar):
            return
        module = "." * len(node.relative) + (code(node.module) if node.module else "")
        for alias in node.names:
            name = code(alias.name)
            qualified = f"{module}.{name}" if node.module else module + name
            stem = self.ctx.transitive.get(absolute_name(qualified, self.ctx.source.package))
            if stem is None:
                continue
            name = alias.name.value  # type: ignore[union-attr]
            bound = alias.asname.name.value if alias.asname else name  # type: ignore[union-attr]
            self._ported.setdefault(stem, set()).add(
                name if bound == name else f"{name} as {bound}"
            )


def _bound_anywhere(module: cst.Module) -> set[str]:
    """Every name the (rewritten) module binds, in any scope: definitions, parameters,
    targets and the imports it keeps. Read from the tree: mid-rewrite code may not parse."""
    found: set[str] = set()

    def names(node: cst.CSTNode | None) -> None:
        if isinstance(node, cst.Name):
            found.add(node.value)
        elif isinstance(node, (cst.Tuple, cst.List)):
            for element in node.elements:
                names(element.value)
        elif isinstance(node, cst.StarredElement):
            names(node.value)

    class Collect(cst.CSTVisitor):
        def visit_FunctionDef(self, node: cst.FunctionDef) -> None:
            found.add(node.name.value)

        def visit_ClassDef(self, node: cst.ClassDef) -> None:
            found.add(node.name.value)

        def visit_Param(self, node: cst.Param) -> None:
            found.add(node.name.value)

        def visit_AssignTarget(self, node: cst.AssignTarget) -> None:
            names(node.target)

        def visit_AnnAssign(self, node: cst.AnnAssign) -> None:
            names(node.target)

        def visit_For(self, node: cst.For) -> None:
            names(node.target)

        def visit_CompFor(self, node: cst.CompFor) -> None:
            names(node.target)

        def visit_NamedExpr(self, node: cst.NamedExpr) -> None:
            names(node.target)

        def visit_AsName(self, node: cst.AsName) -> None:
            names(node.name)

        def visit_ImportAlias(self, node: cst.ImportAlias) -> None:
            if node.asname is None:
                root = node.name
                while isinstance(root, cst.Attribute):
                    root = root.value
                names(root)

    module.visit(Collect())
    return found


def _is_header(stmt: cst.CSTNode) -> bool:
    """Docstrings, ``from __future__`` and kept standard-library imports stay on top."""
    if not isinstance(stmt, cst.SimpleStatementLine):
        return False
    small = stmt.body[0]
    if isinstance(small, cst.Expr) and isinstance(small.value, cst.SimpleString):
        return True
    return isinstance(small, (cst.Import, cst.ImportFrom))


def _names_used(module: cst.Module) -> set[str]:
    found: set[str] = set()

    class Collect(cst.CSTVisitor):
        def visit_Name(self, node: cst.Name) -> None:
            found.add(node.value)

    module.visit(Collect())
    return found


RULE = RewriteImports
