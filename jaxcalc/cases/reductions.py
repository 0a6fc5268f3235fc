"""Reductions over a chosen axis (axis 1 of a 3-d input, not the last), with keepdims.

x has shape (A, R, C) and every case reduces over axis 1 (R), keeping it as a size-1 axis, so a
backward pass that reduces or broadcasts over the wrong axis gets the wrong shape or values.
``cumsum`` scans along axis 1 and keeps the shape; its VJP is the reversed cumulative sum.
``var_axis`` follows torch.var: the unbiased estimate (correction 1).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

from jaxcalc.cases._base import Case, Input, Sampler, normal, register, std_uniform, subkey

__all__ = ["AXIS", "distinct", "signed_near_one"]

AXIS = 1
_SETTINGS = {"axis": AXIS, "keepdims": True}
# tiles: a reduction over 2,049 entries (past 2,048), 8,196 elements in all
_SIZES = {
    "golden": {"A": 2, "R": 5, "C": 3},
    "tiles": {"A": 2, "R": 2049, "C": 2},
    "large": {"A": 64, "R": 4096, "C": 32},
}
_X = ("A", "R", "C")


def distinct(spacing: float = 0.1) -> Sampler:
    """A random permutation of evenly spaced values, ``spacing`` apart and centred on 0: no two
    entries tie (max, min, top-k stay at least ``spacing`` from a kink)."""

    def sample(key: jax.Array, shape: tuple[int, ...], dims=None) -> np.ndarray:
        n = int(np.prod(shape, dtype=np.int64))
        order = np.argsort(std_uniform(key, (n,)), kind="stable")
        return ((order - (n - 1) / 2.0) * spacing).reshape(shape)

    return sample


def signed_near_one(lo: float = 0.8, hi: float = 1.25) -> Sampler:
    """Random sign times a magnitude in [lo, hi): products over thousands of entries stay finite
    and every entry stays far from zero."""

    def sample(key: jax.Array, shape: tuple[int, ...], dims=None) -> np.ndarray:
        mag = np.exp(np.log(lo) + (np.log(hi) - np.log(lo)) * std_uniform(subkey(key, 0), shape))
        return np.where(std_uniform(subkey(key, 1), shape) < 0.5, mag, -mag)

    return sample


def _case(name: str, description: str, forward, vjp, jvp, sampler: Sampler, tags=(), settings=None) -> Case:
    return register(
        Case(
            name=name,
            description=description,
            inputs=(Input("x", _X, sampler),),
            forward=forward,
            vjp=vjp,
            jvp=jvp,
            sizes=_SIZES,
            settings=_SETTINGS if settings is None else settings,
            tags=("primitive", "reduction", *tags),
        )
    )


def _r(x: ArrayLike) -> int:
    return jnp.asarray(x).shape[AXIS]


_case(
    "sum_axis",
    "sum over axis 1 of x (A, R, C), keepdims -> (A, 1, C); VJP broadcasts ct back",
    lambda x: jnp.sum(x, axis=AXIS, keepdims=True),
    lambda p, ct: (jnp.broadcast_to(ct, jnp.shape(p[0])),),
    lambda p, t: jnp.sum(t[0], axis=AXIS, keepdims=True),
    normal(),
)
_case(
    "mean_axis",
    "mean over axis 1 of x (A, R, C), keepdims -> (A, 1, C); VJP ct / R broadcast",
    lambda x: jnp.mean(x, axis=AXIS, keepdims=True),
    lambda p, ct: (jnp.broadcast_to(ct / _r(p[0]), jnp.shape(p[0])),),
    lambda p, t: jnp.mean(t[0], axis=AXIS, keepdims=True),
    normal(),
)


def _prod_vjp(p: tuple, ct: jax.Array) -> tuple:
    """d prod / d x_i = prod / x_i (every entry is kept away from zero)."""
    x = jnp.asarray(p[0])
    return (ct * jnp.prod(x, axis=AXIS, keepdims=True) / x,)


_case(
    "prod_axis",
    "product over axis 1 of x (A, R, C), keepdims; entries +-[0.8, 1.25), far from 0",
    lambda x: jnp.prod(x, axis=AXIS, keepdims=True),
    _prod_vjp,
    lambda p, t: jnp.sum(jnp.prod(p[0], axis=AXIS, keepdims=True) / p[0] * t[0], axis=AXIS, keepdims=True),
    signed_near_one(),
)


def _argext_mask(x: jax.Array, largest: bool) -> jax.Array:
    """One-hot (along axis 1) of the extreme entry; the entries are distinct, so it is unique."""
    x = jnp.asarray(x)
    ext = jnp.max(x, axis=AXIS, keepdims=True) if largest else jnp.min(x, axis=AXIS, keepdims=True)
    return (x == ext).astype(x.dtype)


for _name, _largest in (("max_axis", True), ("min_axis", False)):
    _f = jnp.max if _largest else jnp.min
    _case(
        _name,
        f"{'max' if _largest else 'min'} over axis 1 of x (A, R, C), keepdims; distinct entries 0.1 apart; "
        "the VJP routes ct to the arg-extreme",
        (lambda f: lambda x: f(x, axis=AXIS, keepdims=True))(_f),
        (lambda lg: lambda p, ct: (ct * _argext_mask(p[0], lg),))(_largest),
        (lambda lg: lambda p, t: jnp.sum(_argext_mask(p[0], lg) * t[0], axis=AXIS, keepdims=True))(_largest),
        distinct(0.1),
        ("kink",),
    )


def _var_vjp(p: tuple, ct: jax.Array) -> tuple:
    """var = sum (x - mean)**2 / (R - 1); d var / d x_i = 2 (x_i - mean) / (R - 1)."""
    x = jnp.asarray(p[0])
    return (ct * 2.0 * (x - jnp.mean(x, axis=AXIS, keepdims=True)) / (_r(x) - 1),)


_case(
    "var_axis",
    "unbiased variance (torch.var, correction 1) over axis 1 of x (A, R, C), keepdims",
    lambda x: jnp.var(x, axis=AXIS, keepdims=True, ddof=1),
    _var_vjp,
    lambda p, t: (
        jnp.sum(2.0 * (p[0] - jnp.mean(p[0], axis=AXIS, keepdims=True)) * t[0], axis=AXIS, keepdims=True)
        / (_r(p[0]) - 1)
    ),
    normal(1.5, 0.5),
    settings={**_SETTINGS, "correction": 1},
)


def _rev_cumsum(ct: jax.Array) -> jax.Array:
    """out_i = sum_{j >= i} ct_j along axis 1: the transpose of cumsum."""
    return jnp.flip(jnp.cumsum(jnp.flip(ct, AXIS), axis=AXIS), AXIS)


_case(
    "cumsum",
    "cumulative sum along axis 1 of x (A, R, C) -> (A, R, C); the VJP is the reversed cumsum",
    lambda x: jnp.cumsum(x, axis=AXIS),
    lambda p, ct: (_rev_cumsum(ct),),
    lambda p, t: jnp.cumsum(t[0], axis=AXIS),
    normal(),
    settings={"axis": AXIS},
)
