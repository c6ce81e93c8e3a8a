"""Small tree helpers shared by the rules."""

from __future__ import annotations

import libcst as cst

# Receivers that are never tensors: modules porter maps by qualified name instead.
MODULE_NAMES = frozenset({"torch", "F", "nn", "mx", "np", "math", "self", "cls", "os", "re"})


def code(node: cst.CSTNode) -> str:
    return cst.Module([]).code_for_node(node)


def is_string(node: cst.BaseExpression) -> bool:
    return isinstance(node, (cst.SimpleString, cst.ConcatenatedString, cst.FormattedString))


def positional(call: cst.Call) -> list[cst.Arg]:
    return [a for a in call.args if a.keyword is None and not a.star]


def keyword(call: cst.Call, name: str) -> cst.Arg | None:
    for arg in call.args:
        if arg.keyword is not None and arg.keyword.value == name:
            return arg
    return None


def arg(value: cst.BaseExpression, name: str | None = None) -> cst.Arg:
    if name is None:
        return cst.Arg(value=value)
    return cst.Arg(
        value=value,
        keyword=cst.Name(name),
        equal=cst.AssignEqual(
            whitespace_before=cst.SimpleWhitespace(""), whitespace_after=cst.SimpleWhitespace("")
        ),
    )


def call(func: cst.BaseExpression, args: list[cst.Arg]) -> cst.Call:
    return cst.Call(func=func, args=_commas(args))


def _commas(args: list[cst.Arg]) -> list[cst.Arg]:
    out = []
    for i, a in enumerate(args):
        if i < len(args) - 1:
            a = a.with_changes(comma=cst.Comma(whitespace_after=cst.SimpleWhitespace(" ")))
        else:
            a = a.with_changes(comma=cst.MaybeSentinel.DEFAULT)
        out.append(a)
    return out


def _elements(values: list[cst.BaseExpression], trailing: bool) -> list[cst.Element]:
    last = cst.Comma() if trailing else cst.MaybeSentinel.DEFAULT
    return [
        cst.Element(
            value=v,
            comma=cst.Comma(whitespace_after=cst.SimpleWhitespace(" "))
            if i < len(values) - 1
            else last,
        )
        for i, v in enumerate(values)
    ]


def tuple_of(values: list[cst.BaseExpression]) -> cst.Tuple:
    # A one-element tuple needs its trailing comma.
    return cst.Tuple(elements=_elements(values, trailing=len(values) == 1))


def list_of(values: list[cst.BaseExpression]) -> cst.List:
    return cst.List(elements=_elements(values, trailing=False))


def self_attr(node: cst.BaseExpression) -> str | None:
    """``X`` for ``self.X``, else None."""
    if (
        isinstance(node, cst.Attribute)
        and isinstance(node.value, cst.Name)
        and node.value.value == "self"
    ):
        return node.attr.value
    return None


def int_value(node: cst.BaseExpression) -> int | None:
    """The value of an integer literal, including a negative one, else None."""
    if isinstance(node, cst.Integer):
        return int(node.value)
    if (
        isinstance(node, cst.UnaryOperation)
        and isinstance(node.operator, cst.Minus)
        and isinstance(node.expression, cst.Integer)
    ):
        return -int(node.expression.value)
    return None


def int_node(value: int) -> cst.BaseExpression:
    if value < 0:
        return cst.UnaryOperation(operator=cst.Minus(), expression=cst.Integer(str(-value)))
    return cst.Integer(str(value))


def is_tensor_receiver(node: cst.BaseExpression) -> bool:
    """Whether ``node.method(...)`` may be a tensor method call (not a module or string)."""
    if is_string(node):
        return False
    return not (isinstance(node, cst.Name) and node.value in MODULE_NAMES)
