"""A fast handwritten training step for the pre-norm transformer block of ``jaxcalc.cases.transformer``.

The same function as ``transformer_block`` (the block's math, layernorm eps and gelu_tanh
constants are the catalogue's; the benchmark checks this step's loss and update against
``jax.grad`` of the catalogue's block in the same run), written for speed:

* one forward pass whose intermediates the backward pass reuses (the catalogue's VJP recomputes
  the forward from its inputs, which is right for a reference and wasteful in a training step);
* Q, K and V from one fused projection a [Wq Wk Wv] (one GEMM of width 3D instead of three),
  and their gradients as one GEMM each for dW and da;
* attention with the softmax statistic of the backward pass taken from the output:
  rowsum(dA * A) = rowsum(dO * O) per query, so dS = A * (dO V^T - rowsum(dO * O));
* the causal mask's dead half skipped: queries are cut into blocks of ``block`` rows, and block
  i only meets keys 0 .. (i + 1) * block, so above-diagonal blocks are never computed;
* gelu's tanh kept from the forward pass for its derivative;
* the residual cotangents summed where they meet, every elementwise pass left for XLA to fuse.

Shapes: x, y (B, T, D); weights as in ``transformer_block``: ln1_gamma, ln1_beta (D,), Wq, Wk,
Wv, Wo (D, D), ln2_gamma, ln2_beta (D,), W1 (D, F), b1 (F,), W2 (F, D), b2 (D,).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from jaxcalc.cases.layers import LAYERNORM_EPS

__all__ = ["GELU_C", "GELU_K", "loss_and_grads", "attention_blocks"]

GELU_C = math.sqrt(2.0 / math.pi)  # gelu_tanh's scale, as in jaxcalc.cases.activations
GELU_K = 0.044715  # gelu_tanh's cubic coefficient


def _ln(x: jax.Array, gamma: jax.Array, beta: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
    """layernorm over the last axis: (gamma xhat + beta, xhat, rstd)."""
    xc = x - jnp.mean(x, axis=-1, keepdims=True)
    rstd = jax.lax.rsqrt(jnp.mean(xc * xc, axis=-1, keepdims=True) + LAYERNORM_EPS)
    xhat = xc * rstd
    return gamma * xhat + beta, xhat, rstd


def _ln_back(
    ct: jax.Array, xhat: jax.Array, rstd: jax.Array, gamma: jax.Array
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """(dx, dgamma, dbeta) of layernorm from the saved xhat and rstd; x is (N, D)."""
    g = ct * gamma
    dx = rstd * (g - jnp.mean(g, axis=-1, keepdims=True) - xhat * jnp.mean(g * xhat, axis=-1, keepdims=True))
    return dx, jnp.sum(ct * xhat, axis=0), jnp.sum(ct, axis=0)


def attention_blocks(t: int, block: int) -> list[tuple[int, int]]:
    """Query blocks (start, stop) of at most ``block`` rows; block i sees keys [0, stop)."""
    if block <= 0 or block >= t:
        return [(0, t)]
    return [(s, min(s + block, t)) for s in range(0, t, block)]


def _causal_forward(
    q: jax.Array, k: jax.Array, v: jax.Array, blocks: list[tuple[int, int]]
) -> tuple[jax.Array, list[jax.Array]]:
    """Causal softmax(q k^T / sqrt(dh)) v per head, (B, H, T, dh) each; returns (out, A per block)."""
    scale = 1.0 / math.sqrt(q.shape[-1])
    outs, probs = [], []
    for start, stop in blocks:
        s = jnp.einsum("bhqd,bhkd->bhqk", q[:, :, start:stop], k[:, :, :stop]) * scale
        rows = jnp.arange(start, stop)[:, None]
        s = jnp.where(jnp.arange(stop)[None, :] <= rows, s, -jnp.inf)
        e = jnp.exp(s - jnp.max(s, axis=-1, keepdims=True))
        a = e / jnp.sum(e, axis=-1, keepdims=True)
        probs.append(a)
        outs.append(jnp.einsum("bhqk,bhkd->bhqd", a, v[:, :, :stop]))
    return (outs[0] if len(outs) == 1 else jnp.concatenate(outs, axis=2)), probs


def _causal_backward(
    q: jax.Array,
    k: jax.Array,
    v: jax.Array,
    out: jax.Array,
    probs: list[jax.Array],
    d_out: jax.Array,
    blocks: list[tuple[int, int]],
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """(dq, dk, dv) of :func:`_causal_forward` for d_out (B, H, T, dh), block by block."""
    scale = 1.0 / math.sqrt(q.shape[-1])
    delta = jnp.sum(d_out * out, axis=-1, keepdims=True)  # rowsum(dA * A) = rowsum(dO * O)
    dqs, dk, dv = [], None, None
    for (start, stop), a in zip(blocks, probs, strict=True):
        g = d_out[:, :, start:stop]
        dv_b = jnp.einsum("bhqk,bhqd->bhkd", a, g)  # out = A v
        ds = a * (jnp.einsum("bhqd,bhkd->bhqk", g, v[:, :, :stop]) - delta[:, :, start:stop]) * scale
        dqs.append(jnp.einsum("bhqk,bhkd->bhqd", ds, k[:, :, :stop]))
        dk_b = jnp.einsum("bhqk,bhqd->bhkd", ds, q[:, :, start:stop])
        pad = [(0, 0), (0, 0), (0, q.shape[2] - stop), (0, 0)]
        dv = jnp.pad(dv_b, pad) if dv is None else dv + jnp.pad(dv_b, pad)
        dk = jnp.pad(dk_b, pad) if dk is None else dk + jnp.pad(dk_b, pad)
    dq = dqs[0] if len(dqs) == 1 else jnp.concatenate(dqs, axis=2)
    return dq, dk, dv


def loss_and_grads(
    params: tuple[jax.Array, ...], x: jax.Array, y: jax.Array, n_heads: int, block: int = 0
) -> tuple[jax.Array, tuple[jax.Array, ...]]:
    """L = 0.5 mean((transformer_block(x, *params) - y)^2) and dL/dparams (12 arrays, params' order).

    ``block``: query rows per attention block (0: one block, the whole sequence).
    """
    g1, be1, Wq, Wk, Wv, Wo, g2, be2, W1, b1, W2, b2 = params
    B, T, D = x.shape
    H, hs = n_heads, D // n_heads
    blocks = attention_blocks(T, block)
    xf = x.reshape(B * T, D)
    # forward, keeping what the backward pass reads
    a, xhat1, rstd1 = _ln(xf, g1, be1)
    w_qkv = jnp.concatenate([Wq, Wk, Wv], axis=1)  # (D, 3D)
    qkv = (a @ w_qkv).reshape(B, T, 3, H, hs)
    q, k, v = (jnp.transpose(qkv[:, :, i], (0, 2, 1, 3)) for i in range(3))  # (B, H, T, dh)
    o, probs = _causal_forward(q, k, v, blocks)
    o_flat = jnp.transpose(o, (0, 2, 1, 3)).reshape(B * T, D)  # heads concatenated
    h = xf + o_flat @ Wo
    c, xhat2, rstd2 = _ln(h, g2, be2)
    z = c @ W1 + b1
    th = jnp.tanh(GELU_C * (z + GELU_K * z * z * z))
    u = 0.5 * z * (1.0 + th)
    r = h + u @ W2 + b2 - y.reshape(B * T, D)
    loss = 0.5 * jnp.mean(r * r)
    # backward
    G = r / r.size
    dW2, db2 = u.T @ G, jnp.sum(G, axis=0)
    du = G @ W2.T
    dz = du * (0.5 * (1.0 + th) + 0.5 * z * (1.0 - th * th) * GELU_C * (1.0 + 3.0 * GELU_K * z * z))
    dW1, db1 = c.T @ dz, jnp.sum(dz, axis=0)
    dc = dz @ W1.T
    dh_ln, dg2, dbe2 = _ln_back(dc, xhat2, rstd2, g2)
    dh = G + dh_ln
    dWo = o_flat.T @ dh
    d_o = jnp.transpose((dh @ Wo.T).reshape(B, T, H, hs), (0, 2, 1, 3))
    dq, dk, dv = _causal_backward(q, k, v, o, probs, d_o, blocks)
    d_qkv = jnp.stack([dq, dk, dv], axis=2)  # (B, H, 3, T, dh)
    d_qkv = jnp.transpose(d_qkv, (0, 3, 2, 1, 4)).reshape(B * T, 3 * D)
    dW_qkv = a.T @ d_qkv
    da = d_qkv @ w_qkv.T
    dg1, dbe1 = jnp.sum(da * xhat1, axis=0), jnp.sum(da, axis=0)  # dL/dx itself is not needed
    dWq, dWk, dWv = dW_qkv[:, :D], dW_qkv[:, D : 2 * D], dW_qkv[:, 2 * D :]
    return loss, (dg1, dbe1, dWq, dWk, dWv, dWo, dg2, dbe2, dW1, db1, dW2, db2)
