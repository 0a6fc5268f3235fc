"""The checks of DESIGN §4 on catalogue instances: a case at a size and input regime.

Finite differences only mean something where a small step is small next to the function's
scale of variation: in the ``typical`` regime. In the other regimes (rows at 1e4, entries at
+-1000, -inf masks, arguments near 1e-5) a step scaled to the input's magnitude crosses whole
softmax rows or lands on -inf, so the finite-difference checks are left out there and the exact
ones (handwritten vs autodiff, jacfwd vs jacrev, the dot-product identity, the chain rule,
Hessian symmetry) run alone.

In bfloat16 and float16 the handwritten VJP and JVP, run in the dtype, are compared with float64
autodiff on the same rounded inputs at the column's calibrated tolerance
(:mod:`jaxcalc.checks.lowprec`).
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from jaxcalc.checks.core import run_checks
from jaxcalc.checks.report import Report

__all__ = ["FD_CHECKS", "check_instance", "check_instances"]

FD_CHECKS = ("fd_jvp", "jacobian_fd", "vjp_fd", "hvp")  # the checks against finite differences


def check_instance(inst: Any, dtype: Any = "float64", mode: str = "full", checks: Any = None) -> Report:
    """Run every check (or those ``checks`` selects, as in :func:`jaxcalc.check_function`) on one
    instance (``jaxcalc.cases.instance(...)``) at its seeded inputs and probes, in ``dtype``; rows
    are labelled with the instance id. Outside the typical regime the finite-difference checks are
    left out (see the module docstring)."""
    from jaxcalc.numerics import column

    inputs = inst.sample(dtype)
    ct, tangents = inst.probes(dtype)
    case = inst.case
    if column(dtype).low:  # finite differences are meaningless: float64 autodiff is the witness
        from jaxcalc.checks.lowprec import check_low_precision

        return check_low_precision(
            inst.id,
            case.forward,
            inst.primals(inputs),
            case.diff_index,
            case.diff_names,
            ct,
            tuple(tangents.values()),
            case.positional_vjp,
            case.jvp,
            dtype,
        )
    report = run_checks(
        inst.id,
        case.forward,
        inst.primals(inputs),
        diff_idx=case.diff_index,
        names=case.diff_names,
        ct=ct,
        tangents=tuple(tangents.values()),
        vjp=case.positional_vjp,
        jvp=case.jvp,
        chain=case.chain,
        mode=mode,
        dtype=dtype,
        checks=checks,
    )
    if inst.regime == "typical":
        return report
    return Report(tuple(r for r in report.results if r.check not in FD_CHECKS))


def check_instances(
    instances: Sequence[Any], dtype: Any = "float64", mode: str = "full", workers: int | None = None
) -> Iterator[tuple[Any, Report]]:
    """Check several instances, yielding (instance, Report) in order as each finishes.

    XLA compiles outside the GIL, so ``workers`` threads (default: the CPU count, at most 4)
    overlap one instance's compilation with the next one's tracing.
    """
    workers = workers or min(4, os.cpu_count() or 1)
    if workers <= 1 or len(instances) <= 1:
        for inst in instances:
            yield inst, check_instance(inst, dtype=dtype, mode=mode)
        return
    with ThreadPoolExecutor(max_workers=workers) as pool:
        futures = [pool.submit(check_instance, i, dtype, mode) for i in instances]
        for inst, fut in zip(instances, futures, strict=True):
            yield inst, fut.result()
