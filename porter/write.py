"""Stage 6: write every output file atomically, after all of them rendered and formatted."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from porter.errors import PorterError


def write_files(outdir: Path, files: dict[str, str]) -> list[Path]:
    """Write ``files`` (name -> text) into ``outdir``: all to temp files first, then each
    moved into place with ``os.replace``.

    Everything is rendered before this is called, and a target that cannot be replaced (a
    folder in the way, a full disk) fails before any file is replaced, so a failure never
    leaves the folder half old, half new; a reader sees either the old or the new content of
    each file.
    """
    if outdir.exists() and not outdir.is_dir():
        raise PorterError("output path is a file, not a folder", str(outdir))
    try:
        outdir.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise PorterError(f"cannot create output folder: {err.strerror}", str(outdir)) from None
    targets = [outdir / name for name in files]
    for target in targets:
        if target.is_dir() or (target.exists() and not target.is_file()):
            raise PorterError("exists and is not a regular file; not replacing it", str(target))
    temps: list[Path] = []
    try:
        for target, text in zip(targets, files.values(), strict=True):
            temps.append(_write_temp(target, text))
        for index, (tmp, target) in enumerate(zip(temps, targets, strict=True)):
            _replace(tmp, target)
            temps[index] = target  # moved: nothing left to clean up
    finally:
        for tmp, target in zip(temps, targets, strict=False):
            if tmp != target:
                tmp.unlink(missing_ok=True)
    return targets


def write_text_atomic(target: Path, text: str) -> None:
    """Write ``text`` to ``target`` via a temp file in the same folder and ``os.replace``."""
    tmp = _write_temp(target, text)
    try:
        _replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


def _write_temp(target: Path, text: str) -> Path:
    """``text`` in a new temp file next to ``target``, with the mode a new file gets."""
    try:
        fd, name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    except OSError as err:
        raise PorterError(f"cannot write: {err.strerror}", str(target)) from None
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as handle:
            # mkstemp creates 0600; porter's outputs are ordinary files that others may read.
            os.fchmod(handle.fileno(), _new_file_mode())
            handle.write(text)
    except OSError as err:
        Path(name).unlink(missing_ok=True)
        raise PorterError(f"cannot write: {err.strerror}", str(target)) from None
    return Path(name)


def _replace(tmp: Path, target: Path) -> None:
    try:
        os.replace(tmp, target)
    except OSError as err:
        raise PorterError(f"cannot write: {err.strerror}", str(target)) from None


def _new_file_mode() -> int:
    """0o666 less the process umask: the mode ``open()`` gives a new file."""
    mask = os.umask(0o022)
    os.umask(mask)
    return 0o666 & ~mask
