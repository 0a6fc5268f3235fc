"""A small GPT's language-model loss: token embedding, two transformer blocks, a tied output head.

Forward, for ids and targets (T,) int in [0, V) (targets are the next tokens), table (V, D):

  x0 = table[ids],  x1 = block_0(x0),  x2 = block_1(x1)      (transformer_block, 2 heads)
  y = layernorm(x2; lnf_gamma, lnf_beta),  logits = y table^T (the head tied to the embedding)
  loss = softmax_cross_entropy(logits, targets)

Backward, from the loss down, with the blocks' own handwritten pullback:

  dlogits = (softmax(logits) - onehot(targets)) / T
  dy = dlogits table,  dtable_head = dlogits^T y
  dx2, dlnf_gamma, dlnf_beta = layernorm_vjp(x2, ...; dy)
  dx1, dparams_1 = transformer_block_vjp(x1, ...; dx2);  dx0, dparams_0 = transformer_block_vjp(x0, ...; dx1)
  dtable = dtable_head + embedding_vjp(ids; dx0)           (the table is used twice: the gradients add)
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

from jaxcalc.cases._base import Case, Input, fan_in, ids_with_repeats, integers, normal, register, uniform
from jaxcalc.cases.layers import embedding, embedding_vjp, layernorm, layernorm_vjp
from jaxcalc.cases.losses import softmax_cross_entropy, softmax_cross_entropy_vjp
from jaxcalc.cases.stages import block_stages
from jaxcalc.cases.transformer import TRANSFORMER_INPUTS, transformer_block, transformer_block_vjp

__all__ = ["GPT_INPUTS", "N_BLOCKS", "gpt_lm_loss", "gpt_lm_loss_vjp", "gpt_lm_loss_stages"]

N_BLOCKS = 2
_BLOCK = TRANSFORMER_INPUTS[1:]  # a block's weights, without its input x
GPT_INPUTS = (
    "ids",
    "targets",
    "table",
    *(f"b{k}_{n}" for k in range(N_BLOCKS) for n in _BLOCK),
    "lnf_gamma",
    "lnf_beta",
)


def _split(primals: tuple) -> tuple[jax.Array, jax.Array, jax.Array, list[tuple], jax.Array, jax.Array]:
    ids, targets, table = primals[0], primals[1], jnp.asarray(primals[2])
    n = len(_BLOCK)
    blocks = [tuple(primals[3 + k * n : 3 + (k + 1) * n]) for k in range(N_BLOCKS)]
    return ids, targets, table, blocks, primals[-2], primals[-1]


def _forward(primals: tuple) -> dict:
    ids, targets, table, blocks, gf, bf = _split(primals)
    xs = [embedding(ids, table)]
    for w in blocks:
        xs.append(transformer_block(xs[-1], *w))
    y = layernorm(xs[-1], gf, bf)
    return {"xs": xs, "y": y, "logits": y @ table.T}


def gpt_lm_loss(*primals: ArrayLike) -> jax.Array:
    """softmax_cross_entropy(layernorm(block_1(block_0(table[ids]))) table^T, targets): ().

    Inputs in the order of GPT_INPUTS: ids, targets (T,), table (V, D), then per block k the 12
    weights of ``transformer_block`` prefixed ``b{k}_``, then lnf_gamma, lnf_beta (D,).
    """
    return softmax_cross_entropy(_forward(primals)["logits"], primals[1])


def _backward(primals: tuple, ct: ArrayLike) -> tuple[dict, dict]:
    """(gradients by input name, the cotangents at each block's output and at x0)."""
    ids, targets, table, blocks, gf, bf = _split(primals)
    v = _forward(primals)
    dlogits = softmax_cross_entropy_vjp(v["logits"], targets, ct)
    dy = dlogits @ table  # logits = y table^T
    dtable = dlogits.T @ v["y"]
    dx, dgf, dbf = layernorm_vjp(v["xs"][-1], gf, bf, dy)
    grads = {"lnf_gamma": dgf, "lnf_beta": dbf}
    cts = {N_BLOCKS: dx}
    for k in reversed(range(N_BLOCKS)):
        d = transformer_block_vjp((v["xs"][k], *blocks[k]), dx)
        dx = d[0]
        grads.update({f"b{k}_{n}": g for n, g in zip(_BLOCK, d[1:], strict=True)})
        cts[k] = dx
    grads["table"] = dtable + embedding_vjp(ids, table, dx)[0]
    return grads, {"v": v, "cts": cts, "dlogits": dlogits, "dy": dy}


def gpt_lm_loss_vjp(primals: tuple, ct: ArrayLike) -> tuple[jax.Array, ...]:
    """Handwritten backward pass of :func:`gpt_lm_loss`: one cotangent per float input, in order."""
    grads = _backward(primals, ct)[0]
    return tuple(grads[n] for n in GPT_INPUTS[2:])


def gpt_lm_loss_stages(inputs: dict, ct) -> list[tuple[str, str, dict, np.ndarray]]:
    """embed, block{k}_{ln1, attn, ln2, fc1, gelu, fc2}, lnf, head (linear, zero bias), loss."""
    h = lambda a: np.asarray(a, np.float64)  # noqa: E731
    with jax.enable_x64(True):
        p = tuple(jnp.asarray(inputs[n], jnp.float64 if i >= 2 else None) for i, n in enumerate(GPT_INPUTS))
        _, c = _backward(p, jnp.asarray(ct, jnp.float64))
        v, table = c["v"], p[2]
        out = [("embed", "embedding", {"ids": np.asarray(inputs["ids"]), "table": h(table)}, h(c["cts"][0]))]
        for k in range(N_BLOCKS):
            params = {n: inputs[f"b{k}_{n}"] for n in _BLOCK}
            out += block_stages(v["xs"][k], params, c["cts"][k + 1], prefix=f"block{k}_")[0]
        zero = np.zeros(table.shape[0])
        gf, bf = h(inputs["lnf_gamma"]), h(inputs["lnf_beta"])
        out += [
            ("lnf", "layernorm", {"x": h(v["xs"][-1]), "gamma": gf, "beta": bf}, h(c["dy"])),
            ("head", "linear", {"x": h(v["y"]), "W": h(table.T), "b": zero}, h(c["dlogits"])),
            (
                "loss",
                "softmax_cross_entropy",
                {"logits": h(v["logits"]), "labels": np.asarray(inputs["targets"])},
                h(ct),
            ),
        ]
        return out


def _block_inputs(k: int) -> tuple[Input, ...]:
    samplers = {"ln1_gamma": uniform(0.5, 1.5), "ln1_beta": normal(0.1), "ln2_gamma": uniform(0.5, 1.5),
                "ln2_beta": normal(0.1), "b1": normal(0.1), "b2": normal(0.1)}  # fmt: skip
    shapes = {"ln1_gamma": ("D",), "ln1_beta": ("D",), "Wq": ("D", "D"), "Wk": ("D", "D"), "Wv": ("D", "D"),
              "Wo": ("D", "D"), "ln2_gamma": ("D",), "ln2_beta": ("D",), "W1": ("D", "F"), "b1": ("F",),
              "W2": ("F", "D"), "b2": ("D",)}  # fmt: skip
    return tuple(Input(f"b{k}_{n}", shapes[n], samplers.get(n, fan_in())) for n in _BLOCK)


register(
    Case(
        name="gpt_lm_loss",
        description=(
            "next-token cross-entropy of a 2-block GPT: table[ids] -> 2 pre-norm transformer blocks "
            "(2 heads) -> layernorm -> logits y table^T (tied head); ids, targets (5) in [0,7), D 6 -> ()"
        ),
        inputs=(
            Input("ids", ("T",), ids_with_repeats("V", 3), kind="int"),
            Input("targets", ("T",), integers("V"), kind="int"),
            Input("table", ("V", "D"), normal(1.0)),
            *_block_inputs(0),
            *_block_inputs(1),
            Input("lnf_gamma", ("D",), uniform(0.5, 1.5)),
            Input("lnf_beta", ("D",), normal(0.1)),
        ),
        settings={"n_blocks": N_BLOCKS, "n_heads": 2, "eps": 1e-5, "tied_head": True},
        # tiles: a sequence past a 32-tile, head size 17, a vocabulary and MLP width off the tiles
        sizes={
            "golden": {"T": 5, "V": 7, "D": 6, "F": 10},
            "tiles": {"T": 33, "V": 67, "D": 34, "F": 40},
            "large": {"T": 1024, "V": 50257, "D": 128, "F": 512},
        },
        forward=gpt_lm_loss,
        vjp=gpt_lm_loss_vjp,
        stages=gpt_lm_loss_stages,
        tags=("composite", "generative", "network", "loss"),
    )
)
