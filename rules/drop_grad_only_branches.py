"""drop_grad_only_branches: remove branches that only run under autograd or old PyTorch.

Before::

    x = (
        self._gradient_checkpointing_func(layer, x, mask)
        if torch.is_grad_enabled() and self.gradient_checkpointing
        else layer(x, mask)
    )
    if not hasattr(F, "scaled_dot_product_attention"):
        raise ImportError("needs PyTorch 2.0")

After::

    x = layer(x, mask)

Fix safety: in an inference port ``torch.is_grad_enabled()`` is False, so gradient
checkpointing branches are dead; checkpointing never changes forward values anyway. A
``hasattr(torch_module, ...)`` feature probe is True because the MLX port provides the
feature; a library's ``is_torch_version(">=", v)`` probe is True (and ``"<"`` False) because
the port stands for a current PyTorch. Probes for CUDA, NPU, XLA and xformers are
False: an MLX port runs on none of them. The MPS probe stays (map_ops gives it a runtime
answer): models ask it to avoid float64, which MLX's GPU lacks too. Only branches whose condition folds to a constant through ``and``/``or``/``not`` are
removed.
"""

from __future__ import annotations

import libcst as cst

from porter.engine import Rule


def _const(node: cst.BaseExpression) -> bool | None:
    if isinstance(node, cst.Name) and node.value in ("True", "False"):
        return node.value == "True"
    return None


def _bool(value: bool) -> cst.Name:
    return cst.Name("True" if value else "False")


# Probes for torch backends and kernels an MLX port never has: they answer False.
_BACKEND_PROBES = {"torch.cuda.is_available"}
# Device types an MLX port never runs on, as compared in `x.device.type == "npu"`.
_NEVER_DEVICES = {"cuda", "npu", "xla", "hpu", "xpu", "meta"}
_LIBRARY_PROBES = (".is_torch_npu_available", ".is_torch_xla_available", ".is_xformers_available")


def _version_probe(name: str | None, call: cst.Call) -> bool | None:
    """``is_torch_version(">=", "2.1.0")``: the port stands for a current PyTorch, so a probe
    for a newer version is True and one for an older version False."""
    if name is None or not name.endswith(".is_torch_version") or not call.args:
        return None
    op = call.args[0].value
    if not isinstance(op, cst.SimpleString):
        return None
    return {">=": True, ">": True, "<": False, "<=": False}.get(op.evaluated_value)


class DropGradOnlyBranches(Rule):
    id = "drop-grad-only-branches"
    description = "fold torch.is_grad_enabled()/feature probes and drop the dead branches"
    order = 25

    def leave_Call(self, original_node: cst.Call, updated_node: cst.Call) -> cst.BaseExpression:
        name = self.imported(original_node.func)
        if name in ("torch.is_grad_enabled", "torch.jit.is_scripting", "torch.jit.is_tracing"):
            self.applied()
            return _bool(False)
        if name is not None and (name in _BACKEND_PROBES or name.endswith(_LIBRARY_PROBES)):
            self.applied()
            return _bool(False)
        newer = _version_probe(name, original_node)
        if newer is not None:
            self.applied()
            return _bool(newer)
        if (
            isinstance(original_node.func, cst.Name)
            and original_node.func.value == "hasattr"
            and original_node.args
        ):
            target = self.imported(original_node.args[0].value)
            if target is not None and target.split(".")[0] == "torch":
                self.applied()
                return _bool(True)
        return updated_node

    def leave_Comparison(self, original_node, updated_node):  # type: ignore[no-untyped-def]
        """``x.device.type == "npu"`` (or ``!=``): a device an MLX port never runs on is a
        constant; ``"mps"`` asks about the GPU, as torch.backends.mps.is_available does."""
        if len(updated_node.comparisons) != 1:
            return updated_node
        test = updated_node.comparisons[0]
        left, right = updated_node.left, test.comparator
        if isinstance(left, cst.SimpleString):
            left, right = right, left
        if not (
            isinstance(left, cst.Attribute)
            and left.attr.value == "type"
            and isinstance(left.value, cst.Attribute)
            and left.value.attr.value == "device"
            and isinstance(right, cst.SimpleString)
            and isinstance(test.operator, (cst.Equal, cst.NotEqual))
        ):
            return updated_node
        device = right.evaluated_value
        equal = isinstance(test.operator, cst.Equal)
        if device in _NEVER_DEVICES:
            self.applied()
            return _bool(not equal)
        if device == "mps":
            self.applied()
            probe = cst.Call(func=self.ctx.need("dtypes", "mps_is_available"))
            return probe if equal else cst.UnaryOperation(cst.Not(), probe)
        return updated_node

    def leave_UnaryOperation(self, original_node, updated_node):  # type: ignore[no-untyped-def]
        value = _const(updated_node.expression)
        if isinstance(updated_node.operator, cst.Not) and value is not None:
            return _bool(not value)
        return updated_node

    def leave_BooleanOperation(self, original_node, updated_node):  # type: ignore[no-untyped-def]
        left, right = _const(updated_node.left), _const(updated_node.right)
        if isinstance(updated_node.operator, cst.And):
            if left is False or right is False:
                return _bool(False)
            if left is True:
                return updated_node.right
        else:
            if left is True or right is True:
                return _bool(True)
            if left is False:
                return updated_node.right
        return updated_node

    def leave_IfExp(self, original_node, updated_node):  # type: ignore[no-untyped-def]
        value = _const(updated_node.test)
        if value is None:
            return updated_node
        chosen = updated_node.body if value else updated_node.orelse
        return chosen.with_changes(lpar=updated_node.lpar, rpar=updated_node.rpar)

    def visit_If(self, node: cst.If) -> None:
        # An `elif` is an If in its parent's orelse: it cannot be flattened or removed where it
        # stands, so its parent folds it.
        if isinstance(node.orelse, cst.If):
            self._elifs = getattr(self, "_elifs", set())
            self._elifs.add(id(node.orelse))

    def leave_If(self, original_node, updated_node):  # type: ignore[no-untyped-def]
        updated_node = updated_node.with_changes(orelse=_fold_elifs(updated_node.orelse))
        if id(original_node) in getattr(self, "_elifs", ()):
            return updated_node
        value = _const(updated_node.test)
        if value is None:
            return updated_node
        if value:
            return cst.FlattenSentinel(list(updated_node.body.body))
        orelse = updated_node.orelse
        if orelse is None:
            return cst.RemoveFromParent()
        if isinstance(orelse, cst.Else):
            return cst.FlattenSentinel(list(orelse.body.body))
        # An elif becomes the if.
        return cst.If(test=orelse.test, body=orelse.body, orelse=orelse.orelse)


def _fold_elifs(orelse: cst.If | cst.Else | None) -> cst.If | cst.Else | None:
    """Drop `elif False:` branches and end the chain at an `elif True:` (its body becomes the
    `else`)."""
    while isinstance(orelse, cst.If):
        value = _const(orelse.test)
        if value is None:
            return orelse.with_changes(orelse=_fold_elifs(orelse.orelse))
        if value:
            return cst.Else(body=orelse.body)
        orelse = orelse.orelse
    return orelse


RULE = DropGradOnlyBranches
