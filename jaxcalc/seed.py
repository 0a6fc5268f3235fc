"""The seed's calculus as pure functions, each handwritten derivative beside its forward.

From "Calculus for Generative AI": the derivative of x**2, the partials and gradient of
3x**2 + 2y, the chain rule on (2x + 3)**2 and the update rule w <- w - lr * grad.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

__all__ = [
    "square",
    "square_grad",
    "poly_xy",
    "poly_xy_partials",
    "poly_xy_gradient",
    "affine",
    "affine_grad",
    "chain_affine_square",
    "chain_affine_square_grad",
    "update",
]


def square(x: ArrayLike) -> jax.Array:
    """f(x) = x**2."""
    return jnp.asarray(x) ** 2


def square_grad(x: ArrayLike) -> jax.Array:
    """f'(x) = 2x."""
    return 2 * jnp.asarray(x)


def poly_xy(x: ArrayLike, y: ArrayLike) -> jax.Array:
    """f(x, y) = 3x**2 + 2y."""
    return 3 * jnp.asarray(x) ** 2 + 2 * jnp.asarray(y)


def poly_xy_partials(x: ArrayLike, y: ArrayLike) -> tuple[jax.Array, jax.Array]:
    """(df/dx, df/dy) = (6x, 2), each shaped like its input."""
    x, y = jnp.asarray(x), jnp.asarray(y)
    return 6 * x, jnp.full_like(y, 2)


def poly_xy_gradient(x: ArrayLike, y: ArrayLike) -> jax.Array:
    """grad f = [6x, 2] for scalar x, y: shape (2,)."""
    return jnp.stack(jnp.broadcast_arrays(*poly_xy_partials(x, y)))


def affine(x: ArrayLike) -> jax.Array:
    """g(x) = 2x + 3, the inner function of the seed's chain-rule example."""
    return 2 * jnp.asarray(x) + 3


def affine_grad(x: ArrayLike) -> jax.Array:
    """g'(x) = 2."""
    return jnp.full_like(jnp.asarray(x), 2)


def chain_affine_square(x: ArrayLike) -> jax.Array:
    """f(g(x)) = (2x + 3)**2."""
    return square(affine(x))


def chain_affine_square_grad(x: ArrayLike) -> jax.Array:
    """d/dx (2x + 3)**2 = f'(g(x)) * g'(x) = 2(2x + 3) * 2 = 4(2x + 3)."""
    return square_grad(affine(x)) * affine_grad(x)


def update(params, grads, lr: float):
    """One gradient-descent update w <- w - lr * grad, over any pytree of arrays."""
    return jax.tree_util.tree_map(lambda w, g: w - lr * g, params, grads)
