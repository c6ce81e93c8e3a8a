"""Transitive porting: library code a model uses, ported once into the generated package.

A model file imports names from elsewhere in its own library (diffusers'
``embeddings.apply_rotary_emb``, ``normalization.LuminaRMSNormZero``). A name that
``rules/symbols.toml`` neither maps nor drops is ported from its own source: porter finds the
module that defines it (following re-exports such as ``from .peft_utils import x`` in a package
``__init__``), keeps that definition and everything it needs from the same module, and follows
the library names those use in turn. Each library module with something kept becomes one
generated module beside the model (``embeddings.py``), holding only what is needed; the model
and the other generated modules import from it.

Planning reads the sources with ``ast``; nothing is imported or run.
"""

from __future__ import annotations

import ast
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import libcst as cst

from porter.engine import absolute_name
from porter.errors import PorterError
from porter.locate import Source, locate

_NEVER = {"torch", "numpy", "mlx", "porter"} | set(sys.stdlib_module_names)
# Only model code is ported: layers, embeddings, norms, activations. A library's loading,
# hub, quantisation, logging and parallelism machinery is not, so a name from there that
# rules/symbols.toml does not drop stays unported and says so.
_MODEL_CODE = ("diffusers.models.", "transformers.models.", "transformers.activations")
_NOT_MODEL_CODE = (
    "diffusers.models.modeling_utils",
    "diffusers.models.model_loading_utils",
    "diffusers.models.cache_utils",
    "diffusers.models._modeling_parallel",
    "diffusers.models.attention_dispatch",
    "transformers.modeling_utils",
)
# Generated file names a library module may not take.
_RESERVED = {"support", "weights", "__init__"}


@dataclass
class LibraryModule:
    """One library module and the top-level names the port keeps from it."""

    source: Source
    tree: ast.Module
    keep: set[str] = field(default_factory=set)
    stem: str = ""
    # (snippet, name) for the module's own definitions that symbols.toml maps to support code
    # (normalization.RMSNorm used by a norm defined beside it).
    support: list[tuple[str, str]] = field(default_factory=list)

    @property
    def module(self) -> str:
        return self.source.module


@dataclass
class Plan:
    """What to port transitively: qualified name -> the generated module stem that holds it."""

    modules: dict[str, LibraryModule] = field(default_factory=dict)
    targets: dict[str, str] = field(default_factory=dict)

    def ordered(self) -> list[LibraryModule]:
        return sorted(self.modules.values(), key=lambda m: m.stem)


def plan(
    main: Source, symbols: dict[str, Any], main_stem: str, keep: set[str] | None = None
) -> Plan:
    """Every library definition ``main`` needs, with the closure of what those need in turn.

    ``symbols`` are the qualified names rules/symbols.toml resolves; they are never ported.
    With ``keep`` (see `keep_closure`), only what those definitions use is followed.
    """
    root = main.module.split(".")[0]
    result = Plan()
    if "." not in main.module:  # a file outside any package has no library to follow
        return result
    _NEAR[0] = package_root(main)
    tree = ast.parse(main.text)
    if keep is not None:
        defs = _top_level(tree)
        tree.body = [s for s in tree.body if s not in defs.values() or _names_of(s, defs) & keep]
    work = [
        name
        for name in _used_imports(tree, main.package).values()
        if _portable(name, root, symbols)
    ]
    seen: set[str] = set()
    while work:
        name = work.pop()
        if name in seen:
            continue
        seen.add(name)
        found = _definition(name, root)
        if found is None or not _is_model_code(found[0].module):
            continue
        lib, local = found
        if f"{lib.module}.{local}" in symbols:
            continue
        lib = result.modules.setdefault(lib.module, lib)
        for needed in _closure(lib, local, symbols):
            work += [n for n in needed if _portable(n, root, symbols)]
        result.targets[name] = lib.module
    _name_files(result, main_stem)
    result.targets = {name: result.modules[mod].stem for name, mod in result.targets.items()}
    return result


