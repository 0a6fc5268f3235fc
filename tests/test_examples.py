"""The example implementations in examples/ against the oracle.

(a) in process: every registered case, value and VJP of numpy_impl and torch_impl vs the case's
    forward and jax.vjp in float64 (torch also in float32), on the case's own sample and probes;
(b) end to end: one golden export per session, then ``jaxcalc verify`` on each example;
(c) planted bugs: a copy of an example with one bug must fail verify on exactly that case.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import jax
import numpy as np
import pytest

from jaxcalc.cases import REGISTRY, Case
from jaxcalc.numerics import compare, reference_mode

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
CASES = tuple(REGISTRY.values())
IDS = tuple(REGISTRY)
EXACT_F64 = 1e-10
LOOSE_F32 = 1e-4


def _load(path: Path, name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def numpy_impl() -> ModuleType:
    return _load(EXAMPLES / "numpy_impl.py", "jaxcalc_example_numpy_impl")


@pytest.fixture(scope="module")
def torch_impl() -> ModuleType:
    pytest.importorskip("torch", reason="torch is not installed; the PyTorch example needs it")
    return _load(EXAMPLES / "torch_impl.py", "jaxcalc_example_torch_impl")


def _reference(case: Case, inputs: dict[str, np.ndarray], ct: np.ndarray) -> tuple[np.ndarray, dict]:
    """The case's forward and its jax.vjp, in float64 at highest matmul precision."""
    with reference_mode("float64"):
        primals = [jax.numpy.asarray(inputs[n]) for n in case.input_names]
        idx = case.diff_index

        def f(*diff):
            full = list(primals)
            for k, d in zip(idx, diff, strict=True):
                full[k] = d
            return case.forward(*full)

        value, pullback = jax.vjp(f, *(primals[k] for k in idx))
        grads = pullback(jax.numpy.asarray(ct, dtype=value.dtype))
        return np.asarray(value), {n: np.asarray(g) for n, g in zip(case.diff_names, grads, strict=True)}


_REFERENCES: dict[str, tuple] = {}


def _inputs_and_reference(case: Case) -> tuple:
    """(inputs, cotangent, value, vjp) in float64, computed once per case and session."""
    if case.name not in _REFERENCES:
        inputs = case.sample("float64")
        ct, _ = case.probes("float64")
        _REFERENCES[case.name] = (inputs, ct, *_reference(case, inputs, ct))
    return _REFERENCES[case.name]


def _check_against_reference(impl: ModuleType, case: Case, dtype: str, tol: float) -> None:
    fn = getattr(impl, case.name, None)
    assert callable(fn), f"{impl.__name__} lacks a function for registered case {case.name!r}"
    inputs64, ct64, ref_value, ref_vjp = _inputs_and_reference(case)
    inputs = {k: (v.astype(dtype) if np.issubdtype(v.dtype, np.floating) else v) for k, v in inputs64.items()}
    value, vjp = fn(inputs, ct64.astype(dtype))
    value = np.asarray(value)
    assert value.dtype == np.dtype(dtype), f"{case.name}: value computed in {value.dtype}, expected {dtype}"
    err = compare(value, ref_value)
    assert err.error <= tol, f"{case.name} value: error {err.error:.3g} at {err.where()}"
    assert set(vjp) == set(case.diff_names), (
        f"{case.name}: VJP names {sorted(vjp)} != {sorted(case.diff_names)}"
    )
    for name in case.diff_names:
        got = np.asarray(vjp[name])
        assert got.dtype == np.dtype(dtype), f"{case.name} vjp[{name}] computed in {got.dtype}"
        err = compare(got, ref_vjp[name])
        assert err.error <= tol, (
            f"{case.name} vjp[{name}]: error {err.error:.3g} at {err.where()}: "
            f"{err.a_value!r} vs {err.b_value!r}"
        )


# ----------------------------------------------------------------------------- (a) in process


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_numpy_impl_matches_autodiff(numpy_impl: ModuleType, case: Case) -> None:
    _check_against_reference(numpy_impl, case, "float64", EXACT_F64)


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_numpy_impl_keeps_float32(numpy_impl: ModuleType, case: Case) -> None:
    _check_against_reference(numpy_impl, case, "float32", LOOSE_F32)


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_torch_impl_matches_autodiff(torch_impl: ModuleType, case: Case) -> None:
    _check_against_reference(torch_impl, case, "float64", EXACT_F64)


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_torch_impl_float32_matches_autodiff(torch_impl: ModuleType, case: Case) -> None:
    _check_against_reference(torch_impl, case, "float32", LOOSE_F32)
