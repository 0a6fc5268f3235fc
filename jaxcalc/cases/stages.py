"""Stages of the composite cases: each sub-op as an instance of an existing case (DESIGN §3b).

A stage is ``(stage, case_name, stage_inputs, stage_cotangent)``: the inputs are the composite's
real intermediate values where that sub-op runs, and the cotangent is the real cotangent flowing
into the sub-op's output during the composite's backward pass. A failing composite whose stages
all pass is wrong in how it composes them; a failing stage names the sub-op.

This module computes the intermediates again in float64 with the layers' own functions and
pullbacks; it imports only layer modules, so the composite modules can import it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxcalc.cases.activations import gelu_tanh, gelu_tanh_grad
from jaxcalc.cases.attention import causal_self_attention, causal_self_attention_vjp
from jaxcalc.cases.layers import layernorm, layernorm_vjp, linear, linear_vjp
from jaxcalc.cases.losses import softmax_cross_entropy_vjp

__all__ = ["Stage", "block_stages", "transformer_block_stages", "mlp_stages"]

Stage = tuple[str, str, dict[str, np.ndarray], np.ndarray]
_BLOCK = ("ln1_gamma", "ln1_beta", "Wq", "Wk", "Wv", "Wo", "ln2_gamma", "ln2_beta", "W1", "b1", "W2", "b2")


def _h(a: Any) -> np.ndarray:
    return np.asarray(a, np.float64)


def block_stages(
    x: Any, params: Mapping[str, Any], ct: Any, prefix: str = ""
) -> tuple[list[Stage], np.ndarray]:
    """The six stages of one transformer block at input x and output cotangent ct, and dx.

    ``params`` holds the block's weights under the names of ``transformer_block``'s inputs; stage
    names get ``prefix``. Stages: ln1 (layernorm), attn (causal_self_attention), ln2 (layernorm),
    fc1 (linear), gelu (gelu_tanh), fc2 (linear).
    """
    with jax.enable_x64(True):
        x, ct = jnp.asarray(x, jnp.float64), jnp.asarray(ct, jnp.float64)
        p = {k: jnp.asarray(params[k], jnp.float64) for k in _BLOCK}
        a = layernorm(x, p["ln1_gamma"], p["ln1_beta"])
        h = x + causal_self_attention(a, p["Wq"], p["Wk"], p["Wv"], p["Wo"])
        c = layernorm(h, p["ln2_gamma"], p["ln2_beta"])
        z = linear(c, p["W1"], p["b1"])
        u = gelu_tanh(z)
        du = linear_vjp(u, p["W2"], p["b2"], ct)[0]
        dz = du * gelu_tanh_grad(z)
        dc = linear_vjp(c, p["W1"], p["b1"], dz)[0]
        dh = ct + layernorm_vjp(h, p["ln2_gamma"], p["ln2_beta"], dc)[0]
        da = causal_self_attention_vjp(a, p["Wq"], p["Wk"], p["Wv"], p["Wo"], dh)[0]
        dx = dh + layernorm_vjp(x, p["ln1_gamma"], p["ln1_beta"], da)[0]
        stages = [
            ("ln1", "layernorm", {"x": x, "gamma": p["ln1_gamma"], "beta": p["ln1_beta"]}, da),
            ("attn", "causal_self_attention", {"x": a, **{w: p[w] for w in ("Wq", "Wk", "Wv", "Wo")}}, dh),
            ("ln2", "layernorm", {"x": h, "gamma": p["ln2_gamma"], "beta": p["ln2_beta"]}, dc),
            ("fc1", "linear", {"x": c, "W": p["W1"], "b": p["b1"]}, dz),
            ("gelu", "gelu_tanh", {"x": z}, du),
            ("fc2", "linear", {"x": u, "W": p["W2"], "b": p["b2"]}, ct),
        ]
        out = [(prefix + s, name, {k: _h(v) for k, v in ins.items()}, _h(c_)) for s, name, ins, c_ in stages]
        return out, _h(dx)


def transformer_block_stages(inputs: Mapping[str, Any], ct: Any) -> list[Stage]:
    """Stages of ``transformer_block``: ln1, attn, ln2, fc1, gelu, fc2."""
    return block_stages(inputs["x"], inputs, ct)[0]


def mlp_stages(inputs: Mapping[str, Any], ct: Any) -> list[Stage]:
    """Stages of ``mlp``: fc1 (linear), gelu (gelu_tanh), fc2 (linear), loss (softmax_cross_entropy)."""
    with jax.enable_x64(True):
        x, labels = jnp.asarray(inputs["x"], jnp.float64), jnp.asarray(inputs["labels"])
        W1, b1, W2, b2 = (jnp.asarray(inputs[k], jnp.float64) for k in ("W1", "b1", "W2", "b2"))
        ct = jnp.asarray(ct, jnp.float64)
        z = linear(x, W1, b1)
        u = gelu_tanh(z)
        logits = linear(u, W2, b2)
        dlogits = softmax_cross_entropy_vjp(logits, labels, ct)
        du = linear_vjp(u, W2, b2, dlogits)[0]
        dz = du * gelu_tanh_grad(z)
        return [
            ("fc1", "linear", {"x": _h(x), "W": _h(W1), "b": _h(b1)}, _h(dz)),
            ("gelu", "gelu_tanh", {"x": _h(z)}, _h(du)),
            ("fc2", "linear", {"x": _h(u), "W": _h(W2), "b": _h(b2)}, _h(dlogits)),
            ("loss", "softmax_cross_entropy", {"logits": _h(logits), "labels": np.asarray(labels)}, _h(ct)),
        ]
