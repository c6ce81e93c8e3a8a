"""The ``porter`` command line: ``porter port`` and ``porter convert-weights``."""

from __future__ import annotations

import argparse
import logging
import re
import shlex
import sys
from pathlib import Path

from porter import __version__
from porter.errors import PorterError

log = logging.getLogger("porter")


def _cmd_convert_weights(args: argparse.Namespace) -> int:
    from porter.weights import convert_weights

    plan = read_layout_plan(Path(args.port)) if args.port else None
    report = convert_weights(Path(args.src), Path(args.output), dtype=args.dtype, plan=plan)
    print(report.summary())
    return 0


def read_layout_plan(port: Path) -> list:
    """The ``LAYOUT_PLAN`` a port's ``weights.py`` declares, read as a literal (not imported)."""
    import ast

    weights = port / "weights.py"
    try:
        tree = ast.parse(weights.read_text(encoding="utf-8"))
    except OSError as err:
        raise PorterError(
            f"cannot read the port's weights.py: {err.strerror}", str(weights)
        ) from None
    except SyntaxError as err:
        raise PorterError(f"syntax error: {err.msg}", f"{weights}:{err.lineno or 1}") from None
    for stmt in tree.body:
        target = getattr(stmt, "target", None) or (getattr(stmt, "targets", None) or [None])[0]
        if isinstance(target, ast.Name) and target.id == "LAYOUT_PLAN" and stmt.value is not None:
            try:
                return ast.literal_eval(stmt.value)
            except ValueError:
                raise PorterError(
                    "LAYOUT_PLAN is not a literal", f"{weights}:{stmt.lineno}"
                ) from None
    raise PorterError("no LAYOUT_PLAN here; is this a folder porter wrote?", str(weights))


def _cmd_port(args: argparse.Namespace) -> int:
    from porter.pipeline import port
    from porter.recipes import recipes
    from porter.report import build_report, write_report

    if args.output is not None and not args.output.strip():
        raise PorterError("-o: the output folder is empty; pass a folder")
    if args.report:
        check_report_path(Path(args.report))
    spec, outdir, model_class, golden, keep = args.source, args.output, None, None, None
    recipe = recipes().get(spec)
    if recipe is not None:
        spec, model_class, golden, keep = (
            recipe.source,
            recipe.model_class,
            recipe.golden,
            recipe.keep,
        )
        outdir = outdir or recipe.outdir
    else:
        check_source(spec)
    if outdir is None:
        raise PorterError("missing -o OUTDIR (only built-in recipes have a default)", args.source)
    command = shlex.join(
        ["porter", "port", args.source, *(["-o", args.output] if args.output else [])]
    )
    result = port(
        spec,
        Path(outdir),
        command=command,
        model_class=model_class,
        strict=args.strict,
        golden=golden,
        force=args.force,
        keep=keep,
    )
    for path in result.removed:
        print(f"porter: removed {path} (this port no longer generates it)", file=sys.stderr)
    report = build_report(result.source, result.ctx, result.written, result.library)
    if args.report:
        write_report(report, Path(args.report))
    print(report.short(), file=sys.stderr)
    if args.strict and report.unported:
        first = report.unported[0]
        more = len(report.unported) - 1
        print(
            f"porter: error: {first.file}:{first.line}: {first.reason}"
            + (f" (and {more} more)" if more else "")
            + "; --strict: nothing written",
            file=sys.stderr,
        )
        return 1
    return 0


def check_source(spec: str) -> None:
    """Raise the locate error for a SOURCE that is no file or module; a bare name that is
    neither gets the list of recipes, since it is most likely a mistyped recipe."""
    from porter.locate import locate

    try:
        locate(spec)
    except PorterError:
        if re.fullmatch(r"[\w-]+", spec) and not Path(spec).exists():
            raise PorterError(
                f"unknown recipe or module {spec!r}; recipes: {recipe_names()}"
            ) from None
        raise


def recipe_names(golden_only: bool = False) -> str:
    """The built-in recipes, in ``recipes.toml`` order, for help texts and errors."""
    from porter.recipes import recipes

    return ", ".join(name for name, recipe in recipes().items() if recipe.golden or not golden_only)


