"""Composite cases (mlp, attention, causal_self_attention, transformer_block, adam_step) against witnesses.

Handwritten VJPs vs jax.vjp in float64 at the golden shapes and at other sizes (batched, more heads);
adam_step vs optax.adam itself; the causal mask vs a loop-by-loop NumPy reference and a causality
probe; and planted off-by-one masks that these comparisons must catch.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxcalc.cases import get_case, instance
from jaxcalc.cases.attention import (
    attention,
    attention_vjp,
    causal_mask,
    causal_self_attention,
    causal_self_attention_vjp,
    self_attention,
    self_attention_vjp,
)
from jaxcalc.cases.mlp import mlp, mlp_vjp
from jaxcalc.cases.optim_step import adam_step, adam_step_jvp, adam_step_vjp
from jaxcalc.cases.transformer import transformer_block, transformer_block_vjp
from jaxcalc.numerics import compare, reference_mode, tolerance

COMPOSITES = ("mlp", "attention", "causal_self_attention", "transformer_block", "adam_step")
EXACT64 = tolerance("float64", "exact")


def _autodiff_vjp(fn: Callable, primals: tuple, diff: tuple[int, ...], ct: jax.Array) -> tuple:
    """jax.vjp of fn with respect to the primals at positions ``diff`` (the others held fixed)."""

    def restricted(*args):
        full = list(primals)
        for i, a in zip(diff, args, strict=True):
            full[i] = a
        return fn(*full)

    return jax.vjp(restricted, *(primals[i] for i in diff))[1](ct)


def _both_vjps(
    fn: Callable, hand_vjp: Callable, primals: tuple, diff: tuple[int, ...], ct: jax.Array
) -> tuple:
    """(handwritten, autodiff) pullbacks of ct, computed in one jitted program."""
    return jax.jit(lambda p, c: (hand_vjp(p, c), _autodiff_vjp(fn, p, diff, c)))(primals, ct)


def _worst(hand: tuple, auto: tuple) -> float:
    """Largest normwise relative error over the cotangents of all inputs."""
    assert len(hand) == len(auto)
    for h, a in zip(hand, auto, strict=True):
        assert h.shape == a.shape and h.dtype == a.dtype
    return max(compare(h, a).error for h, a in zip(hand, auto, strict=True))


@functools.cache
def _golden(name: str) -> tuple[tuple[np.ndarray, ...], np.ndarray, dict[str, np.ndarray]]:
    """The case's seeded float64 inputs (in order), cotangent and tangents, drawn once per module."""
    case = get_case(name)
    x = case.sample("float64")
    ct, tangents = case.probes("float64")
    return tuple(x[n] for n in case.input_names), ct, tangents


# ----------------------------------------------------------------------------- golden shapes


@pytest.mark.parametrize("name", COMPOSITES)
def test_handwritten_vjp_matches_autodiff_at_golden_shapes(name: str) -> None:
    case = get_case(name)
    x, ct, tangents = _golden(name)
    with reference_mode("float64"):
        primals, ct = tuple(jnp.asarray(a) for a in x), jnp.asarray(ct)
        hand, auto = _both_vjps(case.forward, case.vjp, primals, case.diff_index, ct)
        assert _worst(hand, auto) <= EXACT64
        if case.jvp is not None:
            t = tuple(jnp.asarray(tangents[n]) for n in case.diff_names)
            hand, auto = jax.jit(lambda p, t: (case.jvp(p, t), jax.jvp(case.forward, p, t)[1]))(primals, t)
            assert compare(hand, auto).error <= EXACT64
        if case.chain is not None:

            def composed(primals: tuple) -> tuple[jax.Array, jax.Array]:
                outer, inner = case.chain(primals)
                return outer(inner(primals[0])), case.forward(*primals)

            assert compare(*jax.jit(composed)(primals)).error <= EXACT64


@pytest.mark.parametrize("name", COMPOSITES)
def test_golden_inputs_are_well_conditioned(name: str) -> None:
    """Distinct non-square shapes, positive v for adam, and attention that is not one-hot."""
    case = get_case(name)
    x = dict(zip(case.input_names, _golden(name)[0], strict=True))
    if name in ("mlp", "attention"):  # the projection weights of the other two are D x D by definition
        assert all(a != b for a, b in (s for s in instance(case).shapes.values() if len(s) == 2))
    if name == "adam_step":
        assert np.all(x["v"] > 0)
    if name == "attention":
        s = x["q"] @ x["k"].T / np.sqrt(3)
        weights = np.exp(s - s.max(axis=-1, keepdims=True))
        weights /= weights.sum(axis=-1, keepdims=True)
        assert weights.max() < 0.95  # not saturated: every key still gets gradient


