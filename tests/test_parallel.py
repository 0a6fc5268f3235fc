"""Data parallelism on 8 simulated CPU devices: one sharded step equals one single-device step."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import jax
import pytest

from jaxcalc.numerics import tolerance
from jaxcalc.parallel import DeviceCountError, data_mesh, shard_batch

# Runs in a fresh interpreter: the device count is fixed when JAX starts.
SCRIPT = textwrap.dedent(
    """
    import json
    import jax, jax.numpy as jnp, numpy as np, optax
    from jaxcalc.backprop import init_mlp, mlp_backward
    from jaxcalc.numerics import compare
    from jaxcalc.parallel import data_mesh, make_parallel_step, replicate, shard_batch

    out = {"device_count": jax.device_count()}
    k1, k2, k3 = jax.random.split(jax.random.key(7), 3)
    params = init_mlp(k1, (12, 16, 5), jnp.float32)
    batch = (jax.random.normal(k2, (64, 12), jnp.float32), jax.random.randint(k3, (64,), 0, 5))
    opt = optax.adam(1e-2)

    def single(params, state, batch):
        loss, grads = mlp_backward(params, batch)
        updates, state = opt.update(grads, state, params)
        return optax.apply_updates(params, updates), state, loss

    # Two steps on one device first: the sharded step donates (and may alias) its inputs.
    state = opt.init(params)
    p1, state, loss1 = jax.jit(single)(params, state, batch)
    p1, state, loss1 = jax.jit(single)(p1, state, batch)
    out["moved"] = float(jnp.max(jnp.abs(p1[0]["W"] - params[0]["W"])))
    mesh = data_mesh(8)
    step = make_parallel_step(mlp_backward, opt, mesh)
    x, y = shard_batch(batch, mesh)
    out["batch_spec"] = [list(x.sharding.spec), list(y.sharding.spec)]
    out["shard_rows"] = sorted({s.data.shape[0] for s in x.addressable_shards})
    p8, s8, loss8 = step(replicate(params, mesh), replicate(opt.init(params), mesh), (x, y))
    p8, s8, loss8 = step(p8, s8, (x, y))  # a second step reuses the compiled, donated call
    out["replicated"] = all(leaf.sharding.is_fully_replicated for leaf in jax.tree_util.tree_leaves(p8))
    out["n_devices_holding_params"] = len(p8[0]["W"].sharding.device_set)

    out["loss_error"] = compare(loss8, loss1).error
    leaves8, leaves1 = jax.tree_util.tree_leaves(p8), jax.tree_util.tree_leaves(p1)
    out["param_errors"] = [compare(a, b).error for a, b in zip(leaves8, leaves1)]

    import time
    t0 = time.process_time()
    # The training loop: one epoch on 8 devices against one epoch on 1.
    from jaxcalc.data import load_digits
    from jaxcalc.train import TrainConfig, train
    d = load_digits()
    cfg = TrainConfig(hidden=(16,), epochs=1, batch_size=64, seed=1)
    _, logs8 = train(cfg._replace(devices=8), d)
    _, logs1 = train(cfg, d)
    out["epoch_loss_error"] = compare(logs8[0]["step_losses"], logs1[0]["step_losses"]).error
    out["epoch_test_acc"] = [logs8[0]["test_accuracy"], logs1[0]["test_accuracy"]]
    out["train_cpu_s"] = time.process_time() - t0
    print("RESULT " + json.dumps(out))
    """
)


@pytest.fixture(scope="module")
def eight_devices() -> dict:
    pytest.importorskip(
        "sklearn", reason="the training check uses the digits data (pip install 'jaxcalc[data]')"
    )
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8", JAX_PLATFORMS="cpu")
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = next(ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT "))
    return json.loads(line[len("RESULT ") :])


def test_sharded_step_equals_single_device_step(eight_devices):
    r = eight_devices
    assert r["device_count"] == 8
    assert r["batch_spec"] == [["data", None], ["data"]] and r["shard_rows"] == [8]
    assert r["replicated"] and r["n_devices_holding_params"] == 8
    assert r["moved"] > 1e-3  # the steps did something
    tol = tolerance("float32", "exact")
    assert r["loss_error"] <= tol
    assert max(r["param_errors"]) <= tol, r["param_errors"]


def test_sharded_epoch_equals_single_device_epoch(eight_devices):
    assert eight_devices["epoch_loss_error"] <= tolerance("float32", "exact")
    acc8, acc1 = eight_devices["epoch_test_acc"]
    assert abs(acc8 - acc1) <= 2 / 359  # at most a borderline image or two may flip


def test_missing_devices_are_named():
    n = jax.device_count() + 1
    with pytest.raises(DeviceCountError, match=f"asked for {n} devices but only {n - 1}"):
        data_mesh(n)
    with pytest.raises(DeviceCountError, match="at least 1"):
        data_mesh(0)


def test_uneven_batch_is_refused():
    import numpy as np

    mesh = data_mesh(1)
    assert shard_batch(np.ones((3, 2)), mesh).shape == (3, 2)
    fake = type("FakeMesh", (), {"shape": {"data": 2}})()
    with pytest.raises(DeviceCountError, match="3 rows does not split over 2 devices"):
        shard_batch(np.ones((3, 2)), fake)
