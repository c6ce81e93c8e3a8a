"""Parentheses where rewritten expressions need them.

Rules build expressions from templates and put them where the original stood, so an operator
can land under a tighter one: ``x.pow(2).mean()`` becomes ``x ** 2`` as the value of
``.mean``, which must read ``(x ** 2).mean()``. One pass after the rules adds parentheses
wherever Python's precedence would otherwise regroup the tree (or a literal would swallow the
dot, ``2.mean``), and nowhere else, so code that needs none is left exactly as it was.
"""

from __future__ import annotations

import libcst as cst

_PRIMARY = 15  # attribute, subscript, call
_ATOM = 16
_BINARY = {
    cst.BitOr: 6,
    cst.BitXor: 7,
    cst.BitAnd: 8,
    cst.LeftShift: 9,
    cst.RightShift: 9,
    cst.Add: 10,
    cst.Subtract: 10,
    cst.Multiply: 11,
    cst.Divide: 11,
    cst.FloorDivide: 11,
    cst.Modulo: 11,
    cst.MatrixMultiply: 11,
    cst.Power: 13,
}


def precedence(node: cst.BaseExpression) -> int:
    """How tightly ``node`` binds; a parenthesised node is an atom."""
    if node.lpar:
        return _ATOM
    if isinstance(node, cst.Lambda):
        return 0
    if isinstance(node, cst.IfExp):
        return 1
    if isinstance(node, cst.BooleanOperation):
        return 2 if isinstance(node.operator, cst.Or) else 3
    if isinstance(node, cst.UnaryOperation):
        return 4 if isinstance(node.operator, cst.Not) else 12
    if isinstance(node, cst.Comparison):
        return 5
    if isinstance(node, cst.BinaryOperation):
        return _BINARY[type(node.operator)]
    if isinstance(node, cst.Await):
        return 14
    if isinstance(node, (cst.Attribute, cst.Subscript, cst.Call)):
        return _PRIMARY
    if isinstance(node, cst.NamedExpr):
        return -1
    return _ATOM


def _wrap(node: cst.BaseExpression) -> cst.BaseExpression:
    return node.with_changes(lpar=[cst.LeftParen()], rpar=[cst.RightParen()])


def _at_least(node: cst.BaseExpression, level: int) -> cst.BaseExpression:
    return _wrap(node) if precedence(node) < level else node


class FixPrecedence(cst.CSTTransformer):
    def leave_Attribute(self, original_node, updated_node):  # type: ignore[no-untyped-def]
        value = updated_node.value
        if isinstance(value, (cst.Integer, cst.Float)) and not value.lpar:
            value = _wrap(value)  # 2.mean reads as a float literal
        return updated_node.with_changes(value=_at_least(value, _PRIMARY))

    def leave_Subscript(self, original_node, updated_node):  # type: ignore[no-untyped-def]
        return updated_node.with_changes(value=_at_least(updated_node.value, _PRIMARY))

    def leave_Call(self, original_node, updated_node):  # type: ignore[no-untyped-def]
        return updated_node.with_changes(func=_at_least(updated_node.func, _PRIMARY))

    def leave_BinaryOperation(self, original_node, updated_node):  # type: ignore[no-untyped-def]
        level = _BINARY[type(updated_node.operator)]
        if isinstance(updated_node.operator, cst.Power):
            # Right-associative, and binds tighter than a unary minus on its left.
            left = _at_least(updated_node.left, level + 1)
            right = _at_least(updated_node.right, 12)
        else:
            left = _at_least(updated_node.left, level)
            right = _at_least(updated_node.right, level + 1)
        return updated_node.with_changes(left=left, right=right)

    def leave_UnaryOperation(self, original_node, updated_node):  # type: ignore[no-untyped-def]
        level = 4 if isinstance(updated_node.operator, cst.Not) else 12
        return updated_node.with_changes(expression=_at_least(updated_node.expression, level))

    def leave_Comparison(self, original_node, updated_node):  # type: ignore[no-untyped-def]
        targets = [
            t.with_changes(comparator=_at_least(t.comparator, 6)) for t in updated_node.comparisons
        ]
        return updated_node.with_changes(left=_at_least(updated_node.left, 6), comparisons=targets)

    def leave_BooleanOperation(self, original_node, updated_node):  # type: ignore[no-untyped-def]
        level = precedence(updated_node.with_changes(lpar=[], rpar=[]))
        return updated_node.with_changes(
            left=_at_least(updated_node.left, level),
            right=_at_least(updated_node.right, level + 1),
        )

    def leave_IfExp(self, original_node, updated_node):  # type: ignore[no-untyped-def]
        return updated_node.with_changes(
            test=_at_least(updated_node.test, 2),
            body=_at_least(updated_node.body, 2),
            orelse=_at_least(updated_node.orelse, 1),
        )


def fix_precedence(module: cst.Module) -> cst.Module:
    return module.visit(FixPrecedence())
