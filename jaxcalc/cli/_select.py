"""Instance selection shared by ``export``, ``check`` and ``verify``: --cases, --sizes, --regimes, --dims."""

from __future__ import annotations

import argparse
import difflib
from collections.abc import Sequence
from typing import Any

__all__ = ["add_selectors", "parse_dims", "select_instances", "filter_entries"]


def add_selectors(p: argparse.ArgumentParser, *, default_sizes: Sequence[str], dims: bool = True) -> None:
    """Add --cases, --sizes, --regimes (and --dims) to a subcommand's parser."""
    from jaxcalc.cases import REGIMES, SIZES

    p.add_argument(
        "--cases", nargs="+", metavar="NAME", help="case names or instance ids such as softmax@tiles~large "
        "(default: every case)"
    )
    p.add_argument(
        "--sizes", nargs="+", metavar="SIZE",
        help=f"sizes to include, of {', '.join(SIZES)} (default: {' '.join(default_sizes)}); 'large' is opt-in",
    )
    p.add_argument(
        "--regimes", nargs="+", metavar="REGIME",
        help=f"input regimes to include, of {', '.join(REGIMES)} (default: every regime a case declares)",
    )
    if dims:
        p.add_argument(
            "--dims", nargs="+", metavar="CASE.DIM=N", default=[],
            help="a size of your own, e.g. attention.Tq=113 attention.Tk=203 (other dims stay golden); "
            "'jaxcalc cases' lists each case's dims",
        )


def _usage(msg: str) -> Exception:
    from jaxcalc.cli import UsageError

    return UsageError(msg)


def _check_names(kind: str, given: Sequence[str] | None, valid: Sequence[str]) -> None:
    for g in given or ():
        if g not in valid:
            close = difflib.get_close_matches(g, valid, n=1)
            hint = f"; did you mean {close[0]}?" if close else ""
            raise _usage(f"unknown {kind} {g!r}{hint} (valid: {', '.join(valid)})")


def _case(name: str) -> Any:
    from jaxcalc.cases import UnknownCaseError, get_case

    try:
        return get_case(name)
    except UnknownCaseError as exc:
        raise _usage(str(exc)) from None


def parse_dims(items: Sequence[str]) -> dict[str, dict[str, int]]:
    """['attention.Tq=113', ...] -> {'attention': {'Tq': 113}}; malformed items raise UsageError."""
    out: dict[str, dict[str, int]] = {}
    for item in items:
        lhs, eq, rhs = item.partition("=")
        name, dot, dim = lhs.partition(".")
        if not (eq and dot and name and dim):
            raise _usage(f"--dims {item!r}: expected CASE.DIM=N, e.g. attention.Tq=113")
        try:
            n = int(rhs)
        except ValueError:
            raise _usage(f"--dims {item!r}: N must be a positive integer") from None
        if n < 1 or n > 2**31:
            raise _usage(f"--dims {item!r}: N must be between 1 and 2**31")
        out.setdefault(name, {})[dim] = n
    return out


def select_instances(args: argparse.Namespace, default_sizes: Sequence[str]) -> list[Any]:
    """The instances named by --cases/--sizes/--regimes/--dims, in catalogue order; UsageError
    (one line naming the valid choices) for an unknown name, size, regime or dim, and for dims
    too large for memory, before any work starts."""
    from jaxcalc.cases import REGIMES, REGISTRY, SIZES, SpecError, instance, parse_instance_id

    _check_names("size", args.sizes, SIZES)
    _check_names("regime", args.regimes, REGIMES)
    dims = parse_dims(getattr(args, "dims", None) or [])
    for name in dims:
        _case(name)
    sizes = list(args.sizes) if args.sizes else ([] if dims else list(default_sizes))
    regimes = args.regimes
    out, seen = [], set()

    def add(inst: Any) -> None:
        if inst.id not in seen:
            seen.add(inst.id)
            out.append(inst)

    try:
        if args.cases:
            picked = []
            for item in args.cases:
                if "@" in item or "~" in item:
                    name, size, regime, given = parse_instance_id(item)
                    add(instance(_case(name), size, regime, given))
                else:
                    picked.append(_case(item))
        else:
            picked = [] if dims else list(REGISTRY.values())
        for case in picked:
            for size in sizes:
                if size in case.sizes:
                    for regime in case.regime_names:
                        if regimes is None or regime in regimes:
                            add(instance(case, size, regime))
        for name, given in dims.items():
            case = _case(name)
            for regime in case.regime_names:
                if regimes is None or regime in regimes:
                    add(instance(case, "golden", regime, given))
    except SpecError as exc:
        raise _usage(str(exc)) from None
    if not out:
        raise _usage("the selection holds no instance (see 'jaxcalc cases' for each case's sizes and regimes)")
    return out


def filter_entries(entries: Sequence[dict], args: argparse.Namespace) -> list[str]:
    """The ids of golden-set manifest entries selected by --cases/--sizes/--regimes (verify)."""
    from jaxcalc.cases import REGIMES, SIZES

    _check_names("size", args.sizes, (*SIZES, "dims"))
    _check_names("regime", args.regimes, REGIMES)
    ids = [e["id"] for e in entries]
    names = {e["case"] for e in entries}
    chosen = []
    for item in args.cases or ():
        if item not in ids and item not in names:
            valid = sorted(names | set(ids))
            close = difflib.get_close_matches(item, valid, n=3, cutoff=0.5)
            hint = f"; did you mean {', '.join(close)}?" if close else ""
            raise _usage(f"{item!r} is neither a case nor an instance of this golden set{hint}")
    for e in entries:
        if args.cases and e["id"] not in args.cases and e["case"] not in args.cases:
            continue
        if args.sizes and e["size"] not in args.sizes:
            continue
        if args.regimes and e["regime"] not in args.regimes:
            continue
        chosen.append(e["id"])
    if not chosen:
        raise _usage("the selection holds no instance of this golden set")
    return chosen
