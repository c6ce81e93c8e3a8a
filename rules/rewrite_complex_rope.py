"""rewrite_complex_rope: complex rotary embeddings become real arithmetic on (re, im) pairs.

PyTorch RoPE code builds ``torch.polar`` tables, views interleaved pairs of features as complex
numbers and multiplies. MLX has no complex matmul path worth using here, so porter keeps every
complex tensor as a real array with one trailing axis of size 2 holding (real, imag): exactly
``torch.view_as_real``'s layout. Then::

    torch.polar(ones, angle)          -> stack([cos(angle), sin(angle)], -1)   (the cos/sin table)
    torch.view_as_complex(x)          -> x        (x[..., 2i], x[..., 2i+1] is pair i)
    torch.view_as_real(z)             -> z
    z * w                             -> complex_mul(z, w)   (rotates each interleaved pair)

and every operation the source applies to a complex value is shifted past the pair axis:
negative ``dim`` arguments move by one, ``.shape`` drops the pair axis, ``view(*s)`` appends 2,
``flatten(s)`` stops before the pair axis.

Before::

    freqs_cis = torch.polar(torch.ones_like(freqs), freqs)
    ...
    x = torch.view_as_complex(x_in.float().reshape(*x_in.shape[:-1], -1, 2))
    x_out = torch.view_as_real(x * freqs_cis.unsqueeze(2)).flatten(3)

After::

    freqs_cis = torch.stack([torch.cos(freqs), torch.sin(freqs)], dim=-1)
    ...
    x = x_in.float().reshape(*x_in.shape[:-1], -1, 2)
    x_out = complex_mul(x, freqs_cis.unsqueeze(2)).flatten(3)

The pattern is found by dataflow, not by names: complex values are followed through
assignments, lists, ``self`` attributes, returns and call arguments across the module, and a
value multiplied by a complex one is complex too (so a ``freqs_cis`` passed in from outside is
recognised).

A complex table kept on ``self`` (``self.freqs_cis = ...``) becomes ``self._freqs_cis``: in
torch a plain attribute is not in the state dict, and MLX keeps ``_``-named attributes out of
a module's parameters, so strict weight loading sees the same keys on both sides.

Fix safety: the pairing is interleaved (``view_as_complex`` semantics), never half-split. A
complex operation porter has no real form for is kept and reported.
"""

from __future__ import annotations

import libcst as cst

from ._common import code, int_node, int_value, keyword, positional, self_attr
from ._flow import Flow, FlowRule

_MAKERS = {"torch.polar", "torch.view_as_complex", "torch.complex"}
_ENDS = {"torch.view_as_real", "torch.real", "torch.imag", "torch.abs", "torch.angle"}
_COMPLEX_DTYPES = {"torch.complex64", "torch.complex128", "torch.cfloat", "torch.cdouble"}
_CONCAT = {"torch.cat", "torch.concat", "torch.concatenate", "torch.stack"}
# Blank tensors whose complex zero is a (0, 0) pair; ones_like would need (1, 0) and is not one.
_BLANK = {"torch.zeros", "torch.empty"}
_REAL_OF = {
    "torch.complex64": "torch.float32",
    "torch.cfloat": "torch.float32",
    "torch.complex128": "torch.float64",
    "torch.cdouble": "torch.float64",
}
# Methods whose result is complex when the receiver is.
_KEEPS = {
    "unsqueeze",
    "squeeze",
    "to",
    "view",
    "reshape",
    "flatten",
    "expand",
    "repeat",
    "split",
    "chunk",
    "unbind",
    "contiguous",
    "clone",
    "permute",
    "transpose",
    "detach",
    "cuda",
    "cpu",
    "conj",
    "type",
}
# Methods that need no change on a complex receiver.
_SAFE = {"contiguous", "clone", "detach", "cuda", "cpu", "split", "unbind", "chunk"}
# List methods: a list of complex tables is extended, not transformed.
_LIST_METHODS = {"append", "extend", "insert", "pop", "index", "count"}
_ONES = {"torch.ones_like", "torch.ones", "numpy.ones_like", "numpy.ones"}


