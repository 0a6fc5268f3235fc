"""The checks of DESIGN §4 on catalogue instances: a case at a size and input regime.

Finite differences only mean something where a small step is small next to the function's
scale of variation: in the ``typical`` regime. In the other regimes (rows at 1e4, entries at
+-1000, -inf masks, arguments near 1e-5) a step scaled to the input's magnitude crosses whole
softmax rows or lands on -inf, so the finite-difference checks are left out there and the exact
ones (handwritten vs autodiff, jacfwd vs jacrev, the dot-product identity, the chain rule,
Hessian symmetry) run alone.

An instance whose value the dtype cannot represent (finite in float64, not finite in float32: an
exp past 88.7) is not applicable in that dtype, as in the golden set, and gets one ``n/a`` row
saying so instead of comparisons between infinities.

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
from jaxcalc.checks.report import CheckResult, Report

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
    why = _not_representable(case.forward, inst, inputs, dtype)
    if why:
        nan = float("nan")
        return Report((CheckResult(inst.id, "value", dtype, "float64", nan, 0.0, "", nan, nan, "n/a", why),))
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


def _not_representable(forward: Any, inst: Any, inputs: Any, dtype: Any) -> str:
    """Why ``inst`` (sampled as ``inputs`` in ``dtype``) is not applicable in ``dtype``
    (float32): its value is not finite there where it is in float64; '' when it is applicable."""
    import numpy as np

    from jaxcalc.checks import host
    from jaxcalc.checks.branches import traced
    from jaxcalc.numerics import np_dtype, reference_mode

    if np_dtype(dtype) == np.float64:
        return ""

    def value(dt: Any, sampled: Any) -> np.ndarray:
        with reference_mode(dt):
            primals = [np.asarray(p) for p in inst.primals(sampled)]
            jaxpr, _ = traced(forward, *primals)
            if host.supported(jaxpr):
                with np.errstate(all="ignore"):
                    return np.asarray(host.evaluate(jaxpr, primals)[0], np.float64)
            import jax

            return np.asarray(jax.jit(jax.extend.core.jaxpr_as_fun(jaxpr))(*primals)[0], np.float64)

    low = value(dtype, inputs)
    if np.isfinite(low).all():
        return ""
    bad = ~np.isfinite(low) & np.isfinite(value("float64", inst.sample("float64")))
    if not bad.any():
        return ""
    name = np_dtype(dtype).name
    count = f"{int(bad.sum())} of {low.size}"
    return f"not applicable in {name}: {count} values overflow where float64's are finite"


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
