"""compute_float64_in_numpy: float64 computations run in NumPy, not in MLX.

MLX computes float64 only on the CPU stream (the Metal GPU has no float64), so a source that
builds a table in float64 for precision keeps that precision by building it with NumPy. The
result flows into MLX ops, which take NumPy arrays directly.

Before::

    freqs = 1.0 / (theta ** (torch.arange(0, d, 2, dtype=torch.float64, device="cpu") / d))
    timestep = torch.arange(e, device=freqs.device, dtype=torch.float64)
    freqs = torch.outer(timestep, freqs).float()

After::

    freqs = 1.0 / (theta ** (np.arange(0, d, 2, dtype=np.float64) / d))
    timestep = np.arange(e, dtype=np.float64)
    freqs = np.outer(timestep, freqs).astype(np.float32)

Fix safety: NumPy float64 matches PyTorch float64 to the last bit for these element-wise ops;
``.float()`` is still a cast to float32 at the same point. Values that leave the function
(returned or stored on ``self``) are converted to ``mx.array`` there.
"""

from __future__ import annotations

import libcst as cst

from ._common import keyword
from ._flow import Flow, FlowRule

_NUMPY = {
    "torch.arange": ("np.arange", {"end": "stop"}),
    "torch.outer": ("np.outer", {}),
    "torch.exp": ("np.exp", {}),
    "torch.log": ("np.log", {}),
    "torch.sin": ("np.sin", {}),
    "torch.cos": ("np.cos", {}),
    "torch.sqrt": ("np.sqrt", {}),
    "torch.pow": ("np.power", {}),
    "torch.ones_like": ("np.ones_like", {}),
    "torch.zeros_like": ("np.zeros_like", {}),
    "torch.linspace": ("np.linspace", {"end": "stop"}),
    "torch.cat": ("np.concatenate", {"dim": "axis"}),
    "torch.stack": ("np.stack", {"dim": "axis"}),
}
_F64 = {"torch.float64", "torch.double"}
_CASTS = {"float": "np.float32", "double": "np.float64"}
_DROP = {"device", "requires_grad", "pin_memory", "layout"}


class ComputeFloat64InNumpy(FlowRule):
    id = "compute-float64-in-numpy"
    description = "run float64 table computations in NumPy (MLX has no float64 on the GPU)"
    order = 30

    def make_flow(self) -> Flow:
        return Flow(
            source=self._makes_f64,
            keeps=lambda method: method in _CASTS,
            breaks=lambda expr: False,
            passes=lambda call: self.imported(call.func) in _NUMPY,
        )

    def _makes_f64(self, expr: cst.BaseExpression) -> bool:
        if not isinstance(expr, cst.Call) or self.imported(expr.func) not in _NUMPY:
            return False
        dtype = keyword(expr, "dtype")
        return dtype is not None and self.imported(dtype.value) in _F64

    def leave_Call(self, original_node: cst.Call, updated_node: cst.Call) -> cst.BaseExpression:
        if not self.tagged(original_node):
            return updated_node
        name = self.imported(original_node.func)
        if name in _NUMPY:
            target, rename = _NUMPY[name]
            args = []
            for orig, new in zip(original_node.args, updated_node.args):
                key = orig.keyword.value if orig.keyword else None
                if key in _DROP:
                    continue
                if key == "dtype" and self.imported(orig.value) in _F64:
                    new = new.with_changes(value=cst.parse_expression("np.float64"))
                if key in rename:
                    new = new.with_changes(keyword=cst.Name(rename[key]))
                args.append(new)
            if args:
                args[-1] = args[-1].with_changes(comma=cst.MaybeSentinel.DEFAULT)
            self.applied()
            self.ctx.imports.add("import numpy as np")
            return updated_node.with_changes(func=cst.parse_expression(target), args=args)
        func = updated_node.func
        if isinstance(func, cst.Attribute) and func.attr.value in _CASTS and not updated_node.args:
            self.applied()
            return cst.Call(
                func=cst.Attribute(value=func.value, attr=cst.Name("astype")),
                args=[cst.Arg(cst.parse_expression(_CASTS[func.attr.value]))],
            )
        return updated_node

    def leave_Return(self, original_node, updated_node):  # type: ignore[no-untyped-def]
        value = original_node.value
        if value is None or not self.tagged(value) or isinstance(value, (cst.Tuple, cst.List)):
            return updated_node
        self.applied()
        return updated_node.with_changes(value=_to_mx(updated_node.value))

    def leave_Assign(self, original_node, updated_node):  # type: ignore[no-untyped-def]
        target = original_node.targets[0].target
        on_self = (
            isinstance(target, cst.Attribute)
            and isinstance(target.value, cst.Name)
            and target.value.value == "self"
        )
        if not on_self or not self.tagged(original_node.value):
            return updated_node
        self.applied()
        return updated_node.with_changes(value=_to_mx(updated_node.value))


def _to_mx(value: cst.BaseExpression) -> cst.Call:
    return cst.Call(func=cst.parse_expression("mx.array"), args=[cst.Arg(value)])


RULE = ComputeFloat64InNumpy
