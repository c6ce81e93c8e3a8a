"""The ``porter`` command line: ``porter port`` and ``porter convert-weights``."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from porter import __version__
from porter.errors import PorterError

log = logging.getLogger("porter")


def _cmd_convert_weights(args: argparse.Namespace) -> int:
    from porter.weights import convert_weights

    report = convert_weights(Path(args.src), Path(args.output), dtype=args.dtype)
    print(report.summary())
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="porter",
        description="Port PyTorch model source to MLX source that people can review.",
    )
    parser.add_argument("--version", action="version", version=f"porter {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    cw = sub.add_parser(
        "convert-weights",
        help="convert a PyTorch/diffusers checkpoint into one safetensors file for the MLX model",
        description=(
            "Convert a diffusers checkpoint folder (config.json with one *.safetensors file, or "
            "sharded files with their .index.json) or a single safetensors file into one "
            "safetensors file that the generated model loads with load_weights(strict=True).\n\n"
            "example: porter convert-weights ./zimage-transformer -o zimage.safetensors"
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
    cw.set_defaults(func=_cmd_convert_weights)
    return parser


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="porter: %(message)s", stream=sys.stderr)
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except PorterError as err:
        print(f"porter: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
