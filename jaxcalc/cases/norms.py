"""Batch and group normalization with training statistics, as torch.nn.functional computes them.

For x (N, C, L) (a batch of C-channel signals), gamma and beta (C,), eps = 1e-5:

  batchnorm: per channel c, mu and var (biased) over the axes (N, L); the batch's own statistics
             (F.batch_norm(training=True)), never running averages
  groupnorm: C channels in G = 3 groups of C / G; per sample n and group, mu and var over the
             group's channels and L (F.group_norm)
  out = gamma_c (x - mu) / sqrt(var + eps) + beta_c

Backward, over the M elements a statistic is taken over, with xhat = (x - mu) rstd, g = ct gamma:

  dx = rstd (g - mean_M(g) - xhat mean_M(g xhat)),  dgamma_c = sum ct xhat,  dbeta_c = sum ct

The two mean terms are the statistics' own gradient: a backward pass that treats mu and var as
constants (as with running statistics) drops them.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from jaxcalc.cases._base import Case, Input, normal, offset_rows, register, uniform

__all__ = ["NORM_EPS", "GROUPS", "batchnorm", "batchnorm_vjp", "groupnorm", "groupnorm_vjp"]

NORM_EPS = 1e-5
GROUPS = 3
_BN_AXES = (0, 2)  # (N, L): every axis but the channel axis


def _standardize(x: jax.Array, axes: tuple[int, ...]) -> tuple[jax.Array, jax.Array]:
    """(xhat, rstd): x centred and scaled by 1 / sqrt(var + eps), statistics over ``axes`` (two-pass)."""
    xc = x - jnp.mean(x, axis=axes, keepdims=True)
    rstd = jax.lax.rsqrt(jnp.mean(xc * xc, axis=axes, keepdims=True) + NORM_EPS)
    return xc * rstd, rstd


def _statistics_terms(g: jax.Array, xhat: jax.Array, axes: tuple[int, ...]) -> jax.Array:
    """mean(g) + xhat mean(g xhat) over ``axes``: what the batch statistics add to the backward pass."""
    return jnp.mean(g, axis=axes, keepdims=True) + xhat * jnp.mean(g * xhat, axis=axes, keepdims=True)


def _channel(p: ArrayLike) -> jax.Array:
    return jnp.asarray(p)[:, None]  # (C,) -> (C, 1), against x (N, C, L)


def batchnorm(x: ArrayLike, gamma: ArrayLike, beta: ArrayLike) -> jax.Array:
    """gamma (x - mu_c) / sqrt(var_c + 1e-5) + beta, batch statistics over (N, L): x (N, C, L)."""
    xhat, _ = _standardize(jnp.asarray(x), _BN_AXES)
    return _channel(gamma) * xhat + _channel(beta)


def batchnorm_vjp(primals: tuple, ct: ArrayLike) -> tuple[jax.Array, jax.Array, jax.Array]:
    """(dx, dgamma, dbeta) of :func:`batchnorm` (module docstring)."""
    x, gamma, _ = (jnp.asarray(p) for p in primals)
    ct = jnp.asarray(ct)
    xhat, rstd = _standardize(x, _BN_AXES)
    g = ct * _channel(gamma)
    dx = rstd * (g - _statistics_terms(g, xhat, _BN_AXES))
    return dx, jnp.sum(ct * xhat, axis=_BN_AXES), jnp.sum(ct, axis=_BN_AXES)


def _grouped(x: jax.Array) -> jax.Array:
    n, c, length = x.shape
    return x.reshape(n, GROUPS, c // GROUPS, length)


def groupnorm(x: ArrayLike, gamma: ArrayLike, beta: ArrayLike) -> jax.Array:
    """gamma (x - mu) / sqrt(var + 1e-5) + beta, statistics per sample over each of 3 channel groups."""
    x = jnp.asarray(x)
    xhat, _ = _standardize(_grouped(x), (2, 3))
    return _channel(gamma) * xhat.reshape(x.shape) + _channel(beta)


def groupnorm_vjp(primals: tuple, ct: ArrayLike) -> tuple[jax.Array, jax.Array, jax.Array]:
    """(dx, dgamma, dbeta) of :func:`groupnorm`: the batchnorm formula over each (sample, group)."""
    x, gamma, _ = (jnp.asarray(p) for p in primals)
    ct = jnp.asarray(ct)
    xhat, rstd = _standardize(_grouped(x), (2, 3))
    g = _grouped(ct * _channel(gamma))
    dx = (rstd * (g - _statistics_terms(g, xhat, (2, 3)))).reshape(x.shape)
    xhat = xhat.reshape(x.shape)
    return dx, jnp.sum(ct * xhat, axis=_BN_AXES), jnp.sum(ct, axis=_BN_AXES)


register(
    Case(
        name="batchnorm",
        description=(
            "F.batch_norm(training=True): per channel, (x - mu) / sqrt(var + 1e-5) with the batch's "
            "mean and biased variance over (N, L), then gamma, beta: x (4,3,5) -> (4,3,5)"
        ),
        inputs=(
            Input("x", ("N", "C", "L"), normal(2.0, 0.5)),
            Input("gamma", ("C",), uniform(0.5, 1.5)),
            Input("beta", ("C",), normal(1.0)),
        ),
        settings={"eps": NORM_EPS, "training": True},
        # tiles: a statistic over 33 x 65 = 2,145 elements per channel (past 2,048)
        sizes={
            "golden": {"N": 4, "C": 3, "L": 5},
            "tiles": {"N": 33, "C": 3, "L": 17},
            "large": {"N": 64, "C": 256, "L": 1024},
        },
        # offset: channels at +-1e4 with spread 1; tiny: a variance of 1e-8, far below eps
        regimes={"offset": {"x": offset_rows()}, "tiny": {"x": normal(1e-4, 0.5)}},
        forward=batchnorm,
        vjp=batchnorm_vjp,
        tags=("layer", "normalization", "block"),
    )
)

register(
    Case(
        name="groupnorm",
        description=(
            "F.group_norm with 3 groups: per sample, (x - mu) / sqrt(var + 1e-5) over each group of C/3 "
            "channels and L, then per-channel gamma, beta: x (2,6,5) -> (2,6,5)"
        ),
        inputs=(
            Input("x", ("N", "C", "L"), normal(2.0, 0.5)),
            Input("gamma", ("C",), uniform(0.5, 1.5)),
            Input("beta", ("C",), normal(1.0)),
        ),
        settings={"eps": NORM_EPS, "num_groups": GROUPS},
        # C a multiple of 3 at every size; tiles: a statistic over 3 x 700 = 2,100 elements
        sizes={
            "golden": {"N": 2, "C": 6, "L": 5},
            "tiles": {"N": 2, "C": 9, "L": 67},
            "large": {"N": 16, "C": 96, "L": 4096},
        },
        regimes={"tiny": {"x": normal(1e-4, 0.5)}},
        forward=groupnorm,
        vjp=groupnorm_vjp,
        tags=("layer", "normalization", "block"),
    )
)
