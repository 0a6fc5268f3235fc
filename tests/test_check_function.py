"""check_function / assert_grads on ordinary user code: pytrees, argnums, kinks, readable failures,
low precision. Every planted bug must fail; every correct gradient must pass, kinks included."""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
import pytest

from jaxcalc.checks import CHECKS, check_function, run_checks
from jaxcalc.testing import assert_grads


def _by_check(report):
    return {r.check: r for r in report.results}


# ----------------------------------------------------------------------------- a ReLU MLP


def mlp_loss(params, batch):
    x, y = batch
    h = jax.nn.relu(x @ params["W1"])
    return jnp.mean((h @ params["W2"] - y) ** 2)


def mlp_grad(params, batch, mask=True, scale=1.0):
    x, y = batch
    z = x @ params["W1"]
    h = jnp.maximum(z, 0)
    d = 2 * (h @ params["W2"] - y) / y.size
    dh = d @ params["W2"].T
    dz = dh * (z > 0) if mask else dh
    return {"W1": scale * (x.T @ dz), "W2": h.T @ d}


def mlp_args(seed, dtype):
    rng = np.random.default_rng(seed)
    params = {
        "W1": rng.standard_normal((6, 8)).astype(dtype),
        "W2": rng.standard_normal((8, 3)).astype(dtype),
    }
    batch = (rng.standard_normal((10, 6)).astype(dtype), rng.standard_normal((10, 3)).astype(dtype))
    return params, batch


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_relu_mlp_correct_gradient_passes_on_ten_seeds(dtype):
    for seed in range(10):
        report = assert_grads(mlp_loss, mlp_args(seed, dtype), mlp_grad, argnums=0)
        checks = _by_check(report)
        assert {"vjp", "fd_jvp", "jacobian_fd", "vjp_fd", "hvp", "hessian_symmetry"} <= checks.keys()
        assert checks["vjp"].status == "pass"  # exact comparisons never hide behind a kink
        assert checks["hvp"].a_label == "jvp(handwritten grad)"  # the Hessian checks use the user's gradient


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize(
    "bug", [dict(scale=1.001), dict(mask=False)], ids=["scaled_by_1.001", "missing_relu_mask"]
)
def test_relu_mlp_planted_bugs_are_caught(dtype, bug):
    args = mlp_args(3, dtype)
    with pytest.raises(AssertionError) as info:
        assert_grads(mlp_loss, args, lambda p, b: mlp_grad(p, b, **bug), argnums=0)
    first = str(info.value).splitlines()[0]
    assert first.startswith("vjp FAIL at params['W1'][") and "handwritten vs autodiff" in first
    assert "CheckResult(" not in str(info.value)


# ----------------------------------------------------------------------------- kinks


def huber(r, delta):
    a = jnp.abs(r)
    return jnp.mean(jnp.where(a < delta, 0.5 * r**2, delta * (a - 0.5 * delta)))


def huber_grad(r, delta):
    return jnp.clip(r, -delta, delta) / r.size


def weighted_abs(x, w):
    return jnp.sum(w * jnp.abs(x))


def weighted_abs_grad(x, w):
    return w * jnp.sign(x)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_huber_and_weighted_abs_pass_next_to_their_kinks(dtype):
    rng = np.random.default_rng(0)
    # Half the entries sit within 1e-4 of a kink, so the finite differences straddle it.
    near = np.repeat([1e-5, -3e-5, 5e-5], 4)
    r = np.concatenate([rng.standard_normal(12) * 2, 1.0 + near]).astype(dtype)
    report = assert_grads(huber, (r, dtype(1.0)), huber_grad, argnums=0)
    assert report.counts()["kink"] >= 1, report
    x = np.concatenate([rng.standard_normal(12), near]).astype(dtype)
    w = rng.uniform(0.5, 2.0, x.size).astype(dtype)
    report = assert_grads(weighted_abs, (x, w), weighted_abs_grad, argnums=0)
    # Piecewise linear: the Hessian is zero a.e., and its finite difference must not fail.
    assert _by_check(report)["hvp"].status in ("pass", "kink")
    assert report.counts()["kink"] >= 1


