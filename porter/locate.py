"""Stage 1: find the source file for a path or a dotted module name, without importing it."""

from __future__ import annotations

import hashlib
import importlib.util
import io
import tokenize
from dataclasses import dataclass
from pathlib import Path

from porter.errors import PorterError


@dataclass(frozen=True)
class Source:
    path: Path
    module: str  # dotted name when known, else the file stem
    text: str

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.text.encode("utf-8")).hexdigest()

    @property
    def package(self) -> str:
        """The package that relative imports in this file are resolved against."""
        if self.path.name == "__init__.py":
            return self.module
        return self.module.rpartition(".")[0]

    @property
    def display(self) -> str:
        return self.module if "." in self.module else str(self.path)


def _read(path: Path, module: str) -> Source:
    """The source text of ``path``, decoded as Python does: a BOM or a PEP 263 coding line."""
    try:
        data = path.read_bytes()
    except OSError as err:
        raise PorterError(f"cannot read file: {err.strerror}", str(path)) from None
    bad_cookie = None
    try:
        encoding, _ = tokenize.detect_encoding(io.BytesIO(data).readline)
    except SyntaxError as err:
        # Undecodable first lines land here too; decoding as UTF-8 below finds the line.
        encoding, bad_cookie = "utf-8", err.msg
    try:
        text = data.decode(encoding)
    except UnicodeDecodeError as err:
        what = "not UTF-8 text" if encoding.startswith("utf-8") else f"not {encoding} text"
        where = f"{path}:{_line_of(data, err.start)}"
        raise PorterError(f"{what} ({err.reason})", where) from None
    if bad_cookie is not None:
        raise PorterError(bad_cookie, f"{path}:{_line_of(data, data.find(b'coding'))}")
    nul = data.find(b"\x00")
    if nul >= 0:
        raise PorterError("contains a NUL byte; not Python source", f"{path}:{_line_of(data, nul)}")
    return Source(path=path, module=module, text=text)


def _line_of(data: bytes, offset: int) -> int:
    """The 1-based line of byte ``offset`` in ``data`` (line 1 when the offset is unknown)."""
    return data.count(b"\n", 0, max(offset, 0)) + 1


def _module_name_for(path: Path) -> str:
    """The dotted name of a file inside packages (walking up through ``__init__.py`` folders)."""
    parts = [] if path.name == "__init__.py" else [path.stem]
    folder = path.parent
    while (folder / "__init__.py").is_file():
        parts.insert(0, folder.name)
        folder = folder.parent
    return ".".join(parts) or path.stem


def locate(spec: str, near: Path | None = None) -> Source:
    """Resolve ``spec`` (a ``.py`` path or a dotted module name) to its source text.

    A dotted name is found by walking the package folders from ``importlib.util.find_spec`` of
    the top-level package, so no package code runs (importing diffusers would execute it).
    ``near`` is a folder to look in when the top-level package is not importable: the folder
    that holds the package of a file ported by path, so its sibling modules are found.
    """
    looks_like_path = spec.endswith(".py") or "/" in spec or "\\" in spec
    if looks_like_path or Path(spec).is_file():
        path = Path(spec)
        if path.exists() and not path.is_file():
            raise PorterError("not a regular file; pass a .py file", spec)
        if not path.is_file():
            raise PorterError("no such file; pass a .py path or a dotted module name", spec)
        return _read(path.resolve(), _module_name_for(path.resolve()))

    parts = spec.split(".")
    if not all(p.isidentifier() for p in parts):
        raise PorterError(
            "not a .py path or a dotted module name (for example "
            "diffusers.models.transformers.transformer_z_image)",
            spec,
        )
    try:
        top = importlib.util.find_spec(parts[0])
    except (ImportError, ValueError):
        top = None
    beside = near / parts[0] if near is not None else None
    if top is None and beside is not None and (beside / "__init__.py").is_file():
        if len(parts) == 1:
            return _read(beside / "__init__.py", spec)
        folders = [beside]
    elif top is None:
        raise PorterError(f"module {parts[0]!r} is not installed; pip install it first", spec)
    elif len(parts) == 1:
        if top.origin is None or not top.origin.endswith(".py"):
            raise PorterError("module has no Python source file", spec)
        return _read(Path(top.origin), spec)
    else:
        folders = [Path(p) for p in (top.submodule_search_locations or [])]
    for depth, part in enumerate(parts[1:], start=2):
        last = depth == len(parts)
        found: Path | None = None
        for folder in folders:
            if (folder / part / "__init__.py").is_file():
                found = folder / part / "__init__.py"
            elif last and (folder / f"{part}.py").is_file():
                found = folder / f"{part}.py"
            if found:
                break
        if found is None:
            prefix = ".".join(parts[:depth])
            raise PorterError(f"module {prefix!r} not found in the installed packages", spec)
        if last:
            return _read(found, spec)
        folders = [found.parent]
    raise AssertionError("unreachable")
