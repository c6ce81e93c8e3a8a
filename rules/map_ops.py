"""map_ops: apply the plain PyTorch -> MLX mappings listed in ``ops.toml``.

Before::

    embedding = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    gate = mod.unsqueeze(1).chunk(4, dim=2)

After::

    embedding = mx.concatenate([mx.cos(args), mx.sin(args)], axis=-1)
    gate = mx.split(mx.expand_dims(mod, 1), 4, axis=2)

Functions match by qualified name, so ``from torch import cat`` and ``torch.cat`` are one row.
Methods match by name on any receiver that is not a module, ``self`` or a string literal.

Fix safety: each row states a semantic equivalence; where the MLX call differs in edge cases
the row goes to a support snippet instead (``chunk`` of an uneven size, which ``mx.split``
rejects). A ``when`` row fits only a literal argument (``approximate="tanh"``); a call no row
fits is left as it is and marked, never mapped to a guess. Keywords in ``[defaults].drop`` (``device=`` and friends) carry
no meaning in MLX, where memory is unified.
"""

from __future__ import annotations

import sys
from functools import cache

import libcst as cst

from porter.engine import Rule

from ._common import call, int_value, is_string, is_tensor_receiver, tuple_of
from ._table import OpRow, dotted, instantiate, op_table


class MapOps(Rule):
    id = "map-ops"
    description = "map plain torch functions, tensor methods and dtypes to MLX (ops.toml)"
    order = 70

    def leave_Call(self, original_node: cst.Call, updated_node: cst.Call) -> cst.BaseExpression:
        table = op_table()
        func = original_node.func
        name = self.imported(func)
        if name is not None:
            row = table.lookup("function", name, literals=_literals(updated_node))
            if row is not None:
                return self._emit(row, None, updated_node)
            if name in table.names:
                return _plain_keywords(updated_node, table.default_drop)
            return updated_node
        if isinstance(func, cst.Attribute) and is_tensor_receiver(func.value):
            if self.imported(func.value) is not None:
                return updated_node  # a module attribute such as os.path.split
            if updated_node.args and is_string(updated_node.args[0].value):
                return updated_node  # str.split(".") and friends never take a tensor
            row = table.lookup(
                "method", func.attr.value, len(updated_node.args), _literals(updated_node)
            )
            if row is not None:
                receiver = updated_node.func.value  # type: ignore[attr-defined]
                return self._emit(row, receiver, updated_node)
            if func.attr.value in _array_methods():  # x.any(dim=1) -> x.any(axis=1)
                return _plain_keywords(updated_node, table.default_drop)
        return updated_node

    def leave_Attribute(
        self, original_node: cst.Attribute, updated_node: cst.Attribute
    ) -> cst.BaseExpression:
        reduced = _reduction_field(updated_node)
        if reduced is not None:
            self.applied()
            return reduced
        name = self.imported(original_node)
        table = op_table()
        if name is not None and name in table.names:
            self.applied()
            return dotted(table.names[name])
        if name is not None and not self.is_callee(original_node):
            support_class = self._support_class(name)
            if support_class is not None:
                return support_class
        if name is None and is_tensor_receiver(updated_node.value):
            row = table.lookup("attribute", updated_node.attr.value)
            if row is not None and row.expr and not self.is_callee(original_node):
                self.applied()
                return instantiate(row.expr, {"self": updated_node.value})
        return updated_node

    def leave_Name(self, original_node: cst.Name, updated_node: cst.Name) -> cst.BaseExpression:
        name = self.imported(original_node)
        table = op_table()
        if name is not None and name != updated_node.value and name in table.names:
            self.applied()
            return dotted(table.names[name])
        if name is not None and not self.is_callee(original_node):
            support_class = self._support_class(name)
            if support_class is not None:
                return support_class
        return updated_node

    def _support_class(self, name: str) -> cst.BaseExpression | None:
        """The support class standing for torch class ``name`` where it is not called.

        Before: ``class FP32LayerNorm(nn.LayerNorm)``; after: ``class FP32LayerNorm(LayerNorm)``,
        the snippet with torch's constructor, so the subclass's super().__init__ still fits.
        """
        row = op_table().lookup("function", name)
        if row is None or row.when or not (row.mlx or "").startswith("support:"):
            return None
        snippet, _, symbol = row.mlx.removeprefix("support:").partition(".")
        if not symbol[:1].isupper():
            return None
        self.applied()
        return self.ctx.need(snippet, symbol)

    # -- emission ---------------------------------------------------------------------------

    def _emit(
        self,
        row: OpRow,
        receiver: cst.BaseExpression | None,
        node: cst.Call,
    ) -> cst.BaseExpression:
        table = op_table()
        drop = table.default_drop | row.drop | set(row.when)
        positional = [a for a in node.args if a.keyword is None]
        keywords = [a for a in node.args if a.keyword is not None]
        if row.when and row.params:
            # Arguments a `when` row matched on are spent: the MLX target has them built in.
            spent = {row.params.index(p) for p in row.when if p in row.params}
            positional = [a for i, a in enumerate(positional) if i not in spent]
        if row.params and drop & set(row.params):
            # A positional argument for a dropped parameter goes too (padding_idx, dtype).
            positional = [
                a
                for i, a in enumerate(positional)
                if a.star or i >= len(row.params) or row.params[i] not in drop
            ]
        if row.expr is not None:
            mapping: dict[str, cst.BaseExpression] = {}
            if receiver is not None:
                mapping["self"] = receiver
            for i, a in enumerate(positional):
                mapping[f"a{i}"] = a.value
            for a in keywords:
                if row.params and a.keyword.value in row.params:  # type: ignore[union-attr]
                    mapping[f"a{row.params.index(a.keyword.value)}"] = a.value  # type: ignore[union-attr]
            self.applied()
            return instantiate(row.expr, mapping)

        args: list[cst.Arg] = []
        if row.spread and len(positional) == 1 and not positional[0].star:
            only = positional[0].value
            if isinstance(only, (cst.List, cst.Tuple)):
                args.extend(cst.Arg(value=e.value) for e in only.elements)
            else:
                args.append(cst.Arg(value=only, star="*"))
        elif row.pack == "tuple" and (len(positional) > 1 or _single_int(positional)):
            args.append(cst.Arg(value=tuple_of([a.value for a in positional])))
        else:
            args.extend(cst.Arg(value=a.value, star=a.star) for a in positional)
        for a in keywords:
            key = a.keyword.value  # type: ignore[union-attr]
            if key in drop:
                continue
            new_key = row.rename.get(key, key)
            args.append(a.with_changes(keyword=cst.Name(new_key)))

        target = row.mlx or ""
        if target.startswith("support:"):
            snippet, _, symbol = target.removeprefix("support:").partition(".")
            func: cst.BaseExpression = self.ctx.need(snippet, symbol)
            if receiver is not None:
                args.insert(0, cst.Arg(value=receiver))
        elif target.startswith("."):
            assert receiver is not None, f"method target {target} needs a receiver"
            func = cst.Attribute(value=receiver, attr=cst.Name(target[1:]))
        else:
            func = dotted(target)
            if receiver is not None:
                args.insert(0, cst.Arg(value=receiver))
            root = target.split(".")[0]
            if root in sys.stdlib_module_names:  # logging.getLogger: the port imports logging
                self.ctx.imports.add(f"import {root}")
        self.applied()
        return call(func, args)


