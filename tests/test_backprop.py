"""Backprop by hand: handwritten gradients vs jax.grad, optax and finite differences; the train step."""

from __future__ import annotations

import subprocess
import sys
from functools import partial
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.flatten_util import ravel_pytree

from jaxcalc import fd
from jaxcalc.backprop import init_mlp, make_train_step, mlp_backward, mlp_forward, mlp_loss

backward = jax.jit(mlp_backward, static_argnames="activation")
loss_and_grad = jax.jit(jax.value_and_grad(mlp_loss), static_argnames="activation")


@partial(jax.jit, static_argnames="activation")
def both_ways(params, batch, activation="relu"):
    """(handwritten (loss, grads), autodiff (loss, grads)) in one compiled call."""
    return mlp_backward(params, batch, activation=activation), jax.value_and_grad(mlp_loss)(
        params, batch, activation=activation
    )


DEPTHS = {
    "linear": (5, 3),
    "one_hidden": (5, 7, 3),
    "two_hidden": (6, 8, 5, 4),
    "four_hidden": (5, 9, 7, 6, 4, 3),
}


def problem(sizes, batch=12, seed=0, dtype=jnp.float64):
    """(params, (x, labels)): params from init_mlp with a fixed key, data from a seeded NumPy generator."""
    rng = np.random.default_rng(seed)
    params = init_mlp(jax.random.key(seed), sizes, dtype)
    x = jnp.asarray(rng.normal(size=(batch, sizes[0])), dtype)
    labels = jnp.asarray(rng.integers(0, sizes[-1], size=batch), jnp.int32)
    return params, (x, labels)


def blobs(n_per_class=40, classes=3, seed=1, dtype=jnp.float32):
    """Unit Gaussian blobs around centres 4 apart on a circle: a problem an MLP can learn."""
    angles = 2 * np.pi * np.arange(classes) / classes
    centres = jnp.asarray(4 * np.stack([np.cos(angles), np.sin(angles)], axis=1), dtype)
    labels = jnp.repeat(jnp.arange(classes), n_per_class)
    x = centres[labels] + jax.random.normal(jax.random.key(seed), (classes * n_per_class, 2), dtype)
    return x, labels


def rel_err(a, b) -> float:
    a, b = ravel_pytree(a)[0], ravel_pytree(b)[0]
    return float(jnp.max(jnp.abs(a - b)) / jnp.max(jnp.abs(b)))


@pytest.mark.parametrize(
    ("depth", "activation"),
    [("linear", "relu"), ("one_hidden", "relu"), ("one_hidden", "tanh"), ("four_hidden", "relu"),
     ("four_hidden", "tanh")],
)  # fmt: skip
def test_handwritten_grads_equal_jax_grad_float64(depth, activation):
    with jax.enable_x64(True):
        params, batch = problem(DEPTHS[depth])
        (loss, grads), (ref_loss, ref) = both_ways(params, batch, activation=activation)
        assert jax.tree.structure(grads) == jax.tree.structure(ref)
        for g, r in zip(jax.tree.leaves(grads), jax.tree.leaves(ref), strict=True):
            assert g.shape == r.shape and g.dtype == jnp.float64
        assert rel_err(grads, ref) <= 1e-12
        assert abs(float(loss) - float(ref_loss)) <= 1e-12 * abs(float(ref_loss))


def test_handwritten_grads_equal_finite_differences():
    # tanh: smooth, so every weight's finite difference is valid
    with jax.enable_x64(True):
        params, batch = problem(DEPTHS["two_hidden"])
        flat, unravel = ravel_pytree(params)
        ref = fd.jacobian(lambda v: mlp_loss(unravel(v), batch, activation="tanh"), (flat,))
        _, grads = backward(params, batch, activation="tanh")
        assert rel_err(grads, unravel(ref)) <= 1e-6


def test_loss_is_softmax_cross_entropy():
    # an independent witness: optax's cross-entropy on the same logits, and a plain NumPy forward
    with jax.enable_x64(True):
        params, (x, labels) = problem(DEPTHS["one_hidden"])
        logits = mlp_forward(params, x)
        h = np.maximum(np.asarray(x) @ np.asarray(params[0]["W"]) + np.asarray(params[0]["b"]), 0)
        np.testing.assert_allclose(
            logits, h @ np.asarray(params[1]["W"]) + np.asarray(params[1]["b"]), rtol=1e-12
        )
        ref = optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()
        assert float(mlp_loss(params, (x, labels))) == pytest.approx(float(ref), rel=1e-13)


def test_init_shapes_dtypes_and_scale():
    params = init_mlp(jax.random.key(0), (784, 512, 512, 10))
    assert [(p["W"].shape, p["b"].shape) for p in params] == [
        ((784, 512), (512,)),
        ((512, 512), (512,)),
        ((512, 10), (10,)),
    ]
    assert all(p["W"].dtype == jnp.float32 and p["b"].dtype == jnp.float32 for p in params)
    assert all(float(jnp.max(jnp.abs(p["b"]))) == 0 for p in params)
    # He scaling: std(W) = sqrt(2 / fan_in)
    assert float(jnp.std(params[0]["W"])) == pytest.approx(np.sqrt(2 / 784), rel=0.05)
    again = init_mlp(jax.random.key(0), (784, 512, 512, 10))
    assert all(
        bool(jnp.array_equal(a, b))
        for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(again), strict=True)
    )


