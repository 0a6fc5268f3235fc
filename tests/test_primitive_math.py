"""The primitive cases' math: handwritten derivatives vs autodiff, finite differences and closed forms."""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxcalc import fd
from jaxcalc.cases import REGISTRY, activations, functions, instance, layers, losses
from jaxcalc.cases import softmax as sm
from jaxcalc.numerics import compare, reference_mode, tolerance

EXACT = tolerance("float64", "exact")
FD = tolerance("float64", "fd")

# Golden-set shapes from the catalogue: input shapes and the output shape.
GOLDEN = {
    **{
        name: ({"x": (3, 5)}, (3, 5))
        for name in ("sigmoid", "tanh", "relu", "leaky_relu", "softplus", "silu", "gelu_tanh", "gelu_erf")
    },
    "softmax": ({"x": (3, 7)}, (3, 7)),
    "log_softmax": ({"x": (3, 7)}, (3, 7)),
    "logsumexp": ({"x": (3, 7)}, (3,)),
    "exp_sin": ({"x": (5,)}, (5,)),
    "rosenbrock": ({"x": (6,)}, ()),
    "quadratic_form": ({"A": (4, 4), "b": (4,), "x": (4,)}, ()),
    "least_squares": ({"X": (8, 3), "w": (3,), "b": (), "y": (8,)}, ()),
    "logistic_regression": ({"X": (8, 3), "w": (3,), "b": (), "y": (8,)}, ()),
    "softmax_cross_entropy": ({"logits": (4, 7), "labels": (4,)}, ()),
    "mse": ({"pred": (4, 3), "target": (4, 3)}, ()),
    "kl_divergence": ({"p_logits": (3, 5), "q_logits": (3, 5)}, ()),
    "layernorm": ({"x": (4, 6), "gamma": (6,), "beta": (6,)}, (4, 6)),
    "rmsnorm": ({"x": (4, 6), "gamma": (6,)}, (4, 6)),
    "linear": ({"x": (4, 3), "W": (3, 5), "b": (5,)}, (4, 5)),
    "embedding": ({"ids": (6,), "table": (5, 4)}, (6, 4)),
}
NAMES = tuple(GOLDEN)
CHAINED = ("exp_sin", "least_squares", "logistic_regression", "softmax_cross_entropy", "kl_divergence")
ACTIVATIONS = ("sigmoid", "tanh", "relu", "leaky_relu", "softplus", "silu", "gelu_tanh", "gelu_erf")


@pytest.fixture(autouse=True)
def _float64():
    with reference_mode("float64"):
        yield


@functools.cache
def _sample(name: str) -> dict[str, np.ndarray]:
    """The case's seeded float64 inputs, drawn once per test session (drawing is the slow part)."""
    return REGISTRY[name].sample("float64")


@functools.cache
def _probes(name: str) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """The case's float64 cotangent and tangents, drawn once per test session."""
    return REGISTRY[name].probes("float64")


def _setup(name: str):
    """The case, a map from its differentiable inputs to all primals, those inputs, and its probes."""
    case = REGISTRY[name]
    sample = _sample(name)
    primals = tuple(jnp.asarray(sample[n]) for n in case.input_names)
    ct, tangents = _probes(name)

    def full(diff: tuple) -> tuple:
        out = list(primals)
        for i, v in zip(case.diff_index, diff, strict=True):
            out[i] = v
        return tuple(out)

    diff = tuple(primals[i] for i in case.diff_index)
    return case, full, diff, jnp.asarray(ct), tuple(jnp.asarray(tangents[n]) for n in case.diff_names)


def _assert_close(a, b, tol: float, what: str) -> None:
    c = compare(a, b)
    assert c.error <= tol, f"{what}: error {c.error:.3g} at {c.where()}: {c.a_value!r} vs {c.b_value!r}"


# ----------------------------------------------------------------------------- every case
# Each side is computed inside one jit, so a test compiles once instead of once per operation.


@pytest.mark.parametrize("name", NAMES, ids=NAMES)
def test_golden_shapes(name):
    case = REGISTRY[name]
    shapes, out = GOLDEN[name]
    assert instance(case).shapes == shapes
    assert case.output_shape() == out
    assert case.description and case.tags


