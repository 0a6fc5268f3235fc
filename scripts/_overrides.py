"""Command-line overrides for the scripts in this folder: ``--name=value`` for any setting.

A script keeps its configuration at the top, one commented default per line, then calls
``apply(globals(), sys.argv[1:])``. A value is read as a Python literal and must keep the
default's type (an int is fine for a float; a string setting takes the text as it is).
``--help`` prints the script's docstring and its settings. A bad argument exits with one line
and status 2.
"""

import ast
import sys
from typing import Any

_TYPES = (bool, int, float, str)


def _fail(message: str) -> None:
    print(f"error: {message}", file=sys.stderr)
    sys.exit(2)


def apply(settings: dict[str, Any], argv: list[str]) -> None:
    """Override entries of ``settings`` (a script's globals) from ``--name=value`` arguments."""
    names = [k for k, v in settings.items() if not k.startswith("_") and type(v) in _TYPES]
    for arg in argv:
        if arg in ("-h", "--help"):
            print((settings.get("__doc__") or "").strip())
            print("\nsettings: " + ", ".join(f"--{k}={settings[k]!r}" for k in names))
            sys.exit(0)
        key, sep, text = arg.removeprefix("--").partition("=")
        if not arg.startswith("--") or not sep or key not in names:
            _fail(f"expected --name=value with name one of {', '.join(names)}; got {arg!r}")
        default = settings[key]
        if isinstance(default, str):
            settings[key] = text
            continue
        try:
            value = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            value = text
        if isinstance(default, float) and type(value) is int:
            value = float(value)
        if type(value) is not type(default):
            _fail(f"--{key} takes a {type(default).__name__} like {default!r}, got {text!r}")
        settings[key] = value