PIECEWISE_LINEAR = {
    "relu_weighted": lambda x, c: jnp.sum(jax.nn.relu(x) * c),
    "leaky_relu_weighted": lambda x, c: jnp.sum(jax.nn.leaky_relu(x, 0.1) * c),
    "abs_weighted": lambda x, c: jnp.sum(jnp.abs(x) * c),
    "hinge": lambda x, c: jnp.mean(jnp.maximum(0.0, 1.0 - c * x)),
}


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name", sorted(PIECEWISE_LINEAR))
def test_a_zero_hessian_away_from_kinks_passes_exactly(dtype, name):
    # Away from every kink the gradient is the same at all four stencil points, so the finite
    # difference of the gradient must be exactly 0, as autodiff's H t is: no rounding left
    # over to compare with an exact zero, no kink to hide behind.
    f = PIECEWISE_LINEAR[name]
    for seed in range(20):
        rng = np.random.default_rng(seed)
        x = rng.standard_normal(10).astype(dtype)
        x = np.where(np.abs(x) < 0.05, 0.5, x).astype(dtype)  # no stencil reaches a kink
        if name == "hinge":
            c = np.sign(rng.standard_normal(10)).astype(dtype)
            x = np.where(np.abs(1 - c * x) < 0.05, 3.0, x).astype(dtype)
        else:
            c = rng.standard_normal(10).astype(dtype)
        report = assert_grads(f, (x, c), jax.grad(f), argnums=0)
        hvp = _by_check(report)["hvp"]
        assert hvp.status == "pass" and hvp.error == 0.0, (seed, hvp)


ORDER_STATISTICS = {
    "sort": lambda x: jnp.sum(jnp.sort(x) * jnp.arange(x.size)),
    "argsort": lambda x: jnp.sum(x[jnp.argsort(x)] * jnp.arange(x.size)),
    "top_k": lambda x: jnp.sum(jax.lax.top_k(x, 2)[0] * jnp.array([2.0, 1.0], x.dtype)),
    "median": lambda x: 3 * jnp.median(x),
    "cummax": lambda x: jnp.sum(jax.lax.cummax(x) * jnp.arange(x.size)),
}


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name", sorted(ORDER_STATISTICS))
def test_order_statistics_next_to_a_tie_are_kinks_not_failures(dtype, name):
    """Two elements closer than the finite difference's step: the stencil swaps their order,
    which is a kink of sort / top_k / a running max, reported as one. A wrong gradient there
    still fails its exact comparison."""
    f = ORDER_STATISTICS[name]
    gap = 1e-4 if dtype == np.float64 else 3e-3
    kinks = 0
    for seed in range(10):
        x = np.random.default_rng(seed).standard_normal(5)
        # the largest, so top_k's pair is the near-tie; the middle one for the median
        x[0] = np.median(x) if name == "median" else x.max() + 0.1
        x[1] = x[0] + gap * np.random.default_rng(seed + 99).standard_normal()
        report = check_function(f, (x,), jax.grad(f), dtype=dtype)
        assert report.passed, (seed, str(report))
        kinks += any(r.status == "kink" for r in report.results)
    assert kinks >= 5  # the ties were close enough to be crossed
    swapped = check_function(f, (x,), lambda x: jax.grad(f)(x)[::-1], dtype=dtype)
    assert _by_check(swapped)["vjp"].status == "FAIL"


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_a_remainder_next_to_its_jump_is_a_kink(dtype):
    def f(x):
        return jnp.sum(jnp.fmod(3 * x, 1.0) ** 2)

    gap = 1e-4 if dtype == np.float64 else 2e-3
    kinks = 0
    for seed in range(5):
        rng = np.random.default_rng(seed)
        x = np.round(3 * rng.standard_normal(5)) / 3 + gap * rng.standard_normal(5)
        report = check_function(f, (x,), jax.grad(f), dtype=dtype)
        assert report.passed, str(report)
        kinks += any(r.status == "kink" for r in report.results)
    assert kinks >= 3


def test_a_straight_through_estimator_fails_its_finite_differences_saying_why():
    def f(x):  # round in the forward pass, the identity's gradient in the backward one
        return jnp.sum((x + jax.lax.stop_gradient(jnp.round(x) - x)) ** 2)

    x = np.array([0.3, -1.2, 2.6, 0.9])
    rows = _by_check(check_function(f, (x,), jax.grad(f)))
    assert rows["vjp"].status == "pass"
    assert rows["jacobian_fd"].status == "FAIL" and "stop_gradient" in rows["jacobian_fd"].note

    def smooth(x):  # a stop_gradient that leaves the derivative alone: no note anywhere
        return jax.nn.logsumexp(x) + jnp.sum(jnp.sin(x))

    assert not any("stop_gradient" in r.note for r in check_function(smooth, (x,), jax.grad(smooth)).results)


def test_a_wrong_gradient_next_to_a_kink_still_fails():
    x = np.array([1e-5, -2e-5, 0.7, -1.3, 2.0])
    w = np.array([1.0, 2.0, 0.5, 1.5, 1.0])
    with pytest.raises(AssertionError, match=r"^vjp FAIL at x\[4\]"):
        assert_grads(weighted_abs, (x, w), lambda x, w: weighted_abs_grad(x, w).at[4].mul(1.01), argnums=0)


# ----------------------------------------------------------------------------- pytrees and argnums


class Dense(NamedTuple):
    W: jax.Array
    b: jax.Array


def nested_loss(params, x, labels):
    h = jnp.tanh(x @ params["enc"][0]["W"] + params["enc"][0]["b"])
    logits = h @ params["dec"].W + params["dec"].b
    return -jnp.mean(jax.nn.log_softmax(logits)[jnp.arange(x.shape[0]), labels])


