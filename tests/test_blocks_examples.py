"""examples/torch_blocks.py (and its re-export from torch_impl.py) against the jax references of
every block and generative case, at golden and tiles sizes, in float64, in process."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import jax
import numpy as np
import pytest

from jaxcalc.cases import get_case, instance
from jaxcalc.numerics import compare, reference_mode

pytest.importorskip("torch", reason="torch is not installed; the PyTorch example needs it")

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
NEW = (
    "vae_elbo", "ddpm_loss", "gan_losses", "gpt_lm_loss", "backprop_mlp", "gqa_attention",
    "cross_attention", "batchnorm", "groupnorm", "rope", "swiglu", "dropout",
    "label_smoothed_cross_entropy", "z_loss", "lstm_cell", "gru_cell", "conv1d", "conv2d", "max_pool2d",
    "avg_pool2d", "selective_scan", "moe_top2",
)  # fmt: skip


@pytest.fixture(scope="module")
def torch_impl():
    # as jaxcalc's worker does for --impl PATH: the example's folder goes on sys.path
    sys.path.insert(0, str(EXAMPLES))
    try:
        spec = importlib.util.spec_from_file_location(
            "jaxcalc_example_torch_impl_blocks", EXAMPLES / "torch_impl.py"
        )
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.path.remove(str(EXAMPLES))


def _reference(case, inputs, ct):
    idx = case.diff_index
    primals = [inputs[n] for n in case.input_names]

    def value_and_vjp(primals, ct):
        def f(*diff):
            full = list(primals)
            for k, d in zip(idx, diff, strict=True):
                full[k] = d
            return case.forward(*full)

        value, pull = jax.vjp(f, *(primals[k] for k in idx))
        return value, pull(ct)

    with reference_mode("float64"):
        return jax.device_get(jax.jit(value_and_vjp)(primals, ct))


def test_torch_impl_reexports_the_blocks(torch_impl) -> None:
    assert set(NEW) <= set(torch_impl.__all__)
    assert all(callable(getattr(torch_impl, n)) for n in NEW)


@pytest.mark.parametrize("size", ("golden", "tiles"))
@pytest.mark.parametrize("name", NEW)
def test_torch_blocks_match_the_reference(torch_impl, name: str, size: str) -> None:
    case = get_case(name)
    inst = instance(case, size)
    inputs, (ct, _) = inst.sample(), inst.probes()
    ref_value, ref_vjp = _reference(case, inputs, ct)
    value, vjp = getattr(torch_impl, name)(inputs, ct)
    assert np.asarray(value).dtype == np.float64
    err = compare(value, ref_value)
    assert err.error <= 1e-10, f"{inst.id} value: error {err.error:.3g} at {err.where()}"
    assert set(vjp) == set(case.diff_names)
    for n, ref in zip(case.diff_names, ref_vjp, strict=True):
        err = compare(vjp[n], ref)
        assert err.error <= 1e-10, f"{inst.id} vjp[{n}]: error {err.error:.3g} at {err.where()}"