# ----------------------------------------------------------------------------- other sizes


def _draw(seed: int, *shapes_and_scales: tuple[tuple[int, ...], float]) -> list[np.ndarray]:
    """Seeded float64 Gaussians, one per (shape, scale)."""
    rng = np.random.default_rng(seed)
    return [scale * rng.standard_normal(shape) for shape, scale in shapes_and_scales]


def _mlp_wide() -> tuple:
    x, W1, b1, W2, b2 = _draw(1, ((11, 4), 1.0), ((4, 9), 0.5), ((9,), 0.1), ((9, 6), 0.33), ((6,), 0.1))
    labels = np.random.default_rng(2).integers(0, 6, (11,))
    return mlp, lambda p, c: mlp_vjp(*p, c), (x, labels, W1, b1, W2, b2), (0, 2, 3, 4, 5)


def _attention_batched() -> tuple:
    p = tuple(_draw(3, ((2, 7, 4), 1.0), ((2, 9, 4), 1.0), ((2, 9, 6), 1.0)))
    return attention, lambda p, c: attention_vjp(*p, c), p, (0, 1, 2)


def _csa(b: int, t: int, d: int, e: int, d_out: int, heads: int) -> tuple:
    w = ((d, e), d**-0.5)
    p = tuple(_draw(4, ((b, t, d), 1.0), w, w, w, ((e, d_out), e**-0.5)))
    fn = functools.partial(causal_self_attention, n_heads=heads)
    return fn, lambda p, c: causal_self_attention_vjp(*p, c, n_heads=heads), p, (0, 1, 2, 3, 4)


def _block(b: int, t: int, d: int, f: int, heads: int) -> tuple:
    x, g1, be1, Wq, Wk, Wv, Wo, g2, be2, W1, b1, W2, b2 = _draw(
        5,
        ((b, t, d), 1.0),
        ((d,), 0.3),
        ((d,), 0.1),
        *[((d, d), d**-0.5)] * 4,
        ((d,), 0.3),
        ((d,), 0.1),
        ((d, f), d**-0.5),
        ((f,), 0.1),
        ((f, d), f**-0.5),
        ((d,), 0.1),
    )
    p = (x, 1 + g1, be1, Wq, Wk, Wv, Wo, 1 + g2, be2, W1, b1, W2, b2)
    fn = functools.partial(transformer_block, n_heads=heads)
    return fn, lambda p, c: transformer_block_vjp(p, c, n_heads=heads), p, tuple(range(13))


def _adam_matrix() -> tuple:
    p, g, m = _draw(6, ((3, 4), 1.0), ((3, 4), 1.0), ((3, 4), 0.2))
    v = np.random.default_rng(7).uniform(1e-4, 1e-2, (3, 4))
    return adam_step, lambda q, c: adam_step_vjp(*q, c), (p, g, m, v), (0, 1, 2, 3)


OTHER_SIZES = {
    "mlp-x11x4-h9-c6": _mlp_wide,
    "attention-batch2-q7-k9": _attention_batched,
    "csa-B2-T7-D12-h3": functools.partial(_csa, 2, 7, 12, 12, 12, 3),
    "csa-B3-T6-D10-E6-h3-out9": functools.partial(_csa, 3, 6, 10, 6, 9, 3),
    "csa-T4-D8-h4": functools.partial(_csa, 1, 4, 8, 8, 8, 4),
    "block-B2-T7-D12-F20-h3": functools.partial(_block, 2, 7, 12, 20, 3),
    "adam-3x4": _adam_matrix,
}


def _build(label: str, seed: int) -> tuple:
    """(fn, handwritten vjp, primals, diff positions, cotangent) for one of OTHER_SIZES; call under x64."""
    fn, hand_vjp, primals, diff = OTHER_SIZES[label]()
    primals = tuple(jnp.asarray(a) for a in primals)
    out = jax.eval_shape(fn, *primals)
    ct = jnp.asarray(np.random.default_rng(seed).standard_normal(out.shape))
    return fn, hand_vjp, primals, diff, ct


@pytest.mark.parametrize("label", OTHER_SIZES)
def test_handwritten_vjp_matches_autodiff_at_other_sizes(label: str) -> None:
    with reference_mode("float64"):
        fn, hand_vjp, primals, diff, ct = _build(label, 8)
        assert _worst(*_both_vjps(fn, hand_vjp, primals, diff, ct)) <= EXACT64


