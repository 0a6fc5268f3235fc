"""`jaxcalc demo`: prints the rows of :mod:`jaxcalc.demo`, the seed three ways; exit 1 on a disagreement."""

from __future__ import annotations

import argparse
import json
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from jaxcalc.demo import Row

__all__ = ["register", "run"]


def _shown(row: Row, values: np.ndarray) -> str:
    """A scalar shown whole; an array by its last element (the descent loop) or its largest."""
    if values.size == 1:
        return f"{float(values.reshape(())):.10g}"
    if row.concept == "descent loop":
        return f"{float(values[-1]):.10g}"
    if values.size <= 3:
        return "[" + ", ".join(f"{v:.6g}" for v in values.ravel()) + "]"
    return f"max |v| {float(np.max(np.abs(values))):.6g}"


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "demo",
        help="the seed end to end: each value handwritten / autodiff / finite difference",
        description="Walk the seed's calculus (derivative, partials, gradient, chain rule, descent step, "
        "descent loop, backprop) in float64 on the default backend, each value computed three ways.",
    )
    p.add_argument("--json", action="store_true", help="print the rows as JSON")
    p.set_defaults(func=run, x64=True)


def run(args: argparse.Namespace) -> int:
    import jax

    from jaxcalc.demo import demo_rows
    from jaxcalc.numerics import reference_mode, tolerance

    backend, device = jax.default_backend(), jax.devices()[0].device_kind
    with reference_mode("float64"):
        rows = demo_rows()
    failed = [r for r in rows if not r.passed]
    if args.json:
        report: dict[str, Any] = {
            "backend": backend,
            "device": device,
            "dtype": "float64",
            "passed": not failed,
            "rows": [
                {
                    "concept": r.concept,
                    "quantity": r.quantity,
                    "seed": None if r.seed is None else r.seed.tolist(),
                    "handwritten": r.handwritten.tolist(),
                    "autodiff": r.autodiff.tolist(),
                    "finite_difference": r.fd.tolist(),
                    "checks": [{"pair": p, "error": e, "tolerance": t} for p, e, t in r.checks],
                    "error": r.error,
                    "verdict": "agree" if r.passed else "DISAGREE",
                }
                for r in rows
            ],
        }
        print(json.dumps(report, indent=2))
        return 1 if failed else 0

    print(f"jaxcalc demo: the seed's calculus three ways, float64, on backend {backend} (device {device})")
    print(
        f"tolerance: {tolerance('float64', 'exact'):g} between exact derivatives, "
        f"{tolerance('float64', 'fd'):g} against finite differences"
    )
    header = (
        "concept",
        "quantity",
        "seed",
        "handwritten",
        "autodiff",
        "finite diff",
        "max rel err",
        "verdict",
    )
    table = [header] + [
        (
            r.concept, r.quantity, "" if r.seed is None else _shown(r, r.seed), _shown(r, r.handwritten),
            _shown(r, r.autodiff), _shown(r, r.fd), f"{r.error:.1e}", "agree" if r.passed else "DISAGREE",
        )
        for r in rows
    ]  # fmt: skip
    widths = [max(len(line[i]) for line in table) for i in range(len(header))]
    for line in table:
        print("  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)).rstrip())
    for r in failed:
        for pair, err, tol in r.checks:
            if err > tol:
                print(f"DISAGREE {r.concept}: {r.quantity}: {pair} rel err {err:.2e} > tol {tol:g}")
    worst = max(r.error for r in rows)
    if failed:
        print(f"{len(failed)} of {len(rows)} rows DISAGREE (backend {backend})")
        return 1
    print(f"all {len(rows)} rows agree; largest relative disagreement {worst:.1e} (backend {backend})")
    return 0
