"""Scaled dot-product attention and causal multi-head self-attention, with handwritten backward passes.

Single head, for q (..., Tq, d), k (..., Tk, d), v (..., Tk, dv) and a boolean mask (Tq, Tk):

  S = q k^T / sqrt(d),  S~ = where(mask, S, -inf),  A = softmax(S~) over keys,  out = A v

Backward, with G the cotangent of out:

  dv = A^T G,  dA = G v^T,  dS = softmax_vjp(S~, dA) (zero where masked),  dq = dS k / sqrt(d),
  dk = dS^T q / sqrt(d)

Multi-head self-attention of x (..., T, D) with Wq, Wk, Wv (D, E), Wo (E, D_out), E = n_heads * dh:
Q = x Wq, K = x Wk, V = x Wv are split into n_heads heads of size dh along the last axis; each head
attends with the mask; the heads are concatenated back to (..., T, E) and multiplied by Wo. The
causal mask lets position i see positions j <= i. Leading axes of x are batch axes; the weight
gradients sum over them.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from jaxcalc.cases._base import Case, Input, normal, register
from jaxcalc.cases.softmax import softmax, softmax_vjp

__all__ = [
    "causal_mask",
    "masked_attention",
    "masked_attention_vjp",
    "attention",
    "attention_vjp",
    "self_attention",
    "self_attention_vjp",
    "causal_self_attention",
    "causal_self_attention_vjp",
]


def causal_mask(t: int) -> jax.Array:
    """Boolean (t, t) mask, True where query i may see key j, i.e. j <= i."""
    return jnp.tril(jnp.ones((t, t), dtype=bool))


def _scores(q: jax.Array, k: jax.Array, mask: jax.Array | None) -> jax.Array:
    """Masked scores where(mask, q k^T / sqrt(d), -inf): (..., Tq, Tk)."""
    s = jnp.einsum("...qd,...kd->...qk", q, k) / math.sqrt(q.shape[-1])
    return s if mask is None else jnp.where(mask, s, -jnp.inf)


def masked_attention(q: ArrayLike, k: ArrayLike, v: ArrayLike, mask: ArrayLike | None = None) -> jax.Array:
    """softmax(where(mask, q k^T / sqrt(d), -inf)) v: (..., Tq, dv); every query must see a key."""
    q, k, v = jnp.asarray(q), jnp.asarray(k), jnp.asarray(v)
    a = softmax(_scores(q, k, None if mask is None else jnp.asarray(mask)))
    return jnp.einsum("...qk,...kv->...qv", a, v)


def masked_attention_vjp(
    q: ArrayLike, k: ArrayLike, v: ArrayLike, mask: ArrayLike | None, ct: ArrayLike
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Pull back ct (..., Tq, dv) to (dq, dk, dv); see the module docstring for the formulas."""
    q, k, v, ct = jnp.asarray(q), jnp.asarray(k), jnp.asarray(v), jnp.asarray(ct)
    s = _scores(q, k, None if mask is None else jnp.asarray(mask))
    a = softmax(s)
    dv = jnp.einsum("...qk,...qv->...kv", a, ct)  # out = A v  =>  dv = A^T G
    da = jnp.einsum("...qv,...kv->...qk", ct, v)  # dA = G v^T
    ds = softmax_vjp(s, da) / math.sqrt(q.shape[-1])  # masked entries have A = 0, so dS = 0 there
    dq = jnp.einsum("...qk,...kd->...qd", ds, k)  # S = q k^T / sqrt(d)
    dk = jnp.einsum("...qk,...qd->...kd", ds, q)
    return dq, dk, dv


def attention(q: ArrayLike, k: ArrayLike, v: ArrayLike) -> jax.Array:
    """softmax(q k^T / sqrt(d)) v, d the key size: (..., Tq, dv).

    q (..., Tq, d), k (..., Tk, d), v (..., Tk, dv).
    """
    return masked_attention(q, k, v, None)


