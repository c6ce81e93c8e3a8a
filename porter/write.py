"""Stage 6: write every output file atomically, after all of them rendered and formatted."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from porter.errors import PorterError


def write_files(outdir: Path, files: dict[str, str]) -> list[Path]:
    """Write ``files`` (name -> text) into ``outdir``: each via a temp file and ``os.replace``.

    Everything is rendered before this is called, so a failure in porter never leaves a
    half-written file; a reader sees either the old or the new content of each file.
    """
    try:
        outdir.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise PorterError(f"cannot create output folder: {err.strerror}", str(outdir)) from None
    written = []
    for name, text in files.items():
        write_text_atomic(outdir / name, text)
        written.append(outdir / name)
    return written


def write_text_atomic(target: Path, text: str) -> None:
    """Write ``text`` to ``target`` via a temp file in the same folder and ``os.replace``."""
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    except OSError as err:
        raise PorterError(f"cannot write: {err.strerror}", str(target)) from None
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as handle:
            handle.write(text)
        os.replace(tmp, target)
    except OSError as err:
        Path(tmp).unlink(missing_ok=True)
        raise PorterError(f"cannot write: {err.strerror}", str(target)) from None