def test_nested_pytree_with_one_wrong_leaf_is_named_by_its_path():
    rng = np.random.default_rng(1)
    params = {
        "enc": [{"W": rng.standard_normal((4, 5)), "b": rng.standard_normal(5)}],
        "dec": Dense(rng.standard_normal((5, 3)), rng.standard_normal(3)),
    }
    x, labels = rng.standard_normal((7, 4)), np.array([0, 2, 1, 1, 0, 2, 2])
    good = jax.grad(nested_loss)

    report = assert_grads(nested_loss, (params, x, labels), good, argnums=0)
    assert report.passed

    def wrong(p, x, labels):
        g = good(p, x, labels)
        return {**g, "dec": g["dec"]._replace(b=g["dec"].b.at[1].add(0.01))}

    with pytest.raises(AssertionError, match=r"^vjp FAIL at params\['dec'\]\.b\[1\]"):
        assert_grads(nested_loss, (params, x, labels), wrong, argnums=0)


def test_argnums_partial_and_integer_leaves():
    rng = np.random.default_rng(2)
    params = {"W": rng.standard_normal((4, 3))}
    x, labels = rng.standard_normal((6, 4)), np.array([0, 1, 2, 0, 1, 2])

    def loss(params, x, labels):
        return nested_loss(
            {"enc": [{"W": params["W"], "b": jnp.zeros(3)}], "dec": Dense(jnp.eye(3), jnp.zeros(3))},
            x,
            labels,
        )

    dx = jax.grad(loss, argnums=1)
    report = assert_grads(loss, (params, x, labels), dx, argnums=1)
    assert all(r.where.startswith(("x", "(", "<", "H")) for r in report.results), report
    both = jax.grad(loss, argnums=(0, 1))
    assert_grads(loss, (params, x, labels), both, argnums=(0, 1))
    # argnums=None: every argument holding floats (params and x; labels are integers), as a tuple.
    assert_grads(loss, (params, x, labels), both)
    with pytest.raises(AssertionError, match=r"^vjp FAIL at x\[") as info:
        assert_grads(loss, (params, x, labels), lambda *a: 2 * dx(*a), argnums=1)
    assert "labels" not in str(info.value)


def test_gradient_with_the_wrong_structure_says_so():
    rng = np.random.default_rng(3)
    W, b, x = rng.standard_normal((3, 2)), rng.standard_normal(2), rng.standard_normal((5, 3))

    def loss(W, b, x):
        return jnp.sum(jnp.tanh(x @ W + b) ** 2)

    with pytest.raises(AssertionError, match=r"handwritten gradient has no entry at \[1\]"):
        assert_grads(loss, (W, b, x), lambda W, b, x: (jax.grad(loss)(W, b, x),), argnums=(0, 1))


def test_extra_entries_in_the_gradient_are_an_error_not_left_unchecked():
    rng = np.random.default_rng(3)
    params, x = {"W": rng.standard_normal((3, 2))}, rng.standard_normal((5, 3))

    def loss(params, x):
        return jnp.sum(jnp.tanh(x @ params["W"]) ** 2)

    def with_a_bias(params, x):
        return {**jax.grad(loss)(params, x), "b": jnp.zeros(2)}

    with pytest.raises(AssertionError, match=r"handwritten gradient has an entry at \['b'\]"):
        assert_grads(loss, (params, x), with_a_bias, argnums=0)
    # a gradient for every argument where argnums=0 asks for the first one only
    with pytest.raises(AssertionError, match=r"entry at \[1\] that is not a differentiated"):
        assert_grads(loss, (params, x), jax.grad(loss, argnums=(0, 1)), argnums=0)
    # entries for integer leaves of a differentiated argument may be given
    counts = {"W": params["W"], "n": np.arange(3)}

    def counted(p, x):
        return loss({"W": p["W"]}, x) * p["n"].size

    def counted_grad(p, x):
        return {"W": 3 * jax.grad(loss)({"W": p["W"]}, x)["W"], "n": np.zeros(3)}

    assert_grads(counted, (counts, x), counted_grad, argnums=0)


