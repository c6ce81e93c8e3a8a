"""compute_positions_in_float32: integer positions are cast to float32, never to the model dtype.

Position ids are integers. Cast to the model's dtype they lose precision when the model runs
in bfloat16 (exact integers only up to 256) or float16 (up to 2048): position 4095 becomes
4096 and every sin/cos table row built from it is off. Porter casts positions it can prove
are integer to float32 instead, so position tables are always computed in float32.

Before::

    t = torch.arange(seq_len, device=x.device).to(x.dtype)
    pos = torch.arange(n).type_as(x)

After::

    t = mx.arange(seq_len).astype(mx.float32)
    pos = mx.arange(n).astype(mx.float32)

An integer value is a ``torch.arange`` with no floating ``dtype=`` and no float literal, a
``.long()``/``.int()`` cast, or a local name assigned once from one of these in the same
function. A cast to a literal dtype (``.to(torch.bfloat16)``) is an explicit choice and is kept.

Fix safety: in a float32 model the cast is the same. In a bfloat16/float16 model the port is
more precise than the torch source (it matches torch run in float32), and the cast value is
float32 rather than the model dtype; products with a float32 frequency table are float32 in
both frameworks, and a later cast to the model dtype is kept where the source has one.
"""

from __future__ import annotations

import libcst as cst

from porter.engine import Rule

from ._common import keyword
from ._table import op_table

_INT_DTYPES = {"torch.int64", "torch.long", "torch.int32", "torch.int", "torch.int16"}


class ComputePositionsInFloat32(Rule):
    id = "compute-positions-in-float32"
    description = "integer positions cast to a runtime dtype are cast to float32 instead"
    order = 58

    def __init__(self, ctx) -> None:  # type: ignore[no-untyped-def]
        super().__init__(ctx)
        self._ints: list[set[str]] = [set()]

    def visit_FunctionDef(self, node: cst.FunctionDef) -> None:
        counts: dict[str, int] = {}
        integer: set[str] = set()
        outer = self

        class Scan(cst.CSTVisitor):
            def visit_FunctionDef(self, inner: cst.FunctionDef) -> bool:
                return inner is node

            def visit_Assign(self, assign: cst.Assign) -> None:
                for target in assign.targets:
                    if isinstance(target.target, cst.Name):
                        name = target.target.value
                        counts[name] = counts.get(name, 0) + 1
                        if outer._is_integer(assign.value, set()):
                            integer.add(name)

        node.visit(Scan())
        self._ints.append({n for n in integer if counts[n] == 1})

    def leave_FunctionDef(self, original_node, updated_node):  # type: ignore[no-untyped-def]
        self._ints.pop()
        return updated_node

    def leave_Call(self, original_node: cst.Call, updated_node: cst.Call) -> cst.BaseExpression:
        func = original_node.func
        if not isinstance(func, cst.Attribute) or func.attr.value not in ("to", "type_as"):
            return updated_node
        if not self._is_integer(func.value, self._ints[-1]):
            return updated_node
        args = [a for a in original_node.args if a.keyword is None or a.keyword.value == "dtype"]
        if func.attr.value == "to":
            if len(args) != 1 or self._is_literal_dtype(args[0].value):
                return updated_node
            if not _looks_like_dtype(args[0].value):
                return updated_node
        elif len(args) != 1:
            return updated_node
        self.applied()
        receiver = updated_node.func.value  # type: ignore[attr-defined]
        return cst.Call(func=cst.Attribute(value=receiver, attr=cst.Name("float")))

    def _is_literal_dtype(self, node: cst.BaseExpression) -> bool:
        return self.imported(node) in op_table().dtypes

    def _is_integer(self, node: cst.BaseExpression, names: set[str]) -> bool:
        if isinstance(node, cst.Name):
            return node.value in names
        if not isinstance(node, cst.Call):
            return False
        func = node.func
        if isinstance(func, cst.Attribute) and func.attr.value in ("long", "int") and not node.args:
            return True
        if self.imported(func) != "torch.arange":
            return False
        dtype = keyword(node, "dtype")
        if dtype is not None:
            return self.imported(dtype.value) in _INT_DTYPES
        return not any(isinstance(a.value, cst.Float) for a in node.args)


def _looks_like_dtype(node: cst.BaseExpression) -> bool:
    """``x.dtype``, ``dtype``, ``self.dtype``: a dtype known only at run time."""
    text = node.attr.value if isinstance(node, cst.Attribute) else getattr(node, "value", "")
    return isinstance(text, str) and "dtype" in text


RULE = ComputePositionsInFloat32
