"""Grouped-query and cross attention, built on the masked attention of ``attention.py``.

gqa_attention (causal, n_heads = 4 query heads sharing n_kv_heads = 2 key/value heads), for
x (T, D), Wq (D, Eq), Wk and Wv (D, Ekv), Wo (Eq, D), Eq = 4 dh and Ekv = 2 dh:

  Q = split(x Wq, 4), K = split(x Wk, 2), V = split(x Wv, 2)
  query head h reads key/value head h // (n_heads / n_kv_heads)  (torch's repeat_interleave)
  out = merge_h(softmax(mask(Q_h K_{h//g}^T / sqrt(dh))) V_{h//g}) Wo

  Backward: the shared heads' cotangents are the sums over the query heads of their group.

cross_attention (n_heads = 2, no mask), queries from x (Tq, D), keys and values from ctx (Tk, Dc):

  out = merge_h(softmax(Q_h K_h^T / sqrt(dh)) V_h) Wo,  Q = x Wq, K = ctx Wk, V = ctx Wv
  Backward: dx = dQ Wq^T, and ctx gets both paths: dctx = dK Wk^T + dV Wv^T.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from jaxcalc.cases._base import Case, Input, fan_in, normal, register
from jaxcalc.cases.attention import (
    _merge,
    _outer,
    _split,
    causal_mask,
    masked_attention,
    masked_attention_vjp,
)

__all__ = [
    "GQA_SETTINGS",
    "gqa_attention",
    "gqa_attention_vjp",
    "CROSS_SETTINGS",
    "cross_attention",
    "cross_attention_vjp",
]

GQA_SETTINGS = {"n_heads": 4, "n_kv_heads": 2, "causal": True}
CROSS_SETTINGS = {"n_heads": 2}


def _expand(kv: jax.Array, group: int) -> jax.Array:
    """(..., Hkv, T, dh) -> (..., Hkv * group, T, dh): query head h sees kv head h // group."""
    return jnp.repeat(kv, group, axis=-3)