def attention_vjp(
    q: ArrayLike, k: ArrayLike, v: ArrayLike, ct: ArrayLike
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Handwritten pullback of :func:`attention`: (dq, dk, dv) for ct (..., Tq, dv)."""
    return masked_attention_vjp(q, k, v, None, ct)


# ----------------------------------------------------------------------------- multi-head


def _head_size(e: int, n_heads: int) -> int:
    """Size of one head; raises ValueError unless n_heads divides the projection width e."""
    if not isinstance(n_heads, int):
        raise ValueError(f"n_heads must be a Python int (static under jax.jit), got {type(n_heads).__name__}")
    if n_heads < 1 or e % n_heads:
        raise ValueError(f"n_heads={n_heads} must be a positive integer dividing the width {e}")
    return e // n_heads


def _split(x: jax.Array, n_heads: int) -> jax.Array:
    """(..., T, H*dh) -> (..., H, T, dh)."""
    *lead, t, e = x.shape
    return jnp.swapaxes(x.reshape(*lead, t, n_heads, _head_size(e, n_heads)), -2, -3)


def _merge(x: jax.Array) -> jax.Array:
    """(..., H, T, dh) -> (..., T, H*dh): the heads concatenated along the last axis."""
    x = jnp.swapaxes(x, -2, -3)
    return x.reshape(*x.shape[:-2], x.shape[-2] * x.shape[-1])


def _outer(a: jax.Array, b: jax.Array) -> jax.Array:
    """sum over every leading axis of a^T b: a (..., m), b (..., n) -> (m, n) (a weight gradient)."""
    return jnp.einsum("...i,...j->ij", a, b)


def self_attention(
    x: ArrayLike,
    Wq: ArrayLike,
    Wk: ArrayLike,
    Wv: ArrayLike,
    Wo: ArrayLike,
    mask: ArrayLike,
    n_heads: int,
) -> jax.Array:
    """concat_h(masked_attention(Q_h, K_h, V_h, mask)) Wo with Q = x Wq, K = x Wk, V = x Wv.

    x (..., T, D), Wq/Wk/Wv (D, E), Wo (E, D_out), mask (T, T) -> (..., T, D_out).
    """
    x = jnp.asarray(x)
    heads = masked_attention(
        _split(x @ jnp.asarray(Wq), n_heads),
        _split(x @ jnp.asarray(Wk), n_heads),
        _split(x @ jnp.asarray(Wv), n_heads),
        mask,
    )
    return _merge(heads) @ jnp.asarray(Wo)


def self_attention_vjp(
    x: ArrayLike,
    Wq: ArrayLike,
    Wk: ArrayLike,
    Wv: ArrayLike,
    Wo: ArrayLike,
    mask: ArrayLike,
    ct: ArrayLike,
    n_heads: int,
) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array, jax.Array]:
    """Handwritten pullback of :func:`self_attention`: (dx, dWq, dWk, dWv, dWo) for ct (..., T, D_out)."""
    x, Wq, Wk, Wv, Wo, ct = (jnp.asarray(a) for a in (x, Wq, Wk, Wv, Wo, ct))
    qh, kh, vh = (_split(x @ w, n_heads) for w in (Wq, Wk, Wv))
    concat = _merge(masked_attention(qh, kh, vh, mask))
    d_wo = _outer(concat, ct)  # out = concat Wo
    d_concat = ct @ Wo.T
    dqh, dkh, dvh = masked_attention_vjp(qh, kh, vh, mask, _split(d_concat, n_heads))
    dq, dk, dv = _merge(dqh), _merge(dkh), _merge(dvh)  # splitting is a permutation: merge undoes it
    dx = dq @ Wq.T + dk @ Wk.T + dv @ Wv.T  # x feeds all three projections
    return dx, _outer(x, dq), _outer(x, dk), _outer(x, dv), d_wo


def causal_self_attention(
    x: ArrayLike, Wq: ArrayLike, Wk: ArrayLike, Wv: ArrayLike, Wo: ArrayLike, n_heads: int = 2
) -> jax.Array:
    """Causal multi-head self-attention: :func:`self_attention` with the mask j <= i; (..., T, D_out)."""
    x = jnp.asarray(x)
    return self_attention(x, Wq, Wk, Wv, Wo, causal_mask(x.shape[-2]), n_heads)


def causal_self_attention_vjp(
    x: ArrayLike,
    Wq: ArrayLike,
    Wk: ArrayLike,
    Wv: ArrayLike,
    Wo: ArrayLike,
    ct: ArrayLike,
    n_heads: int = 2,
) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array, jax.Array]:
    """Handwritten pullback of :func:`causal_self_attention`: (dx, dWq, dWk, dWv, dWo)."""
    x = jnp.asarray(x)
    return self_attention_vjp(x, Wq, Wk, Wv, Wo, causal_mask(x.shape[-2]), ct, n_heads)


# ----------------------------------------------------------------------------- cases

# Unit-variance q and k give scores q.k / sqrt(d) of variance about 1: the softmax is far from
# one-hot, so every entry of the gradient matters.
register(
    Case(
        name="attention",
        description="softmax(q k^T / sqrt(3)) v over the keys: q (4,3), k (6,3), v (6,5) -> (4,5)",
        inputs=(
            Input("q", (4, 3), normal(1.0)),
            Input("k", (6, 3), normal(1.0)),
            Input("v", (6, 5), normal(1.0)),
        ),
        forward=attention,
        vjp=lambda p, ct: attention_vjp(*p, ct),
        chain=lambda p: (
            lambda s: softmax(s) @ p[2],
            lambda q: q @ p[1].T / math.sqrt(q.shape[-1]),
        ),
        tags=("composite", "attention"),
    )
)

# Weights ~ N(0, 1/fan_in) keep Q, K, V at unit scale, as in a freshly initialised transformer.
_W = normal(8**-0.5)
register(
    Case(
        name="causal_self_attention",
        description=(
            "2 heads of size 4: per head softmax(mask(Q_h K_h^T / sqrt(4))) V_h, Q = x Wq, K = x Wk, "
            "V = x Wv, position i sees j <= i; heads concatenated, then Wo: x (5,8) -> (5,8)"
        ),
        inputs=(
            Input("x", (5, 8), normal(1.0)),
            Input("Wq", (8, 8), _W),
            Input("Wk", (8, 8), _W),
            Input("Wv", (8, 8), _W),
            Input("Wo", (8, 8), _W),
        ),
        forward=causal_self_attention,
        vjp=lambda p, ct: causal_self_attention_vjp(*p, ct),
        # inner: x -> stack([Q, K, V]) (3, 5, 8); outer: the masked multi-head attention and Wo
        chain=lambda p: (
            lambda z: _merge(masked_attention(*(_split(w, 2) for w in z), causal_mask(z.shape[-2]))) @ p[4],
            lambda x: jnp.stack([x @ w for w in p[1:4]]),
        ),
        tags=("composite", "attention"),
    )
)
