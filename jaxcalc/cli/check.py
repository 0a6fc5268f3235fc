"""``jaxcalc check``: every check of DESIGN §4 on the catalogue, one row per case and check."""

from __future__ import annotations

import argparse
import sys
import time


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "check",
        help="check every derivative three ways",
        description="Run the checks (handwritten vs autodiff vs finite differences, Jacobians, "
        "dot-product identity, chain rule, HVP) on catalogue cases. Exit 0 if all pass, 1 if a "
        "check failed, 2 on a usage error.",
    )
    p.add_argument("names", nargs="*", metavar="NAME", help="cases to check (default: all)")
    p.add_argument(
        "--dtype",
        choices=("float64", "float32"),
        default="float64",
        help="precision to check in (selects the tolerance column)",
    )
    p.add_argument("--fast", action="store_true", help="directional checks only (no full Jacobian/Hessian)")
    p.add_argument("--json", metavar="FILE", help="write the full report as JSON ('-' for stdout)")
    p.add_argument("--failures-only", action="store_true", help="print only rows that did not pass")
    p.set_defaults(func=run, x64=True)


def run(args: argparse.Namespace) -> int:
    from jaxcalc.checks import Report, check_cases
    from jaxcalc.cli._common import backend_info, select_cases, write_json

    cases = select_cases(args.names)
    info = backend_info()
    quiet = args.json == "-"
    out = sys.stderr if quiet else sys.stdout
    print(f"# backend {info['backend']} ({info['device']}), dtype {args.dtype}, {len(cases)} cases", file=out)
    report = Report(())
    start = time.perf_counter()
    for _case, rep in check_cases(cases, dtype=args.dtype, mode="fast" if args.fast else "full"):
        report = report + rep
        for r in rep.results:
            if not args.failures_only or not r.passed:
                print(r.line(), file=out, flush=True)
    elapsed = time.perf_counter() - start
    print(f"# {elapsed:.1f} s", file=out)
    print(report.summary(), file=out)
    if args.json:
        write_json(
            args.json,
            {
                "machine": info,
                "dtype": args.dtype,
                "mode": "fast" if args.fast else "full",
                "seconds": elapsed,
                "summary": report.counts(),
                "results": [r.to_dict() for r in report.results],
            },
        )
    return 0 if report.passed else 1
