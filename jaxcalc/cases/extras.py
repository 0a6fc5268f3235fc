"""More primitives for engine authors: smooth broadcasting binaries (logaddexp, atan2, hypot),
axis ops (flip, roll, L2 norm and logsumexp over a non-last axis), index_select, masked_fill
and triu, each with a handwritten VJP and JVP. Math follows the torch op of the same name."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxcalc.cases._base import (
    Case,
    Input,
    away_from_zero,
    ids_with_repeats,
    large_magnitude,
    normal,
    register,
)
from jaxcalc.cases.elementwise import _mask, unbroadcast
from jaxcalc.cases.reductions import AXIS

__all__ = ["ROLL", "FILL", "logaddexp_vjp", "atan2_vjp", "hypot_vjp"]

ROLL = 2  # torch.roll(x, 2, dims=1)
FILL = -1.5  # masked_fill value


def _reg(
    name: str,
    description: str,
    inputs: tuple,
    forward,
    vjp,
    jvp,
    sizes: dict,
    settings: dict | None = None,
    tags: tuple = (),
    regimes: dict | None = None,
) -> Case:
    return register(
        Case(
            name=name,
            description=description,
            inputs=inputs,
            forward=forward,
            vjp=vjp,
            jvp=jvp,
            sizes=sizes,
            settings=settings or {},
            regimes=regimes or {},
            tags=("primitive", *tags),
        )
    )


_BSIZES = {
    "golden": {"B": 2, "M": 3, "N": 4},
    "tiles": {"B": 3, "M": 33, "N": 65},
    "large": {"B": 16, "M": 256, "N": 1024},
}


def logaddexp_vjp(p: tuple, ct: jax.Array) -> tuple:
    """d/dx log(e^x + e^y) = sigmoid(x - y), d/dy = sigmoid(y - x), each unbroadcast to its input."""
    x, y = jnp.asarray(p[0]), jnp.asarray(p[1])
    w = jax.nn.sigmoid(x - y)
    return unbroadcast(ct * w, x.shape), unbroadcast(ct * (1.0 - w), y.shape)


_reg(
    "logaddexp",
    "log(exp(x) + exp(y)) for x (B, 1, N), y (M, 1), broadcast to (B, M, N)",
    (Input("x", ("B", 1, "N"), normal(2.0)), Input("y", ("M", 1), normal(2.0))),
    jnp.logaddexp,
    logaddexp_vjp,
    lambda p, t: jax.nn.sigmoid(p[0] - p[1]) * t[0] + jax.nn.sigmoid(p[1] - p[0]) * t[1],
    _BSIZES,
    tags=("elementwise", "broadcast"),
    regimes={"large": {"x": large_magnitude(30.0, 1000.0), "y": large_magnitude(30.0, 1000.0)}},
)


def atan2_vjp(p: tuple, ct: jax.Array) -> tuple:
    """atan2(y, x): d/dy = x / (x^2 + y^2), d/dx = -y / (x^2 + y^2), unbroadcast."""
    y, x = jnp.asarray(p[0]), jnp.asarray(p[1])
    r2 = x * x + y * y
    return unbroadcast(ct * x / r2, y.shape), unbroadcast(-ct * y / r2, x.shape)


# y keeps away from 0, so no point sits on the branch cut (y = 0, x < 0) or at the origin
_reg(
    "atan2",
    "atan2(y, x) for y (M, N), x (N,), broadcast to (M, N); |y| >= 0.2, off the branch cut",
    (Input("y", ("M", "N"), away_from_zero(0.2, 2.0)), Input("x", ("N",), normal())),
    jnp.arctan2,
    atan2_vjp,
    lambda p, t: (p[1] * t[0] - p[0] * t[1]) / (p[0] ** 2 + p[1] ** 2),
    {"golden": {"M": 3, "N": 4}, "tiles": {"M": 67, "N": 33}, "large": {"M": 1024, "N": 1024}},
    tags=("elementwise", "broadcast"),
)


def hypot_vjp(p: tuple, ct: jax.Array) -> tuple:
    """hypot = sqrt(x^2 + y^2): d/dx = x / hypot, d/dy = y / hypot, unbroadcast."""
    x, y = jnp.asarray(p[0]), jnp.asarray(p[1])
    h = jnp.hypot(x, y)
    return unbroadcast(ct * x / h, x.shape), unbroadcast(ct * y / h, y.shape)


_reg(
    "hypot",
    "sqrt(x^2 + y^2) for x (M, N), y (M, 1), broadcast to (M, N); |x| >= 0.1, off the origin",
    (Input("x", ("M", "N"), away_from_zero(0.1, 2.0)), Input("y", ("M", 1))),
    jnp.hypot,
    hypot_vjp,
    lambda p, t: (p[0] * t[0] + p[1] * t[1]) / jnp.hypot(p[0], p[1]),
    {"golden": {"M": 3, "N": 4}, "tiles": {"M": 67, "N": 33}, "large": {"M": 1024, "N": 1024}},
    tags=("elementwise", "broadcast"),
)

_ARC = {
    "golden": {"A": 2, "R": 5, "C": 3},
    "tiles": {"A": 2, "R": 2049, "C": 2},
    "large": {"A": 64, "R": 4096, "C": 32},
}
_reg(
    "flip",
    "torch.flip(x, (1,)): x (A, R, C) reversed along axis 1; VJP flips ct back",
    (Input("x", ("A", "R", "C")),),
    lambda x: jnp.flip(x, AXIS),
    lambda p, ct: (jnp.flip(ct, AXIS),),
    lambda p, t: jnp.flip(t[0], AXIS),
    _ARC,
    {"dims": (AXIS,)},
    ("shape",),
)
_reg(
    "roll",
    "torch.roll(x, 2, 1): x (M, N) shifted 2 places along axis 1, cyclically; VJP rolls back by -2",
    (Input("x", ("M", "N")),),
    lambda x: jnp.roll(x, ROLL, axis=1),
    lambda p, ct: (jnp.roll(ct, -ROLL, axis=1),),
    lambda p, t: jnp.roll(t[0], ROLL, axis=1),
    {"golden": {"M": 3, "N": 5}, "tiles": {"M": 33, "N": 67}, "large": {"M": 1024, "N": 1024}},
    {"shifts": ROLL, "dims": 1},
    ("shape",),
)


def _norm(x: jax.Array) -> jax.Array:
    return jnp.sqrt(jnp.sum(x * x, axis=AXIS, keepdims=True))


_reg(
    "norm_axis",
    "L2 norm over axis 1 of x (A, R, C), keepdims (torch.linalg.vector_norm(x, 2, 1, True)); VJP ct x / norm",
    (Input("x", ("A", "R", "C")),),
    _norm,
    lambda p, ct: (ct * p[0] / _norm(p[0]),),
    lambda p, t: jnp.sum(p[0] * t[0], axis=AXIS, keepdims=True) / _norm(p[0]),
    _ARC,
    {"ord": 2, "axis": AXIS, "keepdims": True},
    ("reduction",),
)


def _lse(x: jax.Array) -> jax.Array:
    m = jax.lax.stop_gradient(jnp.max(x, axis=AXIS, keepdims=True))
    return m + jnp.log(jnp.sum(jnp.exp(x - m), axis=AXIS, keepdims=True))


_reg(
    "logsumexp_axis",
    "log sum exp over axis 1 of x (A, R, C), keepdims (torch.logsumexp(x, 1, True)); "
    "VJP ct softmax over axis 1",
    (Input("x", ("A", "R", "C"), normal(2.0)),),
    _lse,
    lambda p, ct: (ct * jnp.exp(p[0] - _lse(p[0])),),
    lambda p, t: jnp.sum(jnp.exp(p[0] - _lse(p[0])) * t[0], axis=AXIS, keepdims=True),
    _ARC,
    {"axis": AXIS, "keepdims": True},
    ("reduction",),
    {"large": {"x": large_magnitude(30.0, 1000.0)}},
)


def index_select_vjp(p: tuple, ct: jax.Array) -> tuple:
    """dx[:, v] = sum of ct[:, i] over every i with ids[i] = v: repeated ids accumulate."""
    x, ids = jnp.asarray(p[0]), jnp.asarray(p[1])
    return (jnp.zeros_like(x).at[:, ids].add(ct),)


_reg(
    "index_select",
    "torch.index_select(x, 1, ids): columns ids (n) of x (M, V), ids repeated; the VJP accumulates repeats",
    (Input("x", ("M", "V")), Input("ids", ("n",), ids_with_repeats("V", 3, high=True), kind="int")),
    lambda x, ids: jnp.take(x, ids, axis=1),
    index_select_vjp,
    lambda p, t: jnp.take(t[0], p[1], axis=1),
    {
        "golden": {"M": 3, "V": 5, "n": 6},
        "tiles": {"M": 2, "V": 4099, "n": 67},
        "large": {"M": 64, "V": 50257, "n": 4096},
    },
    {"dim": 1},
    ("gather",),
)

_reg(
    "masked_fill",
    "torch.masked_fill(x, mask, -1.5): x (M, N), mask (N,) bool broadcast over rows; "
    "VJP: ct where the mask is False",
    (Input("x", ("M", "N")), Input("mask", ("N",), _mask, kind="mask")),
    lambda x, mask: jnp.where(mask, FILL, x),
    lambda p, ct: (jnp.where(p[1], 0.0, ct),),
    lambda p, t: jnp.where(p[1], 0.0, t[0]),
    {"golden": {"M": 3, "N": 4}, "tiles": {"M": 67, "N": 33}, "large": {"M": 1024, "N": 1024}},
    {"value": FILL},
    ("broadcast",),
)

_reg(
    "triu",
    "torch.triu(x): the upper triangle (j >= i) of x (M, N), M < N; VJP triu(ct)",
    (Input("x", ("M", "N")),),
    jnp.triu,
    lambda p, ct: (jnp.triu(ct),),
    lambda p, t: jnp.triu(t[0]),
    {"golden": {"M": 3, "N": 5}, "tiles": {"M": 33, "N": 67}, "large": {"M": 1024, "N": 2048}},
    {"diagonal": 0},
    ("shape",),
)
