"""`jaxcalc verify DIR (--impl MODULE | --cmd COMMAND)`: check an implementation against a golden set."""

from __future__ import annotations

import argparse
import math
import os
import shlex
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the CLI keeps heavy imports inside run()
    from jaxcalc.oracle.golden import GoldenSet
    from jaxcalc.oracle.protocol import Program
    from jaxcalc.oracle.verify import CaseResult


def _timeout(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"must be a positive number of seconds, got {text!r}")
    return value


def register(sub: argparse._SubParsersAction) -> None:
    from jaxcalc.cli._select import add_selectors
    from jaxcalc.numerics import FLOAT_DTYPES

    p = sub.add_parser(
        "verify",
        help="check another implementation's values and VJPs against a golden set",
        description="Send each golden instance's inputs and cotangent to an implementation and compare its "
        "value and VJPs element by element, with the instance's tolerance per output in the claimed dtype. "
        "Under float32, bfloat16 and float16 a reply must be computed in that dtype (its values exactly "
        "representable there). Examples: jaxcalc verify golden/ --impl examples/numpy_impl.py; "
        'jaxcalc verify golden/ --cmd "node impl.js" --dtype float32 --sizes golden',
    )
    p.add_argument("dir", metavar="DIR", help="a golden set written by 'jaxcalc export'")
    how = p.add_mutually_exclusive_group(required=True)
    how.add_argument(
        "--impl",
        metavar="MODULE",
        help="a Python module name or .py file defining one function per case: "
        "fn(inputs, cotangent) -> (value, {input: vjp})",
    )
    how.add_argument(
        "--cmd",
        metavar="COMMAND",
        help="a program speaking JSON Lines on stdin/stdout (split like a shell line, never run by one)",
    )
    p.add_argument(
        "--dtype",
        choices=FLOAT_DTYPES,
        default="float64",
        help="precision the implementation computes in; selects the tolerance column and, for bfloat16 and "
        "float16, the inputs rounded to it (default float64)",
    )
    add_selectors(p, default_sizes=("every size in DIR",), dims=False)
    p.add_argument(
        "--json",
        metavar="REPORT",
        help="also write the report as JSON to REPORT ('-': print only the JSON, no table)",
    )
    p.add_argument(
        "--timeout",
        type=_timeout,
        default=60.0,
        metavar="SECONDS",
        help="seconds to wait for each reply (default 60); a stall fails that case",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from jaxcalc.cli import UsageError
    from jaxcalc.oracle import verify as v
    from jaxcalc.oracle.golden import GoldenError, load_golden
    from jaxcalc.oracle.protocol import Program, StartError

    if args.json and args.json != "-" and not os.path.isdir(os.path.dirname(os.path.abspath(args.json))):
        raise UsageError(f"cannot write {args.json}: its directory does not exist")
    from jaxcalc.cli._select import filter_entries
    from jaxcalc.oracle.golden import _read_manifest

    try:
        manifest = _read_manifest(Path(args.dir))
        chosen = None
        if args.cases or args.sizes or args.regimes:
            chosen = filter_entries(manifest["instances"], args)
        golden = load_golden(args.dir, chosen)
    except GoldenError as exc:
        raise UsageError(str(exc)) from None
    try:
        if args.impl is not None:
            program = v.impl_program(args.impl, args.timeout)
            label = f"--impl {args.impl}"
        else:
            try:
                argv = shlex.split(args.cmd)
            except ValueError as exc:
                raise UsageError(f"--cmd: cannot split {args.cmd!r}: {exc}") from None
            if not argv:
                raise UsageError("--cmd: empty command")
            program = Program(argv, args.timeout)
            label = f"--cmd {args.cmd}"
        with program:
            program.start()
            results = _run(golden, program, args, label)
    except StartError as exc:
        raise UsageError(str(exc)) from None
    return 1 if any(r.verdict == "FAIL" for r in results) else 0


def _run(golden: GoldenSet, program: Program, args: argparse.Namespace, label: str) -> list[CaseResult]:
    """Verify every selected case, printing rows as they come; write the JSON report if asked."""
    from jaxcalc.cli._common import write_json
    from jaxcalc.oracle import verify as v

    quiet = args.json == "-"
    p = golden.manifest.get("producer", {})
    if not quiet:
        print(
            f"verifying {label} in {args.dtype} against {golden.root} ({len(golden.cases)} instances; "
            f"golden values from jax {p.get('jax', '?')} on {p.get('backend', '?')})"
        )
        print(v.table_header())
    results = []
    for r in v.verify_cases(golden, program, args.dtype):
        results.append(r)
        if not quiet:
            print("\n".join(v.format_result(r)), flush=True)
    line = v.summary_line(results)
    if args.json:
        report = {
            "golden": str(golden.root),
            "producer": p,
            "implementation": label,
            "dtype": args.dtype,
            "instances": [v.result_json(r) for r in results],
            "summary": line,
            "passed": sum(r.verdict == "pass" for r in results),
            "failed": sum(r.verdict == "FAIL" for r in results),
            "skipped": sum(r.verdict == "skip" for r in results),
        }
        if not quiet:
            print(line)
        write_json(args.json, report, allow_nan=False)
        return results
    if not quiet:
        print(line)
    return results
