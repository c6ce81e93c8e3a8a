"""rewrite_buffers: registered buffers become plain attributes with the same state-dict role.

Before::

    self.register_buffer("pos", table)                     # in the state dict
    self.register_buffer("inv_freq", freqs, persistent=False)  # not in it
    self.scale = nn.Buffer(scale, persistent=False)         # the same, as an attribute
    ...
    return x + self.pos, x * self.inv_freq

After::

    self.pos = table
    self._inv_freq = freqs
    self._scale = scale
    ...
    return x + self.pos, x * self._inv_freq

A name or ``persistent`` flag known only at run time goes through the support helper, which
makes the same choice when the module is built::

    self.register_buffer("pos_embed", table, persistent=persistent)
    ->
    register_buffer(self, "pos_embed", table, persistent=persistent)

Fix safety: an MLX module's parameters are its array attributes, except those whose name
starts with ``_`` or that live outside the module's dict. A persistent buffer is in torch's
state dict, so it stays a public attribute and loads with the weights; a non-persistent one is
not, so it takes a leading ``_`` everywhere in its class and where another class reads it
(``self.rope.freqs``; a ``getattr`` by string is reported), and strict loading sees the same
keys on both sides (the helper keeps it outside the module's dict instead). A call whose value is not
its second positional argument is kept and reported.
"""

from __future__ import annotations

import libcst as cst

from porter.engine import NEEDS_REVIEW, Rule

from ._common import keyword, self_attr


def _buffer_call(node: cst.BaseExpression) -> cst.Call | None:
    if (
        isinstance(node, cst.Call)
        and isinstance(node.func, cst.Attribute)
        and node.func.attr.value == "register_buffer"
        and isinstance(node.func.value, cst.Name)
        and node.func.value.value == "self"
    ):
        return node
    return None


def _literal_name(call: cst.Call) -> str | None:
    first = call.args[0].value if call.args else None
    if isinstance(first, cst.SimpleString) and isinstance(first.evaluated_value, str):
        return first.evaluated_value
    return None


def _persistent(call: cst.Call) -> bool | None:
    flag = keyword(call, "persistent")
    if flag is None and len(call.args) > 2 and call.args[2].keyword is None:
        flag = call.args[2]
    if flag is None:
        return True
    if isinstance(flag.value, cst.Name) and flag.value.value in ("True", "False"):
        return flag.value.value == "True"
    return None


