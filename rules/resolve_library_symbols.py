"""resolve_library_symbols: resolve names imported from the model's own library (symbols.toml).

Before::

    @maybe_allow_in_graph
    class Block(nn.Module):
        def __init__(self, dim):
            self.norm = RMSNorm(dim, eps=1e-5)

    class Model(ModelMixin, ConfigMixin):
        _no_split_modules = ["Block"]

        @register_to_config
        def __init__(self, dim=64):
            super().__init__()

        def forward(self, x, **kwargs: Unpack[TransformersKwargs]):
            ...

After::

    class Block(nn.Module):
        def __init__(self, dim):
            self.norm = RMSNorm(dim, eps=1e-5)  # RMSNorm from the generated support module

    class Model(nn.Module):
        def __init__(self, dim=64):
            super().__init__()
            self.config = SimpleNamespace(dim=dim)

        def __call__(self, x, **kwargs):
            ...

Fix safety: dropped names are mixins and decorators with no numerical effect (loading helpers,
compile hints, LoRA scaling), or typing-only names: an annotation that names one is removed
(a parameter keeps its name and default, an annotated class attribute its value). ``register_to_config`` is replaced by an explicit
``self.config`` so code that reads ``self.config.x`` keeps working. Support classes keep the
library's parameter names, so checkpoints load unchanged.
"""

from __future__ import annotations

import libcst as cst
import libcst.matchers as m

from porter.engine import Rule

from ._table import symbol_table


class ResolveLibrarySymbols(Rule):
    id = "resolve-library-symbols"
    description = "drop library mixins and decorators, map library classes to MLX support code"
    order = 10

    def __init__(self, ctx) -> None:  # type: ignore[no-untyped-def]
        super().__init__(ctx)
        self.symbols = symbol_table()
        self._drop_attrs: list[frozenset[str]] = []

    def _symbol(self, node: cst.CSTNode):  # type: ignore[no-untyped-def]
        name = self.imported(node)
        return self.symbols.get(name) if name else None

    def _resolved(self, sym) -> None:  # type: ignore[no-untyped-def]
        how = "dropped" if sym.action == "drop" else "mapped"
        via = f"{sym.action}: {sym.target}" if sym.target else ""
        self.ctx.resolutions[sym.name] = (how, via, sym.reason)

    # -- classes: bases and mixin class attributes ------------------------------------------

    def visit_ClassDef(self, node: cst.ClassDef) -> None:
        drop: set[str] = set()
        for base in node.bases:
            sym = self._symbol(base.value)
            if sym:  # a dropped mixin's settings, or a mapped base's that the port ignores
                drop |= sym.drop_class_attributes
        self._drop_attrs.append(frozenset(drop))

    def leave_ClassDef(self, original_node: cst.ClassDef, updated_node: cst.ClassDef):  # type: ignore[no-untyped-def]
        drop_attrs = self._drop_attrs.pop()
        updated_node = updated_node.with_changes(
            decorators=self._kept_decorators(original_node, updated_node)[0]
        )
        kept = []
        dropped = False
        for orig, base in zip(original_node.bases, updated_node.bases):
            sym = self._symbol(orig.value)
            if sym and sym.action == "drop":
                self._resolved(sym)
                dropped = True
                continue
            kept.append(base)
        body = [s for s in updated_node.body.body if not _assigns_one_of(s, drop_attrs)]
        if not dropped and len(body) == len(updated_node.body.body):
            return updated_node
        self.applied()
        if not kept:
            kept = [cst.Arg(value=cst.parse_expression("nn.Module"))]
        kept = [b.with_changes(comma=cst.MaybeSentinel.DEFAULT) for b in kept]
        if body and len(body) < len(updated_node.body.body):
            body[0] = body[0].with_changes(leading_lines=[])
        return updated_node.with_changes(bases=kept, body=updated_node.body.with_changes(body=body))

    # -- decorators -------------------------------------------------------------------------

    def leave_FunctionDef(self, original_node: cst.FunctionDef, updated_node: cst.FunctionDef):  # type: ignore[no-untyped-def]
        kept, store_config = self._kept_decorators(original_node, updated_node)
        if len(kept) == len(updated_node.decorators):
            return updated_node
        node = updated_node.with_changes(decorators=kept)
        if store_config:
            node = _store_config(node)
            self.ctx.imports.add("from types import SimpleNamespace")
        return node

    def _kept_decorators(self, original_node, updated_node):  # type: ignore[no-untyped-def]
        """The decorators that mean something in MLX, and whether register_to_config went."""
        kept = []
        store_config = False
        for orig, deco in zip(original_node.decorators, updated_node.decorators):
            target = orig.decorator.func if isinstance(orig.decorator, cst.Call) else orig.decorator
            sym = self._symbol(target)
            if sym and sym.action == "drop":
                self._resolved(sym)
                self.applied()
                store_config |= sym.name.endswith(".register_to_config")
                continue
            kept.append(deco)
        return kept, store_config

    # -- references to mapped names ---------------------------------------------------------

    def leave_Name(self, original_node: cst.Name, updated_node: cst.Name) -> cst.BaseExpression:
        sym = self._symbol(original_node)
        if sym is None or sym.action == "drop" or sym.target is None:
            return updated_node
        self._resolved(sym)
        self.applied()
        if sym.action == "support":
            snippet, _, name = sym.target.partition(".")
            return self.ctx.need(snippet, name)
        return cst.parse_expression(sym.target)

    def leave_SimpleStatementLine(self, original_node, updated_node):  # type: ignore[no-untyped-def]
        # `deprecate("x", "1.0", "...")` on a line of its own: a dropped call, a dropped line.
        small = original_node.body[0]
        if (
            len(original_node.body) == 1
            and isinstance(small, cst.Expr)
            and isinstance(small.value, cst.Call)
        ):
            sym = self._symbol(small.value.func)
            if sym and sym.action == "drop":
                self._resolved(sym)
                self.applied()
                return cst.RemoveFromParent()
        return updated_node

    # -- annotations naming dropped (typing-only) names ----------------------------------------

    def _names_dropped(self, annotation: cst.Annotation | None) -> bool:
        if annotation is None:
            return False
        found = m.findall(annotation, m.Name() | m.Attribute())
        for node in found:
            sym = self._symbol(node)
            if sym and sym.action == "drop":
                self._resolved(sym)
                return True
        return False

    def leave_Param(self, original_node: cst.Param, updated_node: cst.Param) -> cst.Param:
        if not self._names_dropped(original_node.annotation):
            return updated_node
        self.applied()
        return updated_node.with_changes(annotation=None)

    def leave_AnnAssign(self, original_node: cst.AnnAssign, updated_node: cst.AnnAssign):  # type: ignore[no-untyped-def]
        if updated_node.value is None or not self._names_dropped(original_node.annotation):
            return updated_node
        self.applied()
        return cst.Assign(targets=[cst.AssignTarget(updated_node.target)], value=updated_node.value)

    def leave_ImportFrom(self, original_node: cst.ImportFrom, updated_node: cst.ImportFrom):  # type: ignore[no-untyped-def]
        # Import statements are rewritten as a whole by rewrite_imports; keep names as they were.
        return original_node


