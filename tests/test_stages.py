"""Stages of the composite cases: each stage's forward reproduces the composite's intermediate there,
and each stage's handwritten VJP at its cotangent gives the composite's own gradient (by jax.vjp of
the whole composite) for the parameters that stage owns.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxcalc.cases import get_case, instance
from jaxcalc.numerics import compare, reference_mode

COMPOSITES = ("mlp", "transformer_block", "vae_elbo", "gpt_lm_loss", "backprop_mlp")
TOL = 1e-10


@functools.cache
def _jitted(sub: str):
    """A stage case's forward and handwritten VJP, each one compiled program (every stage with the
    same case and shapes reuses it; op by op, each primitive would compile on its own)."""
    sc = get_case(sub)
    return jax.jit(sc.forward), jax.jit(sc.named_vjp)


def _run_stages(name: str):
    """(stage records, {stage: output}, {stage: {input: handwritten vjp}}, value, composite grads)."""
    case = get_case(name)
    inst = instance(case)
    inputs, (ct, _) = inst.sample(), inst.probes()
    stages = case.stages(inputs, ct)
    outs, vjps = {}, {}
    with reference_mode("float64"):
        for stage, sub, ins, sct in stages:
            sc = get_case(sub)
            forward, named_vjp = _jitted(sub)
            primals = tuple(jnp.asarray(ins[n]) for n in sc.input_names)
            outs[stage] = np.asarray(forward(*primals))
            assert outs[stage].shape == np.shape(sct), f"{name}.{stage}: cotangent shape"
            vjps[stage] = {k: np.asarray(v) for k, v in named_vjp(primals, jnp.asarray(sct)).items()}

        def value_and_grads(all_inputs: dict, ct: jax.Array) -> tuple:
            f, diff = inst.f_diff(all_inputs)
            value, pull = jax.vjp(f, *diff)
            return value, pull(ct)

        value, pulled = jax.jit(value_and_grads)(
            {k: jnp.asarray(v) for k, v in inputs.items()}, jnp.asarray(ct)
        )
        grads = dict(zip(case.diff_names, (np.asarray(g) for g in pulled), strict=True))
    return {s[0]: s for s in stages}, outs, vjps, np.asarray(value), grads, inputs


def _close(a, b, what: str) -> None:
    err = compare(np.asarray(a), np.asarray(b))
    assert np.shape(a) == np.shape(b) and err.error <= TOL, f"{what}: error {err.error:.3g} at {err.where()}"


def _block_links(st, outs, prefix: str):
    """Within a transformer block: ln1 -> attn -> (+ residual) ln2 -> fc1 -> gelu -> fc2."""
    p = prefix
    inp = lambda s, n: st[p + s][2][n]  # noqa: E731
    _close(outs[p + "ln1"], inp("attn", "x"), f"{p}ln1 output = attn input")
    _close(inp("ln1", "x") + outs[p + "attn"], inp("ln2", "x"), f"{p}x + attn = ln2 input (residual)")
    _close(outs[p + "ln2"], inp("fc1", "x"), f"{p}ln2 output = fc1 input")
    _close(outs[p + "fc1"], inp("gelu", "x"), f"{p}fc1 output = gelu input")
    _close(outs[p + "gelu"], inp("fc2", "x"), f"{p}gelu output = fc2 input")
    return inp("ln2", "x") + outs[p + "fc2"]  # the block's output


_BLOCK_PARAMS = {
    "ln1": {"gamma": "ln1_gamma", "beta": "ln1_beta"},
    "attn": {"Wq": "Wq", "Wk": "Wk", "Wv": "Wv", "Wo": "Wo"},
    "ln2": {"gamma": "ln2_gamma", "beta": "ln2_beta"},
    "fc1": {"W": "W1", "b": "b1"},
    "fc2": {"W": "W2", "b": "b2"},
}


def _params_match(vjps, grads, owned: dict[str, dict[str, str]], prefix: str = "", gprefix: str = "") -> None:
    for stage, pairs in owned.items():
        for sin, cin in pairs.items():
            _close(
                vjps[prefix + stage][sin], grads[gprefix + cin], f"{prefix}{stage} d{sin} = composite d{cin}"
            )


def test_transformer_block_stages() -> None:
    st, outs, vjps, value, grads, _ = _run_stages("transformer_block")
    assert list(st) == ["ln1", "attn", "ln2", "fc1", "gelu", "fc2"]
    _close(_block_links(st, outs, ""), value, "block output")
    _params_match(vjps, grads, _BLOCK_PARAMS)  # e.g. the layernorm's dgamma inside the block


@pytest.mark.parametrize("name", ("mlp", "backprop_mlp"))
def test_mlp_stages(name: str) -> None:
    st, outs, vjps, value, grads, _ = _run_stages(name)
    act = "gelu" if name == "mlp" else "act"
    assert list(st) == ["fc1", act, "fc2", "loss"]
    _close(outs["fc1"], st[act][2]["x"], "fc1 output = activation input")
    _close(outs[act], st["fc2"][2]["x"], "activation output = fc2 input")
    _close(outs["fc2"], st["loss"][2]["logits"], "fc2 output = logits")
    _close(outs["loss"], value, "loss = composite value")
    _params_match(vjps, grads, {"fc1": {"x": "x", "W": "W1", "b": "b1"}, "fc2": {"W": "W2", "b": "b2"}})


def test_vae_elbo_stages() -> None:
    st, outs, vjps, value, grads, inputs = _run_stages("vae_elbo")
    _close(outs["enc"], st["enc_act"][2]["x"], "enc output = tanh input")
    _close(outs["enc_act"], st["mu"][2]["x"], "encoder hidden = mu head input")
    _close(outs["enc_act"], st["logvar"][2]["x"], "encoder hidden = logvar head input")
    _close(outs["dec1"], st["dec_act"][2]["x"], "dec1 output = tanh input")
    _close(outs["dec_act"], st["dec2"][2]["x"], "decoder hidden = dec2 input")
    _close(outs["dec2"], st["recon"][2]["pred"], "decoder output = reconstruction")
    z = st["mu"][2]["x"] @ inputs["Wmu"] + inputs["bmu"]
    z = z + np.exp(0.5 * (st["logvar"][2]["x"] @ inputs["Wlv"] + inputs["blv"])) * inputs["eps"]
    _close(z, st["dec1"][2]["x"], "z = mu + exp(logvar / 2) eps = decoder input")
    owned = {
        "enc": {"W": "We", "b": "be"},
        "mu": {"W": "Wmu", "b": "bmu"},
        "logvar": {"W": "Wlv", "b": "blv"},
        "dec1": {"W": "Wd1", "b": "bd1"},
        "dec2": {"W": "Wd2", "b": "bd2"},
    }
    _params_match(vjps, grads, owned)
    # x reaches the loss through the encoder and directly as the reconstruction target
    _close(vjps["enc"]["x"] + vjps["recon"]["target"], grads["x"], "enc dx + recon dtarget = composite dx")


def test_gpt_lm_loss_stages() -> None:
    st, outs, vjps, value, grads, _ = _run_stages("gpt_lm_loss")
    _close(outs["embed"], st["block0_ln1"][2]["x"], "embedding = block 0 input")
    x1 = _block_links(st, outs, "block0_")
    _close(x1, st["block1_ln1"][2]["x"], "block 0 output = block 1 input")
    x2 = _block_links(st, outs, "block1_")
    _close(x2, st["lnf"][2]["x"], "block 1 output = final layernorm input")
    _close(outs["lnf"], st["head"][2]["x"], "final layernorm = head input")
    _close(outs["head"], st["loss"][2]["logits"], "head output = logits")
    _close(outs["loss"], value, "loss = composite value")
    for k in range(2):
        _params_match(vjps, grads, _BLOCK_PARAMS, prefix=f"block{k}_", gprefix=f"b{k}_")
    _params_match(vjps, grads, {"lnf": {"gamma": "lnf_gamma", "beta": "lnf_beta"}})
    # the tied table: its gradient is the embedding's plus the head's (transposed)
    _close(vjps["embed"]["table"] + vjps["head"]["W"].T, grads["table"], "embed + head dtable = composite")


def test_every_composite_with_stages_is_covered() -> None:
    assert all(get_case(n).stages is not None for n in COMPOSITES)
