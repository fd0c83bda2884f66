"""The ``morphface`` command line: ``morphface <subcommand> --help``.

Each subcommand lives in its own module of this package with a ``register(subparsers)`` function
that adds its parser and sets ``func`` (called with the parsed namespace; returns an exit code).
Heavy imports happen inside ``func`` so that ``morphface --help`` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import sys

# Module names under morphface.cli, in the order they appear in --help.
SUBCOMMANDS = ["demo", "convert_model", "train", "fit", "frontalize", "reenact", "evaluate", "preprocess", "synth"]


def build_parser() -> argparse.ArgumentParser:
    from .. import __version__

    parser = argparse.ArgumentParser(prog="morphface", description="3D morphable face models in PyTorch.")
    parser.add_argument("--version", action="version", version=f"morphface {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in SUBCOMMANDS:
        importlib.import_module(f"{__name__}.{name}").register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    return int(args.func(args) or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
