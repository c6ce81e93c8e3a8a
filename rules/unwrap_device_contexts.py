"""unwrap_device_contexts: remove ``with`` blocks that only pick a device or disable autocast.

Before::

    with torch.amp.autocast("cuda", enabled=False):
        x = x.float() * freqs

    with torch.device("cpu"):
        table = build()

After::

    x = x.float() * freqs

    table = build()

Fix safety: MLX has unified memory and no autocast, so ``torch.device`` blocks and
``autocast(enabled=False)`` change nothing once removed; the explicit casts inside the block
(``.float()``) are kept and still pin the precision. ``no_grad``/``inference_mode`` have no
meaning in an inference port. An autocast that is *enabled* lowers precision in PyTorch, so it
is kept and reported rather than silently removed.
"""

from __future__ import annotations

import libcst as cst

from porter.engine import NEEDS_REVIEW, Rule

from ._common import keyword

_NEUTRAL = {
    "torch.device",
    "torch.no_grad",
    "torch.inference_mode",
    "torch.enable_grad",
    "torch.cuda.device",
}
_AUTOCAST = {
    "torch.amp.autocast",
    "torch.autocast",
    "torch.cuda.amp.autocast",
    "torch.cpu.amp.autocast",
}


class UnwrapDeviceContexts(Rule):
    id = "unwrap-device-contexts"
    description = "unwrap torch.device, no_grad and autocast(enabled=False) blocks"
    order = 20

    def _removable(self, item: cst.WithItem) -> bool:
        expr = item.item
        if not isinstance(expr, cst.Call) or item.asname is not None:
            return False
        name = self.imported(expr.func)
        if name in _NEUTRAL:
            return True
        if name in _AUTOCAST:
            enabled = keyword(expr, "enabled")
            if (
                enabled is not None
                and isinstance(enabled.value, cst.Name)
                and enabled.value.value == "False"
            ):
                return True
            self.unported(
                expr,
                "autocast that lowers precision; run the port in the dtype you want",
                NEEDS_REVIEW,
            )
        return False

    def leave_With(self, original_node: cst.With, updated_node: cst.With):  # type: ignore[no-untyped-def]
        keep = [
            new
            for orig, new in zip(original_node.items, updated_node.items)
            if not self._removable(orig)
        ]
        if len(keep) == len(updated_node.items):
            return updated_node
        self.applied()
        if keep:
            keep[-1] = keep[-1].with_changes(comma=cst.MaybeSentinel.DEFAULT)
            return updated_node.with_changes(items=keep)
        body = list(updated_node.body.body)  # type: ignore[attr-defined]
        if body and updated_node.leading_lines:
            first = body[0]
            body[0] = first.with_changes(
                leading_lines=[*updated_node.leading_lines, *first.leading_lines]
            )
        return cst.FlattenSentinel(body)


RULE = UnwrapDeviceContexts
