"""porter: port PyTorch model source to MLX source that people can review."""

from pathlib import Path

__version__ = "0.1.0"

# In a source checkout, rules/ and templates/ sit beside porter/ at the repository root; the
# wheel installs them as porter.rules and porter.templates. Extending the package path lets
# both layouts import them under the same names.
_checkout = Path(__file__).resolve().parent.parent
if not (Path(__file__).resolve().parent / "rules").is_dir() and (_checkout / "rules").is_dir():
    __path__.append(str(_checkout))  # type: ignore[name-defined]
