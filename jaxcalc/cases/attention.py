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
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

from jaxcalc.cases._base import Case, Input, fan_in, normal, register, std_uniform, subkey
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
    "padded_attention",
    "padded_attention_vjp",
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
            Input("q", ("Tq", "d"), normal(1.0)),
            Input("k", ("Tk", "d"), normal(1.0)),
            Input("v", ("Tk", "dv"), normal(1.0)),
        ),
        # tiles: queries past a 64-tile, keys past a 128-tile (FlashAttention's sweep uses 113 x 203 and
        # head dims 59, 111; 113 x 203 x 59 is a --dims away), head dims no multiple of 32;
        # large: T = 1024, d_head = 64
        sizes={"golden": {"Tq": 4, "Tk": 6, "d": 3, "dv": 5}, "tiles": {"Tq": 65, "Tk": 129, "d": 33, "dv": 17},
               "large": {"Tq": 1024, "Tk": 1024, "d": 64, "dv": 64}},
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
_W = fan_in()
register(
    Case(
        name="causal_self_attention",
        description=(
            "2 heads of size 4: per head softmax(mask(Q_h K_h^T / sqrt(4))) V_h, Q = x Wq, K = x Wk, "
            "V = x Wv, position i sees j <= i; heads concatenated, then Wo: x (5,8) -> (5,8)"
        ),
        inputs=(
            Input("x", ("T", "D"), normal(1.0)),
            Input("Wq", ("D", "D"), _W),
            Input("Wk", ("D", "D"), _W),
            Input("Wv", ("D", "D"), _W),
            Input("Wo", ("D", "D"), _W),
        ),
        settings={"n_heads": 2},
        # tiles: T = 129 puts keys past one 32-, 64- and 128-tile of the causal mask; head size 17
        sizes={"golden": {"T": 5, "D": 8}, "tiles": {"T": 129, "D": 34}, "large": {"T": 1024, "D": 128}},
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


# ----------------------------------------------------------------------------- padded attention


def padded_attention(q: ArrayLike, k: ArrayLike, v: ArrayLike, mask: ArrayLike) -> jax.Array:
    """softmax over the visible keys of q k^T / sqrt(d), times v; mask (Tq, Tk) bool, True = visible.

    A query row that sees no key (fully masked: padding) gives zeros, never NaN: (..., Tq, dv).
    """
    q, k, v, mask = jnp.asarray(q), jnp.asarray(k), jnp.asarray(v), jnp.asarray(mask)
    a = _padded_weights(q, k, mask)
    return jnp.einsum("...qk,...kv->...qv", a, v)


def _padded_weights(q: jax.Array, k: jax.Array, mask: jax.Array) -> jax.Array:
    """The attention weights: softmax over visible keys, rows without one all zero."""
    alive = jnp.any(mask, axis=-1, keepdims=True)
    # a dead row gets every key visible for the softmax (finite, no NaN), then is zeroed
    s = _scores(q, k, mask | ~alive)
    return jnp.where(alive, softmax(s), 0.0)


def padded_attention_vjp(
    q: ArrayLike, k: ArrayLike, v: ArrayLike, mask: ArrayLike, ct: ArrayLike
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """(dq, dk, dv): as masked attention, with every gradient of a fully masked row zero."""
    q, k, v, mask, ct = (jnp.asarray(a) for a in (q, k, v, mask, ct))
    alive = jnp.any(mask, axis=-1, keepdims=True)
    s = _scores(q, k, mask | ~alive)
    a = jnp.where(alive, softmax(s), 0.0)
    dv = jnp.einsum("...qk,...qv->...kv", a, ct)  # out = A v
    da = jnp.einsum("...qv,...kv->...qk", ct, v)
    ds = jnp.where(alive, softmax_vjp(s, da), 0.0) / math.sqrt(q.shape[-1])
    return jnp.einsum("...qk,...kd->...qd", ds, k), jnp.einsum("...qk,...qd->...kd", ds, q), dv


def _padding_mask(dead_rows: bool) -> Callable:
    """Key-padding masks: query i sees the first L_i keys (L_i >= 1, random); with ``dead_rows``
    every fourth query row (from row 1) sees no key at all."""

    def sample(key: jax.Array, shape: tuple[int, ...], dims: object = None) -> np.ndarray:
        tq, tk = shape
        lengths = 1 + np.floor(tk * std_uniform(subkey(key, 0), (tq,))).astype(np.int64)
        lengths = np.minimum(lengths, tk)
        if tq >= 2:
            lengths[0] = tk  # one row sees every key
        mask = np.arange(tk)[None, :] < lengths[:, None]
        if dead_rows:
            mask[1::4] = False
        return mask

    return sample


register(
    Case(
        name="padded_attention",
        description=(
            "softmax over visible keys of q k^T / sqrt(d), times v; mask (Tq, Tk) bool with a key-padding "
            "length per query; a fully masked query row gives zeros: q (4,3), k (6,3), v (6,5) -> (4,5)"
        ),
        inputs=(
            Input("q", ("Tq", "d"), normal(1.0)),
            Input("k", ("Tk", "d"), normal(1.0)),
            Input("v", ("Tk", "dv"), normal(1.0)),
            Input("mask", ("Tq", "Tk"), _padding_mask(False), kind="mask"),
        ),
        sizes={"golden": {"Tq": 4, "Tk": 6, "d": 3, "dv": 5}, "tiles": {"Tq": 33, "Tk": 129, "d": 17, "dv": 9},
               "large": {"Tq": 1024, "Tk": 1024, "d": 64, "dv": 64}},
        # masked: whole query rows see no key; their outputs and gradients are exactly zero
        regimes={"masked": {"mask": _padding_mask(True)}},
        forward=padded_attention,
        vjp=lambda p, ct: padded_attention_vjp(*p, ct),
        tags=("attention", "mask"),
    )
)