def test_float32_runs_in_float32_and_agrees_with_float64() -> None:
    def both(primals: tuple, ct: jax.Array) -> tuple:
        return fn(*primals), hand_vjp(primals, ct)

    with reference_mode("float64"):
        fn, hand_vjp, primals, _, ct = _build("block-B2-T7-D12-F20-h3", 9)
        ref_out, ref_vjp = jax.jit(both)(primals, ct)
    with reference_mode("float32"):
        p32 = tuple(jnp.asarray(np.asarray(p), jnp.float32) for p in primals)
        out32, vjp32 = jax.jit(both)(p32, jnp.asarray(np.asarray(ct), jnp.float32))
    assert out32.dtype == jnp.float32 and all(d.dtype == jnp.float32 for d in vjp32)
    assert compare(out32, ref_out).error <= tolerance("float32", "exact")
    worst = max(compare(d, r).error for d, r in zip(vjp32, ref_vjp, strict=True))
    assert worst <= tolerance("float32", "exact")


def test_bad_head_count_is_a_clear_error() -> None:
    x, w = jnp.ones((5, 8)), jnp.eye(8)
    with pytest.raises(ValueError, match="n_heads=3"):
        causal_self_attention(x, w, w, w, w, n_heads=3)


# ----------------------------------------------------------------------------- adam vs optax


@jax.jit
def _optax_trajectory(p0: jax.Array, g1: jax.Array, g2: jax.Array, g3: jax.Array) -> dict[str, jax.Array]:
    """Three real optax.adam(1e-3) steps; our adam_step fed the state after two of them."""
    opt = optax.adam(1e-3)
    params, state = p0, opt.init(p0)
    for g in (g1, g2):
        updates, state = opt.update(g, state, params)
        params = optax.apply_updates(params, updates)
    ours = adam_step(params, g3, state[0].mu, state[0].nu)
    updates, state3 = opt.update(g3, state, params)
    return {
        "p2": params,
        "ours": ours,
        "p3": optax.apply_updates(params, updates),
        "m3": state3[0].mu,
        "v3": state3[0].nu,
        "count": state3[0].count,
    }


def test_adam_step_is_optax_third_step_along_a_trajectory() -> None:
    with reference_mode("float64"):
        r = jax.device_get(_optax_trajectory(*(jnp.asarray(a) for a in _draw(10, *[((7,), 1.0)] * 4))))
    ours = r["ours"]
    assert ours.dtype == np.float64 and int(r["count"]) == 3
    assert compare(ours[0], r["p3"]).error <= 1e-14
    assert compare(ours[0] - r["p2"], r["p3"] - r["p2"]).error <= 1e-12  # the step itself, not just p
    assert compare(ours[1], r["m3"]).error <= 1e-14
    assert compare(ours[2], r["v3"]).error <= 1e-14


@jax.jit
def _optax_from_count_two(p: jax.Array, g: jax.Array, m: jax.Array, v: jax.Array) -> tuple:
    """optax.adam(1e-3) update from the state (count=2, mu=m, nu=v), next to our adam_step."""
    opt = optax.adam(1e-3)
    state = opt.init(p)
    state = (state[0]._replace(count=jnp.asarray(2, jnp.int32), mu=m, nu=v), *state[1:])
    updates, new = opt.update(g, state, p)
    return adam_step(p, g, m, v), updates, new[0].mu, new[0].nu


def test_adam_step_golden_inputs_match_optax_from_a_count_two_state() -> None:
    p, g, m, v = _golden("adam_step")[0]
    with reference_mode("float64"):
        ours, updates, mu, nu = jax.device_get(_optax_from_count_two(*(jnp.asarray(a) for a in (p, g, m, v))))
    assert compare(ours[0] - p, updates).error <= 1e-12
    assert compare(ours[1], mu).error <= 1e-14
    assert compare(ours[2], nu).error <= 1e-14


def test_adam_jvp_matches_autodiff_on_a_matrix() -> None:
    with reference_mode("float64"):
        primals = tuple(jnp.asarray(a) for a in _adam_matrix()[2])
        t = tuple(jnp.asarray(a) for a in _draw(11, *[((3, 4), 1.0)] * 4))
        hand, auto = jax.jit(lambda p, t: (adam_step_jvp(*p, t), jax.jvp(adam_step, p, t)[1]))(primals, t)
    assert compare(hand, auto).error <= EXACT64


# ----------------------------------------------------------------------------- the causal mask


