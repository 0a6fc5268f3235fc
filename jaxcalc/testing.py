"""Assertions for other projects' test suites: ``assert_grads`` fails with the full report.

Example::

    from jaxcalc.testing import assert_grads

    def test_my_softmax_grad():
        assert_grads(my_loss, (logits, labels), grad_fn=my_loss_grad)
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import jax

from jaxcalc.checks import Report, check_function

__all__ = ["assert_grads", "assert_report"]


def assert_report(report: Report) -> None:
    """Raise AssertionError carrying every failing row (and the full report) if anything failed."""
    if report.passed:
        return
    lines = ["gradient check failed:"]
    lines += [f"  {r.line()}" for r in report.failures]
    lines += ["full report:"] + [f"  {line}" for line in report.format().splitlines()]
    raise AssertionError("\n".join(lines))


def assert_grads(
    f: Callable[..., jax.Array],
    args: Sequence[Any],
    grad_fn: Callable[..., Any] | None = None,
    *,
    vjp_fn: Callable[[tuple, jax.Array], tuple] | None = None,
    jvp_fn: Callable[[tuple, tuple], jax.Array] | None = None,
    mode: str = "full",
    dtype: Any | None = None,
) -> Report:
    """Check ``f(*args)`` three ways (handwritten, autodiff, finite differences); raise on failure.

    Returns the Report when every check passed (kinks are reported, not raised).
    """
    report = check_function(f, args, grad_fn=grad_fn, vjp_fn=vjp_fn, jvp_fn=jvp_fn, mode=mode, dtype=dtype)
    assert_report(report)
    return report
