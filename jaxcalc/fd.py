"""Finite differences: the third witness, independent of autodiff.

All differences are 5-point central stencils,
``f'(x) ~ (f(x - 2h) - 8 f(x - h) + 8 f(x + h) - f(x + 2h)) / 12h``, with truncation error
O(h**4); the step ``h = eps**(1/5) * max(1, |x|)`` is scaled to the dtype and the input's
magnitude. The per-element Jacobian evaluates every basis direction at once with ``vmap``
inside one ``jit``, never in a Python loop.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from jaxcalc.numerics import fd_base_step

__all__ = ["derivative", "directional", "jacobian", "one_sided"]


def _stencil(f: Callable[[jax.Array], jax.Array], h: jax.Array) -> jax.Array:
    """5-point central difference of f(s) at s = 0 with step h (f maps a scalar step to an array)."""
    return (f(-2 * h) - 8 * f(-h) + 8 * f(h) - f(2 * h)) / (12 * h)


def derivative(f: Callable[[jax.Array], jax.Array], x: ArrayLike) -> jax.Array:
    """d f / dx at scalar or array x, elementwise (f must act elementwise or be scalar-to-scalar)."""
    x = jnp.asarray(x)
    h = fd_base_step(x.dtype) * jnp.maximum(1.0, jnp.abs(x))
    return _stencil(lambda s: f(x + s), h)


def _step_along(primals: tuple, tangents: tuple) -> jax.Array:
    """Step size for a direction: eps**(1/5) * max(1, |x|inf) / |t|inf over all inputs."""
    dtype = tangents[0].dtype
    xs = max(float(jnp.max(jnp.abs(p))) if jnp.size(p) else 0.0 for p in primals)
    ts = max(float(jnp.max(jnp.abs(t))) if jnp.size(t) else 0.0 for t in tangents)
    return jnp.asarray(fd_base_step(dtype) * max(1.0, xs) / max(ts, 1e-300), dtype)


def directional(
    f: Callable[..., jax.Array], primals: tuple, tangents: tuple, h: float | None = None
) -> jax.Array:
    """J t: the derivative of f(*primals) along ``tangents`` (one per primal), by central difference."""
    primals = tuple(jnp.asarray(p) for p in primals)
    tangents = tuple(jnp.asarray(t, p.dtype) for p, t in zip(primals, tangents, strict=True))
    step = _step_along(primals, tangents) if h is None else jnp.asarray(h, primals[0].dtype)
    return _stencil(lambda s: f(*(p + s * t for p, t in zip(primals, tangents, strict=True))), step)


def one_sided(
    f: Callable[..., jax.Array], primals: tuple, tangents: tuple, h: float | None = None
) -> tuple[jax.Array, jax.Array]:
    """Left and right first-order differences along ``tangents``; they disagree across a kink."""
    primals = tuple(jnp.asarray(p) for p in primals)
    tangents = tuple(jnp.asarray(t, p.dtype) for p, t in zip(primals, tangents, strict=True))
    step = _step_along(primals, tangents) if h is None else jnp.asarray(h, primals[0].dtype)

    def at(s):
        return f(*(p + s * t for p, t in zip(primals, tangents, strict=True)))

    f0 = at(0.0)
    return (f0 - at(-step)) / step, (at(step) - f0) / step


def _jacobian_flat(f: Callable[[jax.Array], jax.Array], x: jax.Array) -> jax.Array:
    """(out_size, n) Jacobian of f at flat x: all n stencils vmapped in one jitted call."""

    @jax.jit
    def run(x: jax.Array) -> jax.Array:
        h = fd_base_step(x.dtype) * jnp.maximum(1.0, jnp.abs(x))
        basis = jnp.eye(x.size, dtype=x.dtype)
        cols = jax.vmap(lambda e, hi: _stencil(lambda s: f(x + s * e), hi))(basis, h)
        return cols.reshape((x.size, -1)).T

    return run(x)


def jacobian(f: Callable[..., jax.Array], primals: tuple, argnum: int = 0) -> jax.Array:
    """Full Jacobian d f / d primals[argnum], one column per input element, shape out.shape + in.shape.

    Every column is computed at once (``vmap`` over basis directions) inside one ``jit``.
    """
    primals = tuple(jnp.asarray(p) for p in primals)
    x = primals[argnum]
    shape = x.shape

    def flat_f(v: jax.Array) -> jax.Array:
        args = list(primals)
        args[argnum] = v.reshape(shape)
        return jnp.asarray(f(*args))

    out_shape = jax.eval_shape(flat_f, x.reshape(-1)).shape
    jac = _jacobian_flat(flat_f, x.reshape(-1))
    return jac.reshape(out_shape + shape)