def _group_sum(d: jax.Array, group: int) -> jax.Array:
    """The transpose of :func:`_expand`: sum the cotangents of the ``group`` query heads per kv head."""
    *lead, h, t, dh = d.shape
    return d.reshape(*lead, h // group, group, t, dh).sum(axis=-3)


def _gqa_heads(x, Wq, Wk, Wv) -> tuple[jax.Array, jax.Array, jax.Array, int]:
    s = GQA_SETTINGS
    x = jnp.asarray(x)
    group = s["n_heads"] // s["n_kv_heads"]
    q = _split(x @ jnp.asarray(Wq), s["n_heads"])
    k = _split(x @ jnp.asarray(Wk), s["n_kv_heads"])
    v = _split(x @ jnp.asarray(Wv), s["n_kv_heads"])
    return q, k, v, group


def gqa_attention(x: ArrayLike, Wq: ArrayLike, Wk: ArrayLike, Wv: ArrayLike, Wo: ArrayLike) -> jax.Array:
    """Causal grouped-query attention, 4 query heads over 2 key/value heads: x (T, D) -> (T, D)."""
    q, k, v, group = _gqa_heads(x, Wq, Wk, Wv)
    mask = causal_mask(q.shape[-2])
    return _merge(masked_attention(q, _expand(k, group), _expand(v, group), mask)) @ jnp.asarray(Wo)


def gqa_attention_vjp(primals: tuple, ct: ArrayLike) -> tuple[jax.Array, ...]:
    """(dx, dWq, dWk, dWv, dWo) of :func:`gqa_attention`."""
    x, Wq, Wk, Wv, Wo = (jnp.asarray(p) for p in primals)
    ct = jnp.asarray(ct)
    q, k, v, group = _gqa_heads(x, Wq, Wk, Wv)
    mask = causal_mask(q.shape[-2])
    ke, ve = _expand(k, group), _expand(v, group)
    concat = _merge(masked_attention(q, ke, ve, mask))
    dq, dke, dve = masked_attention_vjp(q, ke, ve, mask, _split(ct @ Wo.T, GQA_SETTINGS["n_heads"]))
    dq, dk, dv = _merge(dq), _merge(_group_sum(dke, group)), _merge(_group_sum(dve, group))
    dx = dq @ Wq.T + dk @ Wk.T + dv @ Wv.T
    return dx, _outer(x, dq), _outer(x, dk), _outer(x, dv), _outer(concat, ct)


def _cross_heads(x, ctx, Wq, Wk, Wv) -> tuple[jax.Array, jax.Array, jax.Array]:
    n = CROSS_SETTINGS["n_heads"]
    x, ctx = jnp.asarray(x), jnp.asarray(ctx)
    return _split(x @ jnp.asarray(Wq), n), _split(ctx @ jnp.asarray(Wk), n), _split(ctx @ jnp.asarray(Wv), n)


def cross_attention(x: ArrayLike, ctx: ArrayLike, Wq, Wk, Wv, Wo) -> jax.Array:
    """Queries of x (Tq, D) attend over ctx (Tk, Dc), 2 heads, no mask: (Tq, D)."""
    q, k, v = _cross_heads(x, ctx, Wq, Wk, Wv)
    return _merge(masked_attention(q, k, v, None)) @ jnp.asarray(Wo)


def _context_grad(dk: jax.Array, dv: jax.Array, Wk: jax.Array, Wv: jax.Array) -> jax.Array:
    """ctx feeds both the keys and the values: dctx = dK Wk^T + dV Wv^T."""
    return dk @ Wk.T + dv @ Wv.T


def cross_attention_vjp(primals: tuple, ct: ArrayLike) -> tuple[jax.Array, ...]:
    """(dx, dctx, dWq, dWk, dWv, dWo) of :func:`cross_attention`."""
    x, ctx, Wq, Wk, Wv, Wo = (jnp.asarray(p) for p in primals)
    ct = jnp.asarray(ct)
    q, k, v = _cross_heads(x, ctx, Wq, Wk, Wv)
    concat = _merge(masked_attention(q, k, v, None))
    dq, dk, dv = masked_attention_vjp(q, k, v, None, _split(ct @ Wo.T, CROSS_SETTINGS["n_heads"]))
    dq, dk, dv = _merge(dq), _merge(dk), _merge(dv)
    return (dq @ Wq.T, _context_grad(dk, dv, Wk, Wv), _outer(x, dq), _outer(ctx, dk), _outer(ctx, dv),
            _outer(concat, ct))  # fmt: skip


register(
    Case(
        name="gqa_attention",
        description=(
            "causal grouped-query attention: 4 query heads of size 3 share 2 key/value heads (query head "
            "h reads kv head h // 2), then Wo: x (5,7), Wq (7,12), Wk, Wv (7,6), Wo (12,7) -> (5,7)"
        ),
        inputs=(
            Input("x", ("T", "D"), normal(1.0)),
            Input("Wq", ("D", "Eq"), fan_in()),
            Input("Wk", ("D", "Ekv"), fan_in()),
            Input("Wv", ("D", "Ekv"), fan_in()),
            Input("Wo", ("Eq", "D"), fan_in()),
        ),
        settings=GQA_SETTINGS,
        # Eq = 4 dh and Ekv = 2 dh at every size; tiles: head size 17, T past two 32-tiles
        sizes={
            "golden": {"T": 5, "D": 7, "Eq": 12, "Ekv": 6},
            "tiles": {"T": 67, "D": 34, "Eq": 68, "Ekv": 34},
            "large": {"T": 1024, "D": 256, "Eq": 256, "Ekv": 128},
        },
        forward=gqa_attention,
        vjp=gqa_attention_vjp,
        tags=("attention", "block"),
    )
)

register(
    Case(
        name="cross_attention",
        description=(
            "2-head cross attention: queries x Wq (x (4,6)) over keys ctx Wk and values ctx Wv (ctx (7,5)), "
            "no mask, heads concatenated, then Wo (8,6) -> (4,6)"
        ),
        inputs=(
            Input("x", ("Tq", "D"), normal(1.0)),
            Input("ctx", ("Tk", "Dc"), normal(1.0)),
            Input("Wq", ("D", "E"), fan_in()),
            Input("Wk", ("Dc", "E"), fan_in()),
            Input("Wv", ("Dc", "E"), fan_in()),
            Input("Wo", ("E", "D"), fan_in()),
        ),
        settings=CROSS_SETTINGS,
        sizes={
            "golden": {"Tq": 4, "Tk": 7, "D": 6, "Dc": 5, "E": 8},
            "tiles": {"Tq": 33, "Tk": 129, "D": 34, "Dc": 40, "E": 34},
            "large": {"Tq": 1024, "Tk": 1024, "D": 256, "Dc": 256, "E": 256},
        },  # fmt: skip
        forward=cross_attention,
        vjp=cross_attention_vjp,
        tags=("attention", "block"),
    )
)
