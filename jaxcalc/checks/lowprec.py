"""Checking a derivative computed in bfloat16 or float16, where finite differences are meaningless.

A finite difference needs a step above the dtype's rounding error, and in bfloat16
(eps 2**-7) no step is both that large and small enough to be local. The witness is instead
float64 autodiff of the same function on the upcast inputs (inputs already rounded to the
dtype). The tolerance of each derivative array (normwise) is the calibrated rule of the
dtype's column in :data:`jaxcalc.numerics.COLUMNS`::

    tol = factor * e_jax + floor * e_round

with ``e_jax`` the error of straightforward JAX autodiff in the dtype (jitted, as kernels
compute) against the float64 reference, and ``e_round`` the error of the reference merely
rounded to the dtype (at least half an ulp, so that an exactly representable reference still
leaves room for one rounding).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import numpy as np

from jaxcalc.checks.report import CheckResult, Report
from jaxcalc.numerics import column, compare, reference_mode

__all__ = ["check_low_precision", "calibrated_tolerance"]


def calibrated_tolerance(ref: np.ndarray, same_precision: np.ndarray, dtype: Any) -> float:
    """``factor * |same_precision - ref| / |ref| + floor * |round(ref) - ref| / |ref|`` (normwise)."""
    col = column(dtype)
    ref = np.asarray(ref, np.float64)
    e_jax = compare(np.asarray(same_precision, np.float64), ref).error
    rounded = ref.astype(col.dtype).astype(np.float64)
    e_round = max(compare(rounded, ref).error, col.eps / 2)
    return col.factor * e_jax + col.floor * e_round


def check_low_precision(
    name: str,
    f,
    leaves: Sequence[np.ndarray],
    diff_idx: Sequence[int],
    names: Sequence[str],
    ct: np.ndarray,
    tangents: Sequence[np.ndarray],
    vjp,
    jvp,
    dtype: Any,
    notes: Sequence[CheckResult] = (),
) -> Report:
    """Compare the handwritten VJP / JVP, run in ``dtype``, with float64 autodiff on the same
    rounded inputs, at the calibrated tolerance (one row each, naming the worst leaf by its
    error over its tolerance). ``f(*leaves)``; ``vjp(leaves, ct)`` and ``jvp(leaves, tangents)``
    take the leaves as :func:`jaxcalc.checks.user.check_function` prepares them."""
    if vjp is None and jvp is None and not notes:
        raise ValueError(
            f"checking in {np.dtype(dtype).name} needs a handwritten derivative (grad_fn, vjp_fn or jvp_fn)"
        )
    low = [np.asarray(x) for x in leaves]
    ct_low = np.asarray(ct).astype(dtype)
    t_low = [np.asarray(t).astype(dtype) for t in tangents]

    def f_diff(*d):
        args = list(d[0])
        for i, x in zip(diff_idx, d[1:], strict=True):
            args[i] = x
        return f(*args)

    def autodiff(prim, c, ts):
        diff = [prim[i] for i in diff_idx]
        out, pull = jax.vjp(lambda *d: f_diff(prim, *d), *diff)
        jv = jax.jvp(lambda *d: f_diff(prim, *d), tuple(diff), tuple(ts))[1]
        return pull(c), jv

    up = lambda x: x.astype(np.float64) if np.issubdtype(x.dtype, np.inexact) or x.dtype == dtype else x  # noqa: E731
    with reference_mode("float64"):
        ref_vjp, ref_jvp = jax.device_get(
            jax.jit(autodiff)([up(x) for x in low], up(ct_low), [up(t) for t in t_low])
        )
    with reference_mode("float32"):
        jax_vjp, jax_jvp = jax.device_get(jax.jit(autodiff)(low, ct_low, t_low))
        hw_vjp = (
            jax.device_get(jax.jit(lambda a, c: vjp(a, c))(tuple(low), ct_low)) if vjp is not None else None
        )
        hw_jvp = (
            jax.device_get(jax.jit(lambda a, t: jvp(a, t))(tuple(low), tuple(t_low)))
            if jvp is not None
            else None
        )

    rows = list(notes)
    ref_label = "float64 autodiff"
    low_name = np.dtype(dtype).name
    if hw_vjp is not None:
        rows.append(
            _row(name, "vjp", f"handwritten ({low_name})", ref_label, hw_vjp, ref_vjp, jax_vjp, names, dtype)
        )
    if hw_jvp is not None:
        rows.append(
            _row(
                name,
                "jvp",
                f"handwritten ({low_name})",
                ref_label,
                [hw_jvp],
                [ref_jvp],
                [jax_jvp],
                ["(J t)"],
                dtype,
            )
        )
    return Report(tuple(rows))


def _row(name, check, a_label, b_label, got, ref, same, names, dtype) -> CheckResult:
    worst = None
    for g, r, s, n in zip(got, ref, same, names, strict=True):
        tol = calibrated_tolerance(r, s, dtype)
        c = compare(np.asarray(g, np.float64), np.asarray(r, np.float64))
        where = n + ("[" + ", ".join(str(i) for i in c.index) + "]" if c.index else "")
        cand = (c.error / tol if tol > 0 else np.inf, c.error, tol, where, c.a_value, c.b_value)
        if worst is None or cand[0] > worst[0]:
            worst = cand
    _, err, tol, where, av, bv = worst
    status = "pass" if err <= tol else "FAIL"
    col = column(dtype)
    note = f"tol = {col.factor:g} x jax {col.name} error + {col.floor:g} x rounding"
    return CheckResult(name, check, a_label, b_label, float(err), float(tol), where, av, bv, status, note)
