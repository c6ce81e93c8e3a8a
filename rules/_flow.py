"""A small, module-wide dataflow analysis: which names, attributes and returns carry a tag.

Rules use it to follow one kind of value (complex tensors, float64 numpy arrays) through a
model file: assignments, tuple unpacking, ``list.append``, comprehensions, ``self``
attributes, method returns and call arguments, until nothing changes. It is flow-insensitive
within a function: a name that ever holds a tagged value is tagged everywhere in it.
"""

from __future__ import annotations

import builtins
from collections.abc import Callable
from dataclasses import dataclass, field

import libcst as cst

from porter.engine import Rule

from ._common import self_attr

ALL = -1  # marks "the whole return value" in FunctionFacts.returns


@dataclass
class FunctionFacts:
    key: str
    node: cst.FunctionDef
    cls: str | None
    parent: str | None  # enclosing function key, for closures
    params: list[str]
    names: set[str] = field(default_factory=set)
    returns: set[int] = field(default_factory=set)
    bound: set[str] = field(default_factory=set)  # names assigned in the function itself


@dataclass
class Flow:
    """Tagged facts for one module. ``source(expr, fn)`` says whether an expression creates a
    tagged value by itself (``torch.polar(...)``); ``keeps(method)`` whether a method keeps
    the tag of its receiver; ``breaks(expr)`` whether a call ends it (``view_as_real``)."""

    source: Callable[[cst.BaseExpression], bool]
    keeps: Callable[[str], bool]
    breaks: Callable[[cst.BaseExpression], bool]
    backward_mult: bool = False
    # Whether a library call passes the tag of its first argument on (default: every one).
    passes: Callable[[cst.Call], bool] | None = None
    functions: dict[str, FunctionFacts] = field(default_factory=dict)
    attrs: dict[str, set[str]] = field(default_factory=dict)
    attr_types: dict[str, dict[str, str]] = field(default_factory=dict)
    classes: set[str] = field(default_factory=set)
    by_node: dict[int, FunctionFacts] = field(default_factory=dict)
    current: FunctionFacts | None = None

    # -- building ---------------------------------------------------------------------------

    def collect(self, module: cst.Module) -> None:
        flow = self

        class Collect(cst.CSTVisitor):
            def __init__(self) -> None:
                self.cls: list[str] = []
                self.fns: list[str] = []

            def visit_ClassDef(self, node: cst.ClassDef) -> None:
                self.cls.append(node.name.value)
                flow.classes.add(node.name.value)

            def leave_ClassDef(self, node: cst.ClassDef) -> None:
                self.cls.pop()

            def visit_FunctionDef(self, node: cst.FunctionDef) -> None:
                owner = self.fns[-1] if self.fns else (self.cls[-1] if self.cls else None)
                key = f"{owner}.{node.name.value}" if owner else node.name.value
                in_class = bool(self.cls) and not self.fns
                params = [p.name.value for p in node.params.params]
                params += [p.name.value for p in node.params.kwonly_params]
                facts = FunctionFacts(
                    key=key,
                    node=node,
                    cls=self.cls[-1] if self.cls else None,
                    parent=self.fns[-1] if self.fns else None,
                    params=params[1:] if in_class and not _is_static(node) else params,
                )
                facts.bound = _bound_names(node)
                flow.functions[key] = facts
                flow.by_node[id(node)] = facts
                self.fns.append(key)

            def leave_FunctionDef(self, node: cst.FunctionDef) -> None:
                self.fns.pop()

            def visit_Assign(self, node: cst.Assign) -> None:
                # self.attr = ClassName(...) lets calls through self.attr reach that class.
                if not self.cls or not isinstance(node.value, cst.Call):
                    return
                func = node.value.func
                if isinstance(func, cst.Name):
                    for t in node.targets:
                        attr = self_attr(t.target)
                        if attr:
                            flow.attr_types.setdefault(self.cls[-1], {})[attr] = func.value

        module.visit(Collect())

    def solve(self, rounds: int = 12) -> None:
        for _ in range(rounds):
            before = self._size()
            for facts in list(self.functions.values()):
                self._scan(facts)
            if self._size() == before:
                return

    def _size(self) -> int:
        return sum(len(f.names) + len(f.returns) for f in self.functions.values()) + sum(
            len(a) for a in self.attrs.values()
        )

    # -- queries ----------------------------------------------------------------------------

    def function_for(self, node: cst.FunctionDef) -> FunctionFacts | None:
        return self.by_node.get(id(node))

    def tagged(self, expr: cst.BaseExpression, fn: FunctionFacts | None) -> bool:
        self.current = fn  # the function a `source` callback is asked about
        if self.breaks(expr):
            return False
        if self.source(expr):
            return True
        if isinstance(expr, cst.Name):
            return fn is not None and self._name_tagged(expr.value, fn)
        if isinstance(expr, cst.Attribute):
            attr = self_attr(expr)
            if attr and fn is not None and fn.cls:
                return attr in self.attrs.get(fn.cls, set())
            return False
        if isinstance(expr, cst.Subscript):
            return self.tagged(expr.value, fn)
        if isinstance(expr, cst.UnaryOperation):
            return self.tagged(expr.expression, fn)
        if isinstance(expr, cst.BinaryOperation):
            return self.tagged(expr.left, fn) or self.tagged(expr.right, fn)
        if isinstance(expr, cst.IfExp):
            return self.tagged(expr.body, fn) or self.tagged(expr.orelse, fn)
        if isinstance(expr, (cst.List, cst.Tuple)):
            return any(self.tagged(e.value, fn) for e in expr.elements)
        if isinstance(expr, (cst.ListComp, cst.GeneratorExp)):
            return self._comp_tagged(expr, fn)
        if isinstance(expr, cst.Call):
            return self._call_tagged(expr, fn)
        return False

    def _name_tagged(self, name: str, fn: FunctionFacts) -> bool:
        scope: FunctionFacts | None = fn
        while scope is not None:
            if name in scope.names:
                return True
            if name in scope.params or name in scope.bound:
                return False
            scope = self.functions.get(scope.parent) if scope.parent else None
        return False

    def _comp_tagged(self, expr: cst.ListComp | cst.GeneratorExp, fn: FunctionFacts | None) -> bool:
        targets = []
        for f in _comprehensions(expr):
            if self.tagged(f.iter, fn) and isinstance(f.target, cst.Name):
                targets.append(f.target.value)
        if fn is None:
            return False
        added = [t for t in targets if t not in fn.names]
        fn.names.update(added)
        try:
            return self.tagged(expr.elt, fn)
        finally:
            fn.names.difference_update(added)

    def _call_tagged(self, expr: cst.Call, fn: FunctionFacts | None) -> bool:
        func = expr.func
        callee = self.resolve_call(expr, fn)
        if callee is not None:
            return ALL in callee.returns
        if isinstance(func, cst.Name) and func.value in ("list", "tuple"):
            return bool(expr.args) and self.tagged(expr.args[0].value, fn)
        if (
            isinstance(func, cst.Attribute)
            and self.keeps(func.attr.value)
            and self.tagged(func.value, fn)
        ):
            return True
        # A library function applied to a tagged value (pad_sequence, torch.cat) keeps it.
        if expr.args and self._is_library(func):
            if self.passes is not None and not self.passes(expr):
                return False
            return self.tagged(expr.args[0].value, fn)
        return False

    def _is_library(self, func: cst.BaseExpression) -> bool:
        # Calls on a receiver expression are methods (handled by keeps); plain names and
        # module attributes are library functions.
        if isinstance(func, cst.Name):
            return (
                func.value not in self.classes
                and func.value not in self.functions
                and not hasattr(builtins, func.value)
            )
        if isinstance(func, cst.Attribute):
            root = func
            while isinstance(root, cst.Attribute):
                root = root.value
            return isinstance(root, cst.Name) and root.value in ("torch", "F", "nn", "np", "mx")
        return False

    def tuple_index_tagged(self, expr: cst.BaseExpression, index: int, fn: FunctionFacts) -> bool:
        if isinstance(expr, cst.Tuple) and index < len(expr.elements):
            return self.tagged(expr.elements[index].value, fn)
        if isinstance(expr, cst.IfExp):  # a, b = f() if cond else (x, y)
            return self.tuple_index_tagged(expr.body, index, fn) or self.tuple_index_tagged(
                expr.orelse, index, fn
            )
        if isinstance(expr, cst.Call):
            callee = self.resolve_call(expr, fn)
            if callee is not None:
                return index in callee.returns or ALL in callee.returns
        return False

    def resolve_call(self, expr: cst.Call, fn: FunctionFacts | None) -> FunctionFacts | None:
        """The function a call reaches, when it is defined in this module."""
        func = expr.func
        cls = fn.cls if fn else None
        if isinstance(func, cst.Name):
            # A nested function, then a module-level function, then a class's __call__.
            scope = fn
            while scope is not None:
                hit = self.functions.get(f"{scope.key}.{func.value}")
                if hit:
                    return hit
                scope = self.functions.get(scope.parent) if scope.parent else None
            if func.value in self.functions:
                return self.functions[func.value]
            return None
        if isinstance(func, cst.Attribute):
            method = func.attr.value
            owner = func.value
            if isinstance(owner, cst.Name) and owner.value in ("self", "cls") and cls:
                hit = self.functions.get(f"{cls}.{method}")
                if hit:
                    return hit
                typ = self.attr_types.get(cls, {}).get(method)
                if typ:
                    return self.functions.get(f"{typ}.__call__") or self.functions.get(
                        f"{typ}.forward"
                    )
                return None
            if isinstance(owner, cst.Name) and owner.value in self.classes:
                return self.functions.get(f"{owner.value}.{method}")
            attr = self_attr(owner)
            if attr and cls:
                typ = self.attr_types.get(cls, {}).get(attr)
                if typ:
                    return self.functions.get(f"{typ}.{method}")
        return None

    # -- one pass over one function ---------------------------------------------------------

    def _scan(self, fn: FunctionFacts) -> None:
        flow = self

        class Scan(cst.CSTVisitor):
            def visit_FunctionDef(self, node: cst.FunctionDef) -> bool:
                return node is fn.node  # nested functions are scanned on their own

            def visit_Assign(self, node: cst.Assign) -> None:
                for t in node.targets:
                    flow._bind(t.target, node.value, fn)

            def visit_AugAssign(self, node: cst.AugAssign) -> None:
                flow._bind(node.target, node.value, fn)

            def visit_For(self, node: cst.For) -> None:
                if flow.tagged(node.iter, fn) and isinstance(node.target, cst.Name):
                    fn.names.add(node.target.value)

            def visit_Return(self, node: cst.Return) -> None:
                value = node.value
                if value is None:
                    return
                if isinstance(value, cst.Tuple):
                    for i, e in enumerate(value.elements):
                        if flow.tagged(e.value, fn):
                            fn.returns.add(i)
                elif flow.tagged(value, fn):
                    fn.returns.add(ALL)

            def visit_Call(self, node: cst.Call) -> None:
                func = node.func
                # xs.append(tagged) tags the list.
                if (
                    isinstance(func, cst.Attribute)
                    and func.attr.value in ("append", "extend", "insert")
                    and isinstance(func.value, cst.Name)
                    and node.args
                    and flow.tagged(node.args[-1].value, fn)
                ):
                    fn.names.add(func.value.value)
                # Tagged arguments tag the parameters of functions defined here.
                callee = flow.resolve_call(node, fn)
                if callee is None:
                    return
                pos = 0
                for a in node.args:
                    if a.star:
                        continue
                    if a.keyword is not None:
                        name = a.keyword.value
                    elif pos < len(callee.params):
                        name = callee.params[pos]
                        pos += 1
                    else:
                        continue
                    if flow.tagged(a.value, fn):
                        callee.names.add(name)

            def visit_BinaryOperation(self, node: cst.BinaryOperation) -> None:
                if not flow.backward_mult or not isinstance(node.operator, cst.Multiply):
                    return
                left, right = flow.tagged(node.left, fn), flow.tagged(node.right, fn)
                for side, other in ((node.left, right), (node.right, left)):
                    while isinstance(side, cst.Subscript):  # rot[None, :] is rot indexed
                        side = side.value
                    if other and isinstance(side, cst.Name) and not flow.tagged(side, fn):
                        fn.names.add(side.value)

        fn.node.visit(Scan())

    def _bind(
        self, target: cst.BaseExpression, value: cst.BaseExpression, fn: FunctionFacts
    ) -> None:
        if isinstance(target, cst.Name):
            if self.tagged(value, fn):
                fn.names.add(target.value)
            return
        attr = self_attr(target)
        if attr and fn.cls:
            if self.tagged(value, fn):
                self.attrs.setdefault(fn.cls, set()).add(attr)
            return
        if isinstance(target, (cst.Tuple, cst.List)):
            for i, e in enumerate(target.elements):
                inner = e.value
                if isinstance(inner, cst.Name) and self.tuple_index_tagged(value, i, fn):
                    fn.names.add(inner.value)


