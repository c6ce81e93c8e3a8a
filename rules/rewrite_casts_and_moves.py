"""rewrite_casts_and_moves: ``.to(...)`` becomes ``astype`` for dtypes and nothing for devices.

Before::

    device = ids.device
    t_freq = t_freq.to(weight_dtype)
    tables = [t.to(device) for t in tables]
    pos = pos.to(torch.int32)

After::

    device = mx.default_device()
    t_freq = t_freq.astype(weight_dtype)
    tables = [t for t in tables]
    pos = pos.astype(torch.int32)   # the dtype name is mapped by map_ops

Fix safety: a dtype conversion is a real cast and stays one. Device moves have no meaning in
MLX's unified memory. An argument porter cannot classify as a dtype or a device (say
``x.to(other)``) is left as it is and reported, never guessed.
"""

from __future__ import annotations

import libcst as cst

from porter.engine import NEEDS_REVIEW, Rule

from ._common import is_string, is_tensor_receiver
from ._table import op_table


class RewriteCastsAndMoves(Rule):
    id = "rewrite-casts-and-moves"
    description = ".to(dtype) -> .astype(dtype); .to(device), .cuda(), .cpu() -> removed"
    order = 60

    def _kind(self, node: cst.BaseExpression) -> str:
        name = self.imported(node)
        if name in op_table().dtypes:
            return "dtype"
        if name is not None and name.startswith("torch.device"):
            return "device"
        if is_string(node):
            return "device"
        if isinstance(node, cst.Call) and self.imported(node.func) == "torch.device":
            return "device"
        text = ""
        if isinstance(node, cst.Name):
            text = node.value
        elif isinstance(node, cst.Attribute):
            text = node.attr.value
        if "dtype" in text:
            return "dtype"
        if "device" in text:
            return "device"
        return "unknown"

    def leave_Call(self, original_node: cst.Call, updated_node: cst.Call) -> cst.BaseExpression:
        func = updated_node.func
        if not isinstance(func, cst.Attribute) or not is_tensor_receiver(func.value):
            return updated_node
        if self.imported(original_node.func.value) is not None:  # type: ignore[attr-defined]
            return updated_node
        method = func.attr.value
        if method in ("cuda", "cpu") and not updated_node.args:
            self.applied()
            return func.value
        if method != "to":
            return updated_node
        dtype: cst.BaseExpression | None = None
        for orig, new in zip(original_node.args, updated_node.args):
            key = orig.keyword.value if orig.keyword else None
            if key in ("non_blocking", "copy", "memory_format", "device"):
                continue
            kind = "dtype" if key == "dtype" else self._kind(orig.value)
            if kind == "dtype":
                dtype = new.value
            elif kind != "device":
                self.unported(
                    original_node,
                    "cannot tell whether this .to() argument is a dtype or a device",
                    NEEDS_REVIEW,
                )
                return updated_node
        self.applied()
        if dtype is None:
            return func.value
        return cst.Call(
            func=cst.Attribute(value=func.value, attr=cst.Name("astype")), args=[cst.Arg(dtype)]
        )

    def leave_Attribute(self, original_node, updated_node):  # type: ignore[no-untyped-def]
        if updated_node.attr.value != "device" or not is_tensor_receiver(updated_node.value):
            return updated_node
        if self.imported(original_node) is not None:
            return updated_node
        self.applied()
        return cst.parse_expression("mx.default_device()")


RULE = RewriteCastsAndMoves
