"""Gradient descent: a jitted step and a fused loop that returns the whole trajectory.

``descent(loss, x0, lr, steps)`` compiles the entire loop into one call with
``lax.scan``; it works for any pure loss of a scalar, array or pytree.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from jaxcalc.seed import update

__all__ = ["Trajectory", "descent_step", "descent", "descent_with_grad", "classify_lr"]

PyTree = Any


class Trajectory(NamedTuple):
    """Iterates x_1..x_n (leading axis = step) and the loss f(x_k) at each."""

    params: PyTree
    losses: jax.Array


@partial(jax.jit, static_argnums=0)
def descent_step(loss: Callable[[PyTree], jax.Array], params: PyTree, lr: float) -> PyTree:
    """One jitted step w <- w - lr * grad loss(w), by autodiff (compiled once per loss and shapes)."""
    return update(params, jax.grad(loss)(params), lr)


def descent_with_grad(
    loss: Callable[[PyTree], jax.Array],
    grad: Callable[[PyTree], PyTree],
    x0: PyTree,
    lr: float,
    steps: int,
) -> Trajectory:
    """Run ``steps`` updates x <- x - lr * grad(x) inside one ``lax.scan``; returns x_1..x_n, f(x_k)."""

    def body(x, _):
        x = update(x, grad(x), lr)
        return x, (x, loss(x))

    _, (xs, losses) = jax.lax.scan(body, x0, None, length=steps)
    return Trajectory(xs, losses)


@partial(jax.jit, static_argnums=(0, 3))
def descent(loss: Callable[[PyTree], jax.Array], x0: PyTree, lr: float, steps: int) -> Trajectory:
    """Jitted, fused gradient descent on ``loss`` by autodiff: one compiled call for all steps."""
    return descent_with_grad(loss, jax.grad(loss), x0, lr, steps)


def classify_lr(xs: jax.Array, x0: float, minimizer: float = 0.0, losses: jax.Array | None = None) -> str:
    """Name the behaviour of a 1-D trajectory x_1..x_n started at x0.

    Returns 'converges' (|x - x*| shrinks), 'oscillates' (|x - x*| stays, x moves),
    'diverges' (|x - x*| grows), 'overflows' (x or f(x) is no longer finite) or 'stalls'
    (x never moves), where x* is ``minimizer``. Give ``losses`` (f(x_k)) so that an f that
    overflows while x is still finite is named too.
    """
    xs = jnp.asarray(xs)
    if not bool(jnp.all(jnp.isfinite(xs))) or (
        losses is not None and not bool(jnp.all(jnp.isfinite(jnp.asarray(losses))))
    ):
        return "overflows"
    first, last = abs(float(x0) - minimizer), abs(float(xs[-1]) - minimizer)
    if last < first * (1 - 1e-12):
        return "converges"
    if last > first * (1 + 1e-12):
        return "diverges"
    return "oscillates" if xs.size > 1 and float(xs[0]) != float(x0) else "stalls"
