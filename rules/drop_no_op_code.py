"""drop_no_op_code: remove what earlier rewrites left doing nothing.

Before (after the device moves and probes are gone)::

    cos, sin = cos, sin
    hidden_states = hidden_states
    device = mx.default_device() if omni_mode else mx.default_device()
    if mx.default_device().type == "mps":
        ids = ids

    class Processor:
        def __init__(self):
            pass

After::

    device = mx.default_device()

    class Processor:

Fix safety: a self-assignment ``x = x`` (or ``a, b = a, b``) binds each name to the object it
already holds; ``x if c else x`` is ``x`` whatever ``c`` is. Both are removed only when no call
can run in them except ``mx.default_device()`` and the support ``mps_is_available()``, which
have no effect. An ``if`` whose body only
held such statements (and that has no ``else``) goes too, under the same condition on its
test. An ``__init__`` that takes only ``self`` and does nothing is removed; Python's default
constructor does the same.
"""

from __future__ import annotations

import libcst as cst

from porter.engine import Rule

from ._common import code

# Calls with no effect that porter itself writes: MLX's default device and the MPS probe.
_PURE_CALLS = {"mx.default_device", "mps_is_available"}


class DropNoOpCode(Rule):
    id = "drop-no-op-code"
    description = "drop self-assignments, identical if/else arms and empty constructors"
    order = 85

    def leave_SimpleStatementLine(
        self, original_node: cst.SimpleStatementLine, updated_node: cst.SimpleStatementLine
    ) -> cst.BaseStatement | cst.RemovalSentinel:
        if all(_self_assignment(s) for s in updated_node.body):
            self.applied()
            return cst.RemoveFromParent()
        return updated_node

    def leave_IfExp(self, original_node: cst.IfExp, updated_node: cst.IfExp) -> cst.BaseExpression:
        if updated_node.body.deep_equals(updated_node.orelse) and _pure(updated_node.test):
            self.applied()
            return updated_node.body.with_changes(lpar=updated_node.lpar, rpar=updated_node.rpar)
        return updated_node

    def leave_If(
        self, original_node: cst.If, updated_node: cst.If
    ) -> cst.BaseStatement | cst.RemovalSentinel:
        body = updated_node.body
        if (
            updated_node.orelse is None
            and isinstance(body, cst.IndentedBlock)
            and not body.body
            and _pure(updated_node.test)
        ):
            self.applied()
            return cst.RemoveFromParent()
        return updated_node

    def leave_FunctionDef(
        self, original_node: cst.FunctionDef, updated_node: cst.FunctionDef
    ) -> cst.BaseStatement | cst.RemovalSentinel:
        params = updated_node.params
        only_self = (
            [p.name.value for p in params.params] == ["self"]
            and not params.posonly_params
            and not params.kwonly_params
            and params.star_arg is cst.MaybeSentinel.DEFAULT
            and params.star_kwarg is None
        )
        body = updated_node.body
        empty = isinstance(body, cst.IndentedBlock) and all(
            isinstance(s, cst.SimpleStatementLine) and all(isinstance(x, cst.Pass) for x in s.body)
            for s in body.body
        )
        if (
            updated_node.name.value == "__init__"
            and only_self
            and empty
            and not updated_node.decorators
        ):
            self.applied()
            return cst.RemoveFromParent()
        return updated_node


def _self_assignment(small: cst.BaseSmallStatement) -> bool:
    if not isinstance(small, cst.Assign) or len(small.targets) != 1:
        return False
    target, value = small.targets[0].target, small.value
    if isinstance(target, cst.Name) != isinstance(value, cst.Name):
        return False  # x = [x] and x = (x,) wrap x
    names = _names(target)
    return names is not None and names == _names(value)


def _names(node: cst.BaseExpression) -> list[str] | None:
    """``a`` or ``a, b`` (parenthesised or not) as a list of plain names, else None."""
    if isinstance(node, cst.Name):
        return [node.value]
    if isinstance(node, (cst.Tuple, cst.List)):
        out = []
        for element in node.elements:
            if not isinstance(element, cst.Element) or not isinstance(element.value, cst.Name):
                return None
            out.append(element.value.value)
        return out
    return None


def _pure(node: cst.CSTNode) -> bool:
    """No call in ``node`` other than the effect-free ones porter writes."""

    class Calls(cst.CSTVisitor):
        impure = False

        def visit_Call(self, call: cst.Call) -> None:
            if code(call.func) not in _PURE_CALLS:
                self.impure = True

        def visit_Lambda(self, node: cst.Lambda) -> bool:
            return False

    finder = Calls()
    node.visit(finder)
    return not finder.impure


RULE = DropNoOpCode
