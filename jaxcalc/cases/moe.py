"""A mixture-of-experts layer with a top-2 router, gates renormalized over the two chosen experts.

For x (N, D), router Wr (D, E), experts W1 (E, D, F) and W2 (E, F, D):

  r = x Wr (N, E);  chosen(n) = the two largest r[n, :] (inputs keep a gap between the 2nd and 3rd)
  w[n, e] = exp(r[n, e]) / sum_{e' in chosen(n)} exp(r[n, e']) for e in chosen(n), else 0
  expert_e(x) = silu(x W1[e]) W2[e],   y[n] = sum_e w[n, e] expert_e(x[n])   (N, D)

Backward: the choice is constant around the point (no ties), so with dw[n, e] = <ct[n], expert_e(x[n])>,
dr = w (dw - sum_e w dw) (the renormalized softmax's pullback, zero off the chosen experts),
and each chosen expert pulls back w[n, e] ct[n] through its two layers.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from jaxcalc.cases._base import Case, Input, fan_in, normal, register
from jaxcalc.cases.activations import silu, silu_grad

__all__ = ["TOP_K", "moe_top2", "moe_top2_vjp"]

TOP_K = 2


def _gates(r: jax.Array) -> jax.Array:
    """w: softmax over each row's top-2 logits, zero elsewhere: (N, E)."""
    _, idx = jax.lax.top_k(r, TOP_K)
    chosen = jnp.sum(jnp.arange(r.shape[-1]) == idx[..., None], axis=-2) > 0
    m = jax.lax.stop_gradient(jnp.max(r, axis=-1, keepdims=True))
    e = jnp.where(chosen, jnp.exp(r - m), 0.0)
    return e / jnp.sum(e, axis=-1, keepdims=True)


def _experts(x, W1, W2) -> tuple[jax.Array, jax.Array]:
    """(pre (N, E, F), out (N, E, D)): every expert on every row (E is small)."""
    pre = jnp.einsum("nd,edf->nef", x, W1)
    return pre, jnp.einsum("nef,efd->ned", silu(pre), W2)


def moe_top2(x: ArrayLike, Wr: ArrayLike, W1: ArrayLike, W2: ArrayLike) -> jax.Array:
    """sum over the 2 chosen experts of gate * silu(x W1[e]) W2[e]: x (N, D) -> (N, D)."""
    x = jnp.asarray(x)
    w = _gates(x @ jnp.asarray(Wr))
    return jnp.einsum("ne,ned->nd", w, _experts(x, jnp.asarray(W1), jnp.asarray(W2))[1])


def _gate_pullback(w: jax.Array, dw: jax.Array) -> jax.Array:
    """dr = w (dw - <w, dw>) per row: the softmax over the chosen experts (w = 0 elsewhere)."""
    return w * (dw - jnp.sum(w * dw, axis=-1, keepdims=True))


def moe_top2_vjp(primals: tuple, ct: ArrayLike) -> tuple[jax.Array, ...]:
    """(dx, dWr, dW1, dW2) of :func:`moe_top2` (module docstring)."""
    x, Wr, W1, W2 = (jnp.asarray(p) for p in primals)
    ct = jnp.asarray(ct)
    w = _gates(x @ Wr)
    pre, out = _experts(x, W1, W2)
    dw = jnp.einsum("nd,ned->ne", ct, out)
    dr = _gate_pullback(w, dw)
    dout = w[:, :, None] * ct[:, None, :]
    dW2 = jnp.einsum("nef,ned->efd", silu(pre), dout)
    dpre = jnp.einsum("ned,efd->nef", dout, W2) * silu_grad(pre)
    dW1 = jnp.einsum("nd,nef->edf", x, dpre)
    dx = jnp.einsum("nef,edf->nd", dpre, W1) + dr @ Wr.T
    return dx, x.T @ dr, dW1, dW2


register(
    Case(
        name="moe_top2",
        description=(
            "top-2 mixture of experts: gates softmax over each row's 2 largest router logits x Wr, experts "
            "silu(x W1[e]) W2[e]: x (5,4), Wr (4,6), W1 (6,4,3), W2 (6,3,4) -> (5,4)"
        ),
        inputs=(
            Input("x", ("N", "D"), normal(1.0)),
            Input("Wr", ("D", "E"), fan_in(2.0)),
            Input("W1", ("E", "D", "F"), normal(0.5)),
            Input("W2", ("E", "F", "D"), normal(0.5)),
        ),
        settings={"top_k": TOP_K, "renormalize": True},
        sizes={
            "golden": {"N": 5, "D": 4, "E": 6, "F": 3},
            "tiles": {"N": 65, "D": 34, "E": 5, "F": 17},
            "large": {"N": 1024, "D": 512, "E": 8, "F": 1024},
        },
        forward=moe_top2,
        vjp=moe_top2_vjp,
        tags=("block", "routing", "kink"),
    )
)
