"""The whole port, one stage per line: locate -> parse -> rules -> templates -> format -> write.

Each stage lives in its own module; this one only strings them together.
"""

from __future__ import annotations

import ast
import keyword
from dataclasses import dataclass, field
from pathlib import Path

import libcst as cst

from porter import __version__, transitive
from porter.engine import PortContext, bound_names, discover_rules, run_rules
from porter.errors import PorterError
from porter.format import format_code
from porter.header import edited_by_hand, read_header, seal
from porter.locate import Source, locate
from porter.recipes import GoldenSpec
from porter.render import render, render_snippet, snippet_order
from porter.rules._table import symbol_table
from porter.write import write_files


@dataclass
class PortResult:
    source: Source
    ctx: PortContext
    files: dict[str, str]
    written: list[Path]
    # One context per library module ported transitively, in file order.
    library: list[PortContext] = field(default_factory=list)
    # Files an earlier run of the same command wrote that this port no longer generates.
    removed: list[Path] = field(default_factory=list)


def parse(source: Source) -> cst.Module:
    # Python's own parser gives the most precise line and message for a syntax error.
    try:
        compile(source.text, str(source.path), "exec", flags=ast.PyCF_ONLY_AST)
    except SyntaxError as err:
        where = f"{source.path}:{err.lineno or 1}"
        raise PorterError(f"syntax error: {err.msg}", where) from None
    try:
        return cst.parse_module(source.text)
    except cst.ParserSyntaxError as err:
        where = f"{source.path}:{err.raw_line}"
        message = str(err.message).splitlines()[0] if err.message else "syntax error"
        raise PorterError(f"syntax error: {message}", where) from None


def port(
    spec: str,
    outdir: Path,
    command: str,
    model_class: str | None = None,
    strict: bool = False,
    golden: GoldenSpec | None = None,
    force: bool = False,
    keep: list[str] | None = None,
) -> PortResult:
    """Port ``spec`` into ``outdir``. With ``strict``, nothing is written if anything is left
    unported. With ``golden`` (a recipe's cases), the package gets a golden test too. A file
    in ``outdir`` that porter did not write, that another port wrote, or that was edited
    since, is only overwritten with ``force``; a source file never is. Files an earlier run of
    ``command`` wrote that this port no longer generates are removed. With ``keep`` (a
    recipe's), only those top-level names of the source and what they use are ported."""
    if outdir.exists() and not outdir.is_dir():
        raise PorterError("output path is a file, not a folder", str(outdir))
    source = locate(spec)
    files, ctx, library = generate(source, command, model_class, golden, keep)
    if strict and any(c.findings for c in [ctx, *library]):
        return PortResult(source, ctx, files, [], library)
    refuse_to_overwrite_sources(outdir, files, [source.path, *(c.source.path for c in library)])
    if not force:
        refuse_to_clobber(outdir, files, command)
    stale = stale_files(outdir, files, command, force)
    written = write_files(outdir, files)
    for path in stale:
        path.unlink(missing_ok=True)
    return PortResult(source, ctx, files, written, library, stale)


def generate(
    source: Source,
    command: str,
    model_class: str | None = None,
    golden: GoldenSpec | None = None,
    keep: list[str] | None = None,
) -> tuple[dict[str, str], PortContext, list[PortContext]]:
    """Every file of the port, in memory: the model, the library code it needs, support,
    weights, package and golden test; with the contexts the rules reported through."""
    module, ctx = rewrite(source, keep)
    files = render_files(source, module, ctx, command, model_class, golden, ctx.library)
    return files, ctx, [c for _, c in ctx.library]


def refuse_to_overwrite_sources(outdir: Path, files: dict[str, str], sources: list[Path]) -> None:
    """Raise if an output path is one of the files being ported (``--force`` or not)."""
    protected = {path.resolve() for path in sources}
    for name in files:
        if (outdir / name).resolve() in protected:
            raise PorterError(
                "this output would overwrite the source being ported; pick another -o folder",
                str(outdir / name),
            )


