"""Network layers: layernorm, rmsnorm, linear and embedding, each with handwritten VJP and JVP.

Every layer acts on the last axis of x and accepts any leading batch shape, e.g. (B, T, D);
parameter cotangents sum over all leading axes.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from jaxcalc.cases._base import (
    Case,
    Input,
    fan_in,
    ids_with_repeats,
    normal,
    offset_rows,
    register,
    uniform,
)

__all__ = [
    "LAYERNORM_EPS",
    "RMSNORM_EPS",
    "layernorm",
    "layernorm_vjp",
    "layernorm_jvp",
    "rmsnorm",
    "rmsnorm_vjp",
    "rmsnorm_jvp",
    "linear",
    "linear_vjp",
    "linear_jvp",
    "embedding",
    "embedding_vjp",
    "embedding_jvp",
]

LAYERNORM_EPS = 1e-5
RMSNORM_EPS = 1e-6


def _sum_leading(a: jax.Array, ndim: int) -> jax.Array:
    """Sum ``a`` over all but its last ``ndim`` axes (a parameter's cotangent over the batch)."""
    return jnp.sum(a, axis=tuple(range(a.ndim - ndim)))


# ----------------------------------------------------------------------------- layernorm


def _normalize(x: jax.Array, eps: float) -> tuple[jax.Array, jax.Array]:
    """xhat = (x - mu) * rstd and rstd = 1 / sqrt(var + eps), mu and var (biased) over the last axis."""
    xc = x - jnp.mean(x, axis=-1, keepdims=True)
    rstd = jax.lax.rsqrt(jnp.mean(xc * xc, axis=-1, keepdims=True) + eps)
    return xc * rstd, rstd


def layernorm(x: ArrayLike, gamma: ArrayLike, beta: ArrayLike, eps: float = LAYERNORM_EPS) -> jax.Array:
    """gamma * (x - mu) / sqrt(var + eps) + beta; x (..., D), gamma and beta (D,) -> (..., D)."""
    xhat, _ = _normalize(jnp.asarray(x), eps)
    return jnp.asarray(gamma) * xhat + jnp.asarray(beta)


def layernorm_vjp(
    x: ArrayLike, gamma: ArrayLike, beta: ArrayLike, ct: ArrayLike, eps: float = LAYERNORM_EPS
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """(dx, dgamma, dbeta) for layernorm; shapes (..., D), (D,), (D,).

    With g = ct * gamma: dx = rstd (g - mean(g) - xhat mean(g xhat)) per row,
    dgamma = sum over rows of ct * xhat, dbeta = sum over rows of ct.
    """
    xhat, rstd = _normalize(jnp.asarray(x), eps)
    ct = jnp.asarray(ct)
    g = ct * jnp.asarray(gamma)
    # d xhat_i / d x_j = rstd (delta_ij - 1/D - xhat_i xhat_j / D)
    dx = rstd * (g - jnp.mean(g, axis=-1, keepdims=True) - xhat * jnp.mean(g * xhat, axis=-1, keepdims=True))
    return dx, _sum_leading(ct * xhat, 1), _sum_leading(ct, 1)


def layernorm_jvp(
    x: ArrayLike,
    gamma: ArrayLike,
    beta: ArrayLike,
    tx: ArrayLike,
    tgamma: ArrayLike,
    tbeta: ArrayLike,
    eps: float = LAYERNORM_EPS,
) -> jax.Array:
    """d layernorm = gamma rstd (tc - xhat mean(xhat tc)) + tgamma xhat + tbeta, tc = tx - mean(tx).

    ``mean(xhat tc)`` equals ``mean(xhat tx)`` in exact arithmetic (xhat has mean zero), but in
    float32 at a large offset xhat's computed mean is not zero, and the uncentred form adds that
    error times mean(tx) to every element (4e-4 relative in layernorm~offset).
    """
    xhat, rstd = _normalize(jnp.asarray(x), eps)
    tx = jnp.asarray(tx)
    tc = tx - jnp.mean(tx, axis=-1, keepdims=True)
    dxhat = rstd * (tc - xhat * jnp.mean(xhat * tc, axis=-1, keepdims=True))
    return jnp.asarray(gamma) * dxhat + jnp.asarray(tgamma) * xhat + jnp.asarray(tbeta)


# ----------------------------------------------------------------------------- rmsnorm


def _rms_scale(x: jax.Array, eps: float) -> jax.Array:
    """r = 1 / sqrt(mean(x**2) + eps) over the last axis, keepdims."""
    return jax.lax.rsqrt(jnp.mean(x * x, axis=-1, keepdims=True) + eps)


def rmsnorm(x: ArrayLike, gamma: ArrayLike, eps: float = RMSNORM_EPS) -> jax.Array:
    """gamma * x / sqrt(mean(x**2) + eps) over the last axis; x (..., D), gamma (D,) -> (..., D)."""
    x = jnp.asarray(x)
    return jnp.asarray(gamma) * x * _rms_scale(x, eps)


def rmsnorm_vjp(
    x: ArrayLike, gamma: ArrayLike, ct: ArrayLike, eps: float = RMSNORM_EPS
) -> tuple[jax.Array, jax.Array]:
    """(dx, dgamma) for rmsnorm: with g = ct * gamma, dx = r g - r**3 x mean(g x), dgamma = sum ct x r."""
    x = jnp.asarray(x)
    ct = jnp.asarray(ct)
    r = _rms_scale(x, eps)
    g = ct * jnp.asarray(gamma)
    # d r / d x_j = -r**3 x_j / D
    dx = r * g - r**3 * x * jnp.mean(g * x, axis=-1, keepdims=True)
    return dx, _sum_leading(ct * x * r, 1)


def rmsnorm_jvp(
    x: ArrayLike, gamma: ArrayLike, tx: ArrayLike, tgamma: ArrayLike, eps: float = RMSNORM_EPS
) -> jax.Array:
    """d rmsnorm = gamma (r tx - r**3 x mean(x tx)) + tgamma x r: (..., D)."""
    x = jnp.asarray(x)
    tx = jnp.asarray(tx)
    r = _rms_scale(x, eps)
    dxr = r * tx - r**3 * x * jnp.mean(x * tx, axis=-1, keepdims=True)
    return jnp.asarray(gamma) * dxr + jnp.asarray(tgamma) * x * r


# ----------------------------------------------------------------------------- linear


def linear(x: ArrayLike, W: ArrayLike, b: ArrayLike) -> jax.Array:
    """x W + b; x (..., m), W (m, n), b (n,) -> (..., n)."""
    return jnp.asarray(x) @ jnp.asarray(W) + jnp.asarray(b)


def linear_vjp(
    x: ArrayLike, W: ArrayLike, b: ArrayLike, ct: ArrayLike
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """(dx, dW, db) = (ct W^T, x^T ct, sum of ct over rows); shapes (..., m), (m, n), (n,)."""
    x, W, ct = jnp.asarray(x), jnp.asarray(W), jnp.asarray(ct)
    dW = jnp.einsum("...m,...n->mn", x, ct)  # sum over every leading axis of x_m ct_n
    return ct @ W.T, dW, _sum_leading(ct, 1)


def linear_jvp(
    x: ArrayLike, W: ArrayLike, b: ArrayLike, tx: ArrayLike, tW: ArrayLike, tb: ArrayLike
) -> jax.Array:
    """d(x W + b) = tx W + x tW + tb: (..., n)."""
    return jnp.asarray(tx) @ jnp.asarray(W) + jnp.asarray(x) @ jnp.asarray(tW) + jnp.asarray(tb)


# ----------------------------------------------------------------------------- embedding


def embedding(ids: ArrayLike, table: ArrayLike) -> jax.Array:
    """table[ids]: ids (...) int in [0, V), table (V, D) -> (..., D)."""
    return jnp.asarray(table)[jnp.asarray(ids)]


def embedding_vjp(ids: ArrayLike, table: ArrayLike, ct: ArrayLike) -> tuple[jax.Array]:
    """(dtable,): dtable[v] = sum of ct[i] over every i with ids[i] = v, so repeats accumulate; (V, D)."""
    table, ct = jnp.asarray(table), jnp.asarray(ct)
    flat_ids = jnp.asarray(ids).reshape(-1)
    flat_ct = ct.reshape(flat_ids.shape[0], table.shape[-1])
    return (jax.ops.segment_sum(flat_ct, flat_ids, num_segments=table.shape[0]),)


def embedding_jvp(ids: ArrayLike, table: ArrayLike, ttable: ArrayLike) -> jax.Array:
    """d table[ids] = ttable[ids] (the lookup is linear in the table): (..., D)."""
    return jnp.asarray(ttable)[jnp.asarray(ids)]


# ----------------------------------------------------------------------------- cases

register(
    Case(
        name="layernorm",
        description="gamma (x - mu) / sqrt(var + 1e-5) + beta; mu, var (biased) over the last axis",
        inputs=(
            Input("x", ("N", "D"), normal(2.0, 0.5)),
            Input("gamma", ("D",), uniform(0.5, 1.5)),
            Input("beta", ("D",)),
        ),
        settings={"eps": 1e-5},
        # tiles: rows past 64 and a row length past 32 that is no multiple of it
        sizes={"golden": {"N": 4, "D": 6}, "tiles": {"N": 65, "D": 35}, "large": {"N": 512, "D": 1024}},
        # offset: rows at +-1e4 and +-30 with spread 1 (a one-pass variance cancels); tiny: spread 1e-4, a
        # variance of 1e-8 far below eps
        regimes={"offset": {"x": offset_rows()}, "tiny": {"x": normal(1e-4, 0.5)}},
        forward=layernorm,
        vjp=lambda p, ct: layernorm_vjp(*p, ct),
        jvp=lambda p, t: layernorm_jvp(*p, *t),
        tags=("layer", "normalization"),
    )
)

register(
    Case(
        name="rmsnorm",
        description="gamma x / sqrt(mean(x**2) + 1e-6) over the last axis",
        inputs=(Input("x", ("N", "D"), normal(1.5)), Input("gamma", ("D",), uniform(0.5, 1.5))),
        settings={"eps": 1e-6},
        sizes={"golden": {"N": 4, "D": 6}, "tiles": {"N": 65, "D": 35}, "large": {"N": 512, "D": 1024}},
        # tiny: mean(x**2) of 1e-10, far below eps
        regimes={"tiny": {"x": normal(1e-5)}},
        forward=rmsnorm,
        vjp=lambda p, ct: rmsnorm_vjp(*p, ct),
        jvp=lambda p, t: rmsnorm_jvp(*p, *t),
        tags=("layer", "normalization"),
    )
)

register(
    Case(
        name="linear",
        description="x W + b",
        inputs=(Input("x", ("N", "K")), Input("W", ("K", "M"), fan_in()), Input("b", ("M",))),
        # tiles: every matmul axis straddles a 32-tile (N also a 64-tile)
        sizes={
            "golden": {"N": 4, "K": 3, "M": 5},
            "tiles": {"N": 65, "K": 35, "M": 33},
            "large": {"N": 1024, "K": 1024, "M": 1024},
        },
        forward=linear,
        vjp=lambda p, ct: linear_vjp(*p, ct),
        jvp=lambda p, t: linear_jvp(*p, *t),
        tags=("layer", "linear"),
    )
)

register(
    Case(
        name="embedding",
        description="table[ids], ids (6) with repeats in [0, 5); the VJP accumulates repeated ids",
        inputs=(
            Input("ids", ("n",), ids_with_repeats("V", 3, high=True), kind="int"),
            Input("table", ("V", "D")),
        ),
        # tiles: a vocabulary past 32,768 (ids no longer fit int16), an id repeated 3 times and the
        # largest id present
        sizes={
            "golden": {"n": 6, "V": 5, "D": 4},
            "tiles": {"n": 67, "V": 32771, "D": 1},
            "large": {"n": 4096, "V": 50257, "D": 64},
        },
        forward=embedding,
        vjp=lambda p, ct: embedding_vjp(*p, ct),
        jvp=lambda p, t: embedding_jvp(p[0], p[1], t[0]),
        tags=("layer", "gather"),
    )
)