@pytest.mark.parametrize("name", NAMES, ids=NAMES)
def test_handwritten_vjp_and_jvp(name):
    """Handwritten VJP vs jax.vjp, handwritten JVP vs jax.jvp and vs a central finite difference."""
    case, full, diff, ct, tangents = _setup(name)
    assert case.jvp is not None

    @jax.jit
    def sides(diff, ct, tangents):
        def f(*d):
            return case.forward(*full(d))

        vjp_ref = jax.vjp(f, *diff)[1](ct)
        jvp_ref = jax.jvp(f, diff, tangents)[1]
        hand_vjp = tuple(case.vjp(full(diff), ct))
        return (
            hand_vjp,
            vjp_ref,
            case.jvp(full(diff), tangents),
            jvp_ref,
            fd.directional(f, diff, tangents),
        )

    hand_vjp, vjp_ref, hand_jvp, jvp_ref, jvp_fd = sides(diff, ct, tangents)
    assert len(hand_vjp) == len(diff)
    for n, hv, rv in zip(case.diff_names, hand_vjp, vjp_ref, strict=True):
        assert hv.shape == rv.shape, n
        _assert_close(hv, rv, EXACT, f"{name} vjp d{n}: handwritten vs autodiff")
    _assert_close(hand_jvp, jvp_ref, EXACT, f"{name} jvp: handwritten vs autodiff")
    _assert_close(hand_jvp, jvp_fd, FD, f"{name} jvp: handwritten vs finite difference")


@pytest.mark.parametrize("name", CHAINED, ids=CHAINED)
def test_chain_composes_to_forward(name):
    case, full, diff, _, _ = _setup(name)
    primals = full(diff)
    outer, inner = case.chain(primals)
    x = primals[case.diff_index[0]]
    _assert_close(outer(inner(x)), case.forward(*primals), EXACT, f"{name} outer(inner(x)) vs forward")


# ----------------------------------------------------------------------------- activations


WITNESSES = {
    "sigmoid": jax.nn.sigmoid,
    "tanh": jnp.tanh,
    "relu": jax.nn.relu,
    "leaky_relu": lambda x: jax.nn.leaky_relu(x, negative_slope=0.01),
    "softplus": jax.nn.softplus,
    "silu": jax.nn.silu,
    "gelu_tanh": lambda x: jax.nn.gelu(x, approximate=True),
    "gelu_erf": lambda x: jax.nn.gelu(x, approximate=False),
}


@pytest.mark.parametrize("name", ACTIVATIONS, ids=ACTIVATIONS)
def test_activation_vs_jax_nn_autodiff_and_fd(name):
    f, df, witness = getattr(activations, name), getattr(activations, name + "_grad"), WITNESSES[name]
    x = jnp.linspace(-8.0, 8.0, 161)
    x = x[jnp.abs(x) >= 0.1]  # away from the kink of relu / leaky_relu

    @jax.jit
    def sides(x):
        return f(x), witness(x), df(x), jax.vmap(jax.grad(f))(x), fd.derivative(f, x)

    value, value_ref, hand, auto, diff = sides(x)
    _assert_close(value, value_ref, 1e-14, f"{name} vs jax.nn")
    _assert_close(hand, auto, EXACT, f"{name}' handwritten vs autodiff")
    _assert_close(hand, diff, FD, f"{name}' handwritten vs finite difference")


def test_activations_finite_at_extremes():
    x = jnp.array([-800.0, -40.0, 40.0, 800.0])
    for name in ACTIVATIONS:
        for fn in (getattr(activations, name), getattr(activations, name + "_grad")):
            assert bool(jnp.all(jnp.isfinite(fn(x)))), name
    np.testing.assert_allclose(activations.softplus(x), [0.0, math.log1p(math.exp(-40.0)), 40.0, 800.0])


@pytest.mark.parametrize("name", ["relu", "leaky_relu"])
def test_kinked_inputs_stay_away_from_zero(name):
    x = _sample(name)["x"]
    assert np.min(np.abs(x)) >= 0.1
    assert (x > 0).any() and (x < 0).any()  # both sides of the kink are exercised


# ----------------------------------------------------------------------------- softmax family