class FlowRule(Rule):
    """A rule that follows one kind of value through the module with a ``Flow``.

    Subclasses build their ``Flow`` in ``make_flow``; ``tagged(expr)`` then answers for the
    function the traversal is in.
    """

    def make_flow(self) -> Flow:
        raise NotImplementedError

    def visit_Module(self, node: cst.Module) -> None:
        self.flow = self.make_flow()
        self.flow.collect(node)
        self.flow.solve()
        self._functions: list[FunctionFacts | None] = []
        self._branches: dict[str, tuple[dict[int, tuple], dict[str, list]]] = {}

    def tagged(self, expr: cst.BaseExpression) -> bool:
        fn = self._functions[-1] if self._functions else None
        if not self.flow.tagged(expr, fn):
            return False
        if isinstance(expr, cst.Name) and fn is not None and expr.value not in fn.params:
            return self._reached(expr, fn)
        return True

    def _reached(self, use: cst.Name, fn: FunctionFacts) -> bool:
        """Whether a tagged value can reach this use of a name: not when every assignment of a
        tagged value sits in the other branch of an ``if`` that holds the use, as in
        ``if real: x = a.float() ... else: x = view_as_complex(a)``."""
        if fn.key not in self._branches:
            self._branches[fn.key] = _branch_paths(fn.node)
        uses, sites = self._branches[fn.key]
        here = uses.get(id(use))
        if here is None:  # a node the analysis did not see: stay with the function-wide answer
            return True
        tagged_sites = [
            path
            for path, value in sites.get(use.value, [])
            if value is None or self.flow.tagged(value, fn)
        ]
        return not tagged_sites or any(not _exclusive(path, here) for path in tagged_sites)

    def visit_FunctionDef(self, node: cst.FunctionDef) -> None:
        self._functions.append(self.flow.function_for(node))

    def leave_FunctionDef(self, original_node, updated_node):  # type: ignore[no-untyped-def]
        self._functions.pop()
        return updated_node