def _literals(node: cst.Call) -> dict[str, object]:
    """Each argument of ``node``, by keyword or as ``"#i"``, with its literal value or ``...``."""
    out: dict[str, object] = {}
    for i, a in enumerate(x for x in node.args if x.keyword is None and not x.star):
        out[f"#{i}"] = _literal(a.value)
    for a in node.args:
        if a.keyword is not None:
            out[a.keyword.value] = _literal(a.value)
    return out


def _literal(node: cst.BaseExpression) -> object:
    if isinstance(node, cst.SimpleString):
        return node.evaluated_value
    if isinstance(node, cst.Name) and node.value in ("True", "False"):
        return node.value == "True"
    value = int_value(node)
    return value if value is not None else ...


def _single_int(positional: list[cst.Arg]) -> bool:
    return len(positional) == 1 and int_value(positional[0].value) is not None


RULE = MapOps


# Keywords a name-only mapping (F.softmax -> mx.softmax) renames: MLX spells them this way
# throughout.
_PLAIN_RENAMES = {"dim": "axis", "keepdim": "keepdims"}


def _plain_keywords(node: cst.Call, drop: frozenset[str]) -> cst.Call:
    """A call whose callee maps by name alone keeps its arguments, with torch-only keywords
    (device, inplace, ...) dropped and ``dim``/``keepdim`` spelled the MLX way."""
    args = []
    for arg in node.args:
        key = arg.keyword.value if arg.keyword else None
        if key in drop:
            continue
        if key in _PLAIN_RENAMES:
            arg = arg.with_changes(keyword=cst.Name(_PLAIN_RENAMES[key]))
        args.append(arg)
    if args and len(args) < len(node.args):
        args[-1] = args[-1].with_changes(comma=cst.MaybeSentinel.DEFAULT)
    return node.with_changes(args=args)


@cache
def _array_methods() -> frozenset[str]:
    """Methods of mx.array: a torch method of the same name keeps its arguments."""
    import mlx.core as mx

    return frozenset(name for name in dir(mx.array) if not name.startswith("_"))


def _reduction_field(node: cst.Attribute) -> cst.BaseExpression | None:
    """``x.max(dim=1).values`` -> ``x.max(axis=1)``, ``.indices`` -> ``x.argmax(axis=1)``.

    torch's max and min along a dim return (values, indices); MLX's return the values, and
    argmax/argmin the indices.
    """
    call = node.value
    field = node.attr.value
    if field not in ("values", "indices") or not isinstance(call, cst.Call) or not call.args:
        return None
    func = call.func
    if not isinstance(func, cst.Attribute) or func.attr.value not in ("max", "min"):
        return None
    if field == "values":
        return call
    return call.with_changes(func=func.with_changes(attr=cst.Name(f"arg{func.attr.value}")))