class RewriteBuffers(Rule):
    id = "rewrite-buffers"
    description = "register_buffer/nn.Buffer -> an attribute (non-persistent ones named _x)"
    order = 56

    def visit_Module(self, node: cst.Module) -> None:
        """Non-persistent buffer names read from outside their class (``self.rope.freqs``)
        follow the rename, unless the module also sets an attribute of that name otherwise."""
        hidden = self._hidden_in(node)
        assigned: set[str] = set()
        rule = self

        class Find(cst.CSTVisitor):
            def visit_Assign(self, assign: cst.Assign) -> None:
                buffer = rule._buffer_value(assign.value)
                if buffer is not None and _persistent(buffer) is False:
                    return  # registers a non-persistent buffer, counted in hidden
                for target in assign.targets:
                    if isinstance(target.target, cst.Attribute):
                        assigned.add(target.target.attr.value)

        node.visit(Find())
        self._outside = hidden - assigned
        # Also set as a plain attribute somewhere: a read from outside may mean either.
        self._ambiguous = hidden & assigned

    def _buffer_value(self, node: cst.BaseExpression | None) -> cst.Call | None:
        """``nn.Buffer(t, persistent=...)``, matched by qualified name."""
        if isinstance(node, cst.Call) and self.imported(node.func) == "torch.nn.Buffer":
            return node
        return None

    def _hidden_in(self, node: cst.CSTNode) -> set[str]:
        """Names of the non-persistent buffers registered in ``node``, by
        ``self.register_buffer("x", t, persistent=False)`` or ``self.x = nn.Buffer(t,
        persistent=False)``."""
        hidden: set[str] = set()
        rule = self

        class Find(cst.CSTVisitor):
            def visit_Call(self, call: cst.Call) -> None:
                if _buffer_call(call) and _persistent(call) is False:
                    name = _literal_name(call)
                    if name:
                        hidden.add(name)

            def visit_Assign(self, assign: cst.Assign) -> None:
                buffer = rule._buffer_value(assign.value)
                if buffer is None or len(assign.targets) != 1:
                    return
                name = self_attr(assign.targets[0].target)
                if name and _persistent(buffer) is False:
                    hidden.add(name)

        node.visit(Find())
        return hidden

    def visit_ClassDef(self, node: cst.ClassDef) -> None:
        self._hidden = getattr(self, "_hidden", [])
        self._hidden.append(self._hidden_in(node))

    def leave_ClassDef(self, original_node, updated_node):  # type: ignore[no-untyped-def]
        self._hidden.pop()
        return updated_node

    def leave_Attribute(self, original_node, updated_node):  # type: ignore[no-untyped-def]
        name = self_attr(original_node)
        if name and getattr(self, "_hidden", None) and name in self._hidden[-1]:
            self.applied()
            return updated_node.with_changes(attr=cst.Name(f"_{name}"))
        attr = original_node.attr.value
        if name is None and attr in self._outside and self.imported(original_node) is None:
            self.applied()  # another module's buffer: self.rope.freqs -> self.rope._freqs
            return updated_node.with_changes(attr=cst.Name(f"_{attr}"))
        if name is None and attr in self._ambiguous and self.imported(original_node) is None:
            self.unported(
                original_node,
                f"`.{attr}` may read the non-persistent buffer {attr!r}, which the port calls "
                f"'_{attr}', or another attribute of that name; check which",
                NEEDS_REVIEW,
            )
        return updated_node

    def visit_Call(self, node: cst.Call) -> None:
        """``getattr(obj, "freqs")`` names a renamed buffer in a string: reported."""
        if (
            isinstance(node.func, cst.Name)
            and node.func.value in ("getattr", "hasattr", "setattr")
            and len(node.args) >= 2
            and isinstance(node.args[1].value, cst.SimpleString)
            and node.args[1].value.evaluated_value in self._outside
        ):
            self.unported(
                node,
                f"{node.func.value}() names non-persistent buffer "
                f"{node.args[1].value.evaluated_value!r}, which the port calls "
                f"'_{node.args[1].value.evaluated_value}'",
                NEEDS_REVIEW,
            )

    def leave_Assign(self, original_node, updated_node):  # type: ignore[no-untyped-def]
        buffer = self._buffer_value(original_node.value)
        if buffer is None:
            return updated_node
        if _persistent(buffer) is None or not buffer.args or buffer.args[0].keyword:
            self.unported(
                original_node, "nn.Buffer with a non-literal persistent flag", NEEDS_REVIEW
            )
            return updated_node
        self.applied()
        return updated_node.with_changes(value=updated_node.value.args[0].value)

    def leave_Expr(self, original_node, updated_node):  # type: ignore[no-untyped-def]
        call = _buffer_call(updated_node.value)
        if call is None:
            return updated_node
        name, persistent = _literal_name(call), _persistent(call)
        positional = [a for a in call.args if a.keyword is None]
        if len(positional) < 2 or any(a.star for a in call.args):
            self.unported(
                original_node, "register_buffer without a positional name and value", NEEDS_REVIEW
            )
            return updated_node
        if name is None or persistent is None:
            helper = self.ctx.need("register_buffer", "register_buffer")
            args = [cst.Arg(cst.Name("self")), *call.args]
            self.applied()
            return updated_node.with_changes(value=call.with_changes(func=helper, args=args))
        value = call.args[1].value
        target = cst.Attribute(cst.Name("self"), cst.Name(name if persistent else f"_{name}"))
        self.applied()
        return cst.Assign(targets=[cst.AssignTarget(target)], value=value)


RULE = RewriteBuffers
