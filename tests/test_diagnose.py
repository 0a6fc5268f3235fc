"""Diagnosis of failed gradients: each kind of bug is planted in a real case and must be named.

The truth is always jax.vjp of the case's forward in float64; the planted bug is the case's own
handwritten VJP (or the obvious wrong way to write it) with one mistake. Correct handwritten VJPs
in float32 against the float64 truth must never get a diagnosis.
"""

from __future__ import annotations

import json
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxcalc.cases import instance
from jaxcalc.cases.attention import (
    attention,
    attention_vjp,
    causal_mask,
    masked_attention,
    masked_attention_vjp,
)
from jaxcalc.cases.layers import embedding, linear, linear_vjp
from jaxcalc.cases.losses import mse, softmax_cross_entropy
from jaxcalc.cases.mlp import mlp, mlp_vjp
from jaxcalc.cases.softmax import softmax, softmax_vjp
from jaxcalc.diagnose import FACTORS, HYPOTHESES, Diagnosis, Hypothesis, diagnose

F32 = 5e-4  # a float32 tolerance far above the golden ones (1e-5) and still below a 1.001 factor


def _truth(f, primals, ct, argnum):
    """jax.vjp of f in float64: the cotangent of input ``argnum``."""
    with jax.enable_x64(True):
        args = [jnp.asarray(p) for p in primals]
        _, pull = jax.vjp(lambda *d: f(*d), *args)
        return np.asarray(pull(jnp.asarray(ct, dtype=jnp.float64))[argnum])


def _case(name, dims=None):
    """Seeded float64 inputs and cotangent of an instance."""
    inst = instance(name, dims=dims) if dims else instance(name)
    ct, _ = inst.probes()
    return inst, inst.sample(), ct


def _json_ok(d: Diagnosis) -> Diagnosis:
    json.dumps(d.to_dict())
    assert "\n" not in d.line
    return d


def test_attention_dq_missing_sqrt_d_is_named():
    dims = {"Tq": 5, "Tk": 7, "d": 64, "dv": 6}
    _, x, ct = _case("attention", dims)
    q, k, v = x["q"], x["k"], x["v"]
    with jax.enable_x64(True):
        dq = np.asarray(attention_vjp(q, k, v, ct)[0]) * math.sqrt(64)  # planted: the 1/sqrt(d) of dq dropped
    d = _json_ok(diagnose(dq, _truth(attention, (q, k, v), ct, 0), dims=dims))
    assert d.kind == "scale" and "√d (d=64)" in d.fields["names"], d.line
    assert "√d" in d.line and d.fields["factor"] == pytest.approx(8.0)


def test_mlp_weight_gradient_off_by_1001_is_an_odd_factor():
    inst, x, ct = _case("mlp")
    prim = inst.primals(x)
    f32 = [np.asarray(p, np.float32) if p.dtype == np.float64 else p for p in prim]
    dW1 = np.asarray(mlp_vjp(*f32, np.float32(ct))[1]) * np.float32(1.001)  # planted: a wrong constant
    truth = _truth(lambda *a: mlp(a[0], prim[1], *a[1:]), (prim[0], *prim[2:]), ct, 1)
    d = _json_ok(diagnose(dW1, truth, tol=F32, dims=inst.dim_map))
    assert d.kind == "scale" and d.fields["names"] == [], d.line
    assert d.fields["factor"] == pytest.approx(1.001, rel=1e-5) and "not a named factor" in d.line


def test_sign_flip_in_mse_gradient():
    _, x, ct = _case("mse")
    pred, target = x["pred"], x["target"]
    got = 2.0 * ct * (target - pred) / pred.size  # planted: (target - pred) for (pred - target)
    d = _json_ok(diagnose(got, _truth(mse, (pred, target), ct, 0)))
    assert d.kind == "sign_flip" and "sign flipped" in d.line, d.line


@pytest.mark.parametrize("dims", [None, {"N": 4, "K": 6, "M": 6}], ids=["golden", "square"])
def test_transposed_linear_dW(dims):
    _, x, ct = _case("linear", dims)
    xx, W, b = x["x"], x["W"], x["b"]
    got = ct.T @ xx  # planted: ct^T x, the transpose of dW = x^T ct
    d = _json_ok(diagnose(got, _truth(linear, (xx, W, b), ct, 1)))
    assert d.kind == "transposed" and d.line.startswith("transposed"), d.line


