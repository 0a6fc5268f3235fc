"""scripts/gpu_check.py --smoke: every step of the accelerator check runs on this machine at small
sizes and lands in one JSON file and one markdown table. No speed is asserted."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STEPS = [
    "device",
    "check float32, matmul precision highest",
    "check bfloat16",
    "export golden set on the device",
    "verify examples/torch_impl.py, float64",
    "verify examples/torch_impl.py, float32",
    "bench float32, matmul precision highest",
    "bench bfloat16",
]


@pytest.mark.slow  # a minute: run by `pytest -m slow` and in CI (.ci/run)
def test_gpu_check_smoke_runs_every_step_and_writes_json_and_markdown(tmp_path):
    out, md = tmp_path / "gpu.json", tmp_path / "gpu.md"
    argv = [sys.executable, "scripts/gpu_check.py", "--smoke", f"--json={out}", f"--markdown={md}"]
    argv.append("--cases=square")  # one case: the path is the same, the check and export are shorter
    argv.append("--budget_s=500")  # a loaded CI machine must not turn a slow step into a timeout
    p = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
    doc = json.loads(out.read_text())
    assert doc["smoke"] is True and doc["passed"] is True
    steps = {s["step"]: s for s in doc["steps"]}
    assert list(steps) == STEPS
    assert steps["device"]["device"]["backend"] == "cpu"
    f32 = steps["check float32, matmul precision highest"]
    assert f32["status"] == "ok" and f32["summary"]["pass"] > 0 and not f32["failed"]
    assert f32["command"].startswith("JAX_DEFAULT_MATMUL_PRECISION=highest ")
    bf16 = steps["check bfloat16"]["status"]
    assert bf16 == "ok" or (bf16.startswith("unavailable: ") and len(bf16) > len("unavailable: "))
    for dtype in ("float64", "float32"):
        verify = steps[f"verify examples/torch_impl.py, {dtype}"]
        assert verify["status"] == "ok" and verify["result"].startswith("1 passed"), verify
    for step, dtype, precision in (
        ("bench float32, matmul precision highest", "float32", "highest"),
        ("bench bfloat16", "bfloat16", "default"),
    ):
        report = steps[step]["report"]
        assert report["settings"]["dtype"] == dtype and report["settings"]["matmul_precision"] == precision
        rows = {r["name"]: r["figures"] for r in report["workloads"]["transformer_step"]["rows"]}
        assert {"handwritten", "jax.grad"} <= set(rows)
        # bfloat16 rounds the parameters to 8 bits, so the first update's difference is coarse
        assert rows["handwritten"]["update error"]["value"] <= (1e-4 if dtype == "float32" else 0.25)
    text = md.read_text()
    assert "| step | status |" in text and all(f"| {name} |" in text for name in STEPS)
    if bf16 != "ok":
        assert "unavailable" in text
