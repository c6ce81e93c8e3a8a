"""plan_conv_layouts: each torch convolution gets a weight row in the port's LAYOUT_PLAN.

The ported ``Conv1d``/``Conv2d`` (support snippet ``conv``) hold their weights in MLX's
channels-last layout, so ``porter convert-weights`` must transpose a torch checkpoint's conv
weights. This rule names each conv's weight by where the module tree keeps it and writes the
plan row; it changes no code.

Before::

    self.proj = nn.Conv2d(c, dim, kernel_size=1)
    self.down = nn.Sequential(nn.Conv1d(c, c, 3), nn.SiLU())

After (code unchanged; in weights.py)::

    LAYOUT_PLAN = [
        {"pattern": "*.proj.weight", "transpose": [0, 2, 3, 1], "ndim": 4},
        {"pattern": "*.down.0.weight", "transpose": [0, 2, 1], "ndim": 3},
    ]

A leading ``*.`` also matches the key with no prefix, so the row serves the conv whether its
module is the model itself or nested at any depth, and whether the class is the model file's
or a library module's ported transitively (the port's one plan collects the rows of both).
``ndim`` keeps the row to the conv's rank: a ``Linear`` called ``proj`` elsewhere in the tree
(a 2-D weight) is not a conv weight and passes through.

Fix safety: a conv the rule cannot name (built outside a ``self.X = ...`` assignment, a list
or a Sequential) is reported for review rather than loaded untransposed; a conv weight the
plan misses keeps torch's layout, and the strict load then fails on its shape.
"""

from __future__ import annotations

import libcst as cst

from porter.engine import NEEDS_REVIEW, Rule

from ._common import positional, self_attr

# torch [out, in, *kernel] -> MLX [out, *kernel, in]
_PERMUTATIONS = {
    "torch.nn.Conv1d": [0, 2, 1],
    "torch.nn.Conv2d": [0, 2, 3, 1],
}
_CONTAINERS = {"torch.nn.Sequential", "torch.nn.ModuleList"}


class PlanConvLayouts(Rule):
    id = "plan-conv-layouts"
    description = "add a LAYOUT_PLAN row (channels-last transpose) for each conv weight"
    order = 52

    def visit_Assign(self, node: cst.Assign) -> None:
        if len(node.targets) != 1:
            return
        attr = self_attr(node.targets[0].target)
        if attr is not None:
            self._plan(node.value, attr)

    def leave_Call(self, original_node: cst.Call, updated_node: cst.Call) -> cst.BaseExpression:
        name = self.imported(original_node.func)
        if name in _PERMUTATIONS and id(original_node) not in self._planned:
            self.unported(
                original_node,
                f"{name} built here has no key path porter can name; add its weight to "
                "LAYOUT_PLAN in weights.py by hand",
                NEEDS_REVIEW,
            )
        return updated_node

    def visit_Module(self, node: cst.Module) -> None:
        self._planned: set[int] = set()

    def _plan(self, value: cst.BaseExpression, path: str) -> None:
        if isinstance(value, cst.Call):
            name = self.imported(value.func)
            if name in _PERMUTATIONS:
                self._planned.add(id(value))
                perm = _PERMUTATIONS[name]
                row = {"pattern": f"*.{path}.weight", "transpose": perm, "ndim": len(perm)}
                if row not in self.ctx.layout_plan:
                    self.ctx.layout_plan.append(row)
                self.applied()
                return
            if name in _CONTAINERS:
                args = positional(value)
                if name == "torch.nn.Sequential":
                    for i, a in enumerate(args):
                        self._plan(a.value, f"{path}.{i}")
                elif args:
                    self._plan(args[0].value, path)
                return
        if isinstance(value, (cst.List, cst.Tuple)):
            for i, element in enumerate(value.elements):
                self._plan(element.value, f"{path}.{i}")
        elif isinstance(value, cst.ListComp):
            self._plan(value.elt, f"{path}.*")


RULE = PlanConvLayouts