def test_dropped_bias_gradient_is_zeros():
    _, x, ct = _case("linear")
    with jax.enable_x64(True):
        # planted: db never accumulated
        db = np.zeros_like(np.asarray(linear_vjp(x["x"], x["W"], x["b"], ct)[2]))
    d = _json_ok(diagnose(db, _truth(linear, (x["x"], x["W"], x["b"]), ct, 2)))
    assert d.kind == "zeros" and "all zeros" in d.line, d.line


def test_causal_mask_wrong_past_one_32_tile():
    t = 65
    _, x, ct = _case("attention", {"Tq": t, "Tk": t, "d": 16, "dv": 8})
    q, k, v = x["q"], x["k"], x["v"]
    mask = np.asarray(causal_mask(t))
    bug = mask | (np.arange(t)[:, None] >= 32)  # planted: query tiles past the first see every key
    # (the last query sees every key anyway, so its row stays right)
    with jax.enable_x64(True):
        dq = np.asarray(masked_attention_vjp(q, k, v, bug, ct)[0])
    truth = _truth(lambda a, b, c: masked_attention(a, b, c, mask), (q, k, v), ct, 0)
    d = _json_ok(diagnose(dq, truth, dims={"T": t, "d": 16}, inputs={"mask": mask}))
    assert d.kind == "block", d.line
    assert "rows 32–63 of 65 wrong; rows 0–31 and row 64 right" in d.line and "tile boundary at 32" in d.line
    assert d.fields["range"] == [32, 63] and d.fields["tile"] == 32


@pytest.mark.parametrize("how", ["last_write", "mean"])
def test_embedding_repeats_not_summed(how):
    _, x, ct = _case("embedding", {"n": 12, "V": 30, "D": 4})
    ids, table = x["ids"], x["table"]
    assert np.bincount(ids).max() >= 3 and (np.bincount(ids) == 1).any()
    got = np.zeros_like(table)
    if how == "last_write":
        got[ids] = ct  # planted: NumPy fancy assignment, the last repeat wins
    else:
        np.add.at(got, ids, ct)
        got /= np.maximum(np.bincount(ids, minlength=len(table)), 1)[:, None]  # planted: mean, not sum
    truth = _truth(lambda tb: embedding(ids, tb), (table,), ct, 0)
    d = _json_ok(diagnose(got, truth, inputs={"ids": ids}))
    assert d.kind == "repeated_ids" and "'ids'" in d.line, d.line
    assert d.fields["averaged"] == (how == "mean")


def test_nan_at_positions_of_a_naive_softmax():
    _, x, ct = _case("softmax")
    xs = x["x"].copy()
    xs[1] += 1000.0  # a row past where exp overflows
    with np.errstate(over="ignore", invalid="ignore"):
        e = np.exp(xs)  # planted: no max subtraction, so row 1 is inf / inf
        y = e / e.sum(-1, keepdims=True)
        got = y * (ct - np.sum(ct * y, -1, keepdims=True))
    d = _json_ok(diagnose(got, _truth(softmax, (xs,), ct, 0)))
    assert d.kind == "nonfinite" and f"{xs.shape[1]} NaN at row 1 of {xs.shape[0]}" in d.line, d.line
    assert "the other elements are right" in d.line and d.fields["count"] == xs.shape[1]


def test_gradient_leaking_into_masked_entries():
    _, x, ct = _case("softmax")
    xs = x["x"].copy()
    xs[:, -2:] = -np.inf
    with jax.enable_x64(True):
        # planted: the cotangent passed through at masked entries
        got = np.asarray(softmax_vjp(xs, ct)) + np.where(np.isneginf(xs), ct, 0.0)
    d = _json_ok(diagnose(got, _truth(softmax, (xs,), ct, 0), inputs={"x": xs}))
    assert d.kind == "masked" and "input 'x' is masked" in d.line, d.line


def test_missing_onehot_term_of_cross_entropy():
    _, x, _ = _case("softmax_cross_entropy")
    logits, labels = x["logits"], x["labels"]
    onehot = np.eye(logits.shape[1])[labels]
    with jax.enable_x64(True):
        got = np.asarray(softmax(logits)) / len(labels)  # planted: (p - onehot) / N without the onehot
    truth = _truth(lambda z: softmax_cross_entropy(z, labels), (logits,), 1.0, 0)
    d = _json_ok(diagnose(got, truth, intermediates={"onehot": onehot}))
    assert d.kind == "missing_term" and "'onehot'" in d.line, d.line
    assert d.fields["coefficient"] == pytest.approx(-1 / len(labels))


