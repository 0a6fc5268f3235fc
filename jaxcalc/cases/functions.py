"""Classic test functions: exp(sin x), Rosenbrock and a non-symmetric quadratic form.

Each comes with its handwritten gradient (and Hessian, for Newton's method) beside it.
``rosenbrock`` works over the last axis of x (..., n) -> (...); ``quadratic_form`` takes
x (..., n) with one A (n, n) and b (n,).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

from jaxcalc.cases._base import Case, Input, Sampler, register, std_normal, subkey, uniform

__all__ = [
    "exp_sin",
    "exp_sin_grad",
    "rosenbrock",
    "rosenbrock_grad",
    "rosenbrock_hessian",
    "quadratic_form",
    "quadratic_form_grad",
    "quadratic_form_hessian",
    "quadratic_form_vjp",
    "quadratic_form_jvp",
]


# ----------------------------------------------------------------------------- exp(sin x)


def exp_sin(x: ArrayLike) -> jax.Array:
    """exp(sin(x)), elementwise."""
    return jnp.exp(jnp.sin(jnp.asarray(x)))


def exp_sin_grad(x: ArrayLike) -> jax.Array:
    """d/dx exp(sin x) = exp(sin x) cos x (chain rule: outer exp, inner sin), elementwise."""
    x = jnp.asarray(x)
    return jnp.exp(jnp.sin(x)) * jnp.cos(x)


# ----------------------------------------------------------------------------- rosenbrock


def rosenbrock(x: ArrayLike) -> jax.Array:
    """sum_i 100 (x_{i+1} - x_i**2)**2 + (1 - x_i)**2 over the last axis; x (..., n) -> (...)."""
    x = jnp.asarray(x)
    xi, xn = x[..., :-1], x[..., 1:]
    return jnp.sum(100.0 * (xn - xi * xi) ** 2 + (1.0 - xi) ** 2, axis=-1)


def _pad_last(a: jax.Array, before: int, after: int) -> jax.Array:
    """Zero-pad the last axis of ``a``."""
    return jnp.pad(a, [(0, 0)] * (a.ndim - 1) + [(before, after)])


def rosenbrock_grad(x: ArrayLike) -> jax.Array:
    """Gradient over the last axis, (..., n): with d_i = x_{i+1} - x_i**2,

    df/dx_i = -400 x_i d_i - 2 (1 - x_i)   (from term i, i < n-1)
            + 200 d_{i-1}                  (from term i-1, i > 0).
    """
    x = jnp.asarray(x)
    xi, xn = x[..., :-1], x[..., 1:]
    d = xn - xi * xi
    return _pad_last(-400.0 * xi * d - 2.0 * (1.0 - xi), 0, 1) + _pad_last(200.0 * d, 1, 0)


def _rosenbrock_hessian_1d(x: jax.Array) -> jax.Array:
    xi, xn = x[:-1], x[1:]
    # d2f/dx_i2 = 1200 x_i**2 - 400 x_{i+1} + 2 (i < n-1) + 200 (i > 0); d2f/dx_i dx_{i+1} = -400 x_i
    diag = _pad_last(1200.0 * xi * xi - 400.0 * xn + 2.0, 0, 1) + _pad_last(jnp.full_like(xn, 200.0), 1, 0)
    off = -400.0 * xi
    return jnp.diag(diag) + jnp.diag(off, 1) + jnp.diag(off, -1)


def rosenbrock_hessian(x: ArrayLike) -> jax.Array:
    """The tridiagonal Hessian over the last axis, (..., n, n)."""
    return jnp.vectorize(_rosenbrock_hessian_1d, signature="(n)->(n,n)")(jnp.asarray(x))


# ----------------------------------------------------------------------------- quadratic form


def quadratic_form(A: ArrayLike, b: ArrayLike, x: ArrayLike) -> jax.Array:
    """1/2 x^T A x + b^T x; A (n, n) (need not be symmetric), b (n,), x (..., n) -> (...)."""
    A, b, x = jnp.asarray(A), jnp.asarray(b), jnp.asarray(x)
    return 0.5 * jnp.einsum("...i,ij,...j->...", x, A, x) + x @ b


def quadratic_form_grad(A: ArrayLike, b: ArrayLike, x: ArrayLike) -> jax.Array:
    """Gradient in x: 1/2 (A + A^T) x + b, (..., n) (only the symmetric part of A counts)."""
    A, x = jnp.asarray(A), jnp.asarray(x)
    return 0.5 * (x @ A.T + x @ A) + jnp.asarray(b)


def quadratic_form_hessian(A: ArrayLike, b: ArrayLike, x: ArrayLike) -> jax.Array:
    """Hessian in x: 1/2 (A + A^T), (n, n), the same at every x."""
    A = jnp.asarray(A)
    return 0.5 * (A + A.T)


def quadratic_form_vjp(
    A: ArrayLike, b: ArrayLike, x: ArrayLike, ct: ArrayLike
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """(dA, db, dx) = (1/2 sum ct x x^T, sum ct x, ct (1/2 (A + A^T) x + b)), sums over x's batch."""
    x, ct = jnp.asarray(x), jnp.asarray(ct)
    dA = 0.5 * jnp.einsum("...,...i,...j->ij", ct, x, x)  # d(x^T A x)/dA_ij = x_i x_j
    db = jnp.einsum("...,...i->i", ct, x)
    return dA, db, ct[..., None] * quadratic_form_grad(A, b, x)


