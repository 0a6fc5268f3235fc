"""The committed golden set (``golden/``) is a reviewed artifact: a fresh export equals it byte for
byte, so any change to a reference value or a tolerance shows up in review as a diff.

Regenerate it with ``jaxcalc export golden --sizes golden --force`` (and commit the diff).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from jaxcalc import oracle
from jaxcalc.oracle.exporter import producer

ROOT = Path(__file__).resolve().parents[1]
GOLDEN = ROOT / "golden"
REGENERATE = "jaxcalc export golden --sizes golden --force"


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _first_difference(a: dict, b: dict, path: str = "") -> str:
    """Where two JSON documents first differ, as a path and both values."""
    if isinstance(a, dict) and isinstance(b, dict):
        for k in sorted(set(a) | set(b)):
            if a.get(k, "<absent>") != b.get(k, "<absent>"):
                return _first_difference(a.get(k, "<absent>"), b.get(k, "<absent>"), f"{path}.{k}")
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            if x != y:
                label = x.get("id", i) if isinstance(x, dict) else i
                return _first_difference(x, y, f"{path}[{label}]")
    return f"{path or '.'}: committed {str(a)[:120]} != fresh {str(b)[:120]}"


def test_the_committed_set_is_the_golden_size_in_every_regime_and_column():
    m = json.loads((GOLDEN / "manifest.json").read_text())
    assert m["format_version"] == 2 and m["columns"] == ["float64", "float32", "bfloat16", "float16"]
    assert {e["size"] for e in m["instances"]} == {"golden"}
    from jaxcalc.cases import REGISTRY

    for case in REGISTRY.values():
        regimes = {e["regime"] for e in m["instances"] if e["id"].split("~")[0] == case.name}
        assert regimes == set(case.regime_names), case.name
    assert sum(len(b) for b in _files(GOLDEN).values()) < 8 * 2**20  # a few MiB


@pytest.mark.slow  # two minutes of compiling: run by `pytest -m slow` and in CI (.ci/run)
def test_a_fresh_export_matches_the_committed_set_byte_for_byte(tmp_path: Path):
    committed = json.loads((GOLDEN / "manifest.json").read_text())["producer"]
    here = producer()
    if committed != here:
        pytest.skip(f"golden/ was produced by {committed}, this is {here}: the bytes can only match there")
    fresh = tmp_path / "golden"
    oracle.export(fresh, sizes=["golden"])
    old, new = _files(GOLDEN), _files(fresh)
    assert sorted(old) == sorted(new), f"files differ: run `{REGENERATE}` and review the diff"
    changed = [name for name in old if old[name] != new[name]]
    if changed:
        name = "manifest.json" if "manifest.json" in changed else changed[0]
        where = ""
        if name.endswith(".json"):
            where = _first_difference(json.loads(old[name]), json.loads(new[name]))
        pytest.fail(
            f"{len(changed)} files of golden/ differ from a fresh export, first {name} at {where}; "
            f"if the change is intended, run `{REGENERATE}` and commit the diff"
        )


def test_the_set_reads_with_json_and_numpy_alone(tmp_path: Path):
    """The README's snippet, run in a fresh interpreter that cannot import jaxcalc or jax."""
    readme = (ROOT / "README.md").read_text()
    start = readme.index("<!-- read-golden -->")
    block = readme[start:].split("```python\n", 1)[1].split("```", 1)[0]
    assert len(block.strip().splitlines()) <= 6, block
    guard = (
        "import sys\n"
        "class Refuse:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] in ('jax', 'jaxcalc', 'jaxlib', 'ml_dtypes'):\n"
        "            raise ImportError(name)\n"
        "sys.meta_path.insert(0, Refuse())\n"
    )
    check = "\nassert x.shape == (3, 7) and vjp.shape == (3, 7) and str(x.dtype) == 'float64'\n"
    run = subprocess.run(
        [sys.executable, "-I", "-c", guard + block + check],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr
