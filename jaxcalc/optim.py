"""Optimizers written by hand as ``(init, update)`` pairs, with optax's semantics.

An optimizer is a :class:`GradientTransformation`: ``init(params) -> state`` and
``update(grads, state, params=None) -> (updates, state)``. The updates are *added*
to the parameters (``apply_updates``), so they already carry the minus sign::

    sgd:       u = -lr * g
    momentum:  t' = g + beta * t;                 u = -lr * t'
    nesterov:  t' = g + beta * t;                 u = -lr * (g + beta * t')
    adam:      m' = b1 * m + (1 - b1) * g;        v' = b2 * v + (1 - b2) * g**2;   k' = k + 1
               u = -lr * (m' / (1 - b1**k')) / (sqrt(v' / (1 - b2**k')) + eps)

Each matches ``optax.sgd(lr)``, ``optax.sgd(lr, momentum=beta)``,
``optax.sgd(lr, momentum=beta, nesterov=True)`` and ``optax.adam(lr, b1, b2, eps)``
to round-off, step for step; the states are NamedTuples, so they are pytrees that jit,
scan and checkpoint like any other.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

__all__ = [
    "GradientTransformation",
    "EmptyState",
    "TraceState",
    "AdamState",
    "sgd",
    "momentum",
    "nesterov",
    "adam",
    "apply_updates",
]

PyTree = Any


class GradientTransformation(NamedTuple):
    """A pure optimizer: ``init(params) -> state``, ``update(grads, state, params) -> (updates, state)``."""

    init: Callable[[PyTree], Any]
    update: Callable[..., tuple[PyTree, Any]]


class EmptyState(NamedTuple):
    """Plain SGD keeps no state."""


class TraceState(NamedTuple):
    """Momentum buffer t, shaped like the params."""

    trace: PyTree


class AdamState(NamedTuple):
    """Step count k (int32 scalar), first moment m and second moment v (shaped like the params)."""

    count: jax.Array
    mu: PyTree
    nu: PyTree


def _zeros_like(params: PyTree) -> PyTree:
    return jax.tree_util.tree_map(jnp.zeros_like, params)


def apply_updates(params: PyTree, updates: PyTree) -> PyTree:
    """params + updates, leaf by leaf, keeping each parameter's dtype."""
    return jax.tree_util.tree_map(lambda p, u: (p + u).astype(p.dtype), params, updates)


def sgd(lr: float) -> GradientTransformation:
    """Plain gradient descent: u = -lr * g (the seed's w <- w - lr * grad)."""

    def init(params: PyTree) -> EmptyState:
        del params
        return EmptyState()

    def update(grads: PyTree, state: EmptyState, params: PyTree = None) -> tuple[PyTree, EmptyState]:
        del params
        return jax.tree_util.tree_map(lambda g: -lr * g, grads), state

    return GradientTransformation(init, update)


def _trace(lr: float, beta: float, use_nesterov: bool) -> GradientTransformation:
    """Heavy-ball momentum t' = g + beta * t, optionally with the Nesterov look-ahead g + beta * t'."""

    def init(params: PyTree) -> TraceState:
        return TraceState(_zeros_like(params))

    def update(grads: PyTree, state: TraceState, params: PyTree = None) -> tuple[PyTree, TraceState]:
        del params
        new_trace = jax.tree_util.tree_map(lambda g, t: g + beta * t, grads, state.trace)
        step = (
            jax.tree_util.tree_map(lambda g, t: g + beta * t, grads, new_trace) if use_nesterov else new_trace
        )
        return jax.tree_util.tree_map(lambda s: -lr * s, step), TraceState(new_trace)

    return GradientTransformation(init, update)


def momentum(lr: float, beta: float = 0.9) -> GradientTransformation:
    """SGD with momentum: t' = g + beta * t, u = -lr * t' (as ``optax.sgd(lr, momentum=beta)``)."""
    return _trace(lr, beta, use_nesterov=False)


def nesterov(lr: float, beta: float = 0.9) -> GradientTransformation:
    """Nesterov momentum: t' = g + beta * t, u = -lr * (g + beta * t') (``nesterov=True`` in optax)."""
    return _trace(lr, beta, use_nesterov=True)


def adam(lr: float, b1: float = 0.9, b2: float = 0.999, eps: float = 1e-8) -> GradientTransformation:
    """Adam with bias correction, as ``optax.adam(lr, b1, b2, eps)`` (eps outside the square root)."""

    def init(params: PyTree) -> AdamState:
        return AdamState(jnp.zeros([], jnp.int32), _zeros_like(params), _zeros_like(params))

    def update(grads: PyTree, state: AdamState, params: PyTree = None) -> tuple[PyTree, AdamState]:
        del params
        mu = jax.tree_util.tree_map(lambda g, m: (1 - b1) * g + b1 * m, grads, state.mu)
        nu = jax.tree_util.tree_map(lambda g, v: (1 - b2) * (g * g) + b2 * v, grads, state.nu)
        count = jnp.minimum(state.count, jnp.iinfo(jnp.int32).max - 1) + 1
        # Bias corrections 1 - b**k are formed in float32 or wider, then cast to each moment's dtype.
        c1, c2 = 1 - b1**count, 1 - b2**count

        def step(m: jax.Array, v: jax.Array) -> jax.Array:
            m_hat, v_hat = m / c1.astype(m.dtype), v / c2.astype(v.dtype)
            return -lr * (m_hat / (jnp.sqrt(v_hat) + eps))

        return jax.tree_util.tree_map(step, mu, nu), AdamState(count, mu, nu)

    return GradientTransformation(init, update)