def test_softmax_rows_sum_to_one_and_match_jax_nn():
    x = jnp.asarray(_sample("softmax")["x"])
    y = sm.softmax(x)
    np.testing.assert_allclose(jnp.sum(y, axis=-1), 1.0, rtol=0, atol=1e-15)
    _assert_close(y, jax.nn.softmax(x, axis=-1), 1e-15, "softmax vs jax.nn")
    _assert_close(sm.log_softmax(x), jax.nn.log_softmax(x, axis=-1), 1e-15, "log_softmax vs jax.nn")
    _assert_close(sm.logsumexp(x), jax.scipy.special.logsumexp(x, axis=-1), 1e-15, "logsumexp vs jax.scipy")


def test_softmax_family_stable_for_large_inputs():
    x = jnp.array([[1000.0, 1000.0, 999.0], [-1000.0, -1001.0, -1000.0]])
    shift = jnp.array([[1000.0], [-1000.0]])
    ct = jnp.array([[3.0, 1.0, -1.0], [0.5, 2.0, 1.0]])

    @jax.jit
    def sides(x, ct):
        lse = sm.logsumexp(x)
        return {
            "lse": lse,
            "softmax": sm.softmax(x),
            "softmax_shifted": sm.softmax(x - shift),
            "log_softmax": sm.log_softmax(x),
            "log_softmax_shifted": sm.log_softmax(x - shift),
            "softmax_vjp": (sm.softmax_vjp(x, ct), jax.vjp(sm.softmax, x)[1](ct)[0]),
            "log_softmax_vjp": (sm.log_softmax_vjp(x, ct), jax.vjp(sm.log_softmax, x)[1](ct)[0]),
            "logsumexp_vjp": (sm.logsumexp_vjp(x, ct[:, 0]), jax.vjp(sm.logsumexp, x)[1](ct[:, 0])[0]),
        }

    out = sides(x, ct)
    np.testing.assert_allclose(
        out["lse"], [1000.0 + math.log(2 + math.exp(-1)), -1000.0 + math.log(2 + math.exp(-1))]
    )
    # shifting a row by a constant leaves softmax and log_softmax unchanged
    np.testing.assert_allclose(out["softmax"], out["softmax_shifted"], rtol=0, atol=1e-15)
    np.testing.assert_allclose(out["log_softmax"], out["log_softmax_shifted"], rtol=0, atol=1e-13)
    for what in ("softmax_vjp", "log_softmax_vjp", "logsumexp_vjp"):
        hand, ref = out[what]
        assert bool(jnp.all(jnp.isfinite(hand))), what
        _assert_close(hand, ref, EXACT, f"{what} at |x| = 1000: handwritten vs autodiff")
    assert float(sm.logsumexp(jnp.full((3,), -jnp.inf))) == -math.inf


def test_softmax_family_over_batched_rows():
    rng = np.random.default_rng(7)
    x, c = (jnp.asarray(rng.normal(size=(2, 3, 7))) for _ in range(2))
    fns = (
        (sm.softmax, sm.softmax_vjp, sm.softmax_jvp),
        (sm.log_softmax, sm.log_softmax_vjp, sm.log_softmax_jvp),
        (sm.logsumexp, sm.logsumexp_vjp, sm.logsumexp_jvp),
    )

    @jax.jit
    def pairs(x, c):
        out = []
        for fn, vjp, jvp in fns:
            y, pullback = jax.vjp(fn, x)
            cy = c[..., : y.shape[-1]] if y.ndim == x.ndim else c[..., 0]
            out.append((vjp(x, cy), pullback(cy)[0], jvp(x, c), jax.jvp(fn, (x,), (c,))[1]))
        return out

    for (fn, _, _), (hv, rv, hj, rj) in zip(fns, pairs(x, c), strict=True):
        _assert_close(hv, rv, EXACT, f"{fn.__name__} batched vjp")
        _assert_close(hj, rj, EXACT, f"{fn.__name__} batched jvp")


# ----------------------------------------------------------------------------- layers


def _np_layernorm(x, gamma, beta, eps=1e-5):
    x = np.asarray(x, np.float64)
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    return gamma * (x - mu) / np.sqrt(var + eps) + beta


def test_layernorm_vs_numpy_formula():
    s = _sample("layernorm")
    out = layers.layernorm(s["x"], s["gamma"], s["beta"])
    _assert_close(out, _np_layernorm(s["x"], s["gamma"], s["beta"]), 1e-14, "layernorm vs numpy")


