"""Backprop on real data: an MLP on the digits, one compiled call per epoch.

Each epoch is one jitted call that shuffles the training set with the run's key, cuts it
into ``steps = N // batch_size`` mini-batches (the last partial batch is dropped) and runs
every step inside ``lax.scan``:

    loss, grads = backward(params, batch)        # handwritten (jaxcalc.backprop) or autodiff
    updates, opt_state = adam.update(grads, opt_state)
    params = params + updates

The call donates its params, optimizer state and key, so XLA updates them in place. With
a mesh of several devices the mini-batches are split over the "data" axis and the params
replicated (see :mod:`jaxcalc.parallel`). Everything that decides the next step — params,
optimizer state, key, epoch and step — is the :class:`TrainState`, so a run saved after
epoch k and resumed continues bit for bit as if it had never stopped.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh

from jaxcalc.backprop import Params, init_mlp, mlp_backward, mlp_forward, mlp_loss
from jaxcalc.data import Digits
from jaxcalc.parallel import DeviceCountError, batch_sharding, data_mesh, replicated

__all__ = [
    "GRADS",
    "TrainConfig",
    "TrainState",
    "model_sizes",
    "make_optimizer",
    "init_state",
    "backward_fn",
    "make_epoch",
    "evaluate",
    "train",
]

GRADS = ("handwritten", "autodiff")


class TrainConfig(NamedTuple):
    """Everything that fixes a run. The defaults reach 97.5% test accuracy on the digits (CPU, float32)."""

    hidden: tuple[int, ...] = (128,)  # hidden layer widths (relu)
    epochs: int = 100  # total epochs (a resumed run stops at the same total)
    batch_size: int = 64  # mini-batch size; must split evenly over the devices
    lr: float = 1e-3  # Adam's learning rate (b1 0.9, b2 0.999, eps 1e-8)
    seed: int = 0  # jax.random.key(seed): init from fold_in(key, 0), shuffles from fold_in(key, 1)
    grad: str = "handwritten"  # backward pass: "handwritten" or "autodiff"
    devices: int = 1  # devices on the "data" mesh axis


class TrainState(NamedTuple):
    """The whole state of a run between epochs."""

    params: Params
    opt_state: Any
    key: jax.Array  # typed PRNG key, split once per epoch for the shuffle
    epoch: int  # epochs done
    step: int  # optimizer steps done


def model_sizes(config: TrainConfig, n_features: int, n_classes: int) -> tuple[int, ...]:
    """Layer widths (D, H_1, ..., K) of the MLP."""
    return (int(n_features), *(int(h) for h in config.hidden), int(n_classes))


def make_optimizer(config: TrainConfig) -> optax.GradientTransformation:
    """optax.adam(lr); jaxcalc.optim.adam computes the same updates."""
    return optax.adam(config.lr)


def init_state(config: TrainConfig, n_features: int, n_classes: int) -> TrainState:
    """Fresh params (He init from fold_in(key(seed), 0)), Adam state, shuffle key fold_in(key, 1)."""
    params, opt_state, key = _init(model_sizes(config, n_features, n_classes), config.lr, config.seed)
    return TrainState(params, opt_state, key, 0, 0)


@functools.partial(jax.jit, static_argnums=(0, 1))
def _init(sizes: tuple[int, ...], lr: float, seed: jax.Array) -> tuple[Params, Any, jax.Array]:
    # One compiled call instead of a dispatch per array: the same bits, far less start-up time.
    key = jax.random.key(seed)
    params = init_mlp(jax.random.fold_in(key, 0), sizes, jnp.float32)
    return params, optax.adam(lr).init(params), jax.random.fold_in(key, 1)


def backward_fn(grad: str) -> Callable[[Params, tuple], tuple[jax.Array, Params]]:
    """``(params, batch) -> (loss, grads)``: the handwritten backward pass or jax.value_and_grad."""
    if grad == "handwritten":
        return mlp_backward
    if grad == "autodiff":
        return jax.value_and_grad(mlp_loss)
    raise ValueError(f"unknown grad {grad!r}; choose one of {GRADS}")


def make_epoch(
    config: TrainConfig, n_train: int, mesh: Mesh | None = None
) -> Callable[..., tuple[Params, Any, jax.Array, jax.Array]]:
    """One jitted, donated call ``(params, opt_state, key, x, y) -> (params, opt_state, key, losses)``.

    x (N, D) float32, y (N,) int32 are the whole training set; ``losses`` (steps,) holds the
    mini-batch loss before each step. Runs that differ only in their number of epochs share
    one compiled function.
    """
    return _make_epoch(config._replace(epochs=0), n_train, mesh)


@functools.lru_cache(maxsize=16)
def _make_epoch(
    config: TrainConfig, n_train: int, mesh: Mesh | None
) -> Callable[..., tuple[Params, Any, jax.Array, jax.Array]]:
    steps, b = n_train // config.batch_size, config.batch_size
    if steps < 1:
        raise ValueError(f"batch size {b} exceeds the {n_train} training examples")
    optimizer, backward = make_optimizer(config), backward_fn(config.grad)

    def epoch(params, opt_state, key, x, y):
        key, sub = jax.random.split(key)
        order = jax.random.permutation(sub, x.shape[0])[: steps * b]
        xs, ys = x[order].reshape(steps, b, -1), y[order].reshape(steps, b)
        if mesh is not None:
            xs = jax.lax.with_sharding_constraint(xs, batch_sharding(mesh, 3, batch_axis=1))
            ys = jax.lax.with_sharding_constraint(ys, batch_sharding(mesh, 2, batch_axis=1))

        def one_step(carry, batch):
            params, opt_state = carry
            loss, grads = backward(params, batch)
            updates, opt_state = optimizer.update(grads, opt_state, params)
            return (optax.apply_updates(params, updates), opt_state), loss

        (params, opt_state), losses = jax.lax.scan(one_step, (params, opt_state), (xs, ys))
        return params, opt_state, key, losses

    if mesh is None:
        return jax.jit(epoch, donate_argnums=(0, 1, 2))
    rep = replicated(mesh)
    return jax.jit(epoch, in_shardings=rep, out_shardings=rep, donate_argnums=(0, 1, 2))


@jax.jit
def evaluate(params: Params, x: jax.Array, y: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(mean cross-entropy, accuracy) of the MLP over a whole split: x (N, D), y (N,) int."""
    z = mlp_forward(params, x)
    loss = jnp.mean(jax.nn.logsumexp(z, axis=1) - jnp.take_along_axis(z, y[:, None], axis=1)[:, 0])
    return loss, jnp.mean((jnp.argmax(z, axis=1) == y).astype(jnp.float32))


