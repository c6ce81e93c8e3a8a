"""rename_forward_to_call: a module's ``forward`` becomes ``__call__``.

Before::

    class FeedForward(nn.Module):
        def forward(self, x):
            return self.w2(x)

After::

    class FeedForward(nn.Module):
        def __call__(self, x):
            return self.w2(x)

Fix safety: PyTorch's ``Module.__call__`` runs hooks and then ``forward``; MLX modules are
called directly. Calls to ``self.forward(...)`` are renamed with the method.
"""

from __future__ import annotations

import libcst as cst

from porter.engine import Rule


class RenameForwardToCall(Rule):
    id = "rename-forward-to-call"
    description = "rename Module.forward to __call__"
    order = 50

    def __init__(self, ctx) -> None:  # type: ignore[no-untyped-def]
        super().__init__(ctx)
        self._depth = 0

    def visit_ClassDef(self, node: cst.ClassDef) -> None:
        self._depth += 1

    def leave_ClassDef(self, original_node, updated_node):  # type: ignore[no-untyped-def]
        self._depth -= 1
        return updated_node

    def leave_FunctionDef(self, original_node, updated_node):  # type: ignore[no-untyped-def]
        if self._depth and updated_node.name.value == "forward":
            self.applied()
            return updated_node.with_changes(name=cst.Name("__call__"))
        return updated_node

    def leave_Attribute(self, original_node, updated_node):  # type: ignore[no-untyped-def]
        value = updated_node.value
        if updated_node.attr.value == "forward" and (
            (isinstance(value, cst.Name) and value.value == "self")
            or (
                isinstance(value, cst.Call)
                and isinstance(value.func, cst.Name)
                and value.func.value == "super"
            )
        ):
            return updated_node.with_changes(attr=cst.Name("__call__"))
        return updated_node


RULE = RenameForwardToCall
