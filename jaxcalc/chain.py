"""The chain rule for vector functions, checked: J_(f o g)(x) = J_f(g(x)) . J_g(x).

Arrays of any shape are flattened, so every Jacobian is a matrix: for x with n elements,
u = g(x) with k elements and f(u) with m elements, J_g is (k, n), J_f is (m, k) and the
product is (m, n). The composite's Jacobian comes from JAX autodiff of f o g in forward mode
(``jax.jacfwd``, one JVP per input element) or reverse mode (``jax.jacrev``, one VJP per
output element); the factors come from the same mode, or from handwritten Jacobians when
given, which is how a wrong hand derivative is caught.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

from jaxcalc.numerics import compare, tolerance

__all__ = ["ChainRuleResult", "MODES", "chain_rule_check", "chain_rule_product"]

MODES = ("both", "forward", "reverse")
Mode = Literal["both", "forward", "reverse"]
_JAC = {"forward": jax.jacfwd, "reverse": jax.jacrev}


class ChainRuleResult(NamedTuple):
    """Outcome of a chain-rule check.

    ``error`` is the normwise relative error of the product J_f(g(x)) . J_g(x) against the
    composite's Jacobian J_(f o g)(x); ``index`` is the worst element of the Jacobian,
    indexed as ``f(g(x)).shape + x.shape``, and ``product``/``composite`` the two values
    there. With ``mode="both"``, ``mode`` names the mode ("forward" or "reverse") whose
    error was the larger, and ``error`` is that larger error.
    """

    mode: str
    error: float
    index: tuple[int, ...]
    product: float
    composite: float
    passed: bool
    tolerance: float

    def describe(self) -> str:
        """One line: the verdict, the error and the worst element with both sides named."""
        verdict = "passed" if self.passed else "FAILED"
        where = "[" + ", ".join(str(i) for i in self.index) + "]"
        return (
            f"chain rule ({self.mode}) {verdict}: rel err {self.error:.2e} (tol {self.tolerance:.0e}); "
            f"at {where} J_f.J_g = {self.product:.17g}, J_(f o g) = {self.composite:.17g}"
        )


def _as_matrix(jac: ArrayLike, rows: int, cols: int, what: str) -> jax.Array:
    """Reshape a Jacobian given as out.shape + in.shape (or already (rows, cols)) to (rows, cols)."""
    jac = jnp.asarray(jac)
    if jac.size != rows * cols:
        raise ValueError(f"{what} has {jac.size} elements; expected {rows} x {cols} = {rows * cols}")
    return jac.reshape(rows, cols)


def chain_rule_product(
    f: Callable[[jax.Array], jax.Array],
    g: Callable[[jax.Array], jax.Array],
    x: ArrayLike,
    *,
    mode: Literal["forward", "reverse"] = "reverse",
    jac_f: Callable[[jax.Array], jax.Array] | None = None,
    jac_g: Callable[[jax.Array], jax.Array] | None = None,
) -> tuple[jax.Array, jax.Array]:
    """(J_f(g(x)) . J_g(x), J_(f o g)(x)), both shaped ``f(g(x)).shape + x.shape``.

    The factors come from ``jac_f(u)`` / ``jac_g(x)`` when given (shaped out.shape + in.shape
    or as a matrix), otherwise from autodiff in ``mode``; the composite always from autodiff.
    """
    if mode not in _JAC:
        raise ValueError(f"unknown mode {mode!r}; choose 'forward' or 'reverse'")
    jac = _JAC[mode]
    x = jnp.asarray(x)
    u = g(x)
    out_shape = jnp.shape(f(u))
    n, k, m = x.size, jnp.size(u), int(np.prod(out_shape, dtype=int))
    jg = _as_matrix(jac_g(x) if jac_g else jac(g)(x), k, n, "J_g")  # (k, n) = du/dx
    jf = _as_matrix(jac_f(u) if jac_f else jac(f)(u), m, k, "J_f")  # (m, k) = df/du at u = g(x)
    product = (jf @ jg).reshape(out_shape + x.shape)  # chain rule: d f(g(x))/dx = J_f(g(x)) J_g(x)
    composite = jac(lambda v: f(g(v)))(x).reshape(out_shape + x.shape)
    return product, composite


def chain_rule_check(
    f: Callable[[jax.Array], jax.Array],
    g: Callable[[jax.Array], jax.Array],
    x: ArrayLike,
    *,
    mode: Mode = "both",
    jac_f: Callable[[jax.Array], jax.Array] | None = None,
    jac_g: Callable[[jax.Array], jax.Array] | None = None,
) -> ChainRuleResult:
    """Check J_(f o g)(x) = J_f(g(x)) . J_g(x) in forward mode, reverse mode or both.

    ``x`` may have any shape, as may g(x) and f(g(x)). The tolerance is the 'exact' one of
    :mod:`jaxcalc.numerics` for the dtype of x: both sides are exact derivatives and may
    differ only by round-off. Pass ``jac_f(u)`` / ``jac_g(x)`` to check handwritten
    Jacobians instead of autodiff ones; a wrong one fails the check.
    """
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r}; choose one of {MODES}")
    x = jnp.asarray(x)
    if not jnp.issubdtype(x.dtype, jnp.floating):
        raise ValueError(f"x must be a float array, got dtype {x.dtype}")
    tol = tolerance(x.dtype, "exact")
    results = []
    for m in ("forward", "reverse") if mode == "both" else (mode,):
        product, composite = chain_rule_product(f, g, x, mode=m, jac_f=jac_f, jac_g=jac_g)
        c = compare(product, composite)
        results.append(ChainRuleResult(m, c.error, c.index, c.a_value, c.b_value, c.error <= tol, tol))
    worst = max(results, key=lambda r: r.error)
    return worst._replace(passed=all(r.passed for r in results))
