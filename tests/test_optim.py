"""Handwritten optimizers vs optax, step by step in float64; learning-rate regimes on x**2."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxcalc import optim
from jaxcalc.descent import classify_lr, descent
from jaxcalc.numerics import compare, tolerance

STEPS = 120

# (name, ours, optax's) — each pair must give the same iterates to float64 round-off.
CONFIGS = (
    ("sgd", lambda: optim.sgd(0.01), lambda: optax.sgd(0.01)),
    ("momentum", lambda: optim.momentum(0.005, 0.9), lambda: optax.sgd(0.005, momentum=0.9)),
    ("nesterov", lambda: optim.nesterov(0.005, 0.8), lambda: optax.sgd(0.005, momentum=0.8, nesterov=True)),
    ("adam", lambda: optim.adam(0.01), lambda: optax.adam(0.01)),
    ("adam_custom", lambda: optim.adam(0.03, 0.8, 0.95, 1e-6), lambda: optax.adam(0.03, 0.8, 0.95, 1e-6)),
)


def _loss(params: dict, batch: tuple) -> jax.Array:
    """A small non-convex regression loss over a pytree: mean((tanh(X W + b) v - y)**2)."""
    x, y = batch
    h = jnp.tanh(x @ params["W"] + params["b"])
    return jnp.mean((h @ params["v"] - y) ** 2) + 0.01 * jnp.sum(params["W"] ** 2)


def _problem():
    keys = jax.random.split(jax.random.key(0), 5)
    params = {
        "W": jax.random.normal(keys[0], (5, 4), jnp.float64),
        "b": jax.random.normal(keys[1], (4,), jnp.float64),
        "v": jax.random.normal(keys[2], (4,), jnp.float64),
    }
    batch = (jax.random.normal(keys[3], (16, 5), jnp.float64), jax.random.normal(keys[4], (16,), jnp.float64))
    return params, batch


def _run(opt, params, batch):
    """STEPS jitted steps; returns the stacked iterates (leading axis = step)."""

    @jax.jit
    def step(params, state):
        grads = jax.grad(_loss)(params, batch)
        updates, state = opt.update(grads, state, params)
        return optax.apply_updates(params, updates), state

    state = opt.init(params)
    out = []
    for _ in range(STEPS):
        params, state = step(params, state)
        out.append(params)
    return jax.tree_util.tree_map(lambda *xs: np.stack(xs), *out), state


@pytest.mark.parametrize("name, ours, theirs", CONFIGS, ids=[c[0] for c in CONFIGS])
def test_matches_optax_every_step(name, ours, theirs):
    with jax.enable_x64(True):
        params, batch = _problem()
        mine, state = _run(ours(), params, batch)
        ref, _ = _run(theirs(), params, batch)
        for leaf in ("W", "b", "v"):
            for k in range(STEPS):
                cmp = compare(mine[leaf][k], ref[leaf][k])
                assert cmp.error <= tolerance("float64", "exact"), (
                    f"{name}: step {k + 1}, leaf {leaf}{cmp.where()}: "
                    f"ours {cmp.a_value!r} vs optax {cmp.b_value!r}"
                )
        # The iterates actually moved (a no-op optimizer would match a no-op reference).
        assert not np.allclose(mine["W"][-1], params["W"])
        assert _loss({k: v[-1] for k, v in mine.items()}, batch) < _loss(params, batch)
        if name.startswith("adam"):
            assert int(state.count) == STEPS and state.count.dtype == jnp.int32


@pytest.mark.parametrize("name, ours, theirs", CONFIGS, ids=[c[0] for c in CONFIGS])
def test_float32_state_keeps_dtype_and_jits_once(name, ours, theirs):
    opt = ours()
    params = {"w": jnp.ones((3,), jnp.float32)}
    state = opt.init(params)
    traces = []

    @jax.jit
    def step(params, state):
        traces.append(1)
        updates, state = opt.update(jax.tree_util.tree_map(lambda p: 2 * p, params), state)
        return optim.apply_updates(params, updates), state

    p1, s1 = step(params, state)
    p2, s2 = step(p1, s1)
    assert len(traces) == 1, "the second step recompiled: the state's structure or dtypes changed"
    assert p2["w"].dtype == jnp.float32
    for a, b in zip(jax.tree_util.tree_leaves(s1), jax.tree_util.tree_leaves(state), strict=True):
        assert a.dtype == b.dtype and a.shape == b.shape


def test_sgd_first_steps_closed_form():
    """On f(w) = w**2 (grad 2w), SGD gives w_k = (1 - 2 lr)**k w_0; momentum's first step equals SGD's."""
    with jax.enable_x64(True):
        w = jnp.asarray(10.0)
        for opt in (optim.sgd(0.1), optim.momentum(0.1, 0.9), optim.nesterov(0.1, 0.0)):
            state = opt.init(w)
            upd, state = opt.update(2 * w, state)
            assert float(w + upd) == pytest.approx(8.0, abs=1e-14)
        opt, state, x = optim.sgd(0.1), None, w
        state = opt.init(x)
        for _ in range(20):
            upd, state = opt.update(2 * x, state)
            x = optim.apply_updates(x, upd)
        assert float(x) == pytest.approx(10 * 0.8**20, rel=1e-13)
        assert float(x) == pytest.approx(0.1153, abs=5e-5)  # the seed's last iterate


# Learning rate on f(x) = x**2: x_{k+1} = (1 - 2 lr) x_k.
LR_CASES = (
    (0.1, "converges"),
    (0.5, "converges"),
    (0.9, "converges"),
    (1.0, "oscillates"),
    (1.1, "diverges"),
)


@pytest.mark.parametrize("lr, expected", LR_CASES, ids=[f"lr={lr}" for lr, _ in LR_CASES])
def test_learning_rate_regimes_on_square(lr, expected):
    with jax.enable_x64(True):
        x0 = 3.0
        traj = descent(lambda x: x**2, jnp.asarray(x0), lr, 30)
        assert classify_lr(traj.params, x0) == expected
        closed = x0 * (1 - 2 * lr) ** np.arange(1, 31)
        assert compare(traj.params, closed).error <= tolerance("float64", "exact")
        # Our SGD follows the same trajectory.
        opt, x = optim.sgd(lr), jnp.asarray(x0)
        state, xs = opt.init(x), []
        for _ in range(30):
            upd, state = opt.update(2 * x, state)
            x = optim.apply_updates(x, upd)
            xs.append(float(x))
        assert classify_lr(jnp.asarray(xs), x0) == expected
        if expected == "oscillates":
            assert xs[0] == -x0 and xs[1] == x0
