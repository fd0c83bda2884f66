"""The ``morphface`` command line: ``morphface <subcommand> --help``.

Each subcommand lives in its own module of this package with a ``register(subparsers)`` function
that adds its parser and sets ``func`` (called with the parsed namespace; returns an exit code).
Heavy imports happen inside ``func`` so that ``morphface --help`` stays fast.

Errors: :func:`main` turns any error that reaches it into one line on stderr, ``morphface <command>:
error: <Type>: <message>``, and exit code 1 (2 for usage errors, from argparse; 130 after Ctrl-C).
Set ``MORPHFACE_TRACEBACK=1`` to see the full traceback instead (for bug reports).
"""

from __future__ import annotations

import argparse
import importlib
import sys

# Module names under morphface.cli, in the order they appear in --help.
SUBCOMMANDS = ["demo", "convert_model", "train", "fit", "frontalize", "reenact", "evaluate", "compare", "preprocess",
               "synth"]


def build_parser() -> argparse.ArgumentParser:
    from .. import __version__

    parser = argparse.ArgumentParser(prog="morphface", description="3D morphable face models in PyTorch.")
    parser.add_argument("--version", action="version", version=f"morphface {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in SUBCOMMANDS:
        importlib.import_module(f"{__name__}.{name}").register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    import os

    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print(f"\nmorphface {args.command}: interrupted", file=sys.stderr)
        return 130
    except Exception as e:
        if os.environ.get("MORPHFACE_TRACEBACK"):
            raise
        from ..errors import MorphfaceError

        kind = "" if isinstance(e, MorphfaceError) else f"{type(e).__name__}: "
        print(f"morphface {args.command}: error: {kind}{_first_lines(str(e))}", file=sys.stderr)
        return 1


def _first_lines(text: str, limit: int = 1000) -> str:
    """At most ``limit`` characters of a message, on one line."""
    text = " ".join(text.split())
    return text if len(text) <= limit else text[:limit] + " ..."


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