def _np_tanh_loss_grad(W, x, scale=1.0):
    h = np.tanh(x @ W)
    g = x.T @ (2 * h * (1 - h**2))
    g[1, 0] *= scale
    return g


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_a_gradient_written_in_numpy_is_called_on_the_host(dtype):
    rng = np.random.default_rng(8)
    params, x = {"W": rng.standard_normal((3, 2))}, rng.standard_normal((5, 3))

    def loss(params, x):
        return jnp.sum(jnp.tanh(x @ params["W"]) ** 2)

    def np_grad(params, x):
        return {"W": _np_tanh_loss_grad(np.asarray(params["W"]), np.asarray(x))}

    report = check_function(loss, (params, x), np_grad, argnums=0, dtype=dtype)
    rows = _by_check(report)
    assert report.passed and rows["vjp"].a_label == "handwritten"
    assert "outside JAX" in rows["hvp"].note and rows["hvp"].a_label == "jvp(autodiff grad)"

    def wrong(params, x):
        return {"W": _np_tanh_loss_grad(np.asarray(params["W"]), np.asarray(x), scale=1.01)}

    with pytest.raises(AssertionError, match=r"vjp FAIL at params\['W'\]\[1, 0\]"):
        assert_grads(loss, (params, x), wrong, argnums=0, dtype=dtype)

    def np_vjp(args, ct):
        return {"W": ct * _np_tanh_loss_grad(np.asarray(args[0]["W"]), np.asarray(args[1]))}

    def np_jvp(args, t):
        return float(np.sum(t["W"] * _np_tanh_loss_grad(np.asarray(args[0]["W"]), np.asarray(args[1]), 1.01)))

    assert check_function(loss, (params, x), vjp_fn=np_vjp, argnums=0, dtype=dtype).passed
    bad_jvp = _by_check(check_function(loss, (params, x), jvp_fn=np_jvp, argnums=0, dtype=dtype))["jvp"]
    assert bad_jvp.status == "FAIL" and bad_jvp.a_label == "handwritten"


def test_checks_are_selected_by_a_comma_separated_string():
    def f(x):
        return jnp.sum(jnp.sin(x) ** 2)

    x = np.linspace(-1.0, 1.0, 4)
    report = check_function(f, (x,), jax.grad(f), checks="vjp, fd_jvp")
    assert [r.check for r in report.results] == ["vjp", "fd_jvp"]
    fewer = check_function(f, (x,), jax.grad(f), checks="-hvp,-hessian_symmetry")
    assert {"hvp", "hessian_symmetry"}.isdisjoint(_by_check(fewer)) and "vjp" in _by_check(fewer)
    with pytest.raises(ValueError, match="unknown check 'hpv'"):
        check_function(f, (x,), jax.grad(f), checks="vjp,hpv")


def test_an_asymmetric_handwritten_hessian_is_not_called_transposed():
    def f(x):
        return jnp.sum(x[0] * x[1] * x)

    def not_a_gradient(x):  # d/dx0 of the true gradient kept, its mirror image dropped
        return jnp.array([2 * x[1], 0.0, 0.0])

    rows = _by_check(check_function(f, (np.array([1.0, 2.0, 3.0]),), not_a_gradient))
    sym = rows["hessian_symmetry"]
    assert sym.status == "FAIL" and "not symmetric" in sym.diagnosis and "transposed" not in sym.diagnosis


def test_a_function_that_is_nan_at_its_arguments_says_so():
    def f(x):
        return jnp.sum(jnp.sqrt(x))

    with pytest.raises(AssertionError) as info:
        assert_grads(f, (np.array([-1.0, 2.0, 3.0]),), jax.grad(f))
    first = str(info.value).splitlines()[:2]
    assert first[0].startswith("vjp FAIL at x[0]: handwritten vs autodiff, nan vs nan")
    assert "is f itself finite at these arguments?" in first[1]


def test_transposed_gradient_is_reported_as_transposed():
    rng = np.random.default_rng(4)
    W, x = rng.standard_normal((4, 2)), rng.standard_normal((6, 4))

    def loss(W, x):
        return jnp.sum(jnp.sin(x @ W))

    with pytest.raises(AssertionError) as info:
        assert_grads(loss, (W, x), lambda W, x: jax.grad(loss)(W, x).T, argnums=0)
    msg = str(info.value)
    assert (
        msg.splitlines()[0]
        == "vjp FAIL at W: handwritten vs autodiff, shape (2, 4), expected (4, 2): transposed?"
    )
    assert "nan" not in msg


# ----------------------------------------------------------------------------- reports and options


def test_report_prints_as_a_table_and_checks_select():
    rng = np.random.default_rng(5)
    args = (rng.standard_normal((3, 4)), rng.standard_normal((5, 3)))

    def f(W, x):
        return jnp.sum(jnp.tanh(x @ W) ** 2)

    report = check_function(f, args, jax.grad(f), argnums=0, checks=("vjp", "fd_jvp"))
    assert [r.check for r in report.results] == ["vjp", "fd_jvp"]
    text = str(report)
    assert text == repr(report) and text.splitlines()[1].split()[:3] == ["check", "status", "error"]
    assert "CheckResult(" not in text and text.splitlines()[-1] == "2 passed, 0 failed"
    fewer = check_function(f, args, jax.grad(f), argnums=0, checks=("-hvp", "-hessian_symmetry"))
    assert {r.check for r in fewer.results}.isdisjoint({"hvp", "hessian_symmetry"}) and "vjp_fd" in _by_check(
        fewer
    )
    with pytest.raises(ValueError, match="unknown check 'hpv'"):
        check_function(f, args, jax.grad(f), argnums=0, checks="-hpv")
    assert set(_by_check(check_function(f, args, argnums=0))) <= set(CHECKS)


