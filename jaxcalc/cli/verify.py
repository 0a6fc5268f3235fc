"""`jaxcalc verify DIR (--impl MODULE | --cmd COMMAND)`: check an implementation against a golden set."""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the CLI keeps heavy imports inside run()
    from jaxcalc.oracle.golden import GoldenSet
    from jaxcalc.oracle.verifier import CaseResult


def _timeout(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    from jaxcalc.oracle.safety import MAX_TIMEOUT

    if not (math.isfinite(value) and 0 < value <= MAX_TIMEOUT):
        msg = f"must be a positive number of seconds, at most {MAX_TIMEOUT:g}, got {text!r}"
        raise argparse.ArgumentTypeError(msg)
    return value


SCHEMAS = Path(__file__).resolve().parents[1] / "schemas"


def doc_path(name: str) -> str:
    """Where the document ``name`` is: installed with the package, or in a source checkout's docs/."""
    package = Path(__file__).resolve().parents[1]
    for path in (package / "docs" / name, package.parent / "docs" / name):
        if path.is_file():
            return str(path)
    return f"docs/{name}"


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
        epilog=f"Both protocols, every request and reply field and the reply's dtype rules: "
        f"{doc_path('protocol.md')}. The golden set's format: {doc_path('golden-format.md')}. JSON "
        f"Schemas of manifests, case files, requests and replies: {SCHEMAS}.",
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
    from jaxcalc import oracle
    from jaxcalc.cli import UsageError
    from jaxcalc.cli._common import write_json
    from jaxcalc.oracle import verifier as v
    from jaxcalc.oracle.safety import check_writable

    if args.json and (problem := check_writable(args.json)):
        raise UsageError(problem)
    quiet = args.json == "-"
    label = f"--impl {args.impl}" if args.impl is not None else f"--cmd {args.cmd}"

    def start(golden: GoldenSet) -> None:
        if not quiet:
            p = golden.manifest.get("producer", {})
            print(
                f"verifying {label} in {args.dtype} against {golden.root} ({len(golden.cases)} instances; "
                f"golden values from jax {p.get('jax', '?')} on {p.get('backend', '?')})"
            )
            print(v.table_header())

    def row(r: CaseResult) -> None:
        if not quiet:
            print("\n".join(v.format_result(r)), flush=True)

    try:
        report = oracle.verify(
            args.dir,
            impl=args.impl,
            cmd=args.cmd,
            dtype=args.dtype,
            cases=args.cases,
            sizes=args.sizes,
            regimes=args.regimes,
            timeout=args.timeout,
            on_start=start,
            on_result=row,
        )
    except (oracle.GoldenError, oracle.StartError) as exc:
        raise UsageError(str(exc)) from None
    if not quiet:
        for text in report.stages.values():
            print(text)
        print(report.summary)
    if args.json:
        write_json(args.json, report.to_json(), allow_nan=False)
    if not report.passed and not report.failed:
        # Nothing was checked: under CI a broken adapter must not read as a pass.
        print(f"error: nothing was verified: all {len(report.results)} cases were skipped", file=sys.stderr)
        return 1
    return 0 if report.ok else 1
