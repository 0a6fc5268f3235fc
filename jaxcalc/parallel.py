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

Several machines (multi-host, multi-controller): run the *same* command in every process
and call ``jax.distributed.initialize()`` first, before anything touches a device::

    import jax
    jax.distributed.initialize(coordinator_address="10.0.0.1:1234",  # process 0's host:port
                               num_processes=4, process_id=RANK)      # RANK = 0..3
    # (on Cloud TPU, SLURM or Open MPI the three arguments are discovered automatically)
    mesh = data_mesh(jax.device_count())   # every device of every host on the "data" axis

After that ``jax.devices()`` lists the devices of all hosts, :func:`data_mesh` spans them,
and the jitted step below is unchanged. Each process must then build its global arrays
from what it holds: replicated values (params, a data set every host loads identically)
with ``jax.device_put(value, replicated(mesh))``, and a batch read per host with
``jax.make_array_from_process_local_data(batch_sharding(mesh, ndim), local_rows)``.
Every process must pass the same seeds, so that all replicas start and stay identical.
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


def replicate(tree: PyTree, mesh: Mesh) -> PyTree:
    """Place every leaf of ``tree`` on all devices of ``mesh``."""
    return jax.device_put(tree, replicated(mesh))


def shard_batch(batch: PyTree, mesh: Mesh, batch_axis: int = 0) -> PyTree:
    """Split every leaf of ``batch`` over the "data" axis along ``batch_axis``.

    Raises DeviceCountError when that axis does not divide evenly among the devices.
    """
    n = mesh.shape[DATA_AXIS]

    def put(leaf: Any) -> jax.Array:
        leaf = np.asarray(leaf) if not isinstance(leaf, jax.Array) else leaf
        if leaf.shape[batch_axis] % n:
            raise DeviceCountError(
                f"a batch of {leaf.shape[batch_axis]} rows does not split over {n} devices"
            )
        return jax.device_put(leaf, batch_sharding(mesh, leaf.ndim, batch_axis))

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
    Pass the returned params on and drop the old ones: :func:`replicate` may reuse an input
    buffer on the first device, and donation then frees it.
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