def _is_static(node: cst.FunctionDef) -> bool:
    return any(
        isinstance(d.decorator, cst.Name) and d.decorator.value == "staticmethod"
        for d in node.decorators
    )


def _comprehensions(expr: cst.ListComp | cst.GeneratorExp) -> list[cst.CompFor]:
    out = []
    f: cst.CompFor | None = expr.for_in
    while f is not None:
        out.append(f)
        f = f.inner_for_in
    return out


def _bound_names(fn: cst.FunctionDef) -> set[str]:
    """Names assigned in ``fn`` itself (not in nested functions): they are not closures."""
    found: set[str] = set()

    class Find(cst.CSTVisitor):
        def visit_FunctionDef(self, node: cst.FunctionDef) -> bool:
            return node is fn

        def visit_AssignTarget(self, node: cst.AssignTarget) -> None:
            if isinstance(node.target, cst.Name):
                found.add(node.target.value)

    fn.visit(Find())
    return found


def _branch_paths(
    fn: cst.FunctionDef,
) -> tuple[dict[int, tuple], dict[str, list[tuple[tuple, cst.BaseExpression | None]]]]:
    """For one function: the ``if`` branches around each name use (a path of (if, branch)
    steps), and for each name the branch path and value of every assignment to it (value
    None where it cannot be told, as in a tuple unpacked from a call)."""
    uses: dict[int, tuple] = {}
    sites: dict[str, list[tuple[tuple, cst.BaseExpression | None]]] = {}
    path: list[tuple[int, int]] = []

    class Walk(cst.CSTVisitor):
        def visit_FunctionDef(self, node: cst.FunctionDef) -> bool:
            return node is fn

        def visit_If(self, node: cst.If) -> bool:
            node.test.visit(self)
            path.append((id(node), 0))
            node.body.visit(self)
            path.pop()
            if node.orelse is not None:
                path.append((id(node), 1))
                node.orelse.visit(self)
                path.pop()
            return False

        def visit_Name(self, node: cst.Name) -> None:
            uses[id(node)] = tuple(path)

        def visit_Assign(self, node: cst.Assign) -> None:
            for target in node.targets:
                if isinstance(target.target, cst.Name):
                    sites.setdefault(target.target.value, []).append((tuple(path), node.value))
                elif isinstance(target.target, (cst.Tuple, cst.List)):
                    for element in target.target.elements:
                        if isinstance(element.value, cst.Name):
                            sites.setdefault(element.value.value, []).append((tuple(path), None))

    fn.visit(Walk())
    return uses, sites


def _exclusive(site: tuple, use: tuple) -> bool:
    """Whether two branch paths part at the two branches of one ``if``."""
    for (if_a, branch_a), (if_b, branch_b) in zip(site, use):
        if if_a != if_b:
            return False
        if branch_a != branch_b:
            return True
    return False