def test_rmsnorm_vs_numpy_formula():
    s = _sample("rmsnorm")
    x = s["x"]
    ref = s["gamma"] * x / np.sqrt((x**2).mean(-1, keepdims=True) + 1e-6)
    _assert_close(layers.rmsnorm(x, s["gamma"]), ref, 1e-14, "rmsnorm vs numpy")


def test_layers_over_a_batch_and_time_axis():
    rng = np.random.default_rng(3)
    x, ct = rng.normal(size=(2, 5, 6)), rng.normal(size=(2, 5, 6))
    gamma, beta, W, b = rng.normal(size=6), rng.normal(size=6), rng.normal(size=(6, 3)), rng.normal(size=3)
    c3 = ct[..., :3]
    ours = jax.jit(layers.layernorm)(x, gamma, beta)
    _assert_close(ours, _np_layernorm(x, gamma, beta), 1e-14, "layernorm (B, T, D) vs numpy")

    @jax.jit
    def pairs(x, gamma, beta, W, b, ct, c3):
        return {
            "layernorm": (
                layers.layernorm_vjp(x, gamma, beta, ct),
                jax.vjp(layers.layernorm, x, gamma, beta)[1](ct),
            ),
            "rmsnorm": (layers.rmsnorm_vjp(x, gamma, ct), jax.vjp(layers.rmsnorm, x, gamma)[1](ct)),
            "linear": (layers.linear_vjp(x, W, b, c3), jax.vjp(layers.linear, x, W, b)[1](c3)),
        }

    for layer, (hand, ref) in pairs(x, gamma, beta, W, b, ct, c3).items():
        assert len(hand) == len(ref)
        for k, (h, r) in enumerate(zip(hand, ref, strict=True)):
            _assert_close(h, r, EXACT, f"{layer} (B, T, D) cotangent {k}")


def test_embedding_ids_repeat_and_vjp_accumulates():
    s = _sample("embedding")
    ids, table = s["ids"], s["table"]
    assert ids.dtype == np.int64 and ids.min() >= 0 and ids.max() < 5
    counts = np.bincount(ids, minlength=5)
    assert counts.max() >= 2, "the golden ids must repeat"
    # with an all-ones cotangent each row of dtable is the number of times its id occurs
    (dtable,) = layers.embedding_vjp(ids, table, jnp.ones((6, 4)))
    np.testing.assert_array_equal(dtable, np.repeat(counts[:, None].astype(np.float64), 4, axis=1))
    ct = np.asarray(_probes("embedding")[0])
    expected = np.zeros_like(table)
    np.add.at(expected, ids, ct)
    _assert_close(layers.embedding_vjp(ids, table, ct)[0], expected, 1e-15, "embedding vjp vs np.add.at")
    np.testing.assert_array_equal(layers.embedding(ids, table), table[ids])


def test_embedding_with_two_dimensional_ids():
    ids = jnp.array([[0, 2, 2], [4, 0, 2]])
    table = jnp.arange(20.0).reshape(5, 4)
    ct = jnp.arange(24.0).reshape(2, 3, 4)
    (dtable,) = layers.embedding_vjp(ids, table, ct)
    _assert_close(dtable, jax.vjp(lambda t: layers.embedding(ids, t), table)[1](ct)[0], 0.0, "2-D ids")
    np.testing.assert_array_equal(dtable[2], ct[0, 1] + ct[0, 2] + ct[1, 2])


# ----------------------------------------------------------------------------- losses


def test_losses_vs_independent_formulas():
    s = _sample("softmax_cross_entropy")
    ref = optax.softmax_cross_entropy_with_integer_labels(s["logits"], s["labels"]).mean()
    _assert_close(
        losses.softmax_cross_entropy(s["logits"], s["labels"]), ref, 1e-14, "cross-entropy vs optax"
    )
    s = _sample("logistic_regression")
    z = s["X"] @ s["w"] + s["b"]
    ref = optax.sigmoid_binary_cross_entropy(z, s["y"]).mean()
    _assert_close(losses.logistic_regression(s["X"], s["w"], s["b"], s["y"]), ref, 1e-14, "logistic vs optax")
    assert set(np.unique(s["y"])) == {0.0, 1.0}
    s = _sample("kl_divergence")
    p, q = (np.exp(a) / np.exp(a).sum(-1, keepdims=True) for a in (s["p_logits"], s["q_logits"]))
    ref = (p * (np.log(p) - np.log(q))).sum(-1).mean()
    _assert_close(losses.kl_divergence(s["p_logits"], s["q_logits"]), ref, 1e-13, "kl vs numpy")
    assert float(losses.kl_divergence(s["p_logits"], s["p_logits"])) == 0.0
    s = _sample("mse")
    _assert_close(losses.mse(s["pred"], s["target"]), ((s["pred"] - s["target"]) ** 2).mean(), 1e-15, "mse")


