"""Data parallelism with ``jax.sharding``: the batch split on a "data" mesh axis, params replicated.

A data-parallel step is the ordinary step, jitted with shardings: every device holds all
the parameters and optimizer state (``P()``, replicated) and a 1/N slice of the batch
(``P("data")`` on its leading axis). The loss is a mean over the whole batch, so XLA's
partitioner inserts the all-reduce that sums the per-device gradient pieces; each device
then applies the same update and the replicas stay identical. In math: with the batch
split into N equal shards S_1..S_N,

    grad L = grad (1/B) sum_i l_i = sum_k (|S_k| / B) * grad (1/|S_k|) sum_{i in S_k} l_i,

which equals the single-device gradient up to float summation order.

Several devices on one machine: the same code runs on N GPUs or TPU cores; on a CPU,
``XLA_FLAGS=--xla_force_host_platform_device_count=8`` (set before JAX starts) makes
eight host devices for testing.

Several processes (multi-host, multi-controller): every process runs the *same* program
and calls :func:`initialize` (``jax.distributed.initialize``) before anything touches a
device. After that ``jax.devices()`` lists the devices of every process, :func:`data_mesh`
spans them, and the jitted step is unchanged: XLA places the cross-process all-reduce (on
CPUs through gloo's TCP collectives). Each process builds its part of a global array from
what it holds: :func:`replicate` and :func:`shard_batch` call ``jax.make_array_from_callback``,
which asks each process only for the slices its own devices hold, so a process loads its
shard of every batch and nothing more. Every process must pass the same seeds and data,
so that all replicas start and stay identical. ``jaxcalc train --coordinator HOST:PORT
--num-processes N --process-id I`` runs this way (see :mod:`jaxcalc.cli.train`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import jax
import numpy as np
import optax
from jax.sharding import AxisType, Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

__all__ = [
    "DATA_AXIS",
    "DistributedError",
    "initialize",
    "DeviceCountError",
    "data_mesh",
    "replicated",
    "batch_sharding",
    "replicate",
    "shard_batch",
    "make_parallel_step",
]

PyTree = Any
DATA_AXIS = "data"


class DeviceCountError(ValueError):
    """More devices were asked for than exist (or a count that cannot split the batch)."""


class DistributedError(RuntimeError):
    """A multi-process run cannot start or go on (a process died, the coordinator is gone)."""


def initialize(
    coordinator: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
    timeout_s: int = 300,
) -> tuple[int, int]:
    """Join a multi-process JAX run; returns (process_id, num_processes).

    With all three arguments None, ``jax.distributed.initialize`` detects them from the
    environment (SLURM, Open MPI, Cloud TPU pods, Kubernetes). ``timeout_s`` bounds the wait
    for every process to connect, the silence after which a process counts as dead, and the
    wait for the others at the end. On CPUs the collectives between processes are gloo's.
    Must run before anything touches a device. Note that a failure *inside* the runtime
    (a dead peer detected by heartbeat, a coordinator that never answers) aborts the process
    from C++; ``jaxcalc train`` therefore runs each process under a small supervisor that
    turns such an ending into one line.
    """
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    # The preemption service catches SIGTERM (to announce a preemption at a sync point, which
    # this loop has none of); without it SIGTERM ends a process, as it should.
    jax.config.update("jax_enable_preemption_service", False)
    timeout_s = int(timeout_s)
    jax.distributed.initialize(
        coordinator_address=coordinator,
        num_processes=num_processes,
        process_id=process_id,
        initialization_timeout=timeout_s,
        heartbeat_timeout_seconds=timeout_s,
        shutdown_timeout_seconds=timeout_s,
    )
    return jax.process_index(), jax.process_count()


def data_mesh(n_devices: int, devices: Sequence[jax.Device] | None = None) -> Mesh:
    """A 1-D mesh of the first ``n_devices`` devices (default backend) with the axis "data".

    Raises DeviceCountError, with a one-line message, when fewer devices exist.
    """
    devices = list(jax.devices() if devices is None else devices)
    if n_devices < 1:
        raise DeviceCountError(f"the number of devices must be at least 1, got {n_devices}")
    if n_devices > len(devices):
        platform = devices[0].platform
        hint = (
            f" (on a CPU, set XLA_FLAGS=--xla_force_host_platform_device_count={n_devices} to simulate them)"
            if platform == "cpu"
            else ""
        )
        raise DeviceCountError(
            f"asked for {n_devices} devices but only {len(devices)} {platform} device"
            f"{'s are' if len(devices) != 1 else ' is'} available{hint}"
        )
    # Auto axes: shardings on inputs and outputs, XLA's partitioner places the collectives.
    return Mesh(np.asarray(devices[:n_devices]), (DATA_AXIS,), axis_types=(AxisType.Auto,))


def replicated(mesh: Mesh) -> NamedSharding:
    """Every device holds the whole array: ``P()``."""
    return NamedSharding(mesh, P())


def batch_sharding(mesh: Mesh, ndim: int, batch_axis: int = 0) -> NamedSharding:
    """Axis ``batch_axis`` of an ``ndim``-d array split over "data"; the other axes whole."""
    spec = [None] * ndim
    spec[batch_axis] = DATA_AXIS
    return NamedSharding(mesh, P(*spec))


def _global(leaf: Any, sharding: NamedSharding) -> jax.Array:
    """A global array with ``sharding`` built from ``leaf``, which every process holds whole.

    Each process is asked only for the slices its own devices hold (it may span processes).
    """
    host = np.asarray(leaf)
    return jax.make_array_from_callback(host.shape, sharding, lambda index: host[index])


def replicate(tree: PyTree, mesh: Mesh) -> PyTree:
    """Place every leaf of ``tree`` (the same value in every process) on all devices of ``mesh``."""
    return jax.tree_util.tree_map(lambda leaf: _global(leaf, replicated(mesh)), tree)


def shard_batch(batch: PyTree, mesh: Mesh, batch_axis: int = 0) -> PyTree:
    """Split every leaf of ``batch`` over the "data" axis along ``batch_axis``.

    Every process passes the same batch and contributes only its devices' rows; to read
    only those rows, call ``jax.make_array_from_callback`` with :func:`batch_sharding`
    directly (as :func:`jaxcalc.train.train` does). Raises DeviceCountError when that axis
    does not divide evenly among the devices.
    """
    n = mesh.shape[DATA_AXIS]

    def put(leaf: Any) -> jax.Array:
        shape = np.shape(leaf)
        if shape[batch_axis] % n:
            raise DeviceCountError(f"a batch of {shape[batch_axis]} rows does not split over {n} devices")
        return _global(leaf, batch_sharding(mesh, len(shape), batch_axis))

    return jax.tree_util.tree_map(put, batch)


def make_parallel_step(
    loss_and_grad: Callable[[PyTree, PyTree], tuple[jax.Array, PyTree]],
    optimizer: optax.GradientTransformation,
    mesh: Mesh,
) -> Callable[[PyTree, PyTree, PyTree], tuple[PyTree, PyTree, jax.Array]]:
    """A jitted data-parallel step ``(params, opt_state, batch) -> (params, opt_state, loss)``.

    ``loss_and_grad(params, batch) -> (mean loss, grads)`` is any backward pass (handwritten
    or autodiff). Params and optimizer state are replicated and donated; every leaf of the
    batch is split over "data" on its leading axis. The loss returned is at the incoming params.
    Pass the returned params on and drop the old ones: donation frees their buffers.
    """
    rep = replicated(mesh)

    def step(params: PyTree, opt_state: PyTree, batch: PyTree) -> tuple[PyTree, PyTree, jax.Array]:
        batch = jax.tree_util.tree_map(
            lambda b: jax.lax.with_sharding_constraint(b, batch_sharding(mesh, b.ndim)), batch
        )
        loss, grads = loss_and_grad(params, batch)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    return jax.jit(step, out_shardings=(rep, rep, rep), donate_argnums=(0, 1))