# ----------------------------------------------------------------------------- no false alarms

_CORRECT = [
    ("attention", lambda p, ct: attention_vjp(*p, ct)),
    ("linear", lambda p, ct: linear_vjp(*p, ct)),
    ("softmax", lambda p, ct: (softmax_vjp(*p, ct),)),
    ("mlp", lambda p, ct: mlp_vjp(*p, ct)),
]


@pytest.mark.parametrize(("name", "vjp"), _CORRECT, ids=[n for n, _ in _CORRECT])
def test_correct_float32_never_gets_a_diagnosis(name, vjp):
    inst, x, ct = _case(name)
    prim = inst.primals(x)
    f32 = [np.asarray(p, np.float32) if p.dtype == np.float64 else p for p in prim]
    got = vjp(f32, np.float32(ct))
    f, diff = inst.f_diff(x)
    truth = [_truth(f, diff, ct, i) for i in range(len(diff))]
    for g, e in zip(got, truth, strict=True):
        assert np.asarray(g).dtype == np.float32
        assert diagnose(np.asarray(g), e, tol=F32, dims=inst.dim_map) is None
        # measured far tighter than float32 can reach, round-off must not look like a specific bug
        d = diagnose(np.asarray(g), e, tol=1e-13, dims=inst.dim_map, inputs=x)
        assert d is None or d.kind == "none", d.line


# ----------------------------------------------------------------------------- the table itself


def test_locations_name_tile_edges():
    e = np.random.default_rng(0).normal(size=(129, 24))
    g = e.copy()
    g[64:] *= 3
    d = diagnose(g, e)
    assert d.line.startswith("rows 64–128 of 129 wrong (there got = 3 × expected); rows 0–63 right")
    assert "tile boundary at 64" in d.line
    g = e.copy()
    g[128:] += 1
    assert "the last partial tile of 128" in diagnose(g, e).line
    g = e.copy()
    g[:, 5:9] += 1
    assert "columns 5–8 of 24 wrong" in diagnose(g, e).line
    noise = e + 1e-3 * np.random.default_rng(1).normal(size=e.shape)
    assert diagnose(noise, e).kind == "none"


def test_odd_edges_suggest_a_mask_for_blocks_only():
    e = np.random.default_rng(2).normal(size=40)
    g = e.copy()
    g[5:23] *= 2  # a block with edges at 5 and 23: a mask's or padding's
    assert "a mask or padding edge?" in diagnose(g, e).line
    g = e.copy()
    g[2] *= 1.1  # one element: nothing about masks
    line = diagnose(g, e).line
    assert line.startswith("element 2 of 40 wrong") and "mask" not in line


def test_non_finite_diagnoses_say_every_element_and_a_nan_expectation():
    e = np.arange(1.0, 5.0)
    line = diagnose(np.full(4, np.nan), e).line
    assert line == "non-finite: 4 NaN, every element"
    both = diagnose(np.array([np.nan, 2.0, 3.0]), np.array([np.nan, 2.0, 3.0])).line
    assert "the other elements are right" in both and "expected is NaN there too" in both


def test_named_factors_follow_the_instance_dims():
    e = np.random.default_rng(2).normal(size=(6, 5))
    assert "1/N (N=6)" in diagnose(e / 6, e, dims={"N": 6, "D": 5}).fields["names"]
    assert diagnose(-2 * e, e).kind == "sign_flip"
    assert diagnose(e * 0.5, e).fields["names"] == ["1/2"]
    assert all(f.reason for f in FACTORS)


def test_hypotheses_are_data_and_a_new_one_is_one_entry():
    assert len({h.name for h in HYPOTHESES}) == len(HYPOTHESES)
    assert all(h.reason and isinstance(h.thresholds, dict) for h in HYPOTHESES)
    e = np.arange(1.0, 13.0).reshape(3, 4)
    g = e + 0.5

    def shifted(ctx, th):
        c = float(np.mean(ctx.got - ctx.expected))
        ok = np.max(np.abs(ctx.got - ctx.expected - c)) <= ctx.tol * ctx.scale
        return Diagnosis("shift", f"got = expected + {c:g}", {"shift": c}) if ok else None

    assert diagnose(g, e).kind != "shift"
    d = diagnose(g, e, hypotheses=(*HYPOTHESES, Hypothesis("shift", shifted, {}, "a constant added")))
    assert d.kind == "shift" and d.fields["shift"] == pytest.approx(0.5)


