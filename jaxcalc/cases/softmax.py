"""Softmax, log-softmax and logsumexp over the last axis, numerically stable, with derivatives.

All three subtract the row maximum before exponentiating, so inputs like 1000 stay finite.
Every function accepts x of shape (..., n) and works row by row over the last axis.

Jacobians, with y = softmax(x) of one row:
  softmax:      J = diag(y) - y y^T            (symmetric, so VJP and JVP share a formula)
  log_softmax:  J = I - 1 y^T
  logsumexp:    J = y^T                        (a row vector)
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from jaxcalc.cases._base import Case, Input, large_rows, normal, register, with_neg_inf

__all__ = [
    "softmax",
    "softmax_vjp",
    "softmax_jvp",
    "log_softmax",
    "log_softmax_vjp",
    "log_softmax_jvp",
    "logsumexp",
    "logsumexp_vjp",
    "logsumexp_jvp",
]


def _row_max(x: jax.Array) -> jax.Array:
    """max over the last axis, keepdims, treated as a constant (it cancels out of every result).

    A row that is entirely -inf gets 0 instead, so it yields -inf rather than NaN.
    """
    m = jnp.max(x, axis=-1, keepdims=True)
    return jax.lax.stop_gradient(jnp.where(jnp.isfinite(m), m, jnp.zeros_like(m)))


@jax.custom_jvp
def logsumexp(x: ArrayLike) -> jax.Array:
    """log sum_j exp(x_j) over the last axis, as m + log sum_j exp(x_j - m), m = max_j x_j: (...).

    Its derivative is exp(x - logsumexp(x)), taken from the output as PyTorch's backward takes it,
    so that a low-precision evaluation of it rounds the way theirs does (the same values exactly
    in float64).
    """
    x = jnp.asarray(x)
    m = _row_max(x)
    return (m + jnp.log(jnp.sum(jnp.exp(x - m), axis=-1, keepdims=True)))[..., 0]


@logsumexp.defjvp
def _logsumexp_jvp(primals: tuple, tangents: tuple) -> tuple[jax.Array, jax.Array]:
    (x,), (t,) = primals, tangents
    y = logsumexp(x)
    return y, jnp.sum(jnp.exp(jnp.asarray(x) - y[..., None]) * t, axis=-1)


def logsumexp_vjp(x: ArrayLike, ct: ArrayLike) -> jax.Array:
    """dx = ct[..., None] * softmax(x), since d logsumexp / dx_j = softmax(x)_j: (..., n)."""
    return jnp.asarray(ct)[..., None] * softmax(x)


def logsumexp_jvp(x: ArrayLike, t: ArrayLike) -> jax.Array:
    """d logsumexp = sum_j softmax(x)_j t_j over the last axis: (...)."""
    return jnp.sum(softmax(x) * jnp.asarray(t), axis=-1)


def softmax(x: ArrayLike) -> jax.Array:
    """y_j = exp(x_j - m) / sum_k exp(x_k - m) over the last axis, m the row max: (..., n)."""
    x = jnp.asarray(x)
    e = jnp.exp(x - _row_max(x))
    return e / jnp.sum(e, axis=-1, keepdims=True)


def softmax_vjp(x: ArrayLike, ct: ArrayLike) -> jax.Array:
    """dx = (diag(y) - y y^T) ct = y * (ct - <ct, y>) per row, y = softmax(x): (..., n)."""
    y = softmax(x)
    ct = jnp.asarray(ct)
    return y * (ct - jnp.sum(ct * y, axis=-1, keepdims=True))


def softmax_jvp(x: ArrayLike, t: ArrayLike) -> jax.Array:
    """dy = (diag(y) - y y^T) t = y * (t - <t, y>) per row (the Jacobian is symmetric): (..., n)."""
    return softmax_vjp(x, t)


def log_softmax(x: ArrayLike) -> jax.Array:
    """log softmax(x)_j = x_j - logsumexp(x) over the last axis: (..., n)."""
    x = jnp.asarray(x)
    m = _row_max(x)
    shifted = x - m
    return shifted - jnp.log(jnp.sum(jnp.exp(shifted), axis=-1, keepdims=True))


def log_softmax_vjp(x: ArrayLike, ct: ArrayLike) -> jax.Array:
    """dx = (I - 1 y^T)^T ct = ct - y * sum_j ct_j per row, y = softmax(x): (..., n)."""
    ct = jnp.asarray(ct)
    return ct - softmax(x) * jnp.sum(ct, axis=-1, keepdims=True)


def log_softmax_jvp(x: ArrayLike, t: ArrayLike) -> jax.Array:
    """d log_softmax = (I - 1 y^T) t = t - <y, t> per row: (..., n)."""
    t = jnp.asarray(t)
    return t - jnp.sum(softmax(x) * t, axis=-1, keepdims=True)


# ----------------------------------------------------------------------------- cases

_X = (Input("x", ("r", "n"), normal(2.0)),)
# tiles: rows longer than 64 and a reduction over more than 2,048 entries, no multiple of 32
SOFTMAX_SIZES = {"golden": {"r": 3, "n": 7}, "tiles": {"r": 2, "n": 2051}, "large": {"r": 512, "n": 4096}}
# large: rows at +-1000 (exp overflows) and rows spread over more than 1000 (exp underflows);
# masked: -inf entries (at least one per row, never a whole row), where the truth is exactly 0
SOFTMAX_REGIMES = {"large": {"x": large_rows()}, "masked": {"x": with_neg_inf(normal(2.0))}}

register(
    Case(
        name="softmax",
        description="y = exp(x - max) / sum exp(x - max) over the last axis",
        inputs=_X,
        sizes=SOFTMAX_SIZES,
        regimes=SOFTMAX_REGIMES,
        forward=softmax,
        vjp=lambda p, ct: (softmax_vjp(p[0], ct),),
        jvp=lambda p, t: softmax_jvp(p[0], t[0]),
        tags=("softmax",),
    )
)

register(
    Case(
        name="log_softmax",
        description="x - logsumexp(x) over the last axis",
        inputs=_X,
        sizes={**SOFTMAX_SIZES, "tiles": {"r": 3, "n": 129}},
        regimes=SOFTMAX_REGIMES,
        forward=log_softmax,
        vjp=lambda p, ct: (log_softmax_vjp(p[0], ct),),
        jvp=lambda p, t: log_softmax_jvp(p[0], t[0]),
        tags=("softmax",),
    )
)

register(
    Case(
        name="logsumexp",
        description="log sum_j exp(x_j) over the last axis, (3, 7) -> (3)",
        inputs=_X,
        sizes=SOFTMAX_SIZES,
        regimes=SOFTMAX_REGIMES,
        forward=logsumexp,
        vjp=lambda p, ct: (logsumexp_vjp(p[0], ct),),
        jvp=lambda p, t: logsumexp_jvp(p[0], t[0]),
        tags=("softmax", "reduction"),
    )
)