def test_run_checks_takes_tolerances_and_a_label():
    def f(x):
        return jnp.sum(jnp.sin(x))

    x = np.linspace(-1.0, 1.0, 5)
    common = dict(diff_idx=(0,), names=("x",), ct=np.asarray(1.0), tangents=(np.ones(5),))
    vjp = lambda p, ct: (ct * 1.0001 * jnp.cos(p[0]),)  # noqa: E731
    strict = run_checks("sin", f, (x,), vjp=vjp, **common)
    loose = run_checks("sin", f, (x,), vjp=vjp, tolerances={"exact": 1e-3}, label="sin[golden]", **common)
    assert not strict.passed and _by_check(strict)["vjp"].tol == 1e-10
    assert _by_check(loose)["vjp"].tol == 1e-3 and _by_check(loose)["vjp"].status == "pass"
    assert {r.case for r in loose.results} == {"sin[golden]"}


SCALE_INVARIANT = {
    "cosine": (lambda a, b: jnp.dot(a, b) / (jnp.linalg.norm(a) * jnp.linalg.norm(b)), (6,), (6,)),
    "std": (lambda x: jnp.std(x), (6,)),
    "layer_norm": (
        lambda x: jnp.sum(((x - x.mean(-1, keepdims=True)) / jnp.sqrt(x.var(-1, keepdims=True) + 1e-5)) ** 3),
        (3, 5),
    ),
}


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name", sorted(SCALE_INVARIANT))
def test_arguments_drawn_from_the_checks_own_seed_are_no_false_alarm(dtype, name):
    """A user drawing arguments from default_rng(seed) with the check's seed: the probes come
    from another stream, so the tangent is not the argument along which f is flat."""
    f, *shapes = SCALE_INVARIANT[name]
    for seed in range(5):
        rng = np.random.default_rng(seed)
        args = tuple(rng.standard_normal(s) for s in shapes)
        report = check_function(f, args, jax.grad(f), argnums=0, dtype=dtype, seed=seed)
        assert report.passed, (seed, str(report))


def test_the_dot_identity_scales_a_cancelling_sum_by_its_terms():
    """Along a tangent orthogonal to the gradient (cosine(a, b) along a) J t is rounding only;
    compared with the terms of <grad, t> it passes, and a wrong pullback still fails."""

    def f(a, b):
        return jnp.dot(a, b) / (jnp.linalg.norm(a) * jnp.linalg.norm(b))

    rng = np.random.default_rng(11)
    a, b = rng.standard_normal(6), rng.standard_normal(6)
    common = dict(diff_idx=(0,), names=("a",), ct=np.asarray(1.0), tangents=(a,), checks="dot_identity")
    right = run_checks("cosine", f, (a, b), vjp=lambda p, ct: (ct * jax.grad(f)(*p),), **common)
    assert right.passed and abs(right.results[0].b_value) < 1e-15
    # the pullback of cosine(a, b) plus a slice of a: <J^T c, t> is off by 1e-6 |a|^2
    def off(p, ct):
        return (ct * (jax.grad(f)(*p) + 1e-6 * p[0]),)

    wrong = run_checks("cosine", f, (a, b), vjp=off, **common)
    assert wrong.results[0].status == "FAIL"


def _attention_loss(q, k, v):
    return jnp.sum(jax.nn.dot_product_attention(q, k, v) ** 2)


def test_a_float64_function_computing_in_float32_inside_is_checked_at_float32():
    """jax.nn.dot_product_attention runs its softmax in float32 for float64 inputs: the check
    uses float32's steps and tolerances, says so, and still catches a wrong gradient."""
    rng = np.random.default_rng(12)
    qkv = tuple(rng.standard_normal((1, 4, 2, 8)) for _ in range(3))
    grad = jax.grad(_attention_loss, argnums=(0, 1, 2))
    report = check_function(_attention_loss, qkv, grad, dtype=np.float64)
    assert report.passed, str(report)
    rows = _by_check(report)
    assert {"fd_jvp", "jacobian_fd", "hvp"} <= rows.keys()
    assert all("f computes in float32 inside" in r.note for r in report.results)
    assert rows["vjp"].tol == 2e-4

    def wrong(q, k, v):
        dq, dk, dv = grad(q, k, v)
        return dq, dk.at[0, 1, 0, 3].multiply(1.05), dv

    with pytest.raises(AssertionError, match=r"vjp FAIL at k\[0, 1, 0, 3\]"):
        assert_grads(_attention_loss, qkv, wrong, dtype=np.float64)


