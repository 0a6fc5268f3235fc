"""examples/pytest_torch run as its own pytest project, in a fresh process with this checkout's jaxcalc:

(a) the correct ops pass against the example's default golden set, one test per golden instance
    of each case they claim, in each dtype;
(b) a planted one-pass layernorm variance (E[x**2] - E[x]**2) fails, and only where the offset and
    tiny regimes expose it; the output names the instance and its worst element;
(c) ``-k "softmax and large"`` collects exactly the instances whose ids match.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest

from jaxcalc.testing import golden_cases

torch = pytest.importorskip("torch")

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "pytest_torch"
GOLDEN = ROOT / "golden"
# What the example claims (its OPS and DTYPES): every applicable instance of these cases in these dtypes.
CASES = (
    "softmax", "log_softmax", "softmax_cross_entropy", "layernorm", "rmsnorm", "gelu_tanh",
    "attention", "padded_attention",
)  # fmt: skip
DTYPES = ("float64", "float32", "bfloat16", "float16")
TWO_PASS = "var = (xc * xc).mean(-1, keepdim=True)"
ONE_PASS = "var = (x * x).mean(-1, keepdim=True) - x.mean(-1, keepdim=True) ** 2"


def _expected() -> dict[str, tuple[str, str]]:
    """The example's test ids, ``<instance id>-<dtype>`` -> (case, dtype), read from the manifest."""
    entries = json.loads((GOLDEN / "manifest.json").read_text())["instances"]
    return {
        f"{e['id']}-{d}": (e["case"], d)
        for d in DTYPES
        for e in entries
        if e["case"] in CASES and e["tolerances"][d]["applicable"]
    }


def _pytest(project: Path, cwd: Path, *args: str, golden: Path | None = None) -> tuple[int, str]:
    """``python -m pytest PROJECT -q -p no:cacheprovider ARGS`` in cwd: (exit status, output).

    This checkout's jaxcalc comes first on the path; no plugins are autoloaded, so whatever else is
    installed cannot change the run; ``golden`` sets JAXCALC_GOLDEN (else the example's default).
    """
    env = {k: v for k, v in os.environ.items() if k not in ("JAXCALC_GOLDEN", "PYTEST_ADDOPTS")}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
    env["PYTEST_DISABLE_PLUGIN_AUTOLOAD"] = "1"
    if golden is not None:
        env["JAXCALC_GOLDEN"] = str(golden)
    argv = [sys.executable, "-m", "pytest", str(project), "-q", "-p", "no:cacheprovider", *args]
    p = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    return p.returncode, p.stdout + p.stderr


def _section(out: str, test_id: str) -> str:
    """The failure report of ``test_op[test_id]`` in pytest's output, up to the next report."""
    start = rf"_+ test_op\[{re.escape(test_id)}\] _+\n"
    m = re.search(start + r"(.*?)(?=\n_+ test_op\[|\n=+ short test summary)", out, re.S)
    assert m, f"no failure report for {test_id}"
    return m.group(1)


def test_example_passes_every_instance(tmp_path: Path) -> None:
    """(a): exit 0, and the tests run are exactly the instances the parametrization implies."""
    junit = tmp_path / "junit.xml"
    rc, out = _pytest(EXAMPLE, tmp_path, f"--junit-xml={junit}")
    expected = _expected()
    assert rc == 0, out[-4000:]
    summary = re.search(r"^(\d+) passed in [\d.]+s$", out, re.M)
    assert summary, out[-2000:]
    assert int(summary.group(1)) == len(expected) > 100
    ran = sorted(tc.get("name") for tc in ET.parse(junit).getroot().iter("testcase"))
    assert ran == sorted(f"test_op[{t}]" for t in expected)
    assert set(expected.values()) == {(c, d) for c in CASES for d in DTYPES}  # no case or column left out


def test_planted_one_pass_variance_fails_on_the_offset_regime(tmp_path: Path) -> None:
    """(b): exit 1, only layernorm's offset and tiny instances fail, and the float64 offset report names
    its worst element, the one found here by running the planted op."""
    project = tmp_path / "proj"
    shutil.copytree(EXAMPLE, project, ignore=shutil.ignore_patterns("__pycache__"))
    ops = project / "ops.py"
    assert ops.read_text().count(TWO_PASS) == 1
    ops.write_text(ops.read_text().replace(TWO_PASS, ONE_PASS))
    rc, out = _pytest(project, tmp_path, golden=GOLDEN)
    assert rc == 1, out[-4000:]
    failed = re.findall(r"^FAILED (?:\S+/)?test_ops\.py::test_op\[(\S+)\]", out, re.M)
    assert "layernorm~offset-float64" in failed, out[-4000:]
    assert all(re.fullmatch(r"layernorm~(offset|tiny)-\w+", t) for t in failed), failed
    assert re.search(rf"^{len(failed)} failed, {len(_expected()) - len(failed)} passed in ", out, re.M)

    report = _section(out, "layernorm~offset-float64")
    # the message's first line, and the verify row of the failing quantity: ... [i, j] got expected <--
    head = re.search(
        r"AssertionError: layernorm~offset in float64 .*: value error .* at \[(\d+), (\d+)\]$", report, re.M
    )
    row = re.search(r"^E +layernorm~offset +FAIL +value +\S+ +\S+ +\[(\d+), (\d+)\] .*<--", report, re.M)
    assert head and row, report
    assert head.groups() == row.groups()
    # the worst element, found independently: the planted op run here against the float64 truth
    spec = importlib.util.spec_from_file_location("planted_ops", ops)
    planted = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(planted)
    (inst,) = golden_cases(GOLDEN, dtype="float64", cases=["layernorm~offset"])
    got = planted.layernorm(**{k: torch.from_numpy(a.copy()) for k, a in inst.inputs.items()}).numpy()
    worst = np.unravel_index(np.argmax(np.abs(got - inst.expected_value)), got.shape)
    assert tuple(map(int, row.groups())) == tuple(map(int, worst))


def test_k_selects_by_instance_id(tmp_path: Path) -> None:
    """(c): ``-k "softmax and large"`` collects only the matching instances, in every dtype."""
    rc, out = _pytest(EXAMPLE, tmp_path, "--collect-only", "-k", "softmax and large")
    assert rc == 0, out[-4000:]
    collected = re.findall(r"^(?:\S+/)?test_ops\.py::test_op\[(\S+)\]$", out, re.M)
    everything = _expected()
    chosen = [t for t in everything if "softmax" in t and "large" in t]
    assert sorted(collected) == sorted(chosen)
    assert {t.rsplit("-", 1)[0] for t in chosen} == {
        f"{c}~large" for c in ("softmax", "log_softmax", "softmax_cross_entropy")
    }
    n, k = len(everything), len(chosen)
    assert f"{k}/{n} tests collected ({n - k} deselected)" in out
