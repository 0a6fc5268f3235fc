"""The example implementations in examples/ against the oracle.

(a) in process: every instance of the default export (every case at the golden and tiles sizes, in
    every regime it declares), value and VJP of each example (NumPy, PyTorch, Node.js over JSON
    Lines, HIPS autograd; micrograd at the golden size) vs the case's forward and jax.vjp in float64
    on the instance's own inputs and probes; NumPy and PyTorch also in float32 (typical regime);
(b) end to end: ``jaxcalc verify`` of each example on the golden set of the whole default export
    (built once per test run, tests/conftest.py), every instance passing in float64 and float32
    and none failing in bfloat16 and float16;
(c) planted bugs: a copy of an example with one bug must make verify fail on that very case.
"""

from __future__ import annotations

import importlib.util
import json
import re
import shlex
import shutil
import subprocess
from pathlib import Path
from types import ModuleType

import jax
import numpy as np
import pytest

from jaxcalc.cases import REGISTRY, Case, Instance, instance, instances, of_diff
from jaxcalc.cli import main
from jaxcalc.numerics import compare, reference_mode
from jaxcalc.oracle.arrays import decode_array, encode_array

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
CASES = tuple(REGISTRY.values())
IDS = tuple(REGISTRY)
# The design table's cases (registered first, up to adam_step) at every instance of the default
# export; the primitives and blocks are checked against their examples in their own test files.
_NAMES = tuple(REGISTRY)
DESIGN_CASES = tuple(REGISTRY[n] for n in _NAMES[: _NAMES.index("adam_step") + 1])
INSTANCES = tuple(instances(DESIGN_CASES, sizes=("golden", "tiles")))
INST_IDS = tuple(i.id for i in INSTANCES)
TYPICAL = tuple(i for i in INSTANCES if i.regime == "typical")
GOLDEN = tuple(i for i in INSTANCES if i.size == "golden")
EXACT_F64 = 1e-10
LOOSE_F32 = 1e-4
NODE = shutil.which("node")
NODE_CMD = f"node {shlex.quote(str(EXAMPLES / 'node' / 'impl.js'))}"
# The seed, and every case a planted bug targets.
E2E_CASES = (
    "square", "poly_xy", "chain_affine_square", "descent_square", "softmax",
    "softmax_cross_entropy", "linear", "embedding", "causal_self_attention",
)  # fmt: skip


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


@pytest.fixture(scope="module")
def autograd_impl() -> ModuleType:
    pytest.importorskip("autograd", reason="HIPS autograd is not installed (pip install autograd)")
    return _load(EXAMPLES / "autograd_impl.py", "jaxcalc_example_autograd_impl")


@pytest.fixture(scope="module")
def micrograd_impl() -> ModuleType:
    pytest.importorskip("micrograd", reason="micrograd is not installed (pip install micrograd)")
    return _load(EXAMPLES / "micrograd_impl.py", "jaxcalc_example_micrograd_impl")