def test_a_float32_function_rounding_to_bfloat16_inside_leaves_out_finite_differences():
    def mixed(W, x):
        return jnp.sum(jnp.tanh((x.astype(jnp.bfloat16) @ W.astype(jnp.bfloat16)).astype(jnp.float32)))

    rng = np.random.default_rng(13)
    W, x = rng.standard_normal((4, 3)).astype(np.float32), rng.standard_normal((5, 4)).astype(np.float32)
    report = check_function(mixed, (W, x), jax.grad(mixed), argnums=0)
    rows = _by_check(report)
    assert report.passed and "fd_jvp" not in rows and "bfloat16 inside" in rows["vjp"].note
    half = check_function(mixed, (W, x), lambda W, x: 0.5 * jax.grad(mixed)(W, x), argnums=0)
    assert _by_check(half)["vjp"].status == "FAIL"


def test_a_float32_constant_in_float64_arithmetic_keeps_float64_tolerances():
    @jax.jit
    def scaled(a, c):  # c * 3 is float32 arithmetic, but on a constant, not on f's input
        return a * (c * 3).astype(a.dtype)

    def f(x):
        return jnp.sum(jnp.sin(x) * jnp.asarray(0.5, jnp.float32)) + jnp.sum(scaled(x, jnp.float32(2.0)))

    report = check_function(f, (np.linspace(-1.0, 1.0, 5),), jax.grad(f))
    assert report.passed and _by_check(report)["vjp"].tol == 1e-10
    assert not any("inside" in r.note for r in report.results)


# ----------------------------------------------------------------------------- low precision


def lp_loss(W, x):
    return jnp.sum(jnp.tanh(x @ W))


def lp_grad(W, x):
    return x.T @ (1 - jnp.tanh(x @ W) ** 2)


def lp_grad_low_accumulation(W, x):
    """The batch reduction of the gradient accumulated in the low dtype, rounding after every add
    (a scan over the batch: a Python loop would unroll into 256 adds for the compiler)."""
    d = 1 - jnp.tanh(x @ W) ** 2

    def add(acc, row):
        x_i, d_i = row
        return (acc + jnp.outer(x_i, d_i)).astype(W.dtype), None

    return jax.lax.scan(add, jnp.zeros(W.shape, W.dtype), (x, d))[0]


@pytest.mark.parametrize("dtype", [jnp.bfloat16, np.float16], ids=["bfloat16", "float16"])
def test_low_precision_correct_passes_and_planted_bugs_fail(dtype):
    rng = np.random.default_rng(6)
    W = rng.standard_normal((8, 4)).astype(dtype) * dtype(0.3)
    x = np.abs(rng.standard_normal((256, 8))).astype(dtype)
    assert isinstance(W.dtype, np.dtype) and (W.dtype == ml_dtypes.bfloat16 or W.dtype == np.float16)
    report = assert_grads(lp_loss, (W, x), lp_grad, argnums=0)
    row = _by_check(report)["vjp"]
    assert row.b_label == "float64 autodiff" and 0 < row.tol < 0.1
    with pytest.raises(AssertionError, match=r"^vjp FAIL at W\["):
        assert_grads(lp_loss, (W, x), lambda W, x: lp_grad(W, x) * 1.05, argnums=0)
    with pytest.raises(AssertionError, match=r"^vjp FAIL at W\["):
        assert_grads(lp_loss, (W, x), lp_grad_low_accumulation, argnums=0)
    jnp_args = (jnp.asarray(W), jnp.asarray(x))  # jax arrays work the same as ml_dtypes arrays
    assert assert_grads(lp_loss, jnp_args, lp_grad, argnums=0).passed


# ----------------------------------------------------------------------------- FD rounding noise


def _small_bias_loss(p, x):
    return jnp.sum((x @ p["W"] + p["b"]) ** 2)


def _small_bias_args(dtype, seed=0):
    rng = np.random.default_rng(seed)
    p = {"W": rng.standard_normal((8, 8)).astype(dtype), "b": (1e-4 * rng.standard_normal(8)).astype(dtype)}
    return p, (3 * rng.standard_normal((32, 8))).astype(dtype)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_a_small_leaf_under_a_large_loss_is_no_false_alarm(dtype):
    # b's step is 1e-4 of W's, under a loss of about 1e4: f's rounding over that step is far
    # above the FD tolerance, and is the witness's own noise, not a wrong gradient.
    for seed in range(3):
        assert_grads(_small_bias_loss, _small_bias_args(dtype, seed), jax.grad(_small_bias_loss), argnums=0)


def test_a_small_init_float32_classifier_is_no_false_alarm():
    rng = np.random.default_rng(0)
    for seed in range(3):
        rng = np.random.default_rng(seed)
        p = {
            "W1": (rng.standard_normal((20, 32)) * np.sqrt(2 / 20)).astype(np.float32),
            "b1": np.zeros(32, np.float32),
            "W2": (0.01 * rng.standard_normal((32, 10))).astype(np.float32),
            "b2": np.zeros(10, np.float32),
        }
        x, y = rng.standard_normal((32, 20)).astype(np.float32), rng.integers(0, 10, 32)

        def ce(p, x, y):
            logits = jax.nn.relu(x @ p["W1"] + p["b1"]) @ p["W2"] + p["b2"]
            return -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(logits), y[:, None], 1))

        assert_grads(ce, (p, x, y), jax.grad(ce), argnums=0, mode="full")