def train(
    config: TrainConfig,
    data: Digits,
    state: TrainState | None = None,
    on_epoch: Callable[[dict[str, Any]], None] | None = None,
) -> tuple[TrainState, list[dict[str, Any]]]:
    """Train from ``state`` (fresh when None) up to ``config.epochs`` epochs in total.

    Returns the final state and one log record per epoch trained here: epoch, step,
    step_losses (the loss before each step), train/test loss and accuracy. ``on_epoch``
    is called with each record as it is made (for progress bars and checkpoints); it may
    read ``record["state"]``, which is dropped from the returned logs. The arrays of
    ``state`` are donated to the first epoch: keep using the returned state, not the old one.
    Raises DeviceCountError when ``config.devices`` devices do not exist or cannot split a batch.
    """
    if config.grad not in GRADS:
        raise ValueError(f"unknown grad {config.grad!r}; choose one of {GRADS}")
    mesh = None
    if config.devices != 1:
        mesh = data_mesh(config.devices)
        if config.batch_size % config.devices:
            raise DeviceCountError(
                f"batch size {config.batch_size} does not split evenly over {config.devices} devices"
            )
    if state is None:
        state = init_state(config, data.n_features, data.n_classes)
    place = (lambda t: jax.device_put(t, replicated(mesh))) if mesh is not None else jax.device_put
    x_train, y_train, x_test, y_test = (place(a) for a in data)
    params, opt_state, key = place((state.params, state.opt_state, state.key))
    epoch_fn = make_epoch(config, len(data.x_train), mesh)
    epoch, step, logs = state.epoch, state.step, []
    while epoch < config.epochs:
        params, opt_state, key, losses = epoch_fn(params, opt_state, key, x_train, y_train)
        epoch, step = epoch + 1, step + int(losses.shape[0])
        train_loss, train_acc = evaluate(params, x_train, y_train)
        test_loss, test_acc = evaluate(params, x_test, y_test)
        record = {
            "epoch": epoch,
            "step": step,
            "step_losses": [float(v) for v in np.asarray(losses)],
            "train_loss": float(train_loss),
            "train_accuracy": float(train_acc),
            "test_loss": float(test_loss),
            "test_accuracy": float(test_acc),
        }
        logs.append(record)
        if on_epoch is not None:
            on_epoch({**record, "state": TrainState(params, opt_state, key, epoch, step)})
    return TrainState(params, opt_state, key, epoch, step), logs