def test_least_squares_gradient_vanishes_at_the_normal_equations_solution():
    s = _sample("least_squares")
    X, y = s["X"], s["y"]
    coef = np.linalg.lstsq(np.column_stack([X, np.ones(len(y))]), y, rcond=None)[0]
    w, b = coef[:3], coef[3]
    _, dw, db, _ = losses.least_squares_vjp(X, w, b, y, 1.0)
    np.testing.assert_allclose(np.append(dw, db), 0.0, atol=1e-13)
    _, dw, _, _ = losses.least_squares_vjp(X, s["w"], s["b"], y, 1.0)
    assert np.abs(dw).max() > 1e-3  # away from the optimum it does not


def test_softmax_cross_entropy_vjp_closed_form_rows():
    logits = jnp.array([[0.0, 0.0, 0.0, 0.0], [2.0, -1.0, 0.5, 0.0]])
    labels = jnp.array([1, 0])
    d = losses.softmax_cross_entropy_vjp(logits, labels, 1.0)
    np.testing.assert_allclose(d[0], np.array([0.25, -0.75, 0.25, 0.25]) / 2, rtol=1e-15)
    np.testing.assert_allclose(d.sum(-1), 0.0, atol=1e-16)  # softmax - onehot sums to 0 per row


# ----------------------------------------------------------------------------- functions


def test_rosenbrock_minimum_and_hessian():
    ones = jnp.ones(6)
    assert float(functions.rosenbrock(ones)) == 0.0
    np.testing.assert_array_equal(functions.rosenbrock_grad(ones), 0.0)
    x = jnp.asarray(_sample("rosenbrock")["x"])
    xb = jnp.stack([x, ones, -x])

    @jax.jit
    def pairs(x, xb):
        auto_hess = jax.hessian(functions.rosenbrock)
        return (
            (functions.rosenbrock_hessian(x), auto_hess(x)),
            (functions.rosenbrock_grad(xb), jax.vmap(jax.grad(functions.rosenbrock))(xb)),
            (functions.rosenbrock_hessian(xb), jax.vmap(auto_hess)(xb)),
        )

    for what, (hand, ref) in zip(("hessian", "batched grad", "batched hessian"), pairs(x, xb), strict=True):
        _assert_close(hand, ref, EXACT, f"rosenbrock {what}")
    assert functions.rosenbrock(xb).shape == (3,)


def test_quadratic_form_is_nonsymmetric_with_a_unique_minimum():
    s = _sample("quadratic_form")
    A, b = s["A"], s["b"]
    assert np.abs(A - A.T).max() > 0.1
    S = 0.5 * (A + A.T)
    assert np.linalg.eigvalsh(S).min() > 0
    x_star = -np.linalg.solve(S, b)
    np.testing.assert_allclose(functions.quadratic_form_grad(A, b, x_star), 0.0, atol=1e-13)
    hess = jax.hessian(functions.quadratic_form, argnums=2)(A, b, jnp.asarray(s["x"]))
    _assert_close(functions.quadratic_form_hessian(A, b, s["x"]), hess, EXACT, "quadratic_form hessian")
    _assert_close(
        functions.quadratic_form(A, b, s["x"]), 0.5 * s["x"] @ A @ s["x"] + b @ s["x"], 1e-14, "value"
    )