def _assigns_one_of(stmt: cst.CSTNode, names: frozenset[str]) -> bool:
    if not names or not isinstance(stmt, cst.SimpleStatementLine) or len(stmt.body) != 1:
        return False
    small = stmt.body[0]
    if isinstance(small, cst.Assign) and len(small.targets) == 1:
        target = small.targets[0].target
        return isinstance(target, cst.Name) and target.value in names
    if isinstance(small, cst.AnnAssign):
        return isinstance(small.target, cst.Name) and small.target.value in names
    return False


_SUPER_INIT = m.SimpleStatementLine(
    body=[
        m.Expr(
            m.Call(func=m.Attribute(value=m.Call(func=m.Name("super")), attr=m.Name("__init__")))
        )
    ]
)


def _store_config(func: cst.FunctionDef) -> cst.FunctionDef:
    """Insert ``self.config = SimpleNamespace(a=a, ...)`` after ``super().__init__()``."""
    params = [p.name.value for p in func.params.params[1:]]
    params += [p.name.value for p in func.params.kwonly_params]
    fields = ", ".join(f"{p}={p}" for p in params)
    stmt = cst.parse_statement(f"self.config = SimpleNamespace({fields})")
    body = list(func.body.body)
    at = 0
    for i, s in enumerate(body):
        if m.matches(s, _SUPER_INIT):
            at = i + 1
            break
    body.insert(at, stmt)
    return func.with_changes(body=func.body.with_changes(body=body))


RULE = ResolveLibrarySymbols
