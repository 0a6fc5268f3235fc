"""Binary elementwise primitives that broadcast in every pattern, with handwritten VJPs and JVPs.

Each arithmetic case takes x (B, 1, N), y (M, 1) and a scalar s and computes
F = op(op(x, y), s) -> (B, M, N): y lacks the leading axis B (a leading broadcast), x has a
size-1 middle axis, y a size-1 trailing axis, and s is a scalar. Every gradient must therefore
be summed over the axes its input was broadcast along and keep its own shape; with B, M, N
distinct, a gradient summed over the wrong axes or transposed has the wrong shape.
``where`` takes cond (M, 1) bool, x (B, 1, N) and a scalar y.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

from jaxcalc.cases._base import (
    Case,
    Input,
    Sampler,
    away_from_zero,
    normal,
    register,
    std_uniform,
    subkey,
    uniform,
)

__all__ = ["unbroadcast", "lattice"]

# golden: tiny, distinct; tiles: M past 32 and N past 64, neither a multiple of 32
_SIZES = {
    "golden": {"B": 2, "M": 3, "N": 4},
    "tiles": {"B": 3, "M": 33, "N": 65},
    "large": {"B": 16, "M": 256, "N": 1024},
}
_SHAPES = {"x": ("B", 1, "N"), "y": ("M", 1), "s": ()}
_SETTINGS = {"shapes": "x (B, 1, N), y (M, 1), s (): leading, middle, trailing and scalar broadcasts"}


def unbroadcast(g: jax.Array, shape: tuple[int, ...]) -> jax.Array:
    """The cotangent ``g`` of a broadcast result reduced to ``shape``: summed over the leading
    axes ``shape`` lacks and, keeping dims, over every axis where ``shape`` has size 1."""
    g = jnp.asarray(g)
    lead = g.ndim - len(shape)
    g = jnp.sum(g, axis=tuple(range(lead))) if lead else g
    axes = tuple(i for i, n in enumerate(shape) if n == 1 and g.shape[i] != 1)
    return jnp.sum(g, axis=axes, keepdims=True) if axes else g


def lattice(offset: float, step: float = 0.5, half: int = 6) -> Sampler:
    """Values offset + step * k, k uniform in [-half, half]: inputs of maximum and minimum drawn
    with offsets 0, 0.25 and 0.125 differ by at least 0.125, so no comparison is a tie."""

    def sample(key: jax.Array, shape: tuple[int, ...], dims=None) -> np.ndarray:
        k = np.floor((2 * half + 1) * std_uniform(key, shape)) - half
        return offset + step * np.minimum(k, half)

    return sample


def _binary_case(
    name: str,
    description: str,
    op: Callable[[jax.Array, jax.Array], jax.Array],
    partials: Callable[[jax.Array, jax.Array], tuple[jax.Array, jax.Array]],
    samplers: dict[str, Sampler],
    tags: tuple[str, ...] = (),
) -> Case:
    """F = op(op(x, y), s); ``partials(a, b)`` gives (d op/da, d op/db) elementwise at the
    broadcast shape. VJP: chain the two ops and unbroadcast each cotangent to its input."""

    def forward(x: ArrayLike, y: ArrayLike, s: ArrayLike) -> jax.Array:
        return op(op(jnp.asarray(x), jnp.asarray(y)), jnp.asarray(s))

    def vjp(p: tuple, ct: jax.Array) -> tuple:
        x, y, s = (jnp.asarray(a) for a in p)
        u = op(x, y)
        du, ds = partials(u, s)
        gu = ct * du
        dx, dy = partials(x, y)
        return unbroadcast(gu * dx, x.shape), unbroadcast(gu * dy, y.shape), unbroadcast(ct * ds, s.shape)

    def jvp(p: tuple, t: tuple) -> jax.Array:
        x, y, s = (jnp.asarray(a) for a in p)
        u = op(x, y)
        dx, dy = partials(x, y)
        du, ds = partials(u, s)
        return du * (dx * t[0] + dy * t[1]) + ds * t[2]

    return register(
        Case(
            name=name,
            description=description,
            inputs=tuple(Input(n, _SHAPES[n], samplers[n]) for n in ("x", "y", "s")),
            forward=forward,
            vjp=vjp,
            jvp=jvp,
            sizes=_SIZES,
            settings=_SETTINGS,
            tags=("primitive", "elementwise", "broadcast", *tags),
        )
    )


def _ones(a: jax.Array, b: jax.Array) -> jax.Array:
    return jnp.ones(jnp.broadcast_shapes(a.shape, b.shape), jnp.result_type(a, b))


_N = {"x": normal(), "y": normal(), "s": normal()}
_binary_case(
    "add",
    "(x + y) + s, broadcasting x (B,1,N), y (M,1), s () to (B,M,N)",
    jnp.add,
    lambda a, b: (_ones(a, b), _ones(a, b)),
    _N,
)
_binary_case(
    "sub",
    "(x - y) - s, broadcasting x (B,1,N), y (M,1), s () to (B,M,N)",
    jnp.subtract,
    lambda a, b: (_ones(a, b), -_ones(a, b)),
    _N,
)
_binary_case(
    "mul",
    "(x * y) * s, broadcasting x (B,1,N), y (M,1), s () to (B,M,N)",
    jnp.multiply,
    lambda a, b: (b * _ones(a, b), a * _ones(a, b)),
    _N,
)
_binary_case(
    "div",
    "(x / y) / s, broadcasting x (B,1,N), y (M,1), s () to (B,M,N); y, s kept from 0",
    jnp.divide,
    lambda a, b: (1.0 / b * _ones(a, b), -a / (b * b)),
    {"x": normal(), "y": away_from_zero(0.5, 2.0), "s": away_from_zero(0.5, 2.0)},
)
_binary_case(
    "pow",
    "(x ** y) ** s, x in [0.5, 2) > 0, broadcasting x (B,1,N), y (M,1), s () to (B,M,N)",
    jnp.power,
    lambda a, b: (b * a ** (b - 1.0), jnp.log(a) * a**b),
    {"x": uniform(0.5, 2.0), "y": uniform(-1.5, 1.5), "s": uniform(0.5, 1.5)},
)
# maximum / minimum: x, y and s on lattices offset by 0, 0.25 and 0.125, so no two compared values
# are closer than 0.125 (far from the kink where they tie)
_LAT = {"x": lattice(0.0), "y": lattice(0.25), "s": lattice(0.125)}


def _pick(first: Callable[[jax.Array, jax.Array], jax.Array]):
    def partials(a: jax.Array, b: jax.Array) -> tuple[jax.Array, jax.Array]:
        m = first(a, b)
        one = _ones(a, b)
        return jnp.where(m, one, 0.0), jnp.where(m, 0.0, one)

    return partials


_binary_case(
    "maximum",
    "max(max(x, y), s) elementwise, broadcasting; inputs at least 0.125 apart",
    jnp.maximum,
    _pick(lambda a, b: a > b),
    _LAT,
    ("kink",),
)
_binary_case(
    "minimum",
    "min(min(x, y), s) elementwise, broadcasting; inputs at least 0.125 apart",
    jnp.minimum,
    _pick(lambda a, b: a < b),
    _LAT,
    ("kink",),
)


# ----------------------------------------------------------------------------- where


def _mask(key: jax.Array, shape: tuple[int, ...], dims=None) -> np.ndarray:
    """A bool mask with both values present (first entry True, second False)."""
    flat = (std_uniform(subkey(key, 0), shape) < 0.5).reshape(-1)
    if flat.size >= 2:
        flat[0], flat[1] = True, False
    return flat.reshape(shape)


def where(cond: ArrayLike, x: ArrayLike, y: ArrayLike) -> jax.Array:
    """cond ? x : y elementwise with broadcasting: cond (M, 1), x (B, 1, N), y () -> (B, M, N)."""
    return jnp.where(jnp.asarray(cond), jnp.asarray(x), jnp.asarray(y))


def where_vjp(p: tuple, ct: jax.Array) -> tuple:
    """dx = unbroadcast(ct where cond), dy = unbroadcast(ct where not cond); cond gets none."""
    cond, x, y = (jnp.asarray(a) for a in p)
    zero = jnp.zeros_like(ct)
    return unbroadcast(jnp.where(cond, ct, zero), x.shape), unbroadcast(jnp.where(cond, zero, ct), y.shape)


register(
    Case(
        name="where",
        description="where(cond, x, y): cond (M,1) bool, x (B,1,N), scalar y, broadcast to (B,M,N)",
        inputs=(Input("cond", ("M", 1), _mask, kind="mask"), Input("x", ("B", 1, "N")), Input("y", ())),
        forward=where,
        vjp=where_vjp,
        jvp=lambda p, t: jnp.where(jnp.asarray(p[0]), t[0], t[1]),
        sizes=_SIZES,
        settings=_SETTINGS,
        tags=("primitive", "elementwise", "broadcast"),
    )
)
