"""``jaxcalc check``: every check of DESIGN §4 on the catalogue, one row per case and check."""

from __future__ import annotations

import argparse
import sys
import time


def register(sub: argparse._SubParsersAction) -> None:
    from jaxcalc.cli._select import add_selectors
    from jaxcalc.numerics import FLOAT_DTYPES

    p = sub.add_parser(
        "check",
        help="check every derivative three ways",
        description="Run the checks (handwritten vs autodiff vs finite differences, Jacobians, "
        "dot-product identity, chain rule, HVP) on catalogue instances: cases at a size and input regime "
        "(default: the golden size, every regime). Exit 0 if all pass, 1 if a check failed, 2 on a usage "
        "error. Example: jaxcalc check softmax --sizes golden tiles --regimes large",
    )
    p.add_argument("names", nargs="*", metavar="NAME", help="cases or instance ids to check (default: all)")
    add_selectors(p, default_sizes=("golden",))
    p.add_argument(
        "--dtype",
        choices=FLOAT_DTYPES,
        default="float64",
        help="precision to check in (selects the tolerance column)",
    )
    p.add_argument("--fast", action="store_true", help="directional checks only (no full Jacobian/Hessian)")
    p.add_argument("--json", metavar="FILE", help="write the full report as JSON ('-' for stdout)")
    p.add_argument("--failures-only", action="store_true", help="print only rows that did not pass")
    p.set_defaults(func=run, x64=True)


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from jaxcalc.checks import Report
    from jaxcalc.checks.instances import check_instances
    from jaxcalc.cli._common import backend_info, write_json
    from jaxcalc.cli._select import select_instances

    if args.names:
        args.cases = [*args.names, *(args.cases or [])]
    todo = select_instances(args, ("golden",))
    info = backend_info()
    quiet = args.json == "-"
    out = sys.stderr if quiet else sys.stdout
    n_cases = len({i.case.name for i in todo})
    print(
        f"# backend {info['backend']} ({info['device']}), dtype {args.dtype}, {len(todo)} instances of "
        f"{n_cases} cases",
        file=out,
    )
    report = Report(())
    start = time.perf_counter()
    bar = tqdm(total=len(todo), unit="instance", disable=None, leave=False, file=sys.stderr)
    try:
        for inst, rep in check_instances(todo, dtype=args.dtype, mode="fast" if args.fast else "full"):
            bar.update(1)
            report = report + rep
            for r in rep.results:
                if not args.failures_only or not r.passed:
                    row, nl, diagnosis = r.line().partition("\n")  # the diagnosis stays under the row
                    if r.check in ("vjp", "fd_jvp") and not r.passed:
                        row += f"  {inst.describe_shapes()}"
                    tqdm.write(row + nl + diagnosis, file=out)
    finally:
        bar.close()
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
