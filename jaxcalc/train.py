"""Backprop on real data: an MLP on the digits, one compiled call per epoch.

Each epoch shuffles the training set with the run's key (``permutation(split(key)[1], N)``,
on every process alike), cuts it into ``steps = N // batch_size`` mini-batches (the last
partial batch is dropped) and runs every step inside one jitted ``lax.scan``:

    loss, grads = backward(params, batch)        # handwritten (jaxcalc.backprop) or autodiff
    updates, opt_state = adam.update(grads, opt_state)
    params = params + updates

The batches form one array (steps, batch, features) split over the "data" axis of a mesh
(see :mod:`jaxcalc.parallel`); every device, of this process or of another one in a
``jax.distributed`` run, is handed only its slice of each batch, taken from the host copy
of the data set. Params and optimizer state are replicated and donated, so XLA updates
them in place, and the gradient is all-reduced over the devices. Everything that decides
the next step — params, optimizer state, key, epoch and step — is the :class:`TrainState`,
so a run saved after epoch k and resumed (on any number of devices or processes)
continues as if it had never stopped: bit for bit on the same devices.
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
from jaxcalc.parallel import DeviceCountError, batch_sharding, data_mesh, replicate, replicated

__all__ = [
    "GRADS",
    "SEED_MAX",
    "MAX_PARAMETERS",
    "validate",
    "TrainConfig",
    "TrainState",
    "model_sizes",
    "n_parameters",
    "make_optimizer",
    "init_state",
    "backward_fn",
    "make_epoch",
    "evaluate",
    "train",
]

GRADS = ("handwritten", "autodiff")
SEED_MAX = 2**31 - 1  # seeds are int32 inside the compiled init
MAX_PARAMETERS = 50_000_000  # weights and biases; with Adam's two moments about 600 MB of float32


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


def n_parameters(sizes: tuple[int, ...]) -> int:
    """Weights and biases of an MLP with layer widths ``sizes``."""
    return sum((a + 1) * b for a, b in zip(sizes[:-1], sizes[1:], strict=False))


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


def validate(config: TrainConfig, n_train: int, n_features: int, n_classes: int) -> None:
    """Raise ValueError (one line) when ``config`` cannot run on data of this size."""
    if config.grad not in GRADS:
        raise ValueError(f"unknown grad {config.grad!r}; choose one of {GRADS}")
    if not 0 <= config.seed <= SEED_MAX:
        raise ValueError(f"seed {config.seed} is outside [0, {SEED_MAX}]")
    if not 1 <= config.batch_size <= n_train:
        raise ValueError(f"batch size {config.batch_size} is outside [1, the {n_train} training examples]")
    if config.epochs < 0 or config.devices < 1 or not config.hidden or min(config.hidden) < 1:
        raise ValueError("epochs must be >= 0, devices >= 1 and every hidden width >= 1")
    sizes = model_sizes(config, n_features, n_classes)
    n_params = n_parameters(sizes)
    if n_params > MAX_PARAMETERS:
        raise ValueError(
            f"a {'-'.join(map(str, sizes))} MLP has {n_params:,} parameters, more than {MAX_PARAMETERS:,}"
        )


def make_epoch(config: TrainConfig, n_train: int, mesh: Mesh) -> Callable[..., tuple[Params, Any, jax.Array]]:
    """One jitted, donated call ``(params, opt_state, xs, ys) -> (params, opt_state, losses)``.

    xs (steps, B, D) float32 and ys (steps, B) int32 are the epoch's mini-batches, split over
    the mesh's "data" axis on axis 1 (see :func:`epoch_batches`); params and optimizer state
    are replicated. ``losses`` (steps,) holds the mini-batch loss before each step. Runs that
    differ only in their number of epochs share one compiled function.
    """
    return _make_epoch(config._replace(epochs=0, seed=0), n_train, mesh)


@functools.lru_cache(maxsize=16)
def _make_epoch(
    config: TrainConfig, n_train: int, mesh: Mesh
) -> Callable[..., tuple[Params, Any, jax.Array]]:
    if n_train // config.batch_size < 1:
        raise ValueError(f"batch size {config.batch_size} exceeds the {n_train} training examples")
    optimizer, backward = make_optimizer(config), backward_fn(config.grad)

    def epoch(params, opt_state, xs, ys):
        def one_step(carry, batch):
            params, opt_state = carry
            loss, grads = backward(params, batch)
            updates, opt_state = optimizer.update(grads, opt_state, params)
            return (optax.apply_updates(params, updates), opt_state), loss

        (params, opt_state), losses = jax.lax.scan(one_step, (params, opt_state), (xs, ys))
        return params, opt_state, losses

    rep = replicated(mesh)
    batches = (batch_sharding(mesh, 3, batch_axis=1), batch_sharding(mesh, 2, batch_axis=1))
    return jax.jit(epoch, in_shardings=(rep, rep, *batches), out_shardings=rep, donate_argnums=(0, 1))


@functools.partial(jax.jit, static_argnums=1)
def _shuffle(key: jax.Array, n: int) -> tuple[jax.Array, jax.Array]:
    key, sub = jax.random.split(key)
    return key, jax.random.permutation(sub, n)


def epoch_batches(
    key: jax.Array, x: np.ndarray, y: np.ndarray, batch_size: int, mesh: Mesh
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """(next key, xs, ys): one epoch's shuffled mini-batches as global arrays split over "data".

    The order is ``permutation(split(key)[1], N)``, the same in every process; each process
    gathers, from its host arrays x (N, D) and y (N,), only the rows of the slices its own
    devices hold.
    """
    key, perm = _shuffle(key, x.shape[0])
    steps = x.shape[0] // batch_size
    order = np.asarray(perm)[: steps * batch_size].reshape(steps, batch_size)
    xs = jax.make_array_from_callback(
        (steps, batch_size, x.shape[1]),
        batch_sharding(mesh, 3, batch_axis=1),
        lambda index: x[order[index[:2]]][..., index[2]],
    )
    ys = jax.make_array_from_callback(
        (steps, batch_size), batch_sharding(mesh, 2, batch_axis=1), lambda index: y[order[index]]
    )
    return key, xs, ys


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
    ``state`` are copied onto the mesh first; the returned params are global arrays,
    replicated. In a ``jax.distributed`` run every process calls this with the same
    arguments, and the mesh must span every device of every process. Raises ValueError for
    a config that cannot run (see :func:`validate`) and DeviceCountError when
    ``config.devices`` devices do not exist or cannot split a batch.
    """
    validate(config, len(data.y_train), data.n_features, data.n_classes)
    mesh = data_mesh(config.devices)
    if config.batch_size % config.devices:
        raise DeviceCountError(
            f"batch size {config.batch_size} does not split evenly over {config.devices} devices"
        )
    if jax.process_count() > 1 and config.devices != jax.device_count():
        raise DeviceCountError(
            f"a run of {jax.process_count()} processes uses all {jax.device_count()} devices, "
            f"not {config.devices}"
        )
    if state is None:
        state = init_state(config, data.n_features, data.n_classes)
    x_train, y_train = (np.asarray(a) for a in data[:2])
    x_test, y_test = replicate((data.x_test, data.y_test), mesh)
    x_all, y_all = replicate((data.x_train, data.y_train), mesh)
    params, opt_state = replicate((state.params, state.opt_state), mesh)
    key = state.key
    epoch_fn = make_epoch(config, len(y_train), mesh)
    epoch, step, logs = state.epoch, state.step, []
    while epoch < config.epochs:
        key, xs, ys = epoch_batches(key, x_train, y_train, config.batch_size, mesh)
        params, opt_state, losses = epoch_fn(params, opt_state, xs, ys)
        epoch, step = epoch + 1, step + int(losses.shape[0])
        train_loss, train_acc = evaluate(params, x_all, y_all)
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
