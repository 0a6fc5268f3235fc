"""The checker: every catalogue case passes every check, and planted bugs are caught and located."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
from jax.flatten_util import ravel_pytree
import numpy as np
import pytest

from jaxcalc.cases import REGISTRY, get_case, instance
from jaxcalc.cases.attention import self_attention_vjp
from jaxcalc.cases.layers import LAYERNORM_EPS, _normalize, _sum_leading
from jaxcalc.cases.softmax import softmax
from jaxcalc.checks import CHECKS, check_case, check_function
from jaxcalc.numerics import reference_mode
from jaxcalc.testing import assert_grads

CASES = list(REGISTRY.values())


def _by_check(report):
    return {r.check: r for r in report.results}


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_case_passes_every_check_float64(case):
    report = check_case(case, dtype="float64")
    assert report.passed, report.format()
    checks = _by_check(report)
    # The core witnesses always run; handwritten VJP vs autodiff at 1e-10, FD at 1e-6.
    for name in ("vjp", "fd_jvp", "jacobian_fd", "jacobian_modes", "vjp_fd", "dot_identity"):
        assert name in checks, f"{case.name}: check {name} did not run"
    assert checks["vjp"].tol == 1e-10 and checks["vjp"].error <= 1e-10
    assert checks["jacobian_fd"].tol == 1e-6
    assert all(r.status == "pass" for r in report.results), report.format()
    if case.chain is not None:
        assert {"chain_forward", "chain_reverse"} <= checks.keys()
    if case.output_shape() == ():
        assert {"hvp", "hessian_symmetry"} <= checks.keys()
    assert set(checks) <= set(CHECKS)


def test_catalogue_holds_the_design_names():
    required = [
        "square",
        "poly_xy",
        "chain_affine_square",
        "descent_square",
        "exp_sin",
        "rosenbrock",
        "quadratic_form",
        "least_squares",
        "logistic_regression",
        "sigmoid",
        "tanh",
        "relu",
        "leaky_relu",
        "softplus",
        "silu",
        "gelu_tanh",
        "gelu_erf",
        "softmax",
        "log_softmax",
        "logsumexp",
        "softmax_cross_entropy",
        "mse",
        "kl_divergence",
        "layernorm",
        "rmsnorm",
        "linear",
        "embedding",
        "mlp",
        "attention",
        "causal_self_attention",
        "transformer_block",
        "adam_step",
    ]
    assert set(required) <= set(REGISTRY)


# ----------------------------------------------------------------------------- planted bugs


def _planted(name: str, vjp) -> dict:
    """Check ``name`` with its handwritten VJP replaced by ``vjp``; return results by check."""
    case = dataclasses.replace(get_case(name), vjp=vjp, jvp=None)
    report = check_case(case)
    assert not report.passed, f"planted bug in {name} was not caught:\n{report.format()}"
    return _by_check(report)


def _worst(a, b) -> tuple[int, ...]:
    d = np.abs(np.asarray(a) - np.asarray(b))
    return tuple(int(i) for i in np.unravel_index(np.argmax(d), d.shape))


def _index(where: str) -> tuple[int, ...]:
    inner = where[where.index("[") + 1 : where.index("]")]
    return tuple(int(i) for i in inner.split(",")) if inner else ()


def _truth(name: str):
    case = get_case(name)
    with reference_mode("float64"):
        p = tuple(jnp.asarray(v) for v in case.sample().values())
        ct, _ = case.probes()
        return case, p, jnp.asarray(ct)


def test_softmax_backward_missing_term_is_caught():
    def bad(p, ct):  # drops the - y <ct, y> term
        return (softmax(p[0]) * ct,)

    res = _planted("softmax", bad)
    r = res["vjp"]
    assert (r.case, r.check, r.status, r.a_label, r.b_label) == (
        "softmax",
        "vjp",
        "FAIL",
        "handwritten",
        "autodiff",
    )
    case, p, ct = _truth("softmax")
    with reference_mode("float64"):
        good = case.vjp(p, ct)[0]
        wrong = bad(p, ct)[0]
    assert r.where.startswith("dx[") and _index(r.where) == _worst(wrong, good)
    assert r.a_value == pytest.approx(float(wrong[_index(r.where)]))
    assert r.b_value == pytest.approx(float(good[_index(r.where)]))
    assert res["vjp_fd"].status == "FAIL" and res["dot_identity"].status == "FAIL"


def test_layernorm_backward_missing_term_is_caught():
    def bad(p, ct):  # forgets the xhat * mean(g xhat) term of dx
        x, gamma, _ = p
        xhat, rstd = _normalize(x, LAYERNORM_EPS)
        g = ct * gamma
        dx = rstd * (g - jnp.mean(g, axis=-1, keepdims=True))
        return dx, _sum_leading(ct * xhat, 1), _sum_leading(ct, 1)

    res = _planted("layernorm", bad)
    assert res["vjp"].status == "FAIL" and res["vjp"].where.startswith("dx[")
    # dgamma and dbeta are right: the worst element is in dx, never in them.
    case, p, ct = _truth("layernorm")
    with reference_mode("float64"):
        assert _index(res["vjp"].where) == _worst(bad(p, ct)[0], case.vjp(p, ct)[0])


def test_transposed_weight_gradient_is_caught():
    case = get_case("linear")

    def bad(p, ct):
        dx, dW, db = case.vjp(p, ct)
        return dx, dW.T, db

    res = _planted("linear", bad)
    r = res["vjp"]
    assert (r.status, r.where, r.note) == ("FAIL", "dW", "shape (5, 3), expected (3, 5): transposed?")
    assert "nan" not in r.line()


def test_embedding_assigned_instead_of_accumulated_is_caught():
    def bad(p, ct):  # last write wins: repeated ids lose all but one contribution
        ids, table = p
        return (jnp.zeros_like(table).at[ids].set(ct),)

    res = _planted("embedding", bad)
    r = res["vjp"]
    assert r.status == "FAIL" and r.where.startswith("dtable[")
    _, p, _ = _truth("embedding")
    ids = np.asarray(p[0])
    row = _index(r.where)[0]
    assert np.sum(ids == row) > 1, "the worst element must sit on a repeated id"


def test_causal_mask_off_by_one_is_caught():
    def bad(p, ct):  # the backward lets position i see i + 1
        x = p[0]
        t = x.shape[-2]
        mask = jnp.tril(jnp.ones((t, t), dtype=bool), k=1)
        return self_attention_vjp(*p, mask, ct, 2)

    res = _planted("causal_self_attention", bad)
    assert res["vjp"].status == "FAIL" and res["vjp"].case == "causal_self_attention"


@pytest.mark.parametrize("name", ["softmax", "mlp", "rosenbrock"])
def test_gradient_scaled_by_1_001_is_caught(name):
    case = get_case(name)

    def bad(p, ct):
        return tuple(1.001 * g for g in case.vjp(p, ct))

    res = _planted(name, bad)
    r = res["vjp"]
    assert r.status == "FAIL" and 5e-4 < r.error < 2e-3
    # The worst element of a uniformly scaled gradient is its largest element.
    _, p, ct = _truth(name)
    with reference_mode("float64"):
        good = case.vjp(p, ct)
    # Error is normwise per input, so each input's worst element is its largest one.
    named = r.where[1 : r.where.index("[")]
    g = np.asarray(good[case.diff_names.index(named)])
    assert _index(r.where) == tuple(int(i) for i in np.unravel_index(np.argmax(np.abs(g)), g.shape))


# ----------------------------------------------------------------------------- user functions


def test_check_function_on_user_function_and_assert_grads():
    def f(W, x):
        return jnp.sum(jnp.tanh(x @ W) ** 2)

    def grad(W, x):
        h = jnp.tanh(x @ W)
        d = 2 * h * (1 - h**2)
        return x.T @ d, d @ W.T

    W = np.linspace(-1, 1, 12).reshape(3, 4)
    x = np.linspace(-2, 1, 15).reshape(5, 3)
    report = assert_grads(f, (W, x), grad)
    assert report.passed and {"vjp", "hvp", "hessian_symmetry"} <= _by_check(report).keys()

    def wrong(W, x):
        gW, gx = grad(W, x)
        return gW.at[2, 1].add(1e-3), gx

    with pytest.raises(AssertionError, match=r"vjp FAIL at W\[2, 1\]: handwritten vs autodiff"):
        assert_grads(f, (W, x), wrong)


def test_kink_is_reported_as_kink_not_wrong_gradient():
    x = np.array([0.0, 1.0, -0.5])  # relu at exactly 0: left and right slopes differ
    report = check_function(
        lambda v: jax.nn.relu(v) * 3.0, (x,), vjp_fn=lambda p, ct: (ct * 3.0 * (p[0] > 0),)
    )
    statuses = {r.check: r.status for r in report.results}
    assert statuses["fd_jvp"] == "kink" and statuses["jacobian_fd"] == "kink"
    assert report.passed  # a kink is not a failure of the gradient


def test_fast_mode_skips_full_jacobian():
    report = check_case(get_case("mlp"), mode="fast")
    checks = _by_check(report)
    assert "jacobian_fd" not in checks and {"vjp", "fd_jvp", "dot_identity", "hvp"} <= checks.keys()
    assert report.passed


def test_float32_checks_pass_with_float32_tolerances():
    for name in ("softmax", "layernorm", "transformer_block"):
        report = check_case(get_case(name), dtype="float32")
        assert report.passed, report.format()
        assert _by_check(report)["vjp"].tol > 1e-6


@pytest.mark.parametrize("name", ["least_squares", "transformer_block", "mlp"])
def test_samples_and_probes_follow_the_input_order(name):
    case = get_case(name)
    inputs = case.sample()
    ct, tangents = case.probes()
    assert list(inputs) == list(case.input_names)
    assert list(tangents) == list(case.diff_names)
    assert [inputs[n].shape for n in case.input_names] == list(instance(case).shapes.values())
    assert [tangents[n].shape for n in case.diff_names] == [inputs[n].shape for n in case.diff_names]
    assert ct.shape == case.output_shape()
    # Same bits every time, and never the all-ones probe.
    again = case.sample()
    assert all(np.array_equal(inputs[n], again[n]) for n in inputs)
    assert not np.allclose(ct, 1.0)


def test_large_inputs_use_chunked_columns_and_reuse_the_compiled_program():
    from jaxcalc.checks import witnesses

    def loss(w, x):  # 1352 inputs: Jacobian columns run in lax.map chunks of COLUMN_BATCH
        return jnp.sum(jnp.tanh(x @ w.reshape(13, 100)) ** 2)

    def vjp(p, ct):
        w, x = p
        d = 2 * jnp.tanh(x @ w.reshape(13, 100)) * (1 - jnp.tanh(x @ w.reshape(13, 100)) ** 2)
        return ct * (x.T @ d).reshape(-1), ct * d @ w.reshape(13, 100).T

    w = np.linspace(-0.5, 0.5, 1300)
    x = np.linspace(-1, 1, 4 * 13).reshape(4, 13)
    assert w.size + x.size > witnesses.COLUMN_BATCH
    report = check_function(loss, (w, x), vjp_fn=vjp)
    assert report.passed, report.format()
    assert {"vjp", "jacobian_fd", "jacobian_modes", "vjp_fd", "hvp"} <= _by_check(report).keys()
    before = witnesses._program.cache_info()
    again = check_function(loss, (w * 0.5, x), vjp_fn=vjp)
    after = witnesses._program.cache_info()
    assert again.passed
    assert after.hits == before.hits + 1 and after.misses == before.misses, "a repeat must not recompile"


def test_points_built_one_input_at_a_time_match_the_held_rows_and_name_a_wrong_element(monkeypatch):
    """Past MAX_POINTS the FD Jacobian's points are built per input, in chunks, the other inputs
    held fixed. The columns must come out in the same order and with the same values as when
    every point is held at once, and a wrong gradient element must be named where it is."""
    from jaxcalc.checks import core, witnesses

    rng = np.random.default_rng(3)
    params = {"W": rng.standard_normal((4, 6)), "b": rng.standard_normal(6), "v": rng.standard_normal(6)}
    x = rng.standard_normal((5, 4))

    def loss(p, x):
        return jnp.mean(jnp.tanh(x @ p["W"] + p["b"]) @ p["v"] ** 2)

    seen = []
    real = core.witnesses

    def spy(*a, **k):
        seen.append(real(*a, **k))
        return seen[-1]

    monkeypatch.setattr(core, "witnesses", spy)
    held = check_function(loss, (params, x), jax.grad(loss), argnums=0)
    monkeypatch.setattr(witnesses, "MAX_POINTS", 50)  # 36 inputs: 72 column points * 36 > 50
    monkeypatch.setattr(witnesses, "COLUMN_BATCH", 5)  # and each input's points in chunks of 5
    witnesses._program.cache_clear()  # the program of `loss` is traced anew, the other way
    built = check_function(loss, (params, x), jax.grad(loss), argnums=0)
    assert held.passed and built.passed, (held, built)
    a, b = (np.asarray(w["jfd"]) for w in seen[-2:])
    assert a.shape == b.shape == (36,)
    np.testing.assert_allclose(b, a, rtol=0, atol=1e-14)

    def wrong(p, x):
        g = jax.grad(loss)(p, x)
        return {**g, "b": g["b"].at[4].add(1e-3)}

    report = check_function(loss, (params, x), wrong, argnums=0, checks=["vjp_fd"])
    row = _by_check(report)["vjp_fd"]
    assert row.status == "FAIL" and row.where == "p['b'][4]", report


@pytest.mark.parametrize("executor", ["host", "xla"])
def test_directional_points_taken_one_input_at_a_time_match_the_held_rows(monkeypatch, executor):
    """A compiled, not quick, program evaluates each input's directional points with the other
    inputs held fixed (witnesses._along_inputs). Its finite differences must match autodiff's
    J t and H t, and what the rows held at once give, kink flags included, and it must catch
    the same bugs: an autodiff rule wrong for one input only, and a gradient wrong in one leaf."""
    from jaxcalc.checks import core, witnesses

    rng = np.random.default_rng(11)
    params = {"W": rng.standard_normal((4, 6)), "b": rng.standard_normal(6), "v": rng.standard_normal(6)}
    x = rng.standard_normal((5, 4))
    kinked = {**params, "b": 1e-5 - x[0] @ params["W"]}  # row 0's pre-activations sit by ReLU's kink

    def loss(p, x):
        return jnp.mean(jnp.tanh(x @ p["W"] + p["b"]) @ p["v"] ** 2)

    def relu_loss(p, x):
        return jnp.mean(jax.nn.relu(x @ p["W"] + p["b"]) @ p["v"] ** 2)

    @jax.custom_jvp
    def scaled(b):
        return 2.0 * b

    scaled.defjvp(lambda primals, tangents: (scaled(primals[0]), 2.002 * tangents[0]))  # wrong for b only

    def bad_rule(p, x):
        return jnp.mean(jnp.tanh(x @ p["W"] + scaled(p["b"])) @ p["v"] ** 2)

    def wrong_leaf(p, x):
        g = jax.grad(loss)(p, x)
        return {**g, "v": g["v"] * 1.001}

    seen = []
    real = core.witnesses
    monkeypatch.setattr(core, "witnesses", lambda *a, **k: seen.append(real(*a, **k)) or seen[-1])
    monkeypatch.setattr(witnesses, "EXECUTOR", executor)
    monkeypatch.setattr(witnesses, "QUICK_COMPILE", (0, 0))  # every program is a large one
    runs = {}
    for split in (witnesses.SPLIT_INPUTS, 0):  # one input at a time, then the rows held at once
        monkeypatch.setattr(witnesses, "SPLIT_INPUTS", split)
        witnesses._program.cache_clear()
        runs[split] = [
            check_function(loss, (params, x), jax.grad(loss), argnums=0, mode="fast"),
            check_function(relu_loss, (kinked, x), jax.grad(relu_loss), argnums=0, mode="fast"),
            check_function(bad_rule, (params, x), jax.grad(bad_rule), argnums=0, mode="fast"),
            check_function(loss, (params, x), wrong_leaf, argnums=0, mode="fast"),
        ]
    (smooth, kink), (held_smooth, held_kink) = seen[0:2], seen[4:6]
    # both step scales against autodiff: a point evaluated out of order would break these
    for fd_jt in smooth["fd_jvp"]:
        np.testing.assert_allclose(fd_jt, smooth["ad_jvp"], rtol=1e-7)
    for fd_ht in smooth["hvp_fd"]:
        np.testing.assert_allclose(fd_ht, np.asarray(smooth["hvp"]), rtol=1e-6, atol=1e-9)
    for a, b in ((smooth, held_smooth), (kink, held_kink)):
        for key in ("fd_jvp", "hvp_fd"):
            np.testing.assert_allclose(np.asarray(a[key]), np.asarray(b[key]), rtol=1e-9, atol=1e-12)
    assert kink["fd_jvp_kink"] is held_kink["fd_jvp_kink"] is True  # row 0's stencils cross the kink
    assert smooth["fd_jvp_kink"] is held_smooth["fd_jvp_kink"] is False
    for good, relu, rule, leaf in runs.values():
        assert good.passed and all(r.status == "pass" for r in good.results), good
        assert relu.passed, relu
        assert _by_check(rule)["fd_jvp"].status == "FAIL", rule
        assert _by_check(rule)["vjp"].status == "pass", rule  # jax.grad agrees with the wrong rule
        assert _by_check(leaf)["vjp"].status == "FAIL" and _by_check(leaf)["vjp"].where.startswith("p['v']")


def test_the_hessian_traced_with_the_fd_gradients_matches_the_chunked_one(monkeypatch):
    """For up to COLUMN_BATCH inputs the Hessian's columns and the gradient at the FD points
    come from one vmapped JVP; beyond it, from two programs (the columns chunked). Both give
    the same H and H t, and a wrong handwritten gradient fails either way."""
    from jaxcalc.checks import core, witnesses

    rng = np.random.default_rng(5)
    params = {"W": rng.standard_normal((3, 4)), "v": rng.standard_normal(4)}
    x = rng.standard_normal((6, 3))

    def loss(p, x):
        return jnp.sum(jnp.tanh(x @ p["W"]) @ p["v"] ** 3)

    def wrong(p, x):  # one Hessian-visible error: v's gradient scaled by (1 + v) (not linear)
        g = jax.grad(loss)(p, x)
        return {**g, "v": g["v"] * (1 + 1e-3 * p["v"])}

    seen = []
    real = core.witnesses
    monkeypatch.setattr(core, "witnesses", lambda *a, **k: seen.append(real(*a, **k)) or seen[-1])
    reports = []
    for batch in (512, 5):  # 16 inputs: one vmap, then chunks of 5 columns
        monkeypatch.setattr(witnesses, "COLUMN_BATCH", batch)
        witnesses._program.cache_clear()
        reports.append(check_function(loss, (params, x), jax.grad(loss), argnums=0))
        reports.append(check_function(loss, (params, x), wrong, argnums=0))
    fused, chunked = seen[0], seen[2]
    assert reports[0].passed and reports[2].passed, reports
    for key in ("hessian", "hvp", "hvp_fd"):
        np.testing.assert_allclose(np.asarray(fused[key]), np.asarray(chunked[key]), rtol=1e-12, atol=1e-12)
    with jax.enable_x64(True):  # the checker's element order: W's 12, then v's 4
        flat, unravel = ravel_pytree(params)
    with jax.enable_x64(True):
        exact = jax.hessian(lambda u: loss(unravel(u), x))(jnp.asarray(flat, jnp.float64))
    np.testing.assert_allclose(fused["hessian"], exact, rtol=1e-12, atol=1e-12)
    for bad in (reports[1], reports[3]):
        assert _by_check(bad)["hessian_symmetry"].status == "FAIL", bad  # its Jacobian is not symmetric
        assert _by_check(bad)["vjp"].status == "FAIL", bad

def test_jacfwd_is_left_out_beyond_its_limit(monkeypatch):
    from jaxcalc.checks import witnesses

    monkeypatch.setattr(witnesses, "MAX_JACFWD", 10)
    report = check_case(get_case("mlp"))
    checks = _by_check(report)
    assert report.passed and "jacobian_fd" in checks and "jacobian_modes" not in checks


def test_every_instance_in_float32_passes_or_is_marked_not_applicable():
    """No false alarm anywhere in the catalogue's float32 column: every instance, every regime.
    The one instance float32 cannot represent (exp past 88.7) says so instead of comparing
    infinities."""
    from jaxcalc.cases import instances
    from jaxcalc.checks.instances import check_instances

    rows = [r for _, rep in check_instances(list(instances()), "float32") for r in rep.results]
    assert [r.line() for r in rows if r.status == "FAIL"] == []
    na = [r for r in rows if r.status == "n/a"]
    assert [r.case for r in na] == ["exp~large"] and "overflow" in na[0].note


def test_the_finer_directional_step_removes_truncation_error_but_not_a_wrong_derivative():
    """log near its singularity in float32: the usual step's 5-point difference is off by
    curvature, a quarter step is not; a derivative 10% off fails at both steps."""
    x = np.array([0.08, 1.0, 2.0, 3.0, 0.5], np.float32)

    def f(x):
        return jnp.log(x)

    def right(args, ct):
        return (ct / args[0],)

    def wrong(args, ct):
        return (1.1 * ct / args[0],)

    good = _by_check(check_function(f, (x,), vjp_fn=right, checks=("fd_jvp", "vjp_fd"), dtype="float32"))
    assert good["fd_jvp"].status == "pass", good["fd_jvp"].line()
    assert good["fd_jvp"].note == "at a quarter step"  # the usual step alone would have failed
    bad = _by_check(check_function(f, (x,), vjp_fn=wrong, checks=("vjp", "vjp_fd"), dtype="float32"))
    assert bad["vjp"].status == "FAIL" and bad["vjp_fd"].status == "FAIL"


def test_closer_takes_the_finer_estimate_only_when_it_is_closer():
    from jaxcalc.checks.core import Worst, _closer

    coarse, fine = Worst(0.5, "a", 1.0, 2.0), Worst(0.01, "b", 1.0, 1.01)
    picked = _closer(lambda e: e, (coarse, fine))
    assert picked.error == 0.01 and picked.note == "at a quarter step"
    assert _closer(lambda e: e, (fine, coarse)) is fine


def _grouped_convolutions(jaxpr) -> list[int]:
    """The feature/batch group counts above 1 of every convolution in a jaxpr, at any depth."""
    from jaxcalc.checks.branches import sub_jaxprs

    found = []
    for eqn in jaxpr.eqns:
        if eqn.primitive.name == "conv_general_dilated":
            counts = (eqn.params["feature_group_count"], eqn.params["batch_group_count"])
            found += [c for c in counts if c > 1]
        for sub in sub_jaxprs(eqn):
            found += _grouped_convolutions(sub.jaxpr if hasattr(sub, "jaxpr") else sub)
    return found


@pytest.mark.parametrize("mode", ["full", "fast"])
def test_a_convolution_is_batched_one_operand_at_a_time(monkeypatch, mode):
    # Points where the input and the kernel both move would batch into a grouped convolution,
    # one group per point, which XLA:CPU took minutes over (448 s for this 2x3x8x8 input and
    # 4x3x3x3 kernel in full mode). The witness program must hold only ungrouped ones, and
    # still catch a wrong gradient in either operand.
    from jaxcalc.checks import witnesses

    programs = []
    trace = witnesses._Program.trace

    def kept(self, a):
        programs.append(trace(self, a))
        return programs[-1]

    monkeypatch.setattr(witnesses._Program, "trace", kept)

    def f(k, x):
        return jnp.sum(jax.lax.conv_general_dilated(x, k, (1, 1), "SAME") ** 2)

    rng = np.random.default_rng(0)
    args = (rng.standard_normal((4, 3, 3, 3)), rng.standard_normal((2, 3, 8, 8)))
    report = check_function(f, args, jax.grad(f, argnums=(0, 1)), mode=mode, dtype="float64")
    assert report.passed, report
    assert {"fd_jvp", "hvp"} <= {r.check for r in report.results}
    if mode == "full":
        assert {"jacobian_fd", "vjp_fd", "hessian_symmetry"} <= {r.check for r in report.results}
    assert programs and all(_grouped_convolutions(p.jaxpr.jaxpr) == [] for p in programs)

    def wrong(k, x):
        gk, gx = jax.grad(f, argnums=(0, 1))(k, x)
        return gk, gx.at[1, 2, 3, 4].mul(1.01)

    bad = check_function(f, args, wrong, mode=mode, dtype="float64")
    vjp = next(r for r in bad.results if r.check == "vjp")
    assert vjp.status == "FAIL" and vjp.where == "x[1, 2, 3, 4]", bad
