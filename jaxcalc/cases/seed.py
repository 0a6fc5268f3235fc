"""The seed's own examples as cases: x**2, 3x**2 + 2y, (2x + 3)**2 and the descent loop."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxcalc import seed
from jaxcalc.cases._base import Case, Input, register, uniform

# square: f(x) = x**2, f'(x) = 2x
register(
    Case(
        name="square",
        description="x**2 (seed: f'(x) = 2x)",
        inputs=(Input("x", (), uniform(-3.0, 3.0)),),
        forward=seed.square,
        vjp=lambda p, ct: (ct * seed.square_grad(p[0]),),
        jvp=lambda p, t: seed.square_grad(p[0]) * t[0],
        tags=("seed", "scalar"),
    )
)

# poly_xy: f = 3x**2 + 2y, df/dx = 6x, df/dy = 2
register(
    Case(
        name="poly_xy",
        description="3x**2 + 2y (seed: df/dx = 6x, df/dy = 2)",
        inputs=(Input("x", (), uniform(-3.0, 3.0)), Input("y", (), uniform(-3.0, 3.0))),
        forward=seed.poly_xy,
        vjp=lambda p, ct: tuple(ct * d for d in seed.poly_xy_partials(*p)),
        jvp=lambda p, t: sum(d * dt for d, dt in zip(seed.poly_xy_partials(*p), t, strict=True)),
        tags=("seed", "scalar"),
    )
)

# chain_affine_square: (2x + 3)**2 = f(g(x)), f(u) = u**2, g(x) = 2x + 3, derivative 4(2x + 3)
register(
    Case(
        name="chain_affine_square",
        description="(2x + 3)**2 (seed: 4(2x + 3))",
        inputs=(Input("x", (), uniform(-3.0, 3.0)),),
        forward=seed.chain_affine_square,
        vjp=lambda p, ct: (ct * seed.chain_affine_square_grad(p[0]),),
        jvp=lambda p, t: seed.chain_affine_square_grad(p[0]) * t[0],
        chain=lambda p: (seed.square, seed.affine),
        tags=("seed", "scalar", "composite"),
    )
)

DESCENT_LR = 0.1
DESCENT_STEPS = 20
_RATE = 1 - 2 * DESCENT_LR  # each step x <- x - 0.1 * 2x = 0.8x


def descent_square(x0: jax.Array) -> jax.Array:
    """The 20 iterates x_1..x_20 of the seed's loop x <- x - 0.1 * 2x, shape (20,)."""

    def body(x, _):
        x = seed.update(x, seed.square_grad(x), DESCENT_LR)
        return x, x

    return jax.lax.scan(body, x0, None, length=DESCENT_STEPS)[1]


def descent_square_vjp(p: tuple, ct: jax.Array) -> tuple[jax.Array]:
    """Backward through the loop: dx_{k-1} = (1 - 2 lr) dx_k, accumulating ct_k at each iterate."""

    def body(acc, c):
        acc = (acc + c) * _RATE  # x_k = 0.8 x_{k-1}
        return acc, None

    acc, _ = jax.lax.scan(body, jnp.zeros_like(p[0]), ct, reverse=True)
    return (acc,)


def descent_square_jvp(p: tuple, t: tuple) -> jax.Array:
    """Forward tangent of the iterates: dx_k = (1 - 2 lr)**k dx_0."""
    k = jnp.arange(1, DESCENT_STEPS + 1, dtype=t[0].dtype)
    return t[0] * _RATE**k


register(
    Case(
        name="descent_square",
        description="the 20 iterates x1..x20 of x <- x - 0.1*2x from x0 (seed's loop), shape (20,)",
        inputs=(Input("x0", (), uniform(5.0, 15.0)),),
        forward=descent_square,
        vjp=descent_square_vjp,
        jvp=descent_square_jvp,
        tags=("seed", "descent"),
    )
)