def _naive_causal_attention(x, Wq, Wk, Wv, Wo, n_heads):
    """Loop-by-loop NumPy reference: for each head and each position i, softmax over j <= i only."""
    x, Wq, Wk, Wv, Wo = (np.asarray(a, np.float64) for a in (x, Wq, Wk, Wv, Wo))
    t, e = x.shape[0], Wq.shape[1]
    dh = e // n_heads
    q, k, v = x @ Wq, x @ Wk, x @ Wv
    concat = np.zeros((t, e))
    for h in range(n_heads):
        cols = slice(h * dh, (h + 1) * dh)
        for i in range(t):
            scores = np.array([q[i, cols] @ k[j, cols] / np.sqrt(dh) for j in range(i + 1)])
            w = np.exp(scores - scores.max())
            w /= w.sum()
            concat[i, cols] = sum(w[j] * v[j, cols] for j in range(i + 1))
    return concat @ Wo


def _shifted_mask(t: int) -> jax.Array:
    """The planted bug: position i also sees i + 1."""
    return jnp.tril(jnp.ones((t, t), dtype=bool), k=1)


def test_causal_attention_matches_a_loop_by_loop_reference() -> None:
    x = _golden("causal_self_attention")[0]
    with reference_mode("float64"):
        p = tuple(jnp.asarray(a) for a in x)
        ours, planted = jax.jit(
            lambda p: (causal_self_attention(*p), self_attention(*p, _shifted_mask(p[0].shape[0]), 2))
        )(p)
    reference = _naive_causal_attention(*x, n_heads=2)
    assert compare(ours, reference).error <= EXACT64
    assert compare(planted, reference).error > 1e-3  # an off-by-one mask cannot pass


@pytest.mark.parametrize("which", ["causal_self_attention", "transformer_block"])
def test_later_positions_do_not_change_earlier_outputs(which: str) -> None:
    case = get_case(which)
    x, ct, _ = _golden(which)
    with reference_mode("float64"):
        p = tuple(jnp.asarray(a) for a in x)
        forward, vjp = jax.jit(case.forward), jax.jit(case.vjp)
        base = forward(*p)
        t = p[0].shape[0]
        bump = jnp.asarray(np.random.default_rng(12).standard_normal(p[0].shape))
        for s in range(t - 1):
            later = jnp.arange(t)[:, None] > s
            out = forward(jnp.where(later, p[0] + bump, p[0]), *p[1:])
            np.testing.assert_array_equal(out[: s + 1], base[: s + 1])
            assert not np.allclose(out[s + 1], base[s + 1])  # the bump itself is visible
        # backward: a cotangent on row s alone sends nothing to the rows after s
        for s in range(t):
            dx = vjp(p, jnp.zeros_like(base).at[s].set(jnp.asarray(ct)[s]))[0]
            assert np.all(dx[s + 1 :] == 0) and np.any(dx[: s + 1] != 0)


def test_planted_mask_fails_the_causality_probe() -> None:
    x = _golden("causal_self_attention")[0]
    with reference_mode("float64"):
        p = tuple(jnp.asarray(a) for a in x)
        leaky = jax.jit(functools.partial(self_attention, mask=_shifted_mask(p[0].shape[0]), n_heads=2))
        base = leaky(*p)
        out = leaky(p[0].at[3].add(1.0), *p[1:])
    assert not np.allclose(out[2], base[2])  # position 2 sees position 3: caught


def _pullbacks_with_planted_masks(p: tuple, ct: jax.Array) -> tuple:
    """Pullbacks by autodiff, by hand, and by hand with two planted off-by-one masks.

    The planted masks: i also sees i + 1; i sees only j < i (row 0 keeps itself, so nothing is NaN).
    """
    t = p[0].shape[0]
    leaky = self_attention_vjp(*p, _shifted_mask(t), ct, 2)
    blind = self_attention_vjp(*p, jnp.tril(causal_mask(t), k=-1).at[0, 0].set(True), ct, 2)
    auto = _autodiff_vjp(causal_self_attention, p, (0, 1, 2, 3, 4), ct)
    return auto, causal_self_attention_vjp(*p, ct), leaky, blind


def test_planted_mask_in_the_backward_pass_is_caught_by_the_vjp_check() -> None:
    x, ct, _ = _golden("causal_self_attention")
    with reference_mode("float64"):
        p, ct = tuple(jnp.asarray(a) for a in x), jnp.asarray(ct)
        auto, good, leaky, blind = jax.jit(_pullbacks_with_planted_masks)(p, ct)
    assert _worst(good, auto) <= EXACT64
    assert _worst(leaky, auto) > 1e-3
    assert np.all(np.isfinite(blind[0])) and _worst(blind, auto) > 1e-3
