"""`jaxcalc export DIR`: write the golden vectors, atomically and deterministically."""

from __future__ import annotations

import argparse
import json
import sys
import time


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "export",
        help="write the golden vectors (inputs, probes, value, VJP, JVP, HVP, Jacobian) for every case",
        description="Compute every case in float64 (matmul precision highest) by JAX autodiff, check the "
        "handwritten derivatives against it, measure float32 tolerances, and write DIR/manifest.json, "
        "DIR/cases/<name>.json and DIR/cases/<name>.npz atomically. Example: jaxcalc export golden/",
    )
    p.add_argument("dir", metavar="DIR", help="destination directory (must not exist unless --force)")
    p.add_argument("--cases", nargs="+", metavar="NAME", help="export only these cases (default: all)")
    p.add_argument("--force", action="store_true", help="replace an existing golden set at DIR")
    p.add_argument("--json", action="store_true", help="print a machine-readable summary instead of a table")
    p.set_defaults(func=run, x64=True)


def run(args: argparse.Namespace) -> int:
    from jaxcalc.cli import UsageError
    from jaxcalc.cli._common import select_cases
    from jaxcalc.oracle.export import ExportError, export_golden
    from jaxcalc.oracle.reference import DisagreementError, Reference

    cases = select_cases(args.cases)
    start = time.perf_counter()
    shown = []

    def show(r: Reference) -> None:
        if not args.json:
            if not shown:  # the header waits for the first case: a refused DIR prints one line only
                print(f"{'case':24} {'output':>10} {'hand vs auto':>13} {'f32 error':>10} {'f32 tol':>8}")
            shown.append(r.case.name)
            shape = str(tuple(r.value.shape)).replace(" ", "")
            print(
                f"{r.case.name:24} {shape:>10} {r.handwritten_error:13.2e} {r.float32_error:10.2e} "
                f"{r.float32_tolerance:8.1e}",
                flush=True,
            )

    try:
        manifest = export_golden(args.dir, cases, force=args.force, progress=show)
    except ExportError as exc:
        raise UsageError(str(exc)) from None
    except DisagreementError as exc:
        print(f"error: {exc}; nothing written", file=sys.stderr)
        return 1
    except OSError as exc:
        raise UsageError(f"cannot write {args.dir}: {exc.strerror or exc}") from None
    elapsed = time.perf_counter() - start
    if args.json:
        summary = {
            "dir": args.dir,
            "producer": manifest["producer"],
            "seconds": round(elapsed, 3),
            "cases": {
                e["name"]: {
                    "float64_tolerance": e["tolerances"]["float64"]["tolerance"],
                    "float32_tolerance": e["tolerances"]["float32"]["tolerance"],
                    "float32_measured_error": e["tolerances"]["float32"]["measured_error"],
                    "handwritten_vs_autodiff": e["tolerances"]["float64"]["measured_error"],
                    "files": e["files"],
                }
                for e in manifest["cases"]
            },
        }
        print(json.dumps(summary, indent=2, sort_keys=True))
    else:
        p = manifest["producer"]
        print(
            f"wrote {len(manifest['cases'])} cases to {args.dir} in {elapsed:.1f} s "
            f"(jax {p['jax']}, {p['backend']}, float64, matmul {p['matmul_precision']})"
        )
    return 0