@jax.custom_jvp
def _square_off(x):
    return x**2


@_square_off.defjvp
def _square_off_jvp(primals, tangents):
    (x,), (t,) = primals, tangents
    return x**2, 2.1 * x * t  # autodiff itself 5% wrong: only the finite differences can see it


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_the_noise_allowance_still_lets_the_finite_differences_catch_a_wrong_autodiff(dtype):
    def loss(p, x):
        return jnp.sum(_square_off(x @ p["W"] + p["b"]))

    report = check_function(loss, _small_bias_args(dtype), argnums=0, mode="full")
    rows = _by_check(report)
    assert rows["jacobian_fd"].status == "FAIL", report
    if dtype == np.float64:  # in float32, b's tiny directional step leaves J t too noisy to tell
        assert rows["fd_jvp"].status == "FAIL", report
    assert rows["jacobian_fd"].where.startswith("p['W']"), report  # W's step resolves it


def test_compare_counts_only_what_lies_beyond_the_allowance():
    from jaxcalc.numerics import compare

    b = np.array([10.0, -4.0, 2.0])
    a = b + np.array([0.5, -0.1, 0.0])
    assert compare(a, b).error == pytest.approx(0.05)
    assert compare(a, b, allow=np.array([0.5, 0.1, 0.0])).error == 0.0
    worst = compare(a, b, allow=np.array([0.45, 0.0, 0.0]))
    assert worst.error == pytest.approx(0.01) and worst.index == (1,)  # 0.1 left at [1], 0.05 at [0]
    assert compare(a, b, allow=np.inf).error == pytest.approx(0.05)  # a non-finite allowance is none


# ----------------------------------------------------------------------------- custom_vjp


@jax.custom_vjp
def _clip_gradient(x):
    return x


_clip_gradient.defvjp(lambda x: (x, None), lambda _, g: (jnp.clip(g, -1.0, 1.0),))


def _square_rule(factor):
    @jax.custom_vjp
    def square(x):
        return x**2

    square.defvjp(lambda x: (x**2, x), lambda x, g: (factor * x * g,))
    return square


@pytest.mark.parametrize("mode", ["full", "fast"])
def test_a_custom_vjp_is_checked_in_reverse_mode(mode):
    # JAX has no forward mode through a custom_vjp: the checks take J t and H t from reverse
    # mode, say so, and still tell a right rule from a wrong one.
    rng = np.random.default_rng(0)
    x = rng.standard_normal(5)

    def f(x):
        return jnp.sum(_clip_gradient(x) * x)

    for grad_fn in (None, jax.grad(f)):
        report = check_function(f, (x,), grad_fn, mode=mode)
        assert report.passed, report
        assert "no forward mode" in _by_check(report)["fd_jvp"].note

    W, xs = rng.standard_normal((3, 4)), rng.standard_normal((6, 3))
    right, wrong = _square_rule(2.0), _square_rule(2.1)
    assert check_function(lambda W, x: jnp.sum(right(x @ W)), (W, xs), argnums=0, mode=mode).passed
    rows = _by_check(check_function(lambda W, x: jnp.sum(wrong(x @ W)), (W, xs), argnums=0, mode=mode))
    assert rows["fd_jvp"].status == "FAIL"
    if mode == "full":
        assert rows["jacobian_fd"].status == "FAIL" and rows["jacobian_fd"].where.startswith("W[")
    # a handwritten gradient of a custom_vjp function, wrong in one element
    with pytest.raises(AssertionError, match=r"^vjp FAIL at x\[2\]"):
        assert_grads(f, (x,), lambda x: jax.grad(f)(x).at[2].mul(1.01), mode=mode)
    # a vector output: J t from the Jacobian's rows
    assert not check_function(lambda x: 2 * wrong(x), (x,), mode=mode).passed
    assert check_function(lambda x: 2 * right(x), (x,), mode=mode).passed


def _sine_rule(slope):
    @jax.custom_jvp
    def s(x):
        return jnp.sin(x)

    s.defjvp(lambda p, t: (jnp.sin(p[0]), slope * jnp.cos(p[0]) * t[0]))
    return s


def _iterate(step, x, stop=3.0):
    """x through step while a counter is below stop: a while_loop that carries a tangent."""
    return jax.lax.while_loop(lambda c: c[1] < stop, lambda c: (step(c[0]), c[1] + 1.0), (x, 0.0))[0]