def quadratic_form_jvp(
    A: ArrayLike, b: ArrayLike, x: ArrayLike, tA: ArrayLike, tb: ArrayLike, tx: ArrayLike
) -> jax.Array:
    """d quadratic_form = 1/2 x^T tA x + tb^T x + (1/2 (A + A^T) x + b)^T tx: (...)."""
    x = jnp.asarray(x)
    return (
        0.5 * jnp.einsum("...i,ij,...j->...", x, jnp.asarray(tA), x)
        + x @ jnp.asarray(tb)
        + jnp.sum(quadratic_form_grad(A, b, x) * jnp.asarray(tx), axis=-1)
    )


def _nonsymmetric_positive_definite() -> Sampler:
    """Square A = L L^T + I + S, S antisymmetric: A != A^T, yet its symmetric part is positive definite.

    So 1/2 x^T A x + b^T x has one minimum, x* = -(1/2 (A + A^T))^{-1} b, for Newton's method.
    """

    def sample(key: jax.Array, shape: tuple[int, ...], dims: object = None) -> np.ndarray:
        L = std_normal(subkey(key, 0), shape) / np.sqrt(shape[-1])
        M = std_normal(subkey(key, 1), shape)
        return L @ L.T + np.eye(shape[-1]) + 0.5 * (M - M.T)

    return sample


# ----------------------------------------------------------------------------- cases

register(
    Case(
        name="exp_sin",
        description="exp(sin(x)), elementwise",
        inputs=(Input("x", ("n",), uniform(-3.0, 3.0)),),
        sizes={"golden": {"n": 5}, "tiles": {"n": 67}, "large": {"n": 1 << 20}},
        forward=exp_sin,
        vjp=lambda p, ct: (ct * exp_sin_grad(p[0]),),
        jvp=lambda p, t: exp_sin_grad(p[0]) * t[0],
        chain=lambda p: (jnp.exp, jnp.sin),
        tags=("elementwise", "composite"),
    )
)

register(
    Case(
        name="rosenbrock",
        description="sum_i 100 (x[i+1] - x[i]**2)**2 + (1 - x[i])**2",
        inputs=(Input("x", ("n",), uniform(-1.5, 1.5)),),
        # tiles: a sum over more than 2,048 terms (a float16 counter stalls at 2,048)
        sizes={"golden": {"n": 6}, "tiles": {"n": 2051}, "large": {"n": 1 << 20}},
        forward=rosenbrock,
        vjp=lambda p, ct: (ct[..., None] * rosenbrock_grad(p[0]),),
        jvp=lambda p, t: jnp.sum(rosenbrock_grad(p[0]) * t[0], axis=-1),
        tags=("scalar", "optimization"),
    )
)

register(
    Case(
        name="quadratic_form",
        description="1/2 x^T A x + b^T x, A not symmetric",
        inputs=(
            Input("A", ("n", "n"), _nonsymmetric_positive_definite()),
            Input("b", ("n",)),
            Input("x", ("n",)),
        ),
        # tiles: a matmul K past one 32-tile and not a multiple of it
        sizes={"golden": {"n": 4}, "tiles": {"n": 35}, "large": {"n": 1024}},
        forward=quadratic_form,
        vjp=lambda p, ct: quadratic_form_vjp(*p, ct),
        jvp=lambda p, t: quadratic_form_jvp(*p, *t),
        tags=("scalar", "optimization"),
    )
)