def _portable(name: str, root: str, symbols: dict[str, Any]) -> bool:
    top = name.split(".")[0]
    return top == root and top not in _NEVER and name not in symbols


def _is_model_code(module: str) -> bool:
    """diffusers and transformers keep model code in known places; in any other package the
    whole package is model code."""
    if module.split(".")[0] not in ("diffusers", "transformers"):
        return True
    return module.startswith(_MODEL_CODE) and not module.startswith(_NOT_MODEL_CODE)


def _used_imports(tree: ast.Module, package: str) -> dict[str, str]:
    """Bound name -> absolute qualified name, for top-level imports whose name is used."""
    bound = import_bindings(tree, package)
    used = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name)}
    return {name: qn for name, qn in bound.items() if name in used}


def import_bindings(tree: ast.Module, package: str) -> dict[str, str]:
    """Module-level names ``tree`` binds by importing: local name -> absolute qualified name."""
    bound: dict[str, str] = {}
    for stmt in tree.body:
        if isinstance(stmt, ast.ImportFrom):
            base = "." * stmt.level + (stmt.module or "")
            for alias in stmt.names:
                if alias.name == "*":
                    continue
                dotted = f"{base}.{alias.name}" if stmt.module else base + alias.name
                bound[alias.asname or alias.name] = absolute_name(dotted, package)
        elif isinstance(stmt, ast.Import):
            for alias in stmt.names:
                if alias.asname:
                    bound[alias.asname] = alias.name
                else:
                    bound[alias.name.split(".")[0]] = alias.name.split(".")[0]
    return bound


_LOADED: dict[tuple[str, Path | None], LibraryModule | None] = {}
# The folder holding the package of the file being ported by path (see package_root).
_NEAR: list[Path | None] = [None]


def package_root(source: Source) -> Path | None:
    """The folder that holds ``source``'s top-level package, so modules beside it are found
    even when that package is not importable (a user's own project folder)."""
    if "." not in source.module:
        return None
    depth = source.module.count(".") + (1 if source.path.name == "__init__.py" else 0)
    parents = source.path.parents
    if depth >= len(parents):
        return None
    root = parents[depth]
    return root if (root / source.module.split(".")[0]).is_dir() else None


def _load(module: str) -> LibraryModule | None:
    key = (module, _NEAR[0])
    if key not in _LOADED:
        try:
            source = locate(module, near=_NEAR[0])
        except PorterError:
            _LOADED[key] = None
        else:
            _LOADED[key] = LibraryModule(source, ast.parse(source.text))
    found = _LOADED[key]
    # A fresh keep-set per port; the parsed source is shared.
    return LibraryModule(found.source, found.tree) if found else None


def _definition(name: str, root: str, hops: int = 8) -> tuple[LibraryModule, str] | None:
    """The module that defines ``name`` at top level, following re-exports."""
    module, _, local = name.rpartition(".")
    lib = _load(module) if module else None
    if lib is None or hops == 0:
        return None
    if local in _top_level(lib.tree):
        return lib, local
    reexport = import_bindings(lib.tree, lib.source.package).get(local)
    if reexport and reexport.split(".")[0] == root:
        return _definition(reexport, root, hops - 1)
    return None


def keep_closure(source: Source, names: list[str]) -> set[str]:
    """The top-level names of ``source`` that ``names`` need: themselves and, in turn, every
    top-level definition they use (base classes, helpers, constants)."""
    defs = _top_level(ast.parse(source.text))
    unknown = [name for name in names if name not in defs]
    if unknown:
        raise PorterError(f"the source defines no {', '.join(unknown)} to keep", str(source.path))
    keep: set[str] = set()
    stack = list(names)
    while stack:
        name = stack.pop()
        if name in keep:
            continue
        keep.add(name)
        used = {n.id for n in ast.walk(defs[name]) if isinstance(n, ast.Name)}
        stack += [u for u in used if u in defs and u not in keep]
    return keep