# ----------------------------------------------------------------------------- in the verify report

_BUGGY_IMPL = """
import numpy as np

def mse(inputs, ct):
    p, t = inputs["pred"], inputs["target"]
    g = 2 * ct * (t - p) / p.size  # sign flipped
    return np.mean((p - t) ** 2), {"pred": g, "target": -g}

def embedding(inputs, ct):
    ids, table = inputs["ids"], inputs["table"]
    g = np.zeros_like(table)
    g[ids] = ct  # repeats overwrite instead of summing
    return table[ids], {"table": g}

def linear(inputs, ct):
    x, W, b = inputs["x"], inputs["W"], inputs["b"]
    return x @ W + b, {"x": ct @ W.T, "W": ct.T @ x, "b": ct.sum(0)}  # dW transposed
"""


def test_verify_prints_a_diagnosis_under_each_failing_row(tmp_path, cli):
    from jaxcalc.oracle.exporter import export_golden

    export_golden(tmp_path / "g", [instance(n) for n in ("mse", "embedding", "linear")], workers=1)
    impl = tmp_path / "buggy.py"
    impl.write_text(_BUGGY_IMPL)
    rc, out, err = cli("verify", tmp_path / "g", "--impl", impl, "--json", tmp_path / "r.json")
    assert rc == 1, out + err
    rows = out.splitlines()
    sign = [k for k, r in enumerate(rows) if r.startswith("mse ") and "vjp pred " in r and "<--" in r]
    assert sign and "diagnosis: sign flipped" in rows[sign[0] + 1]
    assert any(
        r.startswith("embedding ") and "diagnosis: wrong only at ids repeated in 'ids'" in r for r in rows
    )
    assert "vjp W: shape [5, 3], expected [3, 5]: transposed" in out
    assert not any("diagnosis" in r for r in rows if r.startswith("mse ") and "value" in r)
    data = json.loads((tmp_path / "r.json").read_text())
    q = {(c["instance"], x["name"]): x for c in data["instances"] for x in c["quantities"]}
    assert q[("mse", "vjp pred")]["diagnosis"]["kind"] == "sign_flip"
    assert q[("embedding", "vjp table")]["diagnosis"]["kind"] == "repeated_ids"
    assert q[("mse", "value")]["diagnosis"] is None


def test_assert_grads_names_a_sign_flipped_weight_gradient():
    from jaxcalc.testing import assert_grads

    rng = np.random.default_rng(3)
    x, W = rng.normal(size=(4, 3)), rng.normal(size=(3, 5))

    def grad(x, W):  # planted: the weight gradient of sum(tanh(x W)) negated
        u = 1 - jnp.tanh(x @ W) ** 2
        return u @ W.T, -(x.T @ u)

    with jax.enable_x64(True), pytest.raises(AssertionError) as info:
        assert_grads(lambda x, W: jnp.sum(jnp.tanh(x @ W)), (x, W), grad_fn=grad, mode="fast")
    lines = str(info.value).splitlines()
    k = next(i for i, r in enumerate(lines) if r.startswith("vjp FAIL"))
    assert "diagnosis: W: sign flipped" in lines[k + 1]
    assert not any("diagnosis" in r for r in lines if " pass " in r)


def test_rows_wrong_only_where_an_input_sits_at_a_large_offset_are_named_so() -> None:
    """One-pass variance / unshifted softmax: only the offset rows go wrong, and the line says why."""
    rng = np.random.default_rng(3)
    x = rng.standard_normal((5, 8))
    x[1] += 1e4
    x[3] -= 1e4
    e = rng.standard_normal((5, 8))
    g = e.copy()
    g[[1, 3]] *= 1 + 1e-6
    d = diagnose(g, e, tol=1e-10, inputs={"x": x})
    assert d.kind == "large_rows" and d.fields["rows"] == [1, 3] and "rows 1, 3 of 5" in d.line
    g = e.copy()
    g[[0, 2]] *= 1 + 1e-6  # ordinary rows wrong: not this kind
    assert diagnose(g, e, tol=1e-10, inputs={"x": x}).kind != "large_rows"