def interrupted(err: BaseException) -> bool:
    """Whether ``err`` is a KeyboardInterrupt or was raised while handling one (LibCST turns
    an interrupt during metadata resolution into a KeyError whose context is the interrupt)."""
    seen: set[int] = set()
    pending: list[BaseException | None] = [err]
    while pending:
        current = pending.pop()
        if current is None or id(current) in seen:
            continue
        if isinstance(current, KeyboardInterrupt):
            return True
        seen.add(id(current))
        pending += [current.__cause__, current.__context__]
    return False


def check_report_path(path: Path) -> None:
    """Raise unless ``--report`` names a .md or .json file in an existing folder."""
    if path.suffix not in (".md", ".markdown", ".json"):
        raise PorterError("--report wants a .md or .json file", str(path))
    if path.is_dir():
        raise PorterError("--report: is a folder, not a file", str(path))
    if not path.parent.is_dir():
        raise PorterError("--report: no such folder", str(path.parent))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="porter",
        description="Port PyTorch model source to MLX source that people can review.",
    )
    parser.add_argument("--version", action="version", version=f"porter {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    pp = sub.add_parser(
        "port",
        help="port a PyTorch model file to MLX",
        description=(
            "Port SOURCE (a .py path, a dotted module name located without importing it, or a "
            "built-in recipe such as z-image) to MLX code in OUTDIR.\n\n"
            "examples:\n"
            "  porter port z-image\n"
            "  porter port diffusers.models.transformers.transformer_z_image -o out/z_image\n"
            "  porter port ./my_model.py -o out/my_model --strict --report report.json"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    pp.add_argument(
        "source", help=f"a .py path, a dotted module name, or a recipe ({recipe_names()})"
    )
    pp.add_argument("-o", "--output", help="output folder (default for recipes: their folder)")
    pp.add_argument(
        "--strict", action="store_true", help="exit 1 if any construct is left unported"
    )
    pp.add_argument(
        "--force",
        action="store_true",
        help=(
            "overwrite files in OUTDIR that were edited by hand, written by another port, or "
            "not written by porter"
        ),
    )
    pp.add_argument(
        "--report",
        metavar="FILE",
        help="also write the port report as Markdown (FILE.md) or JSON (FILE.json)",
    )
    pp.set_defaults(func=_cmd_port)

    cw = sub.add_parser(
        "convert-weights",
        help="convert a PyTorch/diffusers checkpoint into one safetensors file for the MLX model",
        description=(
            "Convert a diffusers checkpoint folder (config.json with one *.safetensors file, or "
            "sharded files with their .index.json) or a single safetensors file into one "
            "safetensors file that the generated model loads with load_weights(strict=True).\n\n"
            "examples:\n"
            "  porter convert-weights ./zimage-transformer -o zimage.safetensors\n"
            "  porter convert-weights ./sd3-transformer -o sd3.safetensors --port generated/sd3"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    cw.add_argument("src", help="checkpoint folder or .safetensors file")
    cw.add_argument("-o", "--output", required=True, help="output .safetensors path")
    cw.add_argument(
        "--dtype",
        choices=["keep", "float32", "bfloat16", "float16"],
        default="keep",
        help="cast floating-point weights (default: keep the checkpoint's dtype)",
    )
    cw.add_argument(
        "--port",
        metavar="DIR",
        help="apply the LAYOUT_PLAN of the port in DIR (convolution weights to MLX's layout)",
    )
    cw.set_defaults(func=_cmd_convert_weights)

    from porter.check import add_parser as add_check

    add_check(sub)
    from porter.bisect import add_parser as add_bisect

    add_bisect(sub)
    from porter.diff import add_parser as add_diff

    add_diff(sub)
    from porter.coverage import add_parser as add_coverage

    add_coverage(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run one porter command; bad input is one ``porter: error:`` line and exit status 2."""
    logging.basicConfig(level=logging.WARNING, format="porter: %(message)s", stream=sys.stderr)
    try:
        args = build_parser().parse_args(argv)
        return args.func(args)
    except (KeyboardInterrupt, Exception) as err:
        if interrupted(err):
            print("porter: interrupted", file=sys.stderr)
            return 130
        if isinstance(err, PorterError):
            print(f"porter: error: {err}", file=sys.stderr)
            return 2
        raise


if __name__ == "__main__":
    sys.exit(main())
