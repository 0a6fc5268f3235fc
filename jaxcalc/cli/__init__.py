"""The ``jaxcalc`` command line: argument parsing and printing only; the work lives in the library.

Each subcommand is a module in this package with ``register(subparsers)``, which adds
its parser and sets ``func=run`` (and ``x64=True`` when it computes references in
float64), and ``run(args) -> int``; keep heavy imports inside ``run``. Exit codes: 0 ok, 1 a check
failed, 2 a usage or input error (one line, no traceback).
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import importlib
import os
import re
import signal
import sys
from collections.abc import Iterator, Sequence

__all__ = ["main", "UsageError", "Terminated", "build_parser", "COMMANDS"]

COMMANDS = ("demo", "descent", "cases", "check", "export", "verify", "train", "bench", "plot")


class UsageError(Exception):
    """A user's mistake: printed as one line and exit status 2."""


class Terminated(BaseException):
    """SIGTERM arrived: unwinds like KeyboardInterrupt, so every ``with``/``finally`` cleans up
    (an implementation under ``verify`` and all it started are killed, temporaries removed)."""


# Any number, with exponent and sign, is a value, so `--x0 -1e3` works (argparse's own pattern
# only knows -1 and -1.5); no jaxcalc option name looks like a number.
_NEGATIVE_NUMBER = re.compile(
    r"^-(?:\d[\d_]*(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?$|^-(?:inf|infinity|nan)$", re.IGNORECASE
)


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors, exit status 2, and negative numbers taken as values."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._negative_number_matcher = _NEGATIVE_NUMBER

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


@contextlib.contextmanager
def _sigterm_raises() -> Iterator[None]:
    """While a command runs, SIGTERM raises Terminated (restoring the old handler after)."""
    try:
        previous = signal.signal(signal.SIGTERM, _on_sigterm)
    except ValueError:  # not the main thread: leave signals alone
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _on_sigterm(signum: int, frame: object) -> None:
    raise Terminated


def _say(line: str) -> None:
    """Print one error line to stderr, even if stderr itself is gone."""
    with contextlib.suppress(OSError, ValueError):
        print(line, file=sys.stderr, flush=True)


def _silence_stdout() -> None:
    """Point stdout at /dev/null, so the interpreter's final flush cannot fail a second time."""
    with contextlib.suppress(OSError, ValueError, AttributeError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``jaxcalc`` console script.

    Exit status 0 ok, 1 a check failed, 2 a usage or input error, 130 interrupted (Ctrl-C),
    143 terminated (SIGTERM). Output that cannot be written (a closed pipe, a full disk)
    is an error too, never success: stdout must reach its reader for a report to count.
    """
    with contextlib.suppress(AttributeError, ValueError):
        sys.stdout.reconfigure(errors="backslashreplace")  # odd text is escaped, never a crash
        sys.stderr.reconfigure(errors="backslashreplace")
    try:
        with _sigterm_raises():
            rc = _dispatch(argv)
            sys.stdout.flush()  # surface a write error here, not at interpreter exit
            return rc
    except UsageError as exc:
        _say(f"error: {exc}")
        return 2
    except KeyboardInterrupt:
        _say("error: interrupted")
        return 130
    except Terminated:
        _say("error: terminated")
        return 143
    except BrokenPipeError:
        _silence_stdout()
        _say("error: output closed early (broken pipe); the report is incomplete")
        return 2
    except OSError as exc:
        if exc.errno not in (errno.ENOSPC, errno.EIO, errno.EDQUOT, errno.EBADF):
            raise
        _silence_stdout()
        _say(f"error: cannot write the output: {exc.strerror or exc}")
        return 2


def _dispatch(argv: Sequence[str] | None) -> int:
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


if __name__ == "__main__":
    sys.exit(main())