def _names_of(stmt: ast.stmt, defs: dict[str, ast.stmt]) -> set[str]:
    return {name for name, where in defs.items() if where is stmt}


def _top_level(tree: ast.Module) -> dict[str, ast.stmt]:
    defs: dict[str, ast.stmt] = {}
    for stmt in tree.body:
        if isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            defs[stmt.name] = stmt
        elif isinstance(stmt, ast.Assign):
            for target in stmt.targets:
                if isinstance(target, ast.Name):
                    defs[target.id] = stmt
        elif isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name):
            defs[stmt.target.id] = stmt
        elif isinstance(stmt, ast.If):  # `if is_torch_version(...): LayerNorm = nn.LayerNorm`
            for name in _defined_in(stmt.body + stmt.orelse):
                defs.setdefault(name, stmt)
    return defs


def _defined_in(body: list[ast.stmt]) -> set[str]:
    names: set[str] = set()
    for stmt in body:
        if isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(stmt.name)
        elif isinstance(stmt, ast.Assign):
            names |= {t.id for t in stmt.targets if isinstance(t, ast.Name)}
    return names


def _closure(lib: LibraryModule, name: str, symbols: dict[str, Any]) -> list[list[str]]:
    """Keep ``name`` and the module's own definitions it uses; returns the qualified names of
    the imports they use, one list per definition kept."""
    defs = _top_level(lib.tree)
    imports = import_bindings(lib.tree, lib.source.package)
    out = []
    stack = [name]
    while stack:
        local = stack.pop()
        if local in lib.keep or local not in defs:
            continue
        symbol = symbols.get(f"{lib.module}.{local}")
        if symbol is not None:
            if symbol.action == "support" and local == symbol.target.rpartition(".")[2]:
                entry = (symbol.target.rpartition(".")[0], local)
                if entry not in lib.support:
                    lib.support.append(entry)
            continue
        lib.keep.add(local)
        used = {n.id for n in ast.walk(defs[local]) if isinstance(n, ast.Name)}
        stack += [u for u in used if u in defs and u not in lib.keep]
        out.append([imports[u] for u in used if u in imports])
    return out


def _name_files(result: Plan, main_stem: str) -> None:
    """Each library module's generated file: its own name, or its package path on a clash."""
    taken = {main_stem, *_RESERVED}
    for lib in sorted(result.modules.values(), key=lambda m: m.module):
        stem = lib.module.rpartition(".")[2]
        if stem in taken:
            stem = lib.module.replace(".", "_")
        taken.add(stem)
        lib.stem = stem


def prune(module: cst.Module, keep: set[str]) -> cst.Module:
    """The module with only its imports, its docstring and the definitions in ``keep``."""
    body = []
    for i, stmt in enumerate(module.body):
        if isinstance(stmt, (cst.FunctionDef, cst.ClassDef)):
            if stmt.name.value in keep:
                body.append(stmt)
        elif isinstance(stmt, cst.SimpleStatementLine):
            small = stmt.body[0]
            is_import = isinstance(small, (cst.Import, cst.ImportFrom))
            is_docstring = (
                i == 0 and isinstance(small, cst.Expr) and isinstance(small.value, cst.SimpleString)
            )
            if is_import or is_docstring or _assigned(small) & keep:
                body.append(stmt)
        elif isinstance(stmt, cst.If) and _defined_in_if(stmt) & keep:
            body.append(stmt)
    return module.with_changes(body=body)


def _assigned(small: cst.BaseSmallStatement) -> set[str]:
    if isinstance(small, cst.Assign):
        return {t.target.value for t in small.targets if isinstance(t.target, cst.Name)}
    if isinstance(small, cst.AnnAssign) and isinstance(small.target, cst.Name):
        return {small.target.value}
    return set()


def _defined_in_if(stmt: cst.If) -> set[str]:
    parsed = ast.parse(cst.Module([]).code_for_node(stmt)).body[0]
    assert isinstance(parsed, ast.If)
    return _defined_in(parsed.body + parsed.orelse)
