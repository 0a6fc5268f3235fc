"""Unary elementwise primitives on x (m, n), each with its derivative f'(x) beside it.

The Jacobian of an elementwise map is diag(f'(x)), so VJP = ct f'(x) and JVP = f'(x) t.
Inputs stay inside each function's domain (sqrt, rsqrt, log: x > 0; log1p: x > -1; reciprocal:
|x| >= 0.5) and at least 0.1 from the kinks of abs (0) and clip (its bounds).
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
    large_magnitude,
    normal,
    register,
    std_uniform,
    tiny_magnitude,
    uniform,
)

__all__ = ["CLIP_LO", "CLIP_HI", "clip", "clip_grad", "UNARY"]

CLIP_LO, CLIP_HI = -0.5, 0.75
_SIZES = {"golden": {"m": 3, "n": 4}, "tiles": {"m": 67, "n": 33}, "large": {"m": 1024, "n": 1024}}


def clip(x: ArrayLike) -> jax.Array:
    """min(max(x, -0.5), 0.75) elementwise (torch.clamp with those bounds)."""
    return jnp.clip(jnp.asarray(x), CLIP_LO, CLIP_HI)


def clip_grad(x: ArrayLike) -> jax.Array:
    """1 strictly between the bounds, 0 outside (kinks at the bounds)."""
    x = jnp.asarray(x)
    return jnp.where((x > CLIP_LO) & (x < CLIP_HI), 1.0, 0.0).astype(x.dtype)


def _clip_sampler(key: jax.Array, shape: tuple[int, ...], dims=None) -> np.ndarray:
    """Values in [-2, -0.6], [-0.4, 0.65] or [0.85, 2]: at least 0.1 from either clip bound."""
    u = std_uniform(key, shape) * 3.0
    lo = -2.0 + 1.4 * u
    mid = -0.4 + 1.05 * (u - 1.0)
    hi = 0.85 + 1.15 * (u - 2.0)
    return np.where(u < 1.0, lo, np.where(u < 2.0, mid, hi))


# name: (f, f', sampler, description, regimes, extra tags)
UNARY: dict[str, tuple[Callable, Callable, Sampler, str, dict, tuple]] = {
    "abs": (
        jnp.abs,
        jnp.sign,
        away_from_zero(0.1, 2.0),
        "|x|, x at least 0.1 from the kink at 0",
        {},
        ("kink",),
    ),
    "sqrt": (
        jnp.sqrt,
        lambda x: 0.5 / jnp.sqrt(x),
        uniform(0.5, 3.0),
        "sqrt(x), x in [0.5, 3)",
        {"large": {"x": uniform(1e3, 1e6)}},
        (),
    ),
    "rsqrt": (
        jax.lax.rsqrt,
        lambda x: -0.5 * jax.lax.rsqrt(x) / x,
        uniform(0.5, 3.0),
        "1 / sqrt(x), x in [0.5, 3)",
        {"large": {"x": uniform(1e3, 1e6)}},
        (),
    ),
    "exp": (
        jnp.exp,
        jnp.exp,
        normal(1.5),
        "exp(x)",
        {"large": {"x": large_magnitude(30.0, 700.0)}, "tiny": {"x": tiny_magnitude()}},
        (),
    ),
    "log": (
        jnp.log,
        lambda x: 1.0 / x,
        uniform(0.2, 4.0),
        "log(x), x in [0.2, 4)",
        {"large": {"x": uniform(1e3, 1e30)}},
        (),
    ),
    "log1p": (
        jnp.log1p,
        lambda x: 1.0 / (1.0 + x),
        uniform(-0.5, 3.0),
        "log(1 + x), x in [-0.5, 3)",
        {"tiny": {"x": tiny_magnitude()}},
        (),
    ),
    "expm1": (jnp.expm1, jnp.exp, normal(1.5), "exp(x) - 1", {"tiny": {"x": tiny_magnitude()}}, ()),
    "sin": (jnp.sin, jnp.cos, normal(2.0), "sin(x)", {}, ()),
    "cos": (jnp.cos, lambda x: -jnp.sin(x), normal(2.0), "cos(x)", {}, ()),
    "reciprocal": (
        jnp.reciprocal,
        lambda x: -1.0 / (x * x),
        away_from_zero(0.5, 2.0),
        "1 / x, |x| in [0.5, 2)",
        {},
        (),
    ),
    "clip": (
        clip,
        clip_grad,
        _clip_sampler,
        "clamp(x, -0.5, 0.75), x at least 0.1 from both bounds",
        {},
        ("kink",),
    ),
}


def _unary_case(
    name: str, f: Callable, df: Callable, sampler: Sampler, description: str, regimes: dict, tags: tuple
) -> Case:
    """An elementwise case: VJP = ct f'(x), JVP = f'(x) t."""
    return register(
        Case(
            name=name,
            description=description + ", elementwise",
            inputs=(Input("x", ("m", "n"), sampler),),
            forward=lambda x: f(jnp.asarray(x)),
            vjp=lambda p, ct: (ct * df(jnp.asarray(p[0])),),
            jvp=lambda p, t: df(jnp.asarray(p[0])) * t[0],
            sizes=_SIZES,
            regimes=regimes,
            settings={"bounds": (CLIP_LO, CLIP_HI)} if name == "clip" else {},
            tags=("primitive", "unary", "elementwise", *tags),
        )
    )


for _name, _spec in UNARY.items():
    _unary_case(_name, *_spec)
