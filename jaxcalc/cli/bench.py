"""`jaxcalc bench`: the jitted benchmarks, side by side, against the machine's measured limits."""

from __future__ import annotations

import argparse
import os
import sys


class _Help(argparse.HelpFormatter):
    """Lists the workload names under --only, read from the registry only when help is shown."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = super()._get_help_string(action) or ""
        if action.dest == "only":
            from jaxcalc.bench import WORKLOADS

            text += f" (of: {', '.join(WORKLOADS)}; default all)"
        return text


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "bench",
        formatter_class=_Help,
        help="jitted benchmarks side by side: descent, batched descent, MLP and transformer steps, gradcheck",
        description="Time jitted descent and backprop steps against pure Python, jax.grad and PyTorch eager, "
        "with compile time reported apart and every figure set against limits measured in the same process.",
    )
    p.add_argument(
        "--quick", action="store_true", help="small sizes and few repeats (under a minute on 2 CPUs)"
    )
    p.add_argument("--only", nargs="+", metavar="NAME", help="run only these workloads")
    p.add_argument("--json", metavar="FILE", help="also write every figure, with units, machine and versions")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from jaxcalc.bench import FULL, QUICK, format_report, run_bench, select
    from jaxcalc.cli import UsageError
    from jaxcalc.cli._common import write_json

    try:
        select(args.only)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    if args.json:
        parent = os.path.dirname(os.path.abspath(args.json))
        if not os.path.isdir(parent):
            raise UsageError(f"cannot write {args.json}: directory {parent} does not exist")
    command = "jaxcalc bench" + (" --quick" if args.quick else "")
    command += (" --only " + " ".join(args.only)) if args.only else ""
    report = run_bench(
        QUICK if args.quick else FULL,
        args.only,
        quick=args.quick,
        command=command,
        progress=lambda msg: print(f"[bench] {msg}", file=sys.stderr, flush=True),
    )
    print(format_report(report))
    if args.json:
        write_json(args.json, report.to_dict(), sort_keys=False)  # workloads in run order
        print(f"wrote {args.json}")
    return 0