def refuse_to_clobber(outdir: Path, files: dict[str, str], command: str) -> None:
    """Raise if writing ``files`` would replace a hand-edited or foreign file in ``outdir``, or
    one that another port (a different recorded command) wrote."""
    for name in files:
        target = outdir / name
        if not target.is_file():
            continue
        text = target.read_text(encoding="utf-8", errors="replace")
        header = read_header(text)
        if header is None:
            why = "exists and was not written by porter"
        elif header.command != command:
            why = f"was written by another port (`{header.command}`)"
        elif edited_by_hand(text):
            why = "was edited by hand since porter wrote it (its content hash does not match)"
        else:
            continue
        raise PorterError(f"{why}; not overwriting it (pass --force to overwrite)", str(target))


def stale_files(outdir: Path, files: dict[str, str], command: str, force: bool) -> list[Path]:
    """Files in ``outdir`` that ``command`` wrote earlier but no longer generates: sealed and
    intact, or with ``force`` also edited by hand since."""
    if not outdir.is_dir():
        return []
    stale = []
    for path in sorted(outdir.glob("*.py")):
        if path.name in files or not path.is_file():
            continue
        text = path.read_text(encoding="utf-8", errors="replace")
        header = read_header(text)
        ours = header is not None and header.command == command
        if ours and (force or not edited_by_hand(text)):
            stale.append(path)
    return stale


def rewrite(source: Source, keep: list[str] | None = None) -> tuple[cst.Module, PortContext]:
    """Parse and run every rule in order: the rewritten tree and what the rules reported.

    Library names the source uses that no symbol mapping covers are planned for transitive
    porting first (``ctx.plan``), so the rules treat them as ported. With ``keep``, the source
    is first pruned to those top-level names and the definitions they use.
    """
    module = parse(source)
    ctx = PortContext(source)
    kept = transitive.keep_closure(source, keep) if keep else None
    if kept is not None:
        ctx.record_source(module)  # lines and names of the whole source, as for library code
        module = transitive.prune(module, kept)
    ctx.plan = transitive.plan(source, symbol_table(), _stem(source), kept)
    ctx.transitive = dict(ctx.plan.targets)
    for name, stem in ctx.transitive.items():
        ctx.resolutions[name] = ("ported transitively", f"{stem}.py", "its source, ported")
    # Library modules first: what they return (complex tables) informs the model's rules.
    ctx.library = [rewrite_library(lib, ctx) for lib in ctx.plan.ordered()]
    return run_rules(module, ctx, discover_rules()), ctx


def rewrite_library(
    lib: transitive.LibraryModule, main: PortContext
) -> tuple[cst.Module, PortContext]:
    """One library module, pruned to the definitions the port needs, through the rules."""
    module = parse(lib.source)
    ctx = PortContext(lib.source)
    ctx.transitive = main.transitive
    ctx.complex_returns = main.complex_returns  # shared: each module adds what it returns
    ctx.record_source(module)
    pruned = transitive.prune(module, lib.keep)
    # Only what the port keeps can clash with a support name (diffusers' own Attention class
    # is pruned when the support Attention stands for it).
    ctx.bound = bound_names(ast.parse(pruned.code))
    for snippet, name in lib.support:
        ctx.need(snippet, name)
    return run_rules(pruned, ctx, discover_rules()), ctx


# Names of the files porter adds beside the model module; a model module never takes one.
_OWN_STEMS = {"support", "weights", "__init__"}


def _stem(source: Source) -> str:
    """The name of the generated model module: the source's file name (its package's for an
    ``__init__.py``), made a valid identifier that none of porter's own files use.

    ``my-model.py`` gives ``my_model``, ``1mlp.py`` ``_1mlp``, ``class.py`` ``_class`` and
    ``support.py`` ``support_model``.
    """
    raw = source.path.stem if source.path.name != "__init__.py" else source.path.parent.name
    stem = "".join(c if f"_{c}".isidentifier() else "_" for c in raw) or "_"
    if stem[0].isdigit() or keyword.iskeyword(stem):
        stem = f"_{stem}"
    if stem in _OWN_STEMS or stem.startswith("test_golden_"):
        stem = f"{stem}_model"
    return stem


