"""A pre-norm transformer block, forward and a handwritten backward pass through every piece.

Forward, for x (..., T, D):

  a = layernorm(x; ln1_gamma, ln1_beta)
  h = x + causal_self_attention(a; Wq, Wk, Wv, Wo)                    (first residual)
  c = layernorm(h; ln2_gamma, ln2_beta)
  z = c W1 + b1,  u = gelu_tanh(z),  out = h + u W2 + b2                (MLP and second residual)

Backward, with G the cotangent of out, from the top down:

  du, dW2, db2 = linear_vjp(u, W2, b2, G)
  dz = du * gelu_tanh'(z)
  dc, dW1, db1 = linear_vjp(c, W1, b1, dz)
  dh = G + layernorm_vjp(h, ...; dc)                                    (the residual adds G)
  da, dWq, dWk, dWv, dWo = causal_self_attention_vjp(a, ...; dh)
  dx = dh + layernorm_vjp(x, ...; da)                                   (the residual adds dh)
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from jaxcalc.cases._base import Case, Input, fan_in, normal, register, uniform
from jaxcalc.cases.activations import gelu_tanh, gelu_tanh_grad
from jaxcalc.cases.attention import causal_self_attention, causal_self_attention_vjp
from jaxcalc.cases.layers import layernorm, layernorm_vjp, linear, linear_vjp

__all__ = [
    "TRANSFORMER_INPUTS",
    "transformer_block",
    "transformer_block_vjp",
    "attention_sublayer",
    "mlp_sublayer",
]

# The block's inputs, in order.
TRANSFORMER_INPUTS = (
    "x",
    "ln1_gamma",
    "ln1_beta",
    "Wq",
    "Wk",
    "Wv",
    "Wo",
    "ln2_gamma",
    "ln2_beta",
    "W1",
    "b1",
    "W2",
    "b2",
)


def attention_sublayer(
    x: ArrayLike,
    ln1_gamma: ArrayLike,
    ln1_beta: ArrayLike,
    Wq: ArrayLike,
    Wk: ArrayLike,
    Wv: ArrayLike,
    Wo: ArrayLike,
    n_heads: int = 2,
) -> jax.Array:
    """h = x + causal_self_attention(layernorm(x; ln1_gamma, ln1_beta)): (..., T, D)."""
    return jnp.asarray(x) + causal_self_attention(layernorm(x, ln1_gamma, ln1_beta), Wq, Wk, Wv, Wo, n_heads)


def mlp_sublayer(
    h: ArrayLike,
    ln2_gamma: ArrayLike,
    ln2_beta: ArrayLike,
    W1: ArrayLike,
    b1: ArrayLike,
    W2: ArrayLike,
    b2: ArrayLike,
) -> jax.Array:
    """h + gelu_tanh(layernorm(h; ln2_gamma, ln2_beta) W1 + b1) W2 + b2: (..., T, D)."""
    u = gelu_tanh(linear(layernorm(h, ln2_gamma, ln2_beta), W1, b1))
    return jnp.asarray(h) + linear(u, W2, b2)


def transformer_block(
    x: ArrayLike,
    ln1_gamma: ArrayLike,
    ln1_beta: ArrayLike,
    Wq: ArrayLike,
    Wk: ArrayLike,
    Wv: ArrayLike,
    Wo: ArrayLike,
    ln2_gamma: ArrayLike,
    ln2_beta: ArrayLike,
    W1: ArrayLike,
    b1: ArrayLike,
    W2: ArrayLike,
    b2: ArrayLike,
    n_heads: int = 2,
) -> jax.Array:
    """Pre-norm block: h = x + attn(ln1(x)), out = h + gelu_tanh(ln2(h) W1 + b1) W2 + b2: (..., T, D).

    x (..., T, D); ln gammas and betas (D,); Wq, Wk, Wv, Wo (D, D); W1 (D, F), b1 (F,), W2 (F, D), b2 (D,).
    """
    h = attention_sublayer(x, ln1_gamma, ln1_beta, Wq, Wk, Wv, Wo, n_heads)
    return mlp_sublayer(h, ln2_gamma, ln2_beta, W1, b1, W2, b2)


def transformer_block_vjp(primals: tuple, ct: ArrayLike, n_heads: int = 2) -> tuple[jax.Array, ...]:
    """Handwritten backward pass of :func:`transformer_block`: 13 cotangents in the order of the inputs."""
    if len(primals) != len(TRANSFORMER_INPUTS):
        raise ValueError(
            f"expected {len(TRANSFORMER_INPUTS)} primals {TRANSFORMER_INPUTS}, got {len(primals)}"
        )
    x, g1, be1, Wq, Wk, Wv, Wo, g2, be2, W1, b1, W2, b2 = (jnp.asarray(p) for p in primals)
    ct = jnp.asarray(ct)
    # forward again, keeping every intermediate the backward pass reads
    a = layernorm(x, g1, be1)
    h = x + causal_self_attention(a, Wq, Wk, Wv, Wo, n_heads)
    c = layernorm(h, g2, be2)
    z = linear(c, W1, b1)
    u = gelu_tanh(z)
    # out = h + u W2 + b2
    du, dW2, db2 = linear_vjp(u, W2, b2, ct)
    dz = du * gelu_tanh_grad(z)  # u = gelu_tanh(z), elementwise
    dc, dW1, db1 = linear_vjp(c, W1, b1, dz)  # z = c W1 + b1
    dh_ln, dg2, dbe2 = layernorm_vjp(h, g2, be2, dc)  # c = layernorm(h)
    dh = ct + dh_ln  # h reaches out directly (residual) and through the MLP
    da, dWq, dWk, dWv, dWo = causal_self_attention_vjp(a, Wq, Wk, Wv, Wo, dh, n_heads)
    dx_ln, dg1, dbe1 = layernorm_vjp(x, g1, be1, da)  # a = layernorm(x)
    dx = dh + dx_ln  # x reaches h directly (residual) and through attention
    return dx, dg1, dbe1, dWq, dWk, dWv, dWo, dg2, dbe2, dW1, db1, dW2, db2


# ----------------------------------------------------------------------------- case

register(
    Case(
        name="transformer_block",
        description=(
            "h = x + causal_self_attention(layernorm1(x)) (2 heads of size 4); "
            "out = h + gelu_tanh(layernorm2(h) W1 + b1) W2 + b2: x (5,8), W1 (8,16), W2 (16,8) -> (5,8)"
        ),
        inputs=(
            Input("x", ("T", "D"), normal(1.0)),
            Input("ln1_gamma", ("D",), uniform(0.5, 1.5)),
            Input("ln1_beta", ("D",), normal(0.1)),
            # weights ~ N(0, 1/fan_in): activations of unit scale, softmax not saturated
            Input("Wq", ("D", "D"), fan_in()),
            Input("Wk", ("D", "D"), fan_in()),
            Input("Wv", ("D", "D"), fan_in()),
            Input("Wo", ("D", "D"), fan_in()),
            Input("ln2_gamma", ("D",), uniform(0.5, 1.5)),
            Input("ln2_beta", ("D",), normal(0.1)),
            Input("W1", ("D", "F"), fan_in()),
            Input("b1", ("F",), normal(0.1)),
            Input("W2", ("F", "D"), fan_in()),
            Input("b2", ("D",), normal(0.1)),
        ),
        settings={"n_heads": 2, "eps": 1e-5},
        # tiles: a sequence past two 32-tiles and one 64-tile, head size 17 (no multiple of 32)
        sizes={"golden": {"T": 5, "D": 8, "F": 16}, "tiles": {"T": 67, "D": 34, "F": 35},
               "large": {"T": 1024, "D": 128, "F": 512}},
        forward=transformer_block,
        vjp=lambda p, ct: transformer_block_vjp(p, ct),
        # inner: x -> h (attention sublayer); outer: h -> h + mlp(layernorm2(h))
        chain=lambda p: (lambda h: mlp_sublayer(h, *p[7:]), lambda x: attention_sublayer(x, *p[1:7])),
        tags=("composite", "attention", "network"),
    )
)
