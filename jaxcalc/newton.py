"""Newton's method beside gradient descent: second derivatives buy steps.

Gradient descent moves along -grad f with a fixed step; Newton's method solves the local
quadratic model f(x + p) ~ f(x) + g^T p + 1/2 p^T H p for its minimizer,

    H(x) p = -grad f(x),    x <- x + p,

so on a quadratic 1/2 x^T A x + b^T x (Hessian H = 1/2 (A + A^T), whatever A's antisymmetric
part) one step lands on the minimum, and near a minimum of a smooth f the error squares
each step. Two ways to get p:

* ``newton``: the dense Hessian from ``jax.hessian`` (forward-over-reverse) and
  ``jnp.linalg.solve``; n**2 memory, exact, works for indefinite H.
* ``newton_hvp``: Hessian-free. Only Hessian-vector products Hv = d/de grad f(x + e v) at
  e = 0 (``jax.jvp`` of ``jax.grad``), fed to a Krylov solver: ``cg`` needs H symmetric
  positive definite (true on the quadratic, false on parts of Rosenbrock's valley), ``gmres``
  needs only H nonsingular.

Every method runs inside one ``lax.while_loop`` until ||grad f||_inf <= tol, recording the
first iterates for plots.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax.scipy.sparse.linalg import cg, gmres

__all__ = [
    "METHODS",
    "Result",
    "hvp",
    "newton_direction",
    "newton_hvp_direction",
    "minimize",
    "quadratic_problem",
    "rosenbrock_problem",
    "iteration_table",
]

METHODS = ("newton", "newton_hvp", "gd")
Objective = Callable[[jax.Array], jax.Array]


class Result(NamedTuple):
    """x: final iterate (n,); path: x_0..x_m, the first ``record + 1`` iterates (rows past
    ``iterations`` repeat the last one); iterations: steps taken; grad_norm: ||grad f(x)||_inf
    at the end; converged: grad_norm <= tol."""

    x: jax.Array
    path: jax.Array
    iterations: jax.Array
    grad_norm: jax.Array
    converged: jax.Array


def hvp(f: Objective, x: jax.Array, v: jax.Array) -> jax.Array:
    """Hessian-vector product H(x) v = d/de grad f(x + e v) at e = 0 (forward over reverse), (n,)."""
    return jax.jvp(jax.grad(f), (x,), (v,))[1]


def newton_direction(f: Objective, x: jax.Array) -> jax.Array:
    """p solving H p = -g with the dense Hessian H = jax.hessian(f)(x): (n,)."""
    return jnp.linalg.solve(jax.hessian(f)(x), -jax.grad(f)(x))


def newton_hvp_direction(f: Objective, x: jax.Array, solver: str = "gmres") -> jax.Array:
    """p solving H p = -g by Krylov iterations on v -> H v, never forming H: (n,)."""
    g = jax.grad(f)(x)
    matvec = partial(hvp, f, x)
    n = x.size
    if solver == "cg":
        p, _ = cg(matvec, -g, tol=1e-12, atol=0.0, maxiter=4 * n)
    elif solver == "gmres":
        p, _ = gmres(matvec, -g, tol=1e-12, atol=0.0, restart=n, maxiter=4, solve_method="incremental")
    else:
        raise ValueError(f"unknown solver {solver!r}; choose 'cg' or 'gmres'")
    return p


@partial(jax.jit, static_argnames=("f", "method", "lr", "tol", "max_iter", "record", "solver"))
def minimize(
    f: Objective,
    x0: jax.Array,
    method: str = "newton",
    *,
    lr: float = 1e-3,
    tol: float = 1e-8,
    max_iter: int = 100,
    record: int = 100,
    solver: str = "gmres",
) -> Result:
    """Minimize ``f`` from ``x0`` (n,) until ||grad f||_inf <= tol or ``max_iter`` steps.

    ``method``: "newton" (dense Hessian solve), "newton_hvp" (Hessian-free with ``solver``)
    or "gd" (x <- x - lr * grad f). Stops early on a non-finite iterate.
    """
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; choose one of {METHODS}")
    grad = jax.grad(f)

    def step(x: jax.Array) -> jax.Array:
        if method == "newton":
            return x + newton_direction(f, x)
        if method == "newton_hvp":
            return x + newton_hvp_direction(f, x, solver)
        return x - lr * grad(x)

    def norm(x: jax.Array) -> jax.Array:
        return jnp.max(jnp.abs(grad(x)))

    def cond(state):
        x, k, g, _ = state
        return (k < max_iter) & (g > tol) & jnp.all(jnp.isfinite(x))

    def body(state):
        x, k, _, path = state
        x = step(x)
        path = jax.lax.dynamic_update_index_in_dim(path, x, jnp.minimum(k + 1, record), 0)
        path = jnp.where(k + 1 <= record, path, state[3])
        return x, k + 1, norm(x), path

    path = jnp.broadcast_to(x0, (record + 1, *x0.shape))
    x, k, g, path = jax.lax.while_loop(cond, body, (x0, jnp.asarray(0), norm(x0), path))
    # Rows after the last step repeat the final iterate, so the path plots without a jump.
    rows = jnp.arange(record + 1)[:, None]
    path = jnp.where(rows <= jnp.minimum(k, record), path, path[jnp.minimum(k, record)])
    return Result(x, path, k, g, g <= tol)


def quadratic_problem(dtype: str = "float64") -> tuple[Objective, jax.Array, jax.Array]:
    """(f, x0, x*) for the catalogue's ``quadratic_form`` case: A (4, 4) non-symmetric, seeded inputs.

    x* = -(1/2 (A + A^T))^{-1} b is the minimum (the symmetric part of A is positive definite).
    """
    from jaxcalc.cases import get_case
    from jaxcalc.cases.functions import quadratic_form

    inputs = get_case("quadratic_form").sample(dtype)
    A, b, x0 = (jnp.asarray(inputs[k]) for k in ("A", "b", "x"))
    x_star = jnp.linalg.solve(0.5 * (A + A.T), -b)
    return (lambda x: quadratic_form(A, b, x)), x0, x_star


def rosenbrock_problem(n: int = 2, dtype: str = "float64") -> tuple[Objective, jax.Array, jax.Array]:
    """(f, x0, x*) for Rosenbrock in n dimensions from the classic start (-1.2, 1, -1.2, 1, ...)."""
    from jaxcalc.cases.functions import rosenbrock

    x0 = jnp.where(jnp.arange(n) % 2 == 0, -1.2, 1.0).astype(dtype)
    return rosenbrock, x0, jnp.ones(n, dtype)


def iteration_table(tol: float = 1e-6, gd_max_iter: int = 200_000) -> list[dict]:
    """Steps each method needs to reach ||grad f||_inf <= tol, on the quadratic and on Rosenbrock.

    Run in float64 (inside ``jax.enable_x64``). Gradient descent uses lr = 1 / lambda_max(H)
    on the quadratic and lr = 1e-3 on Rosenbrock (below 2 / lambda_max along its valley).
    """
    rows = []
    with jax.enable_x64(True):
        for name, (f, x0, x_star) in (
            ("quadratic_form (n=4)", quadratic_problem()),
            ("rosenbrock (n=2)", rosenbrock_problem(2)),
            ("rosenbrock (n=6)", rosenbrock_problem(6)),
        ):
            lr = 1e-3
            if name.startswith("quadratic"):
                lr = float(1 / jnp.linalg.eigvalsh(jax.hessian(f)(x0))[-1])
            for method in METHODS:
                max_iter = gd_max_iter if method == "gd" else 100
                r = minimize(f, x0, method, lr=lr, tol=tol, max_iter=max_iter, record=1)
                rows.append(
                    {
                        "problem": name,
                        "method": method,
                        "iterations": int(r.iterations),
                        "converged": bool(r.converged),
                        "grad_norm": float(r.grad_norm),
                        "error": float(jnp.max(jnp.abs(r.x - x_star))),
                    }
                )
    return rows


if __name__ == "__main__":
    for row in iteration_table():
        print(
            f"{row['problem']:22s} {row['method']:11s} {row['iterations']:7d} steps  "
            f"|grad|={row['grad_norm']:.1e}  |x - x*|={row['error']:.1e}  converged={row['converged']}"
        )
