"""Built-in recipes (`recipes.toml`): a name for a known source, where its port goes, its model
class, and the golden cases rendered into the port's golden test."""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from typing import Any


@dataclass(frozen=True)
class GoldenSpec:
    """Golden cases for a recipe: ``rel`` bound, the ``tolerance`` reasoning, and the cases.

    Each case is a dict with ``name``, ``seed``, ``doc``, ``config`` and ``inputs`` (the body of
    an input builder, see recipes.toml)."""

    rel: float
    tolerance: str
    cases: list[dict[str, Any]]


@dataclass(frozen=True)
class Recipe:
    name: str
    source: str
    outdir: str
    model_class: str
    golden: GoldenSpec | None = field(default=None)
    # The source's top-level names to port, with what they use; None ports the whole module.
    keep: list[str] | None = None


@cache
def recipes() -> dict[str, Recipe]:
    data = tomllib.loads(resources.files("porter").joinpath("recipes.toml").read_text("utf-8"))
    out = {}
    for name, row in data.items():
        golden = row.get("golden")
        out[name] = Recipe(
            name=name,
            source=row["source"],
            outdir=row["outdir"],
            model_class=row["model_class"],
            golden=GoldenSpec(
                golden["rel"], golden["tolerance"].strip(), [_case(c) for c in golden["cases"]]
            )
            if golden
            else None,
            keep=row.get("keep"),
        )
    return out


def _case(row: dict[str, Any]) -> dict[str, Any]:
    """A golden case as the template takes it: ``config_none`` (TOML has no null) names the
    config keys whose value is None."""
    case = {key: value for key, value in row.items() if key != "config_none"}
    case["config"] = {**row["config"], **dict.fromkeys(row.get("config_none", []))}
    return case
