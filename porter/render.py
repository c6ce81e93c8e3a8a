"""Stage 4: render the rewritten code and its surroundings through the Jinja2 templates."""

from __future__ import annotations

import re
from functools import cache
from pathlib import Path

import jinja2

import porter.templates

SNIPPETS = "snippets"
_REQUIRES = re.compile(r"\{#\s*requires:\s*([\w,\s]+?)\s*#\}")


@cache
def environment() -> jinja2.Environment:
    root = Path(porter.templates.__path__[0])
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(root)),
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
        undefined=jinja2.StrictUndefined,
        autoescape=False,
    )
    # Python literals (configs in golden tests) are written with repr, which black then formats.
    env.filters["pyrepr"] = repr
    return env


def render(template: str, **values: object) -> str:
    return environment().get_template(template).render(**values)


def snippet_requires(name: str) -> list[str]:
    env = environment()
    source = env.loader.get_source(env, f"{SNIPPETS}/{name}.py.j2")[0]  # type: ignore[union-attr]
    match = _REQUIRES.search(source)
    if not match:
        return []
    return [r.strip() for r in match.group(1).split(",") if r.strip()]


def snippet_order(names: set[str]) -> list[str]:
    """The snippets ``names`` need, dependencies first, in a stable order."""
    ordered: list[str] = []

    def visit(name: str, trail: tuple[str, ...]) -> None:
        if name in ordered:
            return
        if name in trail:
            raise RuntimeError(f"snippet dependency cycle: {' -> '.join((*trail, name))}")
        for dep in snippet_requires(name):
            visit(dep, (*trail, name))
        ordered.append(name)

    for name in sorted(names):
        visit(name, ())
    return ordered


def render_snippet(name: str) -> str:
    return render(f"{SNIPPETS}/{name}.py.j2").strip("\n")
