"""convert_containers: module containers become plain lists and dicts with the same keys.

Before::

    self.mlp = nn.Sequential(nn.Linear(256, 1024), nn.SiLU(), nn.Linear(1024, 256))
    self.layers = nn.ModuleList([Block(i) for i in range(n)])
    self.embedders = nn.ModuleDict(embedders)
    self.pad_token = nn.Parameter(torch.zeros((1, dim)))
    ...
    t_emb = self.mlp(t_freq)

After::

    self.mlp = [nn.Linear(256, 1024), nn.SiLU(), nn.Linear(1024, 256)]
    self.layers = [Block(i) for i in range(n)]
    self.embedders = embedders
    self.pad_token = torch.zeros((1, dim))
    ...
    t_emb = sequential(self.mlp, t_freq)

Fix safety: MLX modules hold lists and dicts of modules directly and name their parameters
``mlp.0.weight``, ``layers.3.attention...``, ``embedders.2-1.weight`` exactly as PyTorch does,
so checkpoints load without renaming. A Sequential's call site applies its layers in order.
Every array attribute of an MLX module is a parameter, so ``nn.Parameter`` is just its value.
"""

from __future__ import annotations

import libcst as cst

from porter.engine import Rule

from ._common import call, list_of, positional, self_attr

_SEQUENTIAL = "torch.nn.Sequential"
_LIST = "torch.nn.ModuleList"
_DICT = "torch.nn.ModuleDict"
_PARAM = {"torch.nn.Parameter", "torch.nn.parameter.Parameter"}


class ConvertContainers(Rule):
    id = "convert-containers"
    description = "nn.Sequential/ModuleList/ModuleDict -> list/dict, nn.Parameter -> array"
    order = 55

    def __init__(self, ctx) -> None:  # type: ignore[no-untyped-def]
        super().__init__(ctx)
        self._sequentials: list[set[str]] = []

    def visit_ClassDef(self, node: cst.ClassDef) -> None:
        found: set[str] = set()
        outer = self

        class Scan(cst.CSTVisitor):
            def visit_Assign(self, assign: cst.Assign) -> None:
                value = assign.value
                if not isinstance(value, cst.Call) or outer.imported(value.func) != _SEQUENTIAL:
                    return
                for target in assign.targets:
                    attr = self_attr(target.target)
                    if attr:
                        found.add(attr)

        node.visit(Scan())
        self._sequentials.append(found)

    def leave_ClassDef(self, original_node, updated_node):  # type: ignore[no-untyped-def]
        self._sequentials.pop()
        return updated_node

    def leave_Call(self, original_node: cst.Call, updated_node: cst.Call) -> cst.BaseExpression:
        name = self.imported(original_node.func)
        args = positional(updated_node)
        if name == _SEQUENTIAL:
            self.applied()
            return list_of([a.value for a in args])
        if name == _LIST:
            self.applied()
            if not args:
                return cst.List(elements=[])
            value = args[0].value
            if isinstance(value, (cst.List, cst.ListComp)):
                return value
            return call(cst.Name("list"), [cst.Arg(value=value)])
        if name == _DICT:
            self.applied()
            if not args:
                return cst.Dict(elements=[])
            value = args[0].value
            if isinstance(value, (cst.Dict, cst.DictComp)):
                return value
            return call(cst.Name("dict"), [cst.Arg(value=value)])
        if name in _PARAM and args:
            self.applied()
            return args[0].value
        func = updated_node.func
        if self._sequentials and self_attr(func) in self._sequentials[-1]:
            self.applied()
            helper = self.ctx.need("sequential", "sequential")
            return call(
                helper,
                [
                    cst.Arg(value=func),
                    *[a.with_changes(comma=cst.MaybeSentinel.DEFAULT) for a in updated_node.args],
                ],
            )
        return updated_node


RULE = ConvertContainers