def render_files(
    source: Source,
    module: cst.Module,
    ctx: PortContext,
    command: str,
    model_class: str | None,
    golden: GoldenSpec | None = None,
    library: list[tuple[cst.Module, PortContext]] | None = None,
) -> dict[str, str]:
    stem = _stem(source)
    header = {"version": __version__, "source": source.display, "sha256": source.sha256}
    header["command"] = command
    exports = _public_names(module)
    model = model_class or next((n for n in reversed(exports) if n[:1].isupper()), None)
    files = {f"{stem}.py": render("module.py.j2", code=module.code, **header)}
    support = set(ctx.support)
    # One layout plan per port: the model's conv rows, then those of the library modules.
    layout_plan = list(ctx.layout_plan)
    for lib_module, lib_ctx in library or []:
        layout_plan += [row for row in lib_ctx.layout_plan if row not in layout_plan]
        lib_stem = ctx.plan.modules[lib_ctx.source.module].stem
        files[f"{lib_stem}.py"] = render(
            "module.py.j2",
            code=lib_module.code,
            version=__version__,
            source=lib_ctx.source.display,
            sha256=lib_ctx.source.sha256,
            command=command,
        )
        support |= set(lib_ctx.support)
    snippets = [render_snippet(s) for s in snippet_order(support)]
    files["support.py"] = render("support.py.j2", snippets=snippets, module=stem, **header)
    config = _config_class(module, model, ctx, stem) if model else None
    if model is not None:
        files["weights.py"] = render(
            "weights.py.j2",
            module=stem,
            model_class=model,
            config_class=config,
            layout_plan=repr(layout_plan),
            **header,
        )
        files["__init__.py"] = render("package_init.py.j2", module=stem, exports=exports, **header)
    if model is not None and golden is not None:
        files[f"test_golden_{stem}.py"] = render(
            "golden_test.py.j2",
            torch_module=source.module,
            model_class=model,
            module=stem,
            config_class=config[1] if config else None,
            rel=golden.rel,
            tolerance=golden.tolerance,
            cases=golden.cases,
            **header,
        )
    return {name: seal(format_code(text, name)) for name, text in files.items()}


def _config_class(
    module: cst.Module, model: str, ctx: PortContext, stem: str
) -> tuple[str, str] | None:
    """(module stem, class name) of the config object ``model`` is built from, or None when
    it takes keyword arguments.

    A model whose ``__init__`` takes one parameter, ``config``, annotated with a class
    (transformers' ``def __init__(self, config: LlamaConfig)``) is built from that class; it
    is defined in the model module or ported beside it.
    """
    for stmt in module.body:
        if not isinstance(stmt, cst.ClassDef) or stmt.name.value != model:
            continue
        for item in stmt.body.body:
            if not isinstance(item, cst.FunctionDef) or item.name.value != "__init__":
                continue
            params = item.params
            if len(params.params) != 2 or params.kwonly_params or params.star_kwarg:
                return None
            config = params.params[1]
            if config.name.value != "config" or config.annotation is None:
                return None
            hint = config.annotation.annotation
            if not isinstance(hint, cst.Name):
                return None
            if hint.value in _public_names(module):
                return stem, hint.value
            for name, lib_stem in ctx.transitive.items():
                if name.rpartition(".")[2] == hint.value:
                    return lib_stem, hint.value
    return None


def _public_names(module: cst.Module) -> list[str]:
    names = []
    for stmt in module.body:
        if isinstance(stmt, (cst.ClassDef, cst.FunctionDef)) and not stmt.name.value.startswith(
            "_"
        ):
            names.append(stmt.name.value)
    return names
