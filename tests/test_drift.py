"""The committed generated/ code is exactly what porter generates now, checked with
`porter check` as a user would run it."""

from __future__ import annotations

import os
from pathlib import Path

from porter.cli import main
from porter.recipes import recipes

ROOT = Path(__file__).resolve().parent.parent


def test_generated_is_up_to_date(capsys, monkeypatch) -> None:
    # The recorded commands use paths relative to the repository root (generated/z_image).
    monkeypatch.chdir(ROOT)
    # --strict: the recipes must also port with nothing left unported.
    code = main(["check", "--strict", "generated"])
    out = capsys.readouterr().out
    assert code == 0, f"generated/ is stale:\n{out}"
    ports = len(recipes())
    assert f"from {ports} ports up to date" in out, out


def test_every_recipe_has_its_port_committed() -> None:
    for name, recipe in recipes().items():
        folder = ROOT / recipe.outdir
        assert (folder / "__init__.py").is_file(), f"{name}: run `porter port {name}`"
        assert os.listdir(folder), name
