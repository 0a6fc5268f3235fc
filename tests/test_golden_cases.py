"""``jaxcalc.testing.golden_cases`` and the oracle's Python API (``jaxcalc.oracle.export/verify``).

Everything reads the committed golden set (``golden/``, the golden size in every regime); the
numbers compared against come from the handwritten NumPy example, an independent witness.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import jax
import ml_dtypes
import numpy as np
import pytest

from jaxcalc import oracle
from jaxcalc.cases import SpecError
from jaxcalc.oracle.golden import GoldenError
from jaxcalc.testing import GoldenInstance, golden_cases

ROOT = Path(__file__).resolve().parents[1]
GOLDEN = ROOT / "golden"
NUMPY_IMPL = ROOT / "examples" / "numpy_impl.py"


def _numpy_impl():
    spec = importlib.util.spec_from_file_location("numpy_impl_for_golden_cases", NUMPY_IMPL)
    mod = importlib.util.module_from_spec(spec)
    sys.path.insert(0, str(NUMPY_IMPL.parent))  # its sibling modules
    try:
        spec.loader.exec_module(mod)
    finally:
        sys.path.remove(str(NUMPY_IMPL.parent))
    return mod


NP = _numpy_impl()
CASES = ["softmax", "layernorm", "softmax_cross_entropy", "attention", "embedding", "mlp"]


def _float64(inst: GoldenInstance) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """The NumPy example's value and VJPs in float64 on ``inst``'s inputs (floats widened)."""
    wide = {k: v.astype(np.float64) if v.dtype.kind == "f" else v for k, v in inst.inputs.items()}
    value, vjp = getattr(NP, inst.case)(wide, inst.cotangent.astype(np.float64))
    return np.asarray(value, np.float64), {k: np.asarray(g, np.float64) for k, g in vjp.items()}


def _ids(dtype: str, cases: list[str]) -> list[str]:
    m = json.loads((GOLDEN / "manifest.json").read_text())
    return [
        e["id"] for e in m["instances"] if e["case"] in cases and e["tolerances"][dtype]["applicable"]
    ]


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_every_selected_instance_comes_in_manifest_order_and_a_correct_implementation_passes(dtype):
    insts = golden_cases(GOLDEN, dtype=dtype, cases=CASES)
    assert [i.id for i in insts] == _ids(dtype, CASES)
    assert {i.regime for i in insts} >= {"typical", "large", "masked"}
    for inst in insts:
        assert all(a.dtype.name == dtype for a in inst.inputs.values() if a.dtype.kind == "f")
        value, vjp = _float64(inst)
        if dtype == "float32":  # the example computes in float64: round, as a float32 kernel would end
            value, vjp = value.astype(np.float32), {k: g.astype(np.float32) for k, g in vjp.items()}
        inst.assert_matches(value, vjp)
        assert inst.check(value, vjp).verdict == "pass"


def test_a_wrong_element_fails_naming_the_instance_the_quantity_and_the_element():
    (inst,) = golden_cases(GOLDEN, cases=["softmax~large"])
    value, vjp = _float64(inst)
    vjp["x"][2, 5] *= 1.001
    with pytest.raises(AssertionError) as err:
        inst.assert_matches(value, vjp)
    text = str(err.value)
    first = text.splitlines()[0]
    assert first.startswith("softmax~large in float64 (x (3, 7) -> (3, 7)): vjp x error")
    assert "at [2, 5]" in first
    row = next(r for r in text.splitlines() if "vjp x" in r and "<--" in r)
    assert f"{vjp['x'][2, 5]:.9g}" in row and f"{inst.expected_vjp['x'][2, 5]:.9g}" in row
    assert "value" in text  # the other quantities are shown too, passing


def test_a_result_in_higher_precision_than_claimed_fails_as_such():
    inst = golden_cases(GOLDEN, dtype="float32", cases=["layernorm"])[0]
    assert inst.id == "layernorm"  # then the layernorm~ regimes and the composites' layernorm stages
    value, vjp = _float64(inst)
    with pytest.raises(AssertionError, match="computed in higher precision than the claimed float32"):
        inst.assert_matches(value, vjp)


def test_bfloat16_inputs_are_rounded_and_bfloat16_results_from_numpy_jax_or_torch_are_accepted():
    insts = golden_cases(GOLDEN, dtype="bfloat16", cases=["softmax"])
    assert insts and all(i.inputs["x"].dtype == ml_dtypes.bfloat16 for i in insts)
    for inst in insts:
        # the truth on the rounded inputs, rounded once more: within the column's rounding floor
        value = inst.expected_value.astype(ml_dtypes.bfloat16)
        vjp = {"x": inst.expected_vjp["x"].astype(ml_dtypes.bfloat16)}
        inst.assert_matches(value, vjp)
        inst.assert_matches(jax.numpy.asarray(value), vjp["x"])  # a JAX array; a bare VJP for one input
        inst.assert_matches(value.astype(np.float32), [vjp["x"].astype(np.float32)])  # bf16 values in f32
        with pytest.raises(AssertionError, match="not a bfloat16 value"):
            inst.assert_matches(inst.expected_value.astype(np.float32), vjp)
    torch = pytest.importorskip("torch")
    inst = insts[0]
    t = torch.tensor(inst.expected_value.astype(np.float32)).to(torch.bfloat16)
    g = torch.tensor(inst.expected_vjp["x"].astype(np.float32)).to(torch.bfloat16)
    inst.assert_matches(t, {"x": g})
    with pytest.raises(AssertionError, match="vjp x"):
        inst.assert_matches(t, {"x": g * 1.5})


def test_a_missing_or_extra_vjp_fails_with_its_name():
    inst = golden_cases(GOLDEN, cases=["layernorm"])[0]
    value, vjp = _float64(inst)
    del vjp["gamma"]
    with pytest.raises(AssertionError, match="vjp gamma: missing from the reply"):
        inst.assert_matches(value, vjp)
    value, vjp = _float64(inst)
    with pytest.raises(AssertionError, match="not differentiable inputs"):
        inst.assert_matches(value, {**vjp, "eps": vjp["x"]})
    with pytest.raises(AssertionError, match="shape"):
        inst.assert_matches(value[:1], vjp)
    with pytest.raises(AssertionError):
        inst.assert_matches("garbage", vjp)


def test_columns_that_do_not_apply_are_left_out():
    m = json.loads((GOLDEN / "manifest.json").read_text())
    t = {e["id"]: e["tolerances"] for e in m["instances"]}
    na = [i for i in t if not t[i]["float16"]["applicable"] and t[i]["float32"]["applicable"]]
    assert na, "the committed set has instances that apply in float32 but not in float16 (overflow)"
    f16 = {i.id for i in golden_cases(GOLDEN, dtype="float16")}
    f32 = {i.id for i in golden_cases(GOLDEN, dtype="float32")}
    assert not f16 & set(na) and set(na) <= f32


def test_selectors_and_their_errors():
    assert [i.id for i in golden_cases(GOLDEN, cases=["softmax"], regimes=["large"])] == ["softmax~large"]
    assert {i.size for i in golden_cases(GOLDEN, sizes=["golden"], cases=["mlp"])} == {"golden"}
    with pytest.raises(GoldenError, match="did you mean softmax"):
        golden_cases(GOLDEN, cases=["sofmax"])
    with pytest.raises(GoldenError, match="holds no size 'tiles'"):
        golden_cases(GOLDEN, sizes=["tiles"])
    with pytest.raises(ValueError, match="dtype must be one of"):
        golden_cases(GOLDEN, dtype="float8")
    with pytest.raises(GoldenError, match="does not exist"):
        golden_cases(GOLDEN / "nope")


def test_a_changed_file_is_refused_before_any_instance_is_made(tmp_path: Path):
    copy = tmp_path / "golden"
    shutil.copytree(GOLDEN, copy)
    path = copy / "cases" / "relu.json"
    path.write_bytes(path.read_bytes().replace(b"1", b"2", 1))
    with pytest.raises(GoldenError, match="relu.json"):
        golden_cases(copy, cases=["softmax"])  # every file is checksummed, selected or not


def test_pytest_names_tests_after_instance_ids_and_k_selects_by_them(tmp_path: Path):
    (tmp_path / "test_user.py").write_text(
        textwrap.dedent(
            f"""
            import pytest
            from jaxcalc.testing import golden_cases

            @pytest.mark.parametrize("inst", golden_cases({str(GOLDEN)!r}, cases=["softmax", "gelu_erf"]))
            def test_op(inst):
                assert inst.case in ("softmax", "gelu_erf")
            """
        )
    )
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--collect-only", "-k",
         "softmax and large", str(tmp_path / "test_user.py")],
        capture_output=True, text=True, cwd=tmp_path, timeout=300,
    )  # fmt: skip
    assert run.returncode == 0, run.stdout + run.stderr
    collected = [line for line in run.stdout.splitlines() if "::" in line]
    assert collected == [f"{tmp_path.name}/test_user.py::test_op[softmax~large]"] or collected == [
        "test_user.py::test_op[softmax~large]"
    ], run.stdout


# ------------------------------------------------------------------ jaxcalc.oracle.export / verify


def test_verify_returns_a_report_with_every_instance():
    seen = []
    report = oracle.verify(
        GOLDEN, impl=str(NUMPY_IMPL), cases=["softmax", "layernorm"], on_result=seen.append
    )
    assert report.ok and report.failed == 0
    assert report.passed == len(report.results) == len(seen)
    assert [r.name for r in report.results] == _ids("float64", ["softmax", "layernorm"])
    assert report.format().splitlines()[-1] == report.summary == f"{report.passed} passed, 0 failed, 0 skipped"
    data = report.to_json()
    json.dumps(data, allow_nan=False)
    assert data["passed"] == report.passed and data["dtype"] == "float64"
    assert {q["name"] for q in data["instances"][0]["quantities"]} == {"value", "vjp x"}


def test_verify_of_a_wrong_program_fails_its_instances_not_the_call(tmp_path: Path):
    prog = tmp_path / "wrong.py"
    prog.write_text(
        "import json, sys\n"
        "for line in sys.stdin:\n"
        "    req = json.loads(line)\n"
        "    x = req['inputs']['x']\n"
        "    print(json.dumps({'id': req['id'], 'value': x, 'vjp': {'x': x}}), flush=True)\n"
    )
    report = oracle.verify(GOLDEN, cmd=[sys.executable, str(prog)], cases=["softmax"], timeout=30)
    assert not report.ok and report.failed == len(report.results) == 3
    assert all(r.verdict == "FAIL" for r in report.failures)


def test_verify_refuses_bad_arguments_in_one_line():
    with pytest.raises(ValueError, match="exactly one"):
        oracle.verify(GOLDEN, impl=str(NUMPY_IMPL), cmd="node x.js")
    with pytest.raises(ValueError, match="dtype"):
        oracle.verify(GOLDEN, impl=str(NUMPY_IMPL), dtype="int8")
    with pytest.raises(oracle.GoldenError, match="neither a case nor an instance"):
        oracle.verify(GOLDEN, impl=str(NUMPY_IMPL), cases=["zzz_not_a_case"])
    with pytest.raises(oracle.StartError, match="no such file"):
        oracle.verify(GOLDEN, impl="nope/impl.py")


def test_export_writes_a_set_verify_reads_and_keeps_x64_as_it_was(tmp_path: Path):
    x64 = bool(jax.config.jax_enable_x64)
    manifest = oracle.export(tmp_path / "g", cases=["softmax"], sizes=["golden"], regimes=["typical"])
    assert bool(jax.config.jax_enable_x64) == x64
    assert [e["id"] for e in manifest["instances"]] == ["softmax"]
    committed = (GOLDEN / "cases" / "softmax.json").read_bytes()
    assert (tmp_path / "g" / "cases" / "softmax.json").read_bytes() == committed
    assert oracle.verify(tmp_path / "g", impl=str(NUMPY_IMPL)).ok
    with pytest.raises(SpecError, match="unknown size"):
        oracle.export(tmp_path / "h", sizes=["huge"])
    assert not (tmp_path / "h").exists()


def test_an_impl_may_answer_bfloat16_as_ml_dtypes_arrays(tmp_path: Path):
    """The --impl worker sends ml_dtypes.bfloat16 results as float32 (exact), not as an error."""
    impl = tmp_path / "bf16_impl.py"
    impl.write_text(
        "import ml_dtypes, numpy as np\n"
        "def softmax(inputs, ct):\n"
        "    x = inputs['x'].astype(np.float32)\n"
        "    y = np.exp(x - x.max(-1, keepdims=True)); y /= y.sum(-1, keepdims=True)\n"
        "    c = ct.astype(np.float32)\n"
        "    g = y * (c - (c * y).sum(-1, keepdims=True))\n"
        "    return y.astype(ml_dtypes.bfloat16), {'x': g.astype(ml_dtypes.bfloat16)}\n"
    )
    report = oracle.verify(GOLDEN, impl=str(impl), dtype="bfloat16", cases=["softmax"], regimes=["typical"])
    assert report.ok, report.format()
    assert {r.case for r in report.results} == {"softmax"}


def test_a_stage_reports_the_case_it_asked_for():
    report = oracle.verify(GOLDEN, impl=str(NUMPY_IMPL), cases=["mlp.fc1"])
    (row,) = report.to_json()["instances"]
    assert row["instance"] == "mlp.fc1" and row["case"] == "linear" and row["verdict"] == "pass"
