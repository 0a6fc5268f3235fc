"""`jaxcalc train` (not built yet)."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="(not built yet)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from jaxcalc.cli import UsageError

    raise UsageError("'jaxcalc train' is not built yet")
