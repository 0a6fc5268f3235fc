"""`jaxcalc export DIR`: write the golden vectors, atomically and deterministically."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    from jaxcalc.cli._select import add_selectors

    p = sub.add_parser(
        "export",
        help="write the golden vectors (inputs, probes, value, VJP, JVP, HVP, Jacobian) of every instance",
        description="Compute every instance (a case at a size and input regime) in float64 (matmul precision "
        "highest) by JAX autodiff, check the handwritten derivatives against it, measure the tolerance of "
        "every dtype column (float64, float32, bfloat16, float16) per output, and write DIR/manifest.json, "
        "DIR/cases/<id>.json and DIR/cases/<id>.npz atomically. The default holds the golden and tiles "
        "sizes in every regime that applies, and each composite's stages (<composite>.<stage>: an existing "
        "case at the composite's real intermediates). Example: jaxcalc export golden/",
    )
    p.add_argument("dir", metavar="DIR", help="destination directory (must not exist unless --force)")
    add_selectors(p, default_sizes=("golden", "tiles"))
    p.add_argument("--force", action="store_true", help="replace an existing golden set at DIR")
    p.add_argument("--json", action="store_true", help="print a machine-readable summary instead of a table")
    p.set_defaults(func=run, x64=True)


def _tol(r, col: str) -> str:
    c = r.columns[col]
    return f"{c.tolerance:8.1e}" if c.applicable else f"{'n/a':>8}"


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from jaxcalc.cli import UsageError
    from jaxcalc.cli._select import select_instances
    from jaxcalc import oracle
    from jaxcalc.numerics import FLOAT_DTYPES
    from jaxcalc.oracle.exporter import ExportError, _check_destination
    from jaxcalc.oracle.reference import DisagreementError, Reference

    try:  # a destination the export would refuse is refused now, not after the stages are computed
        _check_destination(Path(os.path.abspath(args.dir)), args.force)
    except ExportError as exc:
        raise UsageError(str(exc)) from None
    todo = select_instances(args, oracle.DEFAULT_EXPORT_SIZES, stages=True)
    start = time.perf_counter()
    shown = []
    cols = [c for c in FLOAT_DTYPES if c != "float64"]
    bar = tqdm(total=len(todo), unit="instance", disable=None, leave=False, file=sys.stderr)

    def show(r: Reference) -> None:
        bar.update(1)
        if not args.json:
            if not shown:  # the header waits for the first case: a refused DIR prints one line only
                head = " ".join(f"{c + ' tol':>13}" for c in cols)
                tqdm.write(f"{'instance':32} {'output':>12} {'hand vs auto':>13} {head}", file=sys.stdout)
            shown.append(r.instance.id)
            shape = str(tuple(r.value.shape)).replace(" ", "")
            tols = " ".join(f"{_tol(r, c):>13}" for c in cols)
            tqdm.write(f"{r.instance.id:32} {shape:>12} {r.handwritten_error:13.2e} {tols}", file=sys.stdout)

    try:
        manifest = oracle.export(args.dir, instances=todo, force=args.force, progress=show)
    except ExportError as exc:
        raise UsageError(str(exc)) from None
    except DisagreementError as exc:
        print(f"error: {exc}; nothing written", file=sys.stderr)
        return 1
    except OSError as exc:
        raise UsageError(f"cannot write {args.dir}: {exc.strerror or exc}") from None
    finally:
        bar.close()
    elapsed = time.perf_counter() - start
    if args.json:
        summary = {
            "dir": args.dir,
            "producer": manifest["producer"],
            "seconds": round(elapsed, 3),
            "instances": {
                e["id"]: {
                    "case": e["case"],
                    "size": e["size"],
                    "regime": e["regime"],
                    "shapes": {i["name"]: i["shape"] for i in e["inputs"]},
                    "tolerances": {
                        c: (t["tolerance"] if t["applicable"] else None) for c, t in e["tolerances"].items()
                    },
                    "not_applicable": {
                        c: t["reason"] for c, t in e["tolerances"].items() if not t["applicable"]
                    },
                    "files": e["files"],
                }
                for e in manifest["instances"]
            },
        }
        print(json.dumps(summary, indent=2, sort_keys=True))
    else:
        p = manifest["producer"]
        n_cases = len({e["case"] for e in manifest["instances"]})
        print(
            f"wrote {len(manifest['instances'])} instances of {n_cases} cases to {args.dir} in {elapsed:.1f} s "
            f"(jax {p['jax']}, {p['backend']}, float64, matmul {p['matmul_precision']})"
        )
    return 0