class _NodeImpl:
    """examples/node/impl.js behind its JSON Lines protocol, as a callable per case."""

    def __init__(self) -> None:
        self.proc = subprocess.Popen(
            [NODE, str(EXAMPLES / "node" / "impl.js")],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        self.next_id = 0

    def ask(self, case: str, inputs: dict[str, np.ndarray], ct: np.ndarray) -> dict:
        self.next_id += 1
        request = {
            "id": self.next_id,
            "case": case,
            "inputs": {k: encode_array(a) for k, a in inputs.items()},
            "cotangent": encode_array(ct),
        }
        self.proc.stdin.write(json.dumps(request) + "\n")
        self.proc.stdin.flush()
        reply = json.loads(self.proc.stdout.readline())
        assert reply["id"] == self.next_id
        return reply

    def close(self) -> int:
        self.proc.stdin.close()
        return self.proc.wait(timeout=30)


@pytest.fixture(scope="module")
def node_impl():
    if NODE is None:
        pytest.skip("node is not on PATH; the Node.js example needs it")
    impl = _NodeImpl()
    yield impl
    assert impl.close() == 0, "node exited with an error once stdin closed"


def _reference(inst: Instance, inputs: dict[str, np.ndarray], ct: np.ndarray) -> tuple[np.ndarray, dict]:
    """The case's forward and its jax.vjp, in float64 at highest matmul precision (one jitted call
    per case and shapes: every regime of a size reuses it)."""
    case = inst.case
    with reference_mode("float64"):
        value, grads = _value_and_vjp(case)(inst.primals(inputs), jax.numpy.asarray(ct))
        return np.asarray(value), {n: np.asarray(g) for n, g in zip(case.diff_names, grads, strict=True)}


_PROGRAMS: dict[str, object] = {}


def _value_and_vjp(case: Case):
    if case.name not in _PROGRAMS:

        def value_and_vjp(primals: tuple, ct: jax.Array) -> tuple:
            f, diff = of_diff(case, primals)
            value, pullback = jax.vjp(f, *diff)
            return value, pullback(ct.astype(value.dtype))

        _PROGRAMS[case.name] = jax.jit(value_and_vjp)
    return _PROGRAMS[case.name]


_REFERENCES: dict[str, tuple] = {}


def _inputs_and_reference(inst: Instance) -> tuple:
    """(inputs, cotangent, value, vjp) in float64, computed once per instance and session."""
    if inst.id not in _REFERENCES:
        inputs = inst.sample("float64")
        ct, _ = inst.probes("float64")
        _REFERENCES[inst.id] = (inputs, ct, *_reference(inst, inputs, ct))
    return _REFERENCES[inst.id]


def _check_against_reference(impl: ModuleType, inst: Instance, dtype: str, tol: float) -> None:
    fn = getattr(impl, inst.name, None)
    assert callable(fn), f"{impl.__name__} lacks a function for registered case {inst.name!r}"
    inputs64, ct64, _, _ = _inputs_and_reference(inst)
    inputs = {k: (v.astype(dtype) if np.issubdtype(v.dtype, np.floating) else v) for k, v in inputs64.items()}
    _check_result(inst, *fn(inputs, ct64.astype(dtype)), dtype, tol)


def _check_result(inst: Instance, value: np.ndarray, vjp: dict, dtype: str, tol: float) -> None:
    """value and vjp, computed in ``dtype``, against the float64 reference within ``tol``."""
    _, _, ref_value, ref_vjp = _inputs_and_reference(inst)
    case = inst.case
    value = np.asarray(value)
    assert value.dtype == np.dtype(dtype), f"{inst.id}: value computed in {value.dtype}, expected {dtype}"
    err = compare(value, ref_value)
    assert err.error <= tol, f"{inst.id} value: error {err.error:.3g} at {err.where()}"
    assert set(vjp) == set(case.diff_names), (
        f"{inst.id}: VJP names {sorted(vjp)} != {sorted(case.diff_names)}"
    )
    for name in case.diff_names:
        got = np.asarray(vjp[name])
        assert got.dtype == np.dtype(dtype), f"{inst.id} vjp[{name}] computed in {got.dtype}"
        err = compare(got, ref_vjp[name])
        assert err.error <= tol, (
            f"{inst.id} vjp[{name}]: error {err.error:.3g} at {err.where()}: "
            f"{err.a_value!r} vs {err.b_value!r}"
        )


# ----------------------------------------------------------------------------- (a) in process


@pytest.mark.parametrize("inst", INSTANCES, ids=INST_IDS)
def test_numpy_impl_matches_autodiff(numpy_impl: ModuleType, inst: Instance) -> None:
    _check_against_reference(numpy_impl, inst, "float64", EXACT_F64)


@pytest.mark.parametrize("inst", TYPICAL, ids=[i.id for i in TYPICAL])
def test_numpy_impl_keeps_float32(numpy_impl: ModuleType, inst: Instance) -> None:
    _check_against_reference(numpy_impl, inst, "float32", LOOSE_F32)


@pytest.mark.parametrize("inst", INSTANCES, ids=INST_IDS)
def test_torch_impl_matches_autodiff(torch_impl: ModuleType, inst: Instance) -> None:
    _check_against_reference(torch_impl, inst, "float64", EXACT_F64)


@pytest.mark.parametrize("inst", TYPICAL, ids=[i.id for i in TYPICAL])
def test_torch_impl_float32_matches_autodiff(torch_impl: ModuleType, inst: Instance) -> None:
    _check_against_reference(torch_impl, inst, "float32", LOOSE_F32)


@pytest.mark.parametrize("inst", INSTANCES, ids=INST_IDS)
def test_node_impl_matches_autodiff(node_impl: _NodeImpl, inst: Instance) -> None:
    inputs, ct, _, _ = _inputs_and_reference(inst)
    reply = node_impl.ask(inst.name, inputs, ct)
    if reply.get("error") == "unsupported":
        pytest.skip(f"examples/node/impl.js does not implement {inst.name}")
    assert "error" not in reply, reply["error"]
    vjp = {k: decode_array(a, allow_nonfinite=True) for k, a in reply["vjp"].items()}
    _check_result(inst, decode_array(reply["value"], allow_nonfinite=True), vjp, "float64", EXACT_F64)


@pytest.mark.parametrize("inst", INSTANCES, ids=INST_IDS)
def test_autograd_impl_matches_autodiff(autograd_impl: ModuleType, inst: Instance) -> None:
    if not hasattr(autograd_impl, inst.name):
        pytest.skip(f"examples/autograd_impl.py does not implement {inst.name}")
    _check_against_reference(autograd_impl, inst, "float64", EXACT_F64)


@pytest.mark.parametrize("inst", GOLDEN, ids=[i.id for i in GOLDEN])
def test_micrograd_impl_matches_autodiff(micrograd_impl: ModuleType, inst: Instance) -> None:
    if not hasattr(micrograd_impl, inst.name):
        pytest.skip(f"micrograd has no operations for {inst.name}")
    _check_against_reference(micrograd_impl, inst, "float64", EXACT_F64)


def test_micrograd_covers_the_seed(micrograd_impl: ModuleType) -> None:
    assert {"square", "poly_xy", "chain_affine_square"} <= set(micrograd_impl.__all__)


# ----------------------------------------------------------------------------- (b) end to end


# The instances of the former end-to-end set (the seed and the planted bugs' cases at the golden size,
# every case in every regime other than typical at the golden size, the tiles size of a few kernels):
# every one of them must pass outright, or be skipped only for a reason verify gives.
E2E_INSTANCES = (
    *(instance(n) for n in E2E_CASES),
    *(i for i in GOLDEN if i.regime != "typical"),
    *(instance(n, "tiles") for n in ("softmax", "layernorm", "attention", "embedding", "padded_attention")),
)


def _verify(
    golden: Path, args: list[str], capsys: pytest.CaptureFixture, tmp_path: Path
) -> tuple[int, str, dict]:
    """Run ``jaxcalc verify GOLDEN ARGS``; returns its exit status, printed table and JSON report."""
    report = tmp_path / "report.json"
    capsys.readouterr()
    rc = main(["verify", str(golden), *args, "--json", str(report)])
    out = capsys.readouterr().out
    return rc, out, json.loads(report.read_text()) if report.exists() else {}


def _impl_args(which: str) -> list[str]:
    if which.startswith("torch"):
        pytest.importorskip("torch", reason="torch is not installed; the PyTorch example needs it")
    if which == "node" and NODE is None:
        pytest.skip("node is not on PATH; the Node.js example needs it")
    return {
        "numpy": ["--impl", str(EXAMPLES / "numpy_impl.py")],
        "numpy-float32": ["--impl", str(EXAMPLES / "numpy_impl.py"), "--dtype", "float32"],
        "torch": ["--impl", str(EXAMPLES / "torch_impl.py")],
        "torch-float32": ["--impl", str(EXAMPLES / "torch_impl.py"), "--dtype", "float32"],
        "torch-bfloat16": ["--impl", str(EXAMPLES / "torch_impl.py"), "--dtype", "bfloat16"],
        "torch-float16": ["--impl", str(EXAMPLES / "torch_impl.py"), "--dtype", "float16"],
        "node": ["--cmd", NODE_CMD],
    }[which]


IMPLS = ("numpy", "numpy-float32", "torch", "torch-float32", "torch-bfloat16", "torch-float16", "node")


@pytest.mark.parametrize("which", IMPLS)
def test_verify_passes(
    catalogue_golden: Path, which: str, capsys: pytest.CaptureFixture, tmp_path: Path
) -> None:
    """On the whole default export: no instance fails, and only what the example lacks, or what a
    column does not apply to, is skipped. On the end-to-end instances every one of them passes
    that is not skipped so, and at least half of them pass."""
    rc, out, report = _verify(catalogue_golden, _impl_args(which), capsys, tmp_path)
    assert rc == 0, out
    rows = report["instances"]
    assert [c["instance"] for c in rows] == list(INST_IDS)
    assert all(c["verdict"] != "FAIL" for c in rows), out
    skipped = [c for c in rows if c["verdict"] == "skip"]
    passed = len(rows) - len(skipped)
    assert out.rstrip().splitlines()[-1] == f"{passed} passed, 0 failed, {len(skipped)} skipped", out
    by_id = {c["instance"]: c for c in rows}
    e2e = [by_id[i.id] for i in E2E_INSTANCES]
    e2e_skipped = [c for c in e2e if c["verdict"] == "skip"]
    assert all(c["verdict"] == "pass" for c in e2e if c not in e2e_skipped), out
    for c in e2e_skipped:
        assert (
            c["message"] == "unsupported" and which == "node" or c["message"].startswith("not applicable")
        ), c
    assert len(e2e) - len(e2e_skipped) >= len(e2e) // 2


# ----------------------------------------------------------------------------- (c) planted bugs
# (id, example file, text, replacement, case that must fail, the quantity to blame, extra verify args)

PLANTS = (
    (
        "softmax-backward-missing-term",
        "numpy_impl.py",
        "return y * (dy - np.sum(dy * y, axis=-1, keepdims=True))",
        "return y * dy",
        "softmax",
        "vjp x",
        [],
    ),
    (
        "linear-weight-gradient-transposed",
        "node/impl.js",
        "matmul(transpose(x), dy), sumRows(dy)",
        "transpose(matmul(transpose(x), dy)), sumRows(dy)",
        "linear",
        "vjp W",
        [],
    ),
    (
        "embedding-ids-assigned-not-accumulated",
        "numpy_impl.py",
        "np.add.at(dtable, ids, cotangent)",
        "dtable[ids] = cotangent",
        "embedding",
        "vjp table",
        [],
    ),
    (
        "gradient-scaled-by-1.001",
        "numpy_impl.py",
        "return (c * d / n,)",
        "return (c * d / n * 1.001,)",
        "softmax_cross_entropy",
        "vjp logits",
        [],
    ),
    (
        "causal-mask-off-by-one",
        "numpy_impl.py",
        "np.tril(np.ones(s.shape, dtype=bool))",
        "np.tril(np.ones(s.shape, dtype=bool), 1)",
        "causal_self_attention",
        "value",
        [],
    ),
    (
        "float32-gradient-scaled-by-1.001",
        "torch_common.py",
        "grad_outputs=ct,",
        "grad_outputs=ct * 1.001,",
        "softmax_cross_entropy",
        "vjp logits",
        ["--dtype", "float32"],
    ),
)


def _plant(tmp_path: Path, example: str, old: str, new: str) -> list[str]:
    """Copy ``example`` to tmp_path with ``old`` replaced by ``new``; returns verify's --impl/--cmd args."""
    source = (EXAMPLES / example).read_text()
    assert source.count(old) == 1, f"{example} no longer contains {old!r} exactly once"
    dest = tmp_path / Path(example).name
    for sibling in EXAMPLES.glob("*.py"):  # the modules an example imports from its own folder
        (tmp_path / sibling.name).write_text(sibling.read_text())
    dest.write_text(source.replace(old, new))
    if example.endswith(".js"):
        return ["--cmd", f"node {shlex.quote(str(dest))}"]
    if example == "torch_common.py":  # the shared wrapper: the example that imports it is verified
        return ["--impl", str(tmp_path / "torch_impl.py")]
    return ["--impl", str(dest)]


@pytest.mark.parametrize("plant", PLANTS, ids=[p[0] for p in PLANTS])
def test_planted_bug_fails_on_its_case(
    catalogue_golden: Path, plant: tuple, capsys: pytest.CaptureFixture, tmp_path: Path
) -> None:
    _, example, old, new, target, blamed, extra = plant
    if example.startswith("torch"):
        pytest.importorskip("torch", reason="torch is not installed; the PyTorch example needs it")
    if example.endswith(".js") and NODE is None:
        pytest.skip("node is not on PATH; the Node.js example needs it")
    control = "square"
    args = [*_plant(tmp_path, example, old, new), *extra, "--cases", target, control]
    rc, out, report = _verify(catalogue_golden, args, capsys, tmp_path)
    assert rc == 1, out
    assert re.search(rf"^{target}\s+FAIL\b", out, re.MULTILINE), out
    verdicts = {c["instance"]: c for c in report["instances"]}
    failed = verdicts[target]
    assert failed["verdict"] == "FAIL"
    blamed_names = [q["name"] for q in failed["quantities"] if not q["passed"]]
    assert blamed in blamed_names or blamed in failed["message"], failed
    if "grad_outputs" not in old:  # a bug local to one case leaves the control passing
        assert verdicts[control]["verdict"] == "pass", out
        assert re.search(rf"^{control}\s+pass\b", out, re.MULTILINE), out