def test_float32_stays_float32():
    params, batch = problem(DEPTHS["one_hidden"], dtype=jnp.float32)
    loss, grads = backward(params, batch)
    assert loss.dtype == jnp.float32
    assert all(g.dtype == jnp.float32 for g in jax.tree.leaves(grads))
    _, ref = loss_and_grad(params, batch)
    assert rel_err(grads, ref) <= 1e-5


@pytest.fixture
def compilations():
    """Names of JAX tracing/compilation events recorded while the test runs."""
    events: list[str] = []

    def listener(name: str, secs: float, **kwargs) -> None:
        if name.startswith("/jax/core/compile/"):
            events.append(name)

    jax.monitoring.register_event_duration_secs_listener(listener)
    yield events
    jax.monitoring.unregister_event_duration_listener(listener)


@pytest.mark.parametrize("grad", ["handwritten", "autodiff"])
def test_train_step_does_not_recompile(grad, compilations):
    params, batch = problem(DEPTHS["two_hidden"], dtype=jnp.float32)
    step = make_train_step(0.1, grad)
    params, loss0 = step(params, batch)
    assert "/jax/core/compile/backend_compile_duration" in compilations  # the first call compiles
    compilations.clear()
    params, loss1 = step(params, batch)
    params, _ = step(params, batch)
    assert compilations == []  # later calls neither retrace nor recompile
    assert step._cache_size() == 1
    assert all(p.dtype == jnp.float32 for p in jax.tree.leaves(params))
    assert float(loss1) < float(loss0)


def test_train_step_donates_params():
    params, batch = problem(DEPTHS["one_hidden"], dtype=jnp.float32)
    step = make_train_step(0.1)
    new, _ = step(params, batch)
    if jax.default_backend() in ("cpu", "gpu", "tpu"):
        assert params[0]["W"].is_deleted()
    assert not new[0]["W"].is_deleted()


def test_handwritten_step_equals_autodiff_step():
    with jax.enable_x64(True):
        params, batch = problem(DEPTHS["four_hidden"])
        copy = jax.tree.map(jnp.copy, params)
        expected = jax.tree.map(lambda w, g: w - 0.3 * g, params, loss_and_grad(params, batch)[1])
        new_hand, loss_hand = make_train_step(0.3, "handwritten")(params, batch)
        new_auto, loss_auto = make_train_step(0.3, "autodiff")(copy, batch)
        assert rel_err(new_hand, expected) <= 1e-12
        assert rel_err(new_auto, expected) <= 1e-12
        assert float(loss_hand) == pytest.approx(float(loss_auto), rel=1e-13)


@pytest.mark.parametrize("grad", ["handwritten", "autodiff"])
def test_loss_falls_on_a_generated_problem(grad):
    x, labels = blobs()
    params = init_mlp(jax.random.key(2), (2, 16, 16, 3))
    step = make_train_step(0.2, grad)
    losses = []
    for _ in range(150):
        params, loss = step(params, (x, labels))
        losses.append(float(loss))
    assert losses[-1] < 0.3 * losses[0]
    assert np.mean(losses[-10:]) < np.mean(losses[:10])
    accuracy = float(jnp.mean(jnp.argmax(mlp_forward(params, x), axis=1) == labels))
    assert accuracy > 0.9


def test_bad_arguments():
    with pytest.raises(ValueError, match="grad"):
        make_train_step(0.1, "numerical")
    with pytest.raises(ValueError, match="activation"):
        make_train_step(0.1, activation="sigmoid")
    with pytest.raises(ValueError, match="sizes"):
        init_mlp(jax.random.key(0), (5,))
    params, batch = problem(DEPTHS["linear"], dtype=jnp.float32)
    with pytest.raises(ValueError, match="activation"):
        mlp_forward(params, batch[0], activation="gelu")


def test_relu_tie_at_zero_matches_autodiff():
    # a sample that kills every unit of the first hidden layer reaches the second with a = b = 0
    # exactly; both sides must take relu'(0) = 0 there
    with jax.enable_x64(True):
        params = init_mlp(jax.random.key(3), (2, 3, 3, 2), jnp.float64)
        params[0]["W"] = jnp.abs(params[0]["W"])
        x = jnp.asarray([[-1.0, -2.0], [0.5, 0.25]], jnp.float64)  # first row: all of x W1 < 0
        batch = (x, jnp.asarray([0, 1]))
        a2 = jax.nn.relu(x @ params[0]["W"]) @ params[1]["W"] + params[1]["b"]
        assert bool(jnp.all(a2[0] == 0))
        (_, grads), (_, ref) = both_ways(params, batch)
        assert rel_err(grads, ref) <= 1e-12


def test_walkthrough_script_shows_the_loss_falling(tmp_path):
    script = Path(__file__).resolve().parents[1] / "scripts" / "backprop_walkthrough.py"
    argv = [sys.executable, str(script), "--steps=60", "--log_every=30", "--hidden=8"]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert out.startswith(f"backend: {jax.default_backend()}, device: ")
    assert "DISAGREE" not in out and out.count("agree") >= 8  # 6 tensors in the walk, 2 during training
    losses = [
        float(line.split("loss ")[1].split(",")[0]) for line in out.splitlines() if line.startswith("step ")
    ]
    assert len(losses) == 2 and losses[-1] < losses[0] < float(np.log(3))
