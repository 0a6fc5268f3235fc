"""Instance selection shared by ``export``, ``check`` and ``verify``: --cases, --sizes, --regimes, --dims."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import Any

__all__ = ["add_selectors", "select_instances"]


def add_selectors(p: argparse.ArgumentParser, *, default_sizes: Sequence[str], dims: bool = True) -> None:
    """Add --cases, --sizes, --regimes (and --dims) to a subcommand's parser."""
    from jaxcalc.cases import REGIMES, SIZES

    p.add_argument(
        "--cases",
        nargs="+",
        metavar="NAME",
        help="case names or instance ids such as softmax@tiles~large (default: every case)",
    )
    p.add_argument(
        "--sizes",
        nargs="+",
        metavar="SIZE",
        help=f"sizes to include, of {', '.join(SIZES)} (default: {' '.join(default_sizes)}); "
        "'large' is opt-in",
    )
    p.add_argument(
        "--regimes",
        nargs="+",
        metavar="REGIME",
        help=f"input regimes to include, of {', '.join(REGIMES)} (default: every regime a case declares)",
    )
    if dims:
        p.add_argument(
            "--dims",
            nargs="+",
            metavar="CASE.DIM=N",
            default=[],
            help="a size of your own, e.g. attention.Tq=113 attention.Tk=203 (other dims stay golden); "
            "'jaxcalc cases' lists each case's dims",
        )


def select_instances(
    args: argparse.Namespace, default_sizes: Sequence[str], *, stages: bool = False
) -> list[Any]:
    """The instances named by --cases/--sizes/--regimes/--dims (:func:`jaxcalc.cases.select_instances`);
    a bad selection is a UsageError (one line naming the valid choices), before any work starts."""
    from jaxcalc.cases import SpecError
    from jaxcalc.cases import select_instances as select
    from jaxcalc.cli import UsageError

    try:
        return select(
            cases=args.cases,
            sizes=args.sizes,
            regimes=args.regimes,
            dims=getattr(args, "dims", None) or None,
            default_sizes=default_sizes,
            stages=stages,
        )
    except SpecError as exc:
        raise UsageError(str(exc)) from None