class RewriteComplexRope(FlowRule):
    id = "rewrite-complex-rope"
    description = "complex RoPE (polar, view_as_complex, complex multiply) -> real pair arithmetic"
    order = 40

    def make_flow(self) -> Flow:
        return Flow(
            source=self._makes_complex,
            keeps=lambda method: method in _KEEPS,
            breaks=self._ends_complex,
            backward_mult=True,
        )

    def _makes_complex(self, expr: cst.BaseExpression) -> bool:
        if not isinstance(expr, cst.Call):
            return False
        name = self.imported(expr.func)
        if name in _BLANK:
            return self._complex_dtype(expr)
        return name in _MAKERS or name in self.ctx.complex_returns

    def _complex_dtype(self, call: cst.Call) -> bool:
        """``dtype=torch.complex64``, or ``dtype=t.dtype`` of a complex ``t``."""
        dtype = keyword(call, "dtype")
        if dtype is None:
            return False
        value = dtype.value
        if self.imported(value) in _COMPLEX_DTYPES:
            return True
        return (
            isinstance(value, cst.Attribute)
            and value.attr.value == "dtype"
            and self.flow.tagged(value.value, self.flow.current)
        )

    def _blank(self, node: cst.Call) -> cst.Call:
        """``torch.zeros(b, n, d, dtype=complex)`` -> ``torch.zeros(b, n, d, 2, dtype=float)``."""
        args = list(node.args)
        positional = [i for i, a in enumerate(args) if a.keyword is None]
        if not positional:
            self.unported(node, "complex zeros without a shape")
            return node
        last = positional[-1]
        if len(positional) == 1 and not isinstance(args[last].value, (cst.Integer, cst.Name)):
            args[last] = args[last].with_changes(star="*")
        args.insert(last + 1, cst.Arg(cst.Integer("2")))
        args[last] = args[last].with_changes(
            comma=cst.Comma(whitespace_after=cst.SimpleWhitespace(" "))
        )
        for i, a in enumerate(args):
            if a.keyword is not None and a.keyword.value == "dtype":
                real = _REAL_OF.get(self.imported(a.value) or "")
                if real:
                    args[i] = a.with_changes(value=cst.parse_expression(real))
        self.applied()
        return node.with_changes(args=args)

    def leave_Module(self, original_node: cst.Module, updated_node: cst.Module) -> cst.Module:
        # Module-level functions that return complex values, for the modules that import them.
        for key, facts in self.flow.functions.items():
            if facts.returns and facts.cls is None and facts.parent is None:
                self.ctx.complex_returns.add(f"{self.ctx.source.module}.{key}")
        return updated_node

    def _ends_complex(self, expr: cst.BaseExpression) -> bool:
        if isinstance(expr, cst.Call):
            return self.imported(expr.func) in _ENDS
        return isinstance(expr, cst.Attribute) and expr.attr.value in ("real", "imag")

    # -- calls ------------------------------------------------------------------------------

    def leave_Call(self, original_node: cst.Call, updated_node: cst.Call) -> cst.BaseExpression:
        name = self.imported(original_node.func)
        if name in ("torch.view_as_complex", "torch.view_as_real"):
            self.applied()
            return updated_node.args[0].value
        if name == "torch.polar":
            return self._polar(original_node, updated_node)
        if name in _CONCAT and original_node.args and self.tagged(original_node.args[0].value):
            return self._shift_dim(updated_node, "dim", 1, stack=name == "torch.stack")
        if name in _BLANK and self._complex_dtype(original_node):
            return self._blank(updated_node)
        if (
            name == "torch.gather"
            and original_node.args
            and self.tagged(original_node.args[0].value)
        ):
            return self._gather(self._shift_dim(updated_node, "dim", 1))
        func = original_node.func
        if isinstance(func, cst.Attribute) and name is None and self.tagged(func.value):
            return self._method(func.attr.value, original_node, updated_node)
        return updated_node

    def _polar(self, original: cst.Call, updated: cst.Call) -> cst.BaseExpression:
        magnitude, angle = (a.value for a in updated.args[:2])
        cos = cst.parse_expression("torch.cos(_)").with_changes(args=[cst.Arg(angle)])
        sin = cst.parse_expression("torch.sin(_)").with_changes(args=[cst.Arg(angle)])
        first = original.args[0].value
        # compute_float64_in_numpy may already have turned ones_like into np.ones_like.
        unit = isinstance(first, cst.Call) and (
            self.imported(first.func) in _ONES or code(first.func) in ("np.ones_like", "np.ones")
        )
        if not unit:
            cos = cst.BinaryOperation(magnitude, cst.Multiply(), cos)
            sin = cst.BinaryOperation(magnitude, cst.Multiply(), sin)
        self.applied()
        table = cst.parse_expression("torch.stack([_, _], dim=-1)")
        assert isinstance(table, cst.Call)
        elements = table.args[0].value
        assert isinstance(elements, cst.List)
        pair = elements.with_changes(
            elements=[
                elements.elements[0].with_changes(value=cos),
                elements.elements[1].with_changes(value=sin),
            ]
        )
        return table.with_changes(args=[table.args[0].with_changes(value=pair), table.args[1]])

    def _method(self, method: str, original: cst.Call, node: cst.Call) -> cst.BaseExpression:
        receiver = node.func.value  # type: ignore[attr-defined]
        args = positional(node)
        if method in ("to", "type") and args:
            if self.imported(original.args[0].value) in _COMPLEX_DTYPES:
                self.applied()
                return receiver
            return node
        if method == "to" or method in _LIST_METHODS:
            return node
        if method in ("unsqueeze", "squeeze"):
            return self._shift_dim(node, "dim", 0, stack=method == "unsqueeze")
        if method in ("chunk", "split"):
            return self._shift_dim(node, "dim", 1)
        if method in ("view", "reshape"):
            return self._append(node, cst.Integer("2"))
        if method == "expand":
            return self._append(node, int_node(-1))
        if method == "repeat":
            return self._append(node, cst.Integer("1"))
        if method == "flatten":
            return self._flatten(node)
        if method == "transpose":
            return self._shift_all(node)
        if method == "permute":
            shifted = self._shift_all(node)
            if shifted is node:
                return node
            return self._append(shifted, cst.Integer(str(len(args))))
        if method == "size" and not node.args:
            self.applied()
            return _drop_pair_axis(receiver)
        if method in ("dim", "ndimension") and not node.args:
            self.applied()
            return _ndim_minus_one(receiver)
        if method in _SAFE:
            return node
        if method == "conj":
            self.applied()
            return cst.parse_expression("torch.stack([_[..., 0], -_[..., 1]], dim=-1)").visit(
                _Fill(receiver)
            )
        self.unported(original, f"complex tensor method .{method}() has no real-pair form yet")
        return node

    # -- attributes, products, subscripts ---------------------------------------------------

    def leave_Attribute(self, original_node, updated_node):  # type: ignore[no-untyped-def]
        attr = updated_node.attr.value
        table = self_attr(original_node)
        fn = self._functions[-1] if self._functions else None
        if table and fn and fn.cls and table in self.flow.attrs.get(fn.cls, set()):
            # A table kept on `self` is state, not a weight: torch keeps a plain attribute out
            # of the state dict, and MLX leaves `_`-named attributes out of the parameters.
            self.applied()
            return updated_node.with_changes(attr=cst.Name(f"_{table}"))
        if self.is_callee(original_node) or attr not in ("shape", "ndim", "real", "imag"):
            return updated_node
        if not self.tagged(original_node.value):
            return updated_node
        self.applied()
        receiver = updated_node.value
        if attr == "shape":
            return _drop_pair_axis(receiver)
        if attr == "ndim":
            return _ndim_minus_one(receiver)
        index = "0" if attr == "real" else "1"
        return cst.parse_expression(f"_[..., {index}]").visit(_Fill(receiver))

    def leave_BinaryOperation(self, original_node, updated_node):  # type: ignore[no-untyped-def]
        op = original_node.operator
        if not isinstance(op, (cst.Multiply, cst.Divide)):
            return updated_node
        left, right = self.tagged(original_node.left), self.tagged(original_node.right)
        if not (left or right):
            return updated_node
        if left and right:
            if isinstance(op, cst.Divide):
                self.unported(original_node, "complex division has no real-pair form yet")
                return updated_node
            self.applied()
            helper = self.ctx.need("complex_mul", "complex_mul")
            return cst.Call(
                func=helper,
                args=[
                    cst.Arg(
                        _bare(updated_node.left),
                        comma=cst.Comma(whitespace_after=cst.SimpleWhitespace(" ")),
                    ),
                    cst.Arg(_bare(updated_node.right)),
                ],
            )
        real_side = "right" if left else "left"
        real = getattr(updated_node, real_side)
        if isinstance(real, (cst.Integer, cst.Float)):
            return updated_node
        if isinstance(op, cst.Divide) and real_side == "left":
            self.unported(original_node, "dividing by a complex tensor has no real-pair form yet")
            return updated_node
        self.applied()
        widened = cst.parse_expression("_[..., None]").visit(_Fill(real))
        return updated_node.with_changes(**{real_side: widened})

    def leave_Subscript(self, original_node, updated_node):  # type: ignore[no-untyped-def]
        if not self.tagged(original_node.value):
            return updated_node
        has_ellipsis = any(
            isinstance(e.slice, cst.Index) and isinstance(e.slice.value, cst.Ellipsis)
            for e in updated_node.slice
        )
        if not has_ellipsis:
            return updated_node
        self.applied()
        last = updated_node.slice[-1].with_changes(
            comma=cst.Comma(whitespace_after=cst.SimpleWhitespace(" "))
        )
        return updated_node.with_changes(
            slice=[
                *updated_node.slice[:-1],
                last,
                cst.SubscriptElement(cst.Slice(lower=None, upper=None)),
            ]
        )

    # -- dim arithmetic ---------------------------------------------------------------------

    def _gather(self, node: cst.Call) -> cst.Call:
        """``torch.gather(table, dim, index)``: the index gains the pair axis, so both halves
        of each complex entry are taken."""
        args = list(node.args)
        kw = keyword(node, "index")
        pos = [i for i, a in enumerate(args) if a.keyword is None]
        at = args.index(kw) if kw is not None else (pos[2] if len(pos) > 2 else None)
        if at is None:
            self.unported(node, "torch.gather on a complex tensor without an index argument")
            return node
        index = cst.parse_expression("_.unsqueeze(-1)").visit(_Fill(args[at].value))
        args[at] = args[at].with_changes(value=index)
        self.applied()
        return node.with_changes(args=args)

    def _shift_dim(self, node: cst.Call, name: str, index: int, stack: bool = False) -> cst.Call:
        """Move a negative ``dim`` past the pair axis (positive dims are unchanged)."""
        kw = keyword(node, name)
        args = list(node.args)
        pos = [i for i, a in enumerate(args) if a.keyword is None]
        if kw is not None:
            at = args.index(kw)
        elif len(pos) > index:
            at = pos[index]
        else:
            return node  # the default dim (0) is not affected
        value = int_value(args[at].value)
        if value is None:
            self.unported(
                node, "complex tensor op with a non-literal dim; cannot place the pair axis"
            )
            return node
        if value >= 0:
            return node
        self.applied()
        args[at] = args[at].with_changes(value=int_node(value - 1))
        return node.with_changes(args=args)

    def _shift_all(self, node: cst.Call) -> cst.Call:
        args = list(node.args)
        for i, a in enumerate(args):
            value = int_value(a.value)
            if a.keyword is not None or a.star or value is None:
                self.unported(node, "complex tensor axes must be integer literals")
                return node
            if value < 0:
                args[i] = a.with_changes(value=int_node(value - 1))
        self.applied()
        return node.with_changes(args=args)

    def _append(self, node: cst.Call, value: cst.BaseExpression) -> cst.Call:
        args = list(node.args)
        if (
            len(args) == 1
            and not args[0].star
            and isinstance(args[0].value, (cst.Name, cst.Attribute, cst.Tuple, cst.List))
        ):
            # view(shape) with one sequence argument -> view(*shape, 2)
            args = [args[0].with_changes(star="*")]
        if args:
            args[-1] = args[-1].with_changes(
                comma=cst.Comma(whitespace_after=cst.SimpleWhitespace(" "))
            )
        self.applied()
        return node.with_changes(args=[*args, cst.Arg(value)])

    def _flatten(self, node: cst.Call) -> cst.Call:
        args = list(node.args)
        if len(args) >= 2:
            return self._shift_all(node)
        if len(args) == 1:
            start = int_value(args[0].value)
            if start is None:
                self.unported(node, "complex tensor axes must be integer literals")
                return node
            first = args[0].with_changes(
                value=int_node(start - 1 if start < 0 else start),
                comma=cst.Comma(whitespace_after=cst.SimpleWhitespace(" ")),
            )
            self.applied()
            return node.with_changes(args=[first, cst.Arg(int_node(-2))])
        self.applied()
        return node.with_changes(
            args=[
                cst.Arg(
                    cst.Integer("0"), comma=cst.Comma(whitespace_after=cst.SimpleWhitespace(" "))
                ),
                cst.Arg(int_node(-2)),
            ]
        )


class _Fill(cst.CSTTransformer):
    """Put ``value`` where a template has the placeholder name ``_``."""

    def __init__(self, value: cst.BaseExpression) -> None:
        super().__init__()
        self.value = value

    def leave_Name(self, original_node, updated_node):  # type: ignore[no-untyped-def]
        return self.value if updated_node.value == "_" else updated_node


def _bare(node: cst.BaseExpression) -> cst.BaseExpression:
    return node.with_changes(lpar=[], rpar=[]) if node.lpar else node


def _drop_pair_axis(receiver: cst.BaseExpression) -> cst.BaseExpression:
    return cst.parse_expression("_.shape[:-1]").visit(_Fill(receiver))  # type: ignore[return-value]


def _ndim_minus_one(receiver: cst.BaseExpression) -> cst.BaseExpression:
    return cst.parse_expression("(_.ndim - 1)").visit(_Fill(receiver))  # type: ignore[return-value]


RULE = RewriteComplexRope
