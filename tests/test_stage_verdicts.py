"""Stages in verify: a bug in one sub-op of a composite is named by the stage it lives in; a bug in
how the composite composes correct sub-ops is reported as such (DESIGN §3b)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from jaxcalc.cli import main

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
DGAMMA = "np.sum(dy * xhat, axis=lead), np.sum(dy, axis=lead)"


# The golden transformer block and its stages, in the committed golden set (tests/conftest.py),
# which `jaxcalc export` wrote with every composite followed by its stages.
STAGES = ("ln1", "attn", "ln2", "fc1", "gelu", "fc2")
BLOCK = ["transformer_block", *(f"transformer_block.{s}" for s in STAGES)]


@pytest.fixture(scope="module")
def golden(committed_golden: Path) -> Path:
    return committed_golden


def _plant(tmp_path: Path, old: str, new: str) -> Path:
    source = (EXAMPLES / "numpy_impl.py").read_text()
    assert source.count(old) == 1
    for sibling in EXAMPLES.glob("*.py"):  # the modules the example imports from its own folder
        (tmp_path / sibling.name).write_text(sibling.read_text())
    path = tmp_path / "numpy_impl.py"
    path.write_text(source.replace(old, new))
    return path


def _verify(golden: Path, impl: Path, tmp_path: Path, capsys) -> tuple[str, dict]:
    report = tmp_path / "r.json"
    capsys.readouterr()
    rc = main(["verify", str(golden), "--impl", str(impl), "--cases", *BLOCK, "--json", str(report)])
    out = capsys.readouterr().out
    assert rc == 1, out
    return out, json.loads(report.read_text())


def test_the_stages_are_exported_with_their_composite(golden: Path) -> None:
    manifest = json.loads((golden / "manifest.json").read_text())
    stages = [e for e in manifest["instances"] if e.get("stage_of") == "transformer_block"]
    assert [e["id"] for e in stages] == BLOCK[1:]
    assert [e["stage"] for e in stages] == list(STAGES)
    ids = [e["id"] for e in manifest["instances"]]
    assert ids[ids.index("transformer_block") :][: len(BLOCK)] == BLOCK  # the composite, then its stages
    assert {e["case"] for e in stages} == {"layernorm", "causal_self_attention", "linear", "gelu_tanh"}


def test_a_sub_op_bug_is_named_by_its_stage(golden: Path, tmp_path: Path, capsys) -> None:
    """layernorm's dgamma scaled by 1.001, inside an implementation whose block calls it."""
    impl = _plant(tmp_path, DGAMMA, "np.sum(dy * xhat, axis=lead) * 1.001, np.sum(dy, axis=lead)")
    out, report = _verify(golden, impl, tmp_path, capsys)
    line = report["stages"]["transformer_block"]
    assert line.startswith("stages of transformer_block: FAIL ln1") and "ln2" in line and "vjp gamma" in line
    assert "attn" not in line.split("; pass")[0] and line in out


def test_a_composition_bug_with_correct_stages(golden: Path, tmp_path: Path, capsys) -> None:
    """The block forgets the residual in its backward: every stage passes, the block fails."""
    impl = _plant(tmp_path, "dh = cotangent + dh_ln", "dh = dh_ln")
    out, report = _verify(golden, impl, tmp_path, capsys)
    assert report["stages"]["transformer_block"].endswith(
        "pass (ln1, attn, ln2, fc1, gelu, fc2): the composition itself is wrong"
    )