@pytest.mark.parametrize("mode", ["full", "fast"])
def test_a_while_loop_is_checked_in_forward_mode(mode):
    # JAX cannot transpose a while_loop that carries a tangent: the gradient, VJP and Jacobian
    # come from forward mode, the rows say so, and a wrong rule or gradient still fails.
    rng = np.random.default_rng(1)
    W, x = rng.standard_normal((3, 3)), rng.standard_normal((2, 3))
    right, wrong = _sine_rule(1.0), _sine_rule(1.05)

    def loss(W, x, s=right):
        return jnp.sum(_iterate(lambda h: s(h @ W), x) ** 2)

    grad = jax.jacfwd(loss)
    for grad_fn in (None, grad):
        report = check_function(loss, (W, x), grad_fn, argnums=0, mode=mode)
        assert report.passed, report
        assert "no reverse mode" in _by_check(report)["dot_identity"].note
    rows = _by_check(check_function(lambda W, x: loss(W, x, wrong), (W, x), argnums=0, mode=mode))
    assert rows["fd_jvp"].status == "FAIL"
    if mode == "full":
        assert rows["jacobian_fd"].status == "FAIL" and rows["jacobian_fd"].b_label == "jacfwd"
    with pytest.raises(AssertionError, match=r"^vjp FAIL at W\[1, 2\]"):
        assert_grads(loss, (W, x), lambda W, x: grad(W, x).at[1, 2].mul(1.01), argnums=0, mode=mode)
    # a vector output: its VJP from jacfwd's columns
    for s, ok in ((right, True), (wrong, False)):
        def looped(W, x, s=s):
            return _iterate(lambda h: s(h @ W), x)

        report = check_function(looped, (W, x), argnums=0, mode=mode)
        assert report.passed == ok


def test_a_while_loop_that_carries_no_tangent_keeps_reverse_mode():
    def f(x):  # the loop only counts: reverse mode works and no row says otherwise
        n = jax.lax.while_loop(lambda c: c < 3.0, lambda c: c + 1.0, 0.0)
        return n * jnp.sum(jnp.sin(x))

    report = check_function(f, (np.linspace(-1.0, 1.0, 4),), jax.grad(f))
    assert report.passed and not any("reverse mode" in r.note for r in report.results)
    assert _by_check(report)["jacobian_fd"].b_label == "jacrev"


def test_a_function_that_returns_no_single_float_array_is_a_one_line_error():
    x = np.linspace(-1.0, 1.0, 3)
    with pytest.raises(ValueError, match="^f must return one array, but it returns a tuple"):
        check_function(lambda a: (jnp.sum(a), a), (x,))
    with pytest.raises(ValueError, match="^f must return one array, but it returns a dict"):
        check_function(lambda a: {"loss": jnp.sum(a)}, (x,))
    with pytest.raises(ValueError, match="^f must return floats, but it returns int"):
        check_function(lambda a: jnp.argmax(a), (x,))


def test_the_compilation_cache_is_opt_in_and_fills_its_folder(tmp_path):
    import os
    import subprocess
    import sys
    import textwrap

    script = textwrap.dedent(
        f"""
        import jax, jax.numpy as jnp, numpy as np
        from jaxcalc.testing import assert_grads, use_compilation_cache
        assert jax.config.jax_compilation_cache_dir is None  # nothing is cached unless asked
        folder = use_compilation_cache({str(tmp_path / "xla")!r})

        def f(x, k):  # compiled by XLA (JAXCALC_WITNESS=xla), not run on the host
            y = jax.lax.conv_general_dilated(x, k, (1, 1), "SAME", dimension_numbers=("NCHW", "OIHW", "NCHW"))
            return jnp.sum(y ** 2)

        rng = np.random.default_rng(0)
        args = (rng.standard_normal((1, 2, 4, 4)), rng.standard_normal((2, 2, 3, 3)))
        assert_grads(f, args, jax.grad(f, argnums=(0, 1)))
        print(len(list(folder.iterdir())))
        """
    )
    env = {**os.environ, "JAXCALC_WITNESS": "xla"}
    cmd = [sys.executable, "-c", script]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr
    assert int(proc.stdout.split()[-1]) >= 1


def test_a_per_element_jacobian_too_costly_is_left_out_saying_so(monkeypatch):
    from jaxcalc.checks import witnesses

    def f(x):
        return jnp.sum(jnp.tanh(x) ** 2)

    x = np.linspace(-1.0, 1.0, 50)
    assert "jacobian_fd" in _by_check(check_function(f, (x,), jax.grad(f)))
    monkeypatch.setattr(witnesses, "MAX_FD_WORK", 1_000)
    witnesses._program.cache_clear()
    report = check_function(f, (x,), jax.grad(f))
    rows = _by_check(report)
    assert rows["jacobian_fd"].status == "n/a" and "over MAX_FD_WORK" in rows["jacobian_fd"].note
    assert "vjp_fd" not in rows and "jacobian_modes" not in rows
    assert report.passed and "1 not applicable" in str(report)
    # a wrong gradient still fails the rows that remain
    assert not check_function(f, (x,), lambda x: 1.01 * jax.grad(f)(x)).passed
