"""The committed golden set (``golden/``) is a reviewed artifact: a fresh export equals it byte for
byte on the CPU it was made on (to float64 rounding on another), so any change to a reference
value or a tolerance shows up in review as a diff.

Regenerate it with ``jaxcalc export golden --sizes golden --force`` (and commit the diff).
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from jaxcalc import oracle
from jaxcalc.numerics import COLUMNS
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


# XLA's CPU code depends on the vector instructions of the machine it compiles for (AVX-512
# or AVX2 sum in different orders), so float64 values exported on another CPU may differ in
# their last bits. Such a file still matches when everything but its float64 numbers is
# identical and each float64 array (a JSON list, an .npz array) agrees to ROUNDING, normwise;
# any other scalar computed from them to SCALAR_ROUNDING of itself.
ROUNDING = 1e-13
SCALAR_ROUNDING = 1e-9
# A tolerance measured above its floor (10 x the float32 error measured on this CPU) and the
# floor derived from it move with that measurement (padded_attention's vjp/k: 1.17e-5 on one
# CPU, 1.20e-5 on another); a changed rule (factor 10 to 5) moves them by half or more.
TOLERANCE_DRIFT = 0.25
_MEASURED = re.compile(r"(tolerance|measured error) [-+.e0-9]+")


def _rounding_only(old: bytes, new: bytes, name: str) -> str:
    """'' when two versions of a file differ only by float64 rounding, else where they differ."""
    import io

    import numpy as np

    def close(a, b, rounding: float = ROUNDING) -> bool:
        a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
        if a.shape != b.shape:
            return False
        same = (a == b) | (np.isnan(a) & np.isnan(b))
        if same.all():
            return True
        fin = np.isfinite(a) & np.isfinite(b)
        scale = np.max(np.abs(a[fin]), initial=0.0)
        return bool((same | fin).all() and np.max(np.abs(a - b)[fin & ~same]) <= rounding * scale)

    if name.endswith(".npz"):
        a, b = np.load(io.BytesIO(old)), np.load(io.BytesIO(new))
        if a.files != b.files:
            return f"{name}: arrays {a.files} != {b.files}"
        for k in a.files:
            x, y = a[k], b[k]
            if x.dtype != y.dtype or (not np.array_equal(x, y, equal_nan=x.dtype.kind == "f") and
                                      (x.dtype != np.float64 or not close(x, y))):
                return f"{name}: {k}"
        return ""

    def walk(a, b, path: str, key: str = "") -> str:
        if isinstance(a, list) and a and all(isinstance(x, float) for x in a):
            ok = isinstance(b, list) and all(isinstance(y, float) for y in b) and close(a, b)
            return "" if ok else path
        if isinstance(a, dict) and isinstance(b, dict) and a.keys() == b.keys():
            # a measured error is a measurement of rounding on this CPU (attention's float32
            # value: 7.07e-8 on one, 5.27e-8 on another): not compared; what it sets is
            keys = [k for k in a if k != "measured_error"]
            return next((w for k in keys if (w := walk(a[k], b[k], f"{path}.{k}", k))), "")
        if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
            return next((w for i, (x, y) in enumerate(zip(a, b, strict=True)) if (w := walk(x, y, f"{path}[{i}]"))), "")
        if isinstance(a, str) and isinstance(b, str):  # a derivation quotes measured numbers
            return "" if _MEASURED.sub("~", a) == _MEASURED.sub("~", b) else path
        if isinstance(a, float) and isinstance(b, float):
            drift = TOLERANCE_DRIFT if key in ("tolerance", "floor") else SCALAR_ROUNDING
            return "" if close([a], [b], drift) else path
        return "" if a == b else path

    return walk(json.loads(old), json.loads(new), name)


LOW_PRECISION = tuple(name for name, col in COLUMNS.items() if col.low)  # bfloat16, float16


def _without_low_precision(files: dict[str, bytes]) -> dict[str, bytes]:
    """The set's files with the low-precision columns' tolerances (the manifest's) and column
    entries (each case file's) left out, and the producer's cpu_low_precision."""
    out = dict(files)
    for name, data in files.items():
        if not name.endswith(".json"):
            continue
        doc = json.loads(data)
        if name == "manifest.json":
            doc["producer"].pop("cpu_low_precision", None)
            for entry in doc["instances"]:
                for col in LOW_PRECISION:
                    entry.get("tolerances", {}).pop(col, None)
        else:
            for col in LOW_PRECISION:
                doc.get("columns", {}).pop(col, None)
        out[name] = json.dumps(doc, indent=1).encode()
    return out


def test_the_low_precision_columns_are_left_out_only_there():
    """What a CPU with other low-precision instructions leaves out: those two columns' entries,
    nothing of float64 or float32, and nothing at all of the .npz arrays."""
    files = _files(GOLDEN)
    kept = _without_low_precision(files)
    assert sorted(kept) == sorted(files)
    m, k = json.loads(files["manifest.json"]), json.loads(kept["manifest.json"])
    assert "cpu_low_precision" in m["producer"] and "cpu_low_precision" not in k["producer"]
    for a, b in zip(m["instances"], k["instances"], strict=True):
        assert set(a["tolerances"]) - set(b["tolerances"]) <= set(LOW_PRECISION)
        assert {c: a["tolerances"][c] for c in b["tolerances"]} == b["tolerances"]
        assert "float64" in b["tolerances"] and "float32" in b["tolerances"]
    assert all(kept[n] == files[n] for n in files if n.endswith(".npz"))


@pytest.mark.slow  # two minutes of compiling: run by `pytest -m slow` and in CI (.ci/run)
def test_a_fresh_export_matches_the_committed_set(tmp_path: Path):
    """Byte for byte on the CPU the set was made on; elsewhere, every reference to float64
    rounding (ROUNDING) and every tolerance to the drift of its measurement (TOLERANCE_DRIFT)."""
    committed = json.loads((GOLDEN / "manifest.json").read_text())["producer"]
    here = producer()
    other_low = {k: v for k, v in committed.items() if k != "cpu_low_precision"} == {
        k: v for k, v in here.items() if k != "cpu_low_precision"
    }
    if committed != here and not other_low:
        pytest.skip(f"golden/ was produced by {committed}, this is {here}: the bytes can only match there")
    fresh = tmp_path / "golden"
    oracle.export(fresh, sizes=["golden"])
    old, new = _files(GOLDEN), _files(fresh)
    if committed != here:
        # A CPU with other native float16 / bfloat16 instructions measures other low-precision
        # errors (exporter.cpu_low_precision): those columns are compared on such a CPU only.
        old, new = (_without_low_precision(files) for files in (old, new))
    assert sorted(old) == sorted(new), f"files differ: run `{REGENERATE}` and review the diff"
    changed = [name for name in old if old[name] != new[name] and name != "manifest.json"]
    wrong = [w for name in changed if (w := _rounding_only(old[name], new[name], name))]
    # the manifest may differ only in the sizes and hashes of files that differ by rounding
    manifest = [json.loads(old["manifest.json"]), json.loads(new["manifest.json"])]
    for m in manifest:
        for entry in m["instances"]:
            for f in entry["files"].values():
                if f["path"] in changed or committed != here:  # (there: their content compared above)
                    f.pop("sha256"), f.pop("bytes")
    if manifest[0] != manifest[1]:
        as_bytes = [json.dumps(m).encode() for m in manifest]
        if (where := _rounding_only(*as_bytes, "manifest.json")):
            wrong.insert(0, f"{where} (committed {_first_difference(*manifest)})")
    if wrong:
        pytest.fail(
            f"{len(wrong)} files of golden/ differ from a fresh export, first {wrong[0]}; "
            f"if the change is intended, run `{REGENERATE}` and commit the diff"
        )


def test_rounding_only_accepts_last_bits_and_nothing_else():
    import io

    import numpy as np

    def npz(**arrays) -> bytes:
        buf = io.BytesIO()
        np.savez(buf, **arrays)
        return buf.getvalue()

    x = np.linspace(-1.0, 2.0, 7)
    ulp = x + np.spacing(x) * 8
    assert _rounding_only(npz(a=x, n=np.arange(3)), npz(a=ulp, n=np.arange(3)), "c.npz") == ""
    assert _rounding_only(npz(a=x), npz(a=x + 1e-9), "c.npz") == "c.npz: a"
    x32 = x.astype(np.float32)
    assert _rounding_only(npz(a=x32), npz(a=x32 + np.spacing(x32)), "c.npz")  # other dtypes: exact only
    assert _rounding_only(npz(n=np.arange(3)), npz(n=np.arange(1, 4)), "c.npz")
    doc = {"tol": 1e-5, "outputs": {"vjp": {"data": list(x)}}, "shape": [7]}
    assert _rounding_only(json.dumps(doc).encode(), json.dumps({**doc, "outputs": {"vjp": {"data": list(ulp)}}}).encode(), "c.json") == ""
    assert _rounding_only(json.dumps(doc).encode(), json.dumps({**doc, "tol": 1.00001e-5}).encode(), "c.json") == "c.json.tol"
    assert _rounding_only(json.dumps(doc).encode(), json.dumps({**doc, "tol": 1e-5 * (1 + 1e-12)}).encode(), "c.json") == ""
    measured = {"tolerance": 1.17e-5, "measured_error": 1.17e-6, "derivation": "tolerance 1.17e-05 (measured error 1.17e-06)"}
    drifted = {"tolerance": 1.2e-5, "measured_error": 1.2e-6, "derivation": "tolerance 1.2e-05 (measured error 1.2e-06)"}
    assert _rounding_only(json.dumps(measured).encode(), json.dumps(drifted).encode(), "m.json") == ""
    halved = {**measured, "tolerance": 0.585e-5}  # a changed rule, not a drift
    assert _rounding_only(json.dumps(measured).encode(), json.dumps(halved).encode(), "m.json") == "m.json.tolerance"
    moved = {**doc, "outputs": {"vjp": {"data": list(x + 1e-9)}}}
    assert _rounding_only(json.dumps(doc).encode(), json.dumps(moved).encode(), "c.json") == "c.json.outputs.vjp.data"


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