def test_directional_points_on_the_host_match_the_traced_ones():
    """The checker builds its FD points with NumPy, outside any trace; fd.directional builds
    them inside jit. Both must be the same points and steps, and combine to the same J t."""
    rng = np.random.default_rng(4)
    primals = (rng.standard_normal((3, 4)) * 1e-3, rng.standard_normal(5) * 50.0)
    tangents = (rng.standard_normal((3, 4)), rng.standard_normal(5))
    for scale in (1.0, 0.25):
        host_points, host_steps = fd.directional_points(primals, tangents, scale)
        assert all(isinstance(p, np.ndarray) for p in (*host_points, host_steps))
        traced_points, traced_steps = jax.jit(lambda p, t, s=scale: fd.directional_points(p, t, s))(
            primals, tangents
        )
        np.testing.assert_allclose(host_steps, traced_steps, rtol=1e-15)
        for a, b in zip(host_points, traced_points, strict=True):
            np.testing.assert_allclose(a, b, rtol=1e-15, atol=0)

    def f(a, b):
        return jnp.sum(jnp.sin(a)) * jnp.sum(b**2)

    points, steps = fd.directional_points(primals, tangents)
    jt = fd.directional_combine(jax.vmap(f)(*points), steps)
    exact = jax.jvp(f, primals, tangents)[1]
    np.testing.assert_allclose(jt, exact, rtol=1e-8)
    np.testing.assert_allclose(fd.directional(f, primals, tangents), exact, rtol=1e-8)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_directional_moves_are_the_directional_points_bit_for_bit(dtype):
    """The checker's FD moves (both step scales at once) are fd.directional_points' points:
    input k's own stencil rows hold its moves, every other row holds its primal; combined, the
    values there give each scale's J t."""
    rng = np.random.default_rng(6)
    primals = (rng.standard_normal((3, 4)).astype(dtype), (rng.standard_normal(5) * 50).astype(dtype))
    tangents = (rng.standard_normal((3, 4)).astype(dtype), rng.standard_normal(5).astype(dtype))
    moves, steps = fd.directional_moves(primals, tangents, (1.0, 0.25))
    assert [m.shape for m in moves] == [(8, 3, 4), (8, 5)] and steps.shape == (2, 2)
    assert all(m.dtype == dtype for m in moves)
    rows = []
    for s, scale in enumerate((1.0, 0.25)):
        points, st = fd.directional_points(primals, tangents, scale)
        np.testing.assert_array_equal(steps[s], st)
        for k in range(2):
            own = slice(4 * k, 4 * k + 4)
            np.testing.assert_array_equal(moves[k][4 * s : 4 * s + 4], points[k][own])
            other = np.delete(np.arange(8), np.arange(4 * k, 4 * k + 4))
            np.testing.assert_array_equal(points[k][other], np.broadcast_to(primals[k], (4,) + primals[k].shape))
        rows.append(np.concatenate([p.reshape(len(p), -1) for p in points], axis=1))
    rows = np.concatenate(rows)

    def f(u):
        return np.sin(u[:12]).sum() * (u[12:] ** 2).sum()

    both = fd.directional_combine(np.array([f(r) for r in rows.astype(np.float64)]), steps.astype(np.float64))
    with jax.enable_x64(True):
        exact = jax.jvp(lambda a, b: jnp.sum(jnp.sin(a)) * jnp.sum(b**2), tuple(p.astype(np.float64) for p in primals),
                        tuple(t.astype(np.float64) for t in tangents))[1]
    assert isinstance(both, np.ndarray) and both.shape == (2,)
    np.testing.assert_allclose(both, [exact, exact], rtol=1e-5 if dtype == np.float32 else 1e-8)


def test_directional_combine_cancels_equal_mirrored_values_exactly():
    # Equal values at the mirrored points of a stencil (a piecewise-constant gradient) give an
    # exact 0, in float32 as in float64; the weighted sum c - 8c + 8c - c would round.
    for dtype in (np.float32, np.float64):
        rng = np.random.default_rng(1)
        c = rng.standard_normal((1, 1, 1, 257)).astype(dtype)
        vals = np.broadcast_to(c, (2, 3, 4, 257)).reshape(2 * 3 * 4, 257)
        steps = rng.uniform(1e-4, 1e-2, (2, 3)).astype(dtype)
        assert np.all(fd.directional_combine(vals, steps) == 0)
        # and a linear function along each input is still differenced exactly as before
        offsets = np.array([-2.0, -1.0, 1.0, 2.0], dtype)
        slope = rng.standard_normal((3, 257)).astype(dtype)
        lin = offsets[None, None, :, None] * steps[:, :, None, None] * slope[None, :, None, :]
        lin = lin.reshape(24, 257)
        tol = dict(rtol=1e-5, atol=1e-6) if dtype == np.float32 else dict(rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(fd.directional_combine(lin, steps), np.broadcast_to(slope.sum(0), (2, 257)), **tol)
