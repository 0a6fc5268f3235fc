"""Assertions for other projects' test suites: ``assert_grads`` fails with the failing rows first.

Example::

    from jaxcalc.testing import assert_grads

    def test_my_mlp_grad():
        assert_grads(loss, (params, batch), my_grad, argnums=0)
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import jax

from jaxcalc.checks import Report, check_function

__all__ = ["assert_grads", "assert_report"]


def assert_report(report: Report) -> None:
    """Raise AssertionError if anything failed: the failing rows first, then the whole table."""
    if report.passed:
        return
    head = []
    for r in report.failures:
        over = f" (err {r.error:.2e} > tol {r.tol:.0e})" if r.error != float("inf") else ""
        head.append(f"{r.check} FAIL at {r.where}: {r.a_label} vs {r.b_label}, {r.values()}{over}")
        if r.diagnosis:
            head.append(f"    diagnosis: {r.diagnosis}")
    raise AssertionError("\n".join([*head, "", report.format()]))


def assert_grads(
    f: Callable[..., jax.Array],
    args: Sequence[Any],
    grad_fn: Callable[..., Any] | None = None,
    *,
    argnums: int | Sequence[int] | None = None,
    vjp_fn: Callable[[tuple, jax.Array], Any] | None = None,
    jvp_fn: Callable[[tuple, Any], jax.Array] | None = None,
    checks: str | Sequence[str] | None = None,
    mode: str = "full",
    dtype: Any | None = None,
    name: str | None = None,
    seed: int = 0,
) -> Report:
    """Check ``f(*args)`` and its handwritten derivative (:func:`jaxcalc.check_function`, same
    arguments); raise AssertionError on any failure, else return the Report (kinks pass)."""
    report = check_function(
        f,
        args,
        grad_fn,
        argnums=argnums,
        vjp_fn=vjp_fn,
        jvp_fn=jvp_fn,
        checks=checks,
        mode=mode,
        dtype=dtype,
        name=name,
        seed=seed,
    )
    assert_report(report)
    return report
