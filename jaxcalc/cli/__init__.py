"""The ``jaxcalc`` command line: argument parsing and printing only; the work lives in the library.

Each subcommand is a module in this package with ``register(subparsers)``, which adds
its parser and sets ``func=run`` (and ``x64=True`` when it computes references in
float64), and ``run(args) -> int``; keep heavy imports inside ``run``. Exit codes: 0 ok, 1 a check
failed, 2 a usage or input error (one line, no traceback).
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

__all__ = ["main", "UsageError", "build_parser", "COMMANDS"]

COMMANDS = ("demo", "descent", "cases", "check", "export", "verify", "train", "bench", "plot")


class UsageError(Exception):
    """A user's mistake: printed as one line and exit status 2."""


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors and exit status 2."""

    def error(self, message: str):  # noqa: D401 - argparse API
        raise UsageError(f"{self.prog}: {message}")


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser with every subcommand registered."""
    parser = _Parser(
        prog="jaxcalc",
        description="The calculus that makes neural networks learn, checked three ways "
        "(handwritten, JAX autodiff, finite differences).",
    )
    from jaxcalc import __version__

    parser.add_argument("--version", action="version", version=f"jaxcalc {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for name in COMMANDS:
        importlib.import_module(f"jaxcalc.cli.{name}").register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``jaxcalc`` console script."""
    try:
        parser = build_parser()
        args = parser.parse_args(argv)
        if not getattr(args, "func", None):
            parser.print_help()
            return 2
        if getattr(args, "x64", False):
            # Reference work is float64: x64 is on for this command only, scoped, so a caller
            # of main() keeps its own setting afterwards.
            import jax

            with jax.enable_x64(True):
                return int(args.func(args) or 0)
        return int(args.func(args) or 0)
    except UsageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0


if __name__ == "__main__":
    sys.exit(main())
