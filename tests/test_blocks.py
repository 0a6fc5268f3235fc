"""The block and generative-model cases: the tiles size against autodiff, and a planted bug of each
case's own kind caught by the checker. (Every check at the golden size runs on them, as on every
registered case, in tests/test_checks.py::test_case_passes_every_check_float64.)

A planted bug replaces one helper that only the handwritten backward pass calls (the forward and
autodiff keep the true math), on a fresh copy of the case, so no compiled program is reused.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxcalc import backprop
from jaxcalc.cases import (
    attention_blocks,
    blocks,
    conv,
    generative,
    get_case,
    gpt,
    instance,
    moe,
    norms,
    recurrent,
)
from jaxcalc.checks import Report
from jaxcalc.checks.instances import check_instance
from jaxcalc.numerics import compare, reference_mode

NEW = (
    "vae_elbo", "ddpm_loss", "gan_losses", "gpt_lm_loss", "backprop_mlp", "gqa_attention",
    "cross_attention", "batchnorm", "groupnorm", "rope", "swiglu", "dropout",
    "label_smoothed_cross_entropy", "z_loss", "lstm_cell", "gru_cell", "conv1d", "conv2d", "max_pool2d",
    "avg_pool2d", "selective_scan", "moe_top2",
)  # fmt: skip


def _vjp_both(case, inputs: dict, ct: np.ndarray) -> tuple[tuple, tuple]:
    """(handwritten, jax.vjp) of the case at ``inputs``, in one jitted float64 call."""
    primals = tuple(inputs[n] for n in case.input_names)
    idx = case.diff_index

    def both(primals, ct):
        def f(*diff):
            full = list(primals)
            for k, d in zip(idx, diff, strict=True):
                full[k] = d
            return case.forward(*full)

        _, pull = jax.vjp(f, *(primals[k] for k in idx))
        return tuple(case.vjp(primals, ct)), pull(ct)

    with reference_mode("float64"):
        return jax.device_get(jax.jit(both)(primals, ct))


@pytest.mark.parametrize("name", NEW)
def test_tiles_vjp_matches_autodiff(name: str) -> None:
    case = get_case(name)
    inst = instance(case, "tiles")
    ct, _ = inst.probes()
    hw, ad = _vjp_both(case, inst.sample(), ct)
    for n, a, b in zip(case.diff_names, hw, ad, strict=True):
        assert np.shape(a) == np.shape(b), f"{inst.id} d{n}: shape {np.shape(a)} != {np.shape(b)}"
        err = compare(a, b)
        assert err.error <= 1e-10, f"{inst.id} d{n}: error {err.error:.3g} at {err.where()}"


# ----------------------------------------------------------------------------- planted bugs


def _wrong_kv_mapping(d, group):
    """Query head h credited to kv head h % n_kv (interleaved) instead of h // group."""
    *lead, h, t, dh = d.shape
    return d.reshape(*lead, group, h // group, t, dh).sum(axis=-4)


_ORIG_STATS = norms._statistics_terms
_ORIG_CROP = conv._crop


def _swap_input_forget(di, df, dg, do):
    """The input and forget gates' cotangents in each other's place."""
    return jnp.concatenate([df, di, dg, do], axis=-1)


def _argmin_mask(win):
    return (jnp.arange(win.shape[-1]) == jnp.argmin(win, axis=-1)[..., None]).astype(win.dtype)


PLANTS = {
    # (case, module, helper, replacement): each replacement is the bug
    "vae-missing-kl-gradient": ("vae_elbo", generative, "_kl_grads", lambda mu, lv: (0 * mu, 0 * lv)),
    "ddpm-noise-coefficients-swapped": (
        "ddpm_loss", generative, "_noise_coefficients", lambda ab: (jnp.sqrt(1 - ab), jnp.sqrt(ab))),
    "gan-saturating-generator-gradient": (
        "gan_losses", generative, "_generator_logit_grad", lambda lf: -jax.nn.sigmoid(lf)),
    "gpt-tied-head-missing-embedding-path": (
        "gpt_lm_loss", gpt, "embedding_vjp", lambda ids, table, ct: (jnp.zeros_like(table),)),
    "training-backward-ignores-relu": (
        "backprop_mlp", backprop, "_act_grad", lambda a, h, act: jnp.ones_like(a)),
    "gqa-wrong-kv-head-mapping": ("gqa_attention", attention_blocks, "_group_sum", _wrong_kv_mapping),
    "cross-attention-context-missing-value-path": (
        "cross_attention", attention_blocks, "_context_grad", lambda dk, dv, Wk, Wv: dk @ Wk.T),
    "batchnorm-running-stats-backward": (
        "batchnorm", norms, "_statistics_terms", lambda g, xhat, axes: 0 * g),
    "groupnorm-statistics-per-channel": (
        "groupnorm", norms, "_statistics_terms", lambda g, xhat, axes: _ORIG_STATS(g, xhat, (3,))),
    "rope-rotation-sign-flipped": ("rope", blocks, "_rotate_half_t", blocks._rotate_half),
    "swiglu-gate-derivative-sigmoid": ("swiglu", blocks, "silu_grad", jax.nn.sigmoid),
    "dropout-backward-unscaled": (
        "dropout", blocks, "_kept_cotangent", lambda keep, ct: jnp.where(keep, ct, 0.0)),
    "label-smoothing-uniform-part-missing": (
        "label_smoothed_cross_entropy", blocks, "_smoothed_target",
        lambda labels, c, dtype: (jnp.arange(c) == labels[..., None]).astype(dtype)),
    "z-loss-square-derivative-halved": ("z_loss", blocks, "_square_grad", lambda a: a),
    "lstm-gate-order-swapped": ("lstm_cell", recurrent, "_join_gates", _swap_input_forget),
    "gru-reset-gate-missing-on-hidden-path": ("gru_cell", recurrent, "_reset_gated", lambda dn, r: dn),
    "conv1d-stride-off-by-one": (
        "conv1d", conv, "_geometry", lambda s: (s["stride"] - 1, s["padding"], s["dilation"], s["groups"])),
    "conv2d-stride-off-by-one": (
        "conv2d", conv, "_geometry", lambda s: (s["stride"] - 1, s["padding"], s["dilation"], s["groups"])),
    "conv2d-dilation-off-by-one": (
        "conv2d", conv, "_geometry", lambda s: (s["stride"], s["padding"], s["dilation"] - 1, s["groups"])),
    "max-pool-routes-to-argmin": ("max_pool2d", conv, "_argmax_mask", _argmin_mask),
    "selective-scan-state-not-decayed-backward": ("selective_scan", recurrent, "_carry", lambda a, g: g),
    "moe-gates-not-renormalized-backward": ("moe_top2", moe, "_gate_pullback", lambda w, dw: w * dw),
    "avg-pool-padding-not-cropped": ("avg_pool2d", conv, "_crop", lambda d, p, size: _ORIG_CROP(d, 0, size)),
}  # fmt: skip


@pytest.mark.parametrize("plant", tuple(PLANTS), ids=tuple(PLANTS))
def test_planted_bug_is_caught(plant: str, monkeypatch: pytest.MonkeyPatch) -> None:
    name, module, helper, bug = PLANTS[plant]
    case = get_case(name)
    monkeypatch.setattr(module, helper, bug)
    planted = dataclasses.replace(
        case, vjp=lambda p, ct: case.vjp(p, ct)
    )  # a fresh function: no cached program
    report = _vjp_check(planted)
    assert [r.check for r in report.results] == ["vjp"]
    failed = {r.check for r in report.failures}
    assert "vjp" in failed, report.format()


def _vjp_check(case) -> Report:
    """The checker's handwritten-vs-autodiff VJP check of ``case`` at its golden instance, as
    check_case runs it, without the checks this test does not read."""
    return check_instance(instance(case), checks="vjp")


def test_planted_gqa_mapping_keeps_shapes() -> None:
    # the wrong mapping is a real mapping bug, not a shape error the checker would flag anyway
    d = jnp.arange(4 * 5 * 3.0).reshape(4, 5, 3)
    assert _wrong_kv_mapping(d, 2).shape == attention_blocks._group_sum(d, 2).shape
    assert not np.allclose(_wrong_kv_mapping(d, 2), attention_blocks._group_sum(d, 2))


@pytest.mark.parametrize("size", ("golden", "tiles"))
def test_moe_router_keeps_away_from_ties(size: str) -> None:
    # the top-2 choice must not flip under the finite-difference steps (about 1e-3 here)
    s = instance("moe_top2", size).sample()
    r = np.sort(s["x"] @ s["Wr"], axis=-1)
    assert float(np.min(r[:, -2] - r[:, -3])) >= 0.05


@pytest.mark.parametrize("size", ("golden", "tiles"))
def test_backprop_mlp_and_max_pool_keep_away_from_kinks(size: str) -> None:
    s = instance("backprop_mlp", size).sample()
    assert float(np.min(np.abs(s["x"] @ s["W1"] + s["b1"]))) >= 0.1  # DESIGN §3: 0.1 from relu's kink
    x = instance("max_pool2d", size).sample()["x"]
    gaps = np.diff(np.sort(x.reshape(-1)))
    assert float(np.min(gaps)) > 0.0  # distinct: no ties within a window
