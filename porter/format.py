"""Stage 5: format generated code with black, so output is stable and reads like a hand port."""

from __future__ import annotations

import black

LINE_LENGTH = 120


def format_code(text: str, name: str) -> str:
    mode = black.Mode(line_length=LINE_LENGTH, target_versions={black.TargetVersion.PY311})
    try:
        return black.format_str(text, mode=mode)
    except black.InvalidInput as err:  # a rule produced invalid code: a bug in porter
        raise RuntimeError(f"porter produced invalid Python in {name}: {err}") from err
