"""Loading the data tables (ops.toml, symbols.toml) and building code from their templates."""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

import libcst as cst

HERE = Path(__file__).resolve().parent


@dataclass(frozen=True)
class OpRow:
    """One row of ops.toml: how one torch function or tensor method maps to MLX."""

    key: str  # qualified torch name for functions, method/attribute name otherwise
    kind: str  # "function" | "method" | "attribute"
    mlx: str | None = None
    expr: str | None = None
    params: tuple[str, ...] | None = None
    rename: dict[str, str] = field(default_factory=dict)
    drop: frozenset[str] = frozenset()
    pack: str | None = None
    spread: bool = False
    # The row applies only when these arguments are given as these literals (the arguments are
    # then consumed), or only when these arguments are not given at all.
    when: dict[str, object] = field(default_factory=dict)
    unless: frozenset[str] = frozenset()


@dataclass(frozen=True)
class OpTable:
    names: dict[str, str]  # every torch name -> MLX name, dtypes included
    dtypes: dict[str, str]
    rows: dict[tuple[str, str], list[OpRow]]
    default_drop: frozenset[str]

    def lookup(
        self,
        kind: str,
        key: str,
        nargs: int | None = None,
        literals: dict[str, object] | None = None,
    ) -> OpRow | None:
        """The first row for ``key`` that fits the call.

        ``literals`` maps each argument the call passes (by torch parameter name, or by
        position as ``"#0"``, ``"#1"``...) to its literal value, or to ``...`` when it is not a
        literal; it is what ``when`` and ``unless`` rows are checked against.
        """
        rows = self.rows.get((kind, key), [])
        for row in rows:
            if (row.when or row.unless) and not _fits(row, literals or {}):
                continue
            if nargs is None or row.expr is None or row.params is None:
                return row
            if len(row.params) == nargs:
                return row
        return None


def _fits(row: OpRow, literals: dict[str, object]) -> bool:
    def given(param: str) -> object:
        if param in literals:
            return literals[param]
        if row.params and param in row.params:
            return literals.get(f"#{row.params.index(param)}", None)
        return None

    if any(given(p) is not None for p in row.unless):
        return False
    return all(given(p) == value for p, value in row.when.items())


@cache
def op_table() -> OpTable:
    data = tomllib.loads((HERE / "ops.toml").read_text(encoding="utf-8"))
    rows: dict[tuple[str, str], list[OpRow]] = {}
    for kind, key_field in (("function", "torch"), ("method", "name"), ("attribute", "name")):
        for raw in data.get(kind, []):
            params = raw.get("params")
            row = OpRow(
                key=raw[key_field],
                kind=kind,
                mlx=raw.get("mlx"),
                expr=raw.get("expr"),
                params=tuple(params) if params is not None else None,
                rename=dict(raw.get("rename", {})),
                drop=frozenset(raw.get("drop", [])),
                pack=raw.get("pack"),
                spread=bool(raw.get("spread", False)),
                when=dict(raw.get("when", {})),
                unless=frozenset(raw.get("unless", [])),
            )
            rows.setdefault((kind, row.key), []).append(row)
    return OpTable(
        names={**data.get("dtypes", {}), **data.get("names", {})},
        dtypes=dict(data.get("dtypes", {})),
        rows=rows,
        default_drop=frozenset(data.get("defaults", {}).get("drop", [])),
    )


@cache
def mlx_outputs() -> frozenset[str]:
    """Every dotted MLX name the tables can write (``nn.Linear``, ``mx.concatenate``...)."""
    table = op_table()
    out = set(table.names.values())
    for rows in table.rows.values():
        out.update(r.mlx for r in rows if r.mlx and not r.mlx.startswith((".", "support:")))
    return frozenset(out)


@dataclass(frozen=True)
class Symbol:
    """One row of symbols.toml: how a name imported from the model's library is resolved."""

    name: str
    action: str  # "drop" | "support" | "mlx"
    reason: str
    target: str | None = None  # "snippet.Name" for support, an MLX name for mlx
    # Class attributes that only configure this (dropped) mixin.
    drop_class_attributes: frozenset[str] = frozenset()


@cache
def symbol_table() -> dict[str, Symbol]:
    data = tomllib.loads((HERE / "symbols.toml").read_text(encoding="utf-8"))
    return {
        name: Symbol(
            name,
            row["action"],
            row.get("reason", ""),
            row.get("target"),
            frozenset(row.get("drop_class_attributes", [])),
        )
        for name, row in data.items()
    }


def dotted(text: str) -> cst.BaseExpression:
    """``"mx.float32"`` -> the expression node."""
    return cst.parse_expression(text)


class _Substitute(cst.CSTTransformer):
    def __init__(self, mapping: dict[str, cst.BaseExpression]) -> None:
        super().__init__()
        self.mapping = mapping

    def leave_Name(self, original_node: cst.Name, updated_node: cst.Name) -> cst.BaseExpression:
        return self.mapping.get(updated_node.value, updated_node)


def instantiate(template: str, mapping: dict[str, cst.BaseExpression]) -> cst.BaseExpression:
    """Parse an expression template and put the given nodes in place of its placeholder names.

    The template is parsed by LibCST, so substitution works on the tree, never on text.
    Placeholders that stand for compound expressions are parenthesised where needed.
    """
    wrapped = {k: _parenthesize(v) for k, v in mapping.items()}
    return cst.parse_expression(template).visit(_Substitute(wrapped))  # type: ignore[return-value]


_ATOMS = (
    cst.Name,
    cst.Attribute,
    cst.Call,
    cst.Subscript,
    cst.Integer,
    cst.Float,
    cst.SimpleString,
    cst.List,
    cst.Tuple,
    cst.Dict,
    cst.ListComp,
)


def _parenthesize(node: cst.BaseExpression) -> cst.BaseExpression:
    if isinstance(node, _ATOMS) or node.lpar:
        return node
    if isinstance(node, cst.UnaryOperation) and isinstance(
        node.expression, (cst.Integer, cst.Float)
    ):
        return node
    return node.with_changes(lpar=[cst.LeftParen()], rpar=[cst.RightParen()])


@cache
def torch_only_methods() -> frozenset[str]:
    """torch.Tensor methods that mx.array lacks (tensor_methods.toml)."""
    data = tomllib.loads((HERE / "tensor_methods.toml").read_text(encoding="utf-8"))
    return frozenset(data["methods"])
