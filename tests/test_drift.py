"""The committed generated/ code is exactly what porter generates now."""

from __future__ import annotations

import difflib
from pathlib import Path

from porter.pipeline import port
from porter.recipes import recipes

ROOT = Path(__file__).resolve().parent.parent


def test_generated_z_image_is_up_to_date(tmp_path: Path) -> None:
    recipe = recipes()["z-image"]
    result = port(
        recipe.source,
        tmp_path,
        command="porter port z-image",
        model_class=recipe.model_class,
        golden=recipe.golden,
    )
    committed = ROOT / recipe.outdir
    stale = []
    for name, text in result.files.items():
        path = committed / name
        old = path.read_text(encoding="utf-8") if path.exists() else ""
        if old != text:
            diff = difflib.unified_diff(
                old.splitlines(), text.splitlines(), str(path), f"regenerated {name}", lineterm=""
            )
            stale.append("\n".join(list(diff)[:40]))
    assert not stale, "generated/ is stale; refresh it with `porter port z-image`:\n" + "\n".join(
        stale
    )
    assert result.ctx.findings == [], "the Z-Image port should leave nothing unported"
