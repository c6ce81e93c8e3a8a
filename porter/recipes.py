"""Built-in recipes: a name for a known source, where its port goes, and its model class."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Recipe:
    source: str
    outdir: str
    model_class: str


RECIPES = {
    "z-image": Recipe(
        source="diffusers.models.transformers.transformer_z_image",
        outdir="generated/z_image",
        model_class="ZImageTransformer2DModel",
    ),
}
