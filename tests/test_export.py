"""Golden-set export: the array format, exact float64 round-trips, deterministic bytes, atomic writes,
values against independent witnesses, refusal of a wrong handwritten derivative, and the manifest."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jaxcalc.cases import Case, Input, get_case, instance
from jaxcalc.cases._base import uniform
from jaxcalc.numerics import COLUMNS, compare, reference_mode
from jaxcalc.oracle import reference as ref
from jaxcalc.oracle.arrays import decode_array, encode_array, load_npz, loads, npz_bytes
from jaxcalc.oracle.exporter import ExportError, export_golden
from jaxcalc.oracle.golden import flatten, load_golden, sha256_file

# Cases from the DESIGN catalogue: a scalar loss, one with integer labels, one with two inputs.
NAMES = ("square", "softmax_cross_entropy", "poly_xy")
CLI = [sys.executable, "-c", "import sys; from jaxcalc.cli import main; sys.exit(main())"]


@pytest.fixture(scope="module")
def golden(tmp_path_factory: pytest.TempPathFactory) -> Path:
    dest = tmp_path_factory.mktemp("export") / "golden"
    export_golden(dest, [get_case(n) for n in NAMES])
    return dest


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


# ----------------------------------------------------------------------------- array format


@settings(max_examples=60, deadline=None)
@given(st.data(), st.sampled_from([("float64", 64), ("float32", 32)]))
def test_float_arrays_round_trip_bit_for_bit(data: st.DataObject, dtype_width: tuple[str, int]) -> None:
    dtype, width = dtype_width
    floats = st.floats(allow_nan=False, allow_infinity=False, width=width)
    values = data.draw(st.lists(floats, min_size=1, max_size=12))
    a = np.array(values, dtype=dtype).reshape(len(values), 1)
    back = decode_array(json.loads(json.dumps(encode_array(a))))
    assert back.dtype == a.dtype and back.shape == a.shape
    assert back.tobytes() == a.tobytes()  # bit for bit, -0.0 and subnormals included


def test_scalar_and_int64_format() -> None:
    assert encode_array(np.float64(3.0)) == {"dtype": "float64", "shape": [], "data": [3.0]}
    ids = np.array([[2**63 - 1, -(2**63)], [0, 7]], dtype=np.int64)
    enc = encode_array(ids)
    assert enc == {"dtype": "int64", "shape": [2, 2], "data": [2**63 - 1, -(2**63), 0, 7]}
    assert np.array_equal(decode_array(enc), ids)
    with pytest.raises(ValueError, match="cannot encode dtype 'object'"):
        encode_array(np.array([object()], dtype=object))


def test_npz_is_stable_readable_and_never_unpickles(tmp_path: Path) -> None:
    arrays = {"outputs/vjp/x": np.arange(6.0).reshape(2, 3), "inputs/ids": np.array([1, 2], np.int64)}
    first = npz_bytes(arrays)
    time.sleep(1.1)  # np.savez would stamp a new time into the zip here
    assert npz_bytes(arrays) == first
    path = tmp_path / "a.npz"
    path.write_bytes(first)
    with np.load(path, allow_pickle=False) as npz:
        assert sorted(npz.files) == sorted(arrays)
        assert np.array_equal(npz["outputs/vjp/x"], arrays["outputs/vjp/x"])
    assert all(np.array_equal(v, arrays[k]) for k, v in load_npz(path).items())


# ----------------------------------------------------------------------------- the written set


def test_export_is_byte_identical_when_repeated(golden: Path, tmp_path: Path) -> None:
    again = tmp_path / "again"
    export_golden(again, [get_case(n) for n in NAMES])
    first, second = _files(golden), _files(again)
    assert sorted(first) == ["cases/" + f"{n}.{e}" for n in sorted(NAMES) for e in ("json", "npz")] + [
        "manifest.json"
    ]
    assert first == second


def test_manifest_describes_every_instance(golden: Path) -> None:
    manifest = json.loads((golden / "manifest.json").read_text())
    assert manifest["format"] == "jaxcalc-golden" and manifest["format_version"] == 2
    assert manifest["columns"] == list(COLUMNS) and set(manifest["column_rules"]) == set(COLUMNS)
    producer = manifest["producer"]
    assert producer["x64"] is True and producer["matmul_precision"] == "highest"
    assert {"jaxcalc", "jax", "backend", "device"} <= set(producer)
    assert [e["id"] for e in manifest["instances"]] == list(NAMES)
    for entry in manifest["instances"]:
        case = get_case(entry["case"])
        inst = instance(case)
        assert (entry["size"], entry["regime"], entry["dims"]) == ("golden", "typical", dict(inst.dims))
        assert entry["description"] == case.description
        assert [(i["name"], tuple(i["shape"]), i["differentiable"]) for i in entry["inputs"]] == [
            (i.name, inst.shapes[i.name], i.differentiable) for i in case.inputs
        ]
        assert [i["dtype"] for i in entry["inputs"]] == [i.dtype for i in case.inputs]
        assert tuple(entry["output"]["shape"]) == case.output_shape()
        keys = {"value", *(f"vjp/{n}" for n in case.diff_names)}
        t64, t32 = entry["tolerances"]["float64"], entry["tolerances"]["float32"]
        for col in (t64, t32):
            assert col["applicable"] and set(col["outputs"]) == keys and col["derivation"]
        for key in keys:
            o64, o32 = t64["outputs"][key], t32["outputs"][key]
            assert o64["tolerance"] == max(1e-10, 10 * o64["measured_error"])
            assert o32["tolerance"] == max(10 * o32["measured_error"], 1e-5) < 1e-3
            # really measured in float32: above float64 round-off (or exact), well below 1e-4
            assert o32["measured_error"] < 1e-4
            assert o32["floor"] * o32["tolerance"] > 0 or case.name == "poly_xy"
        assert max(o["measured_error"] for o in t32["outputs"].values()) > 1e-12
        for low in ("bfloat16", "float16"):
            col = entry["tolerances"][low]
            assert col["applicable"] and set(col["outputs"]) == keys
            # FlashAttention's rule: at least the reference's own rounding error, below 0.25
            for o in col["outputs"].values():
                assert o["rounding_error"] * COLUMNS[low].floor <= o["tolerance"] < 0.25
        for f in entry["files"].values():
            assert sha256_file(golden / f["path"]) == f["sha256"]


def test_values_match_independent_witnesses(golden: Path) -> None:
    """value = forward; vjp = c . J and jvp = J . t by contracting the exported Jacobian; the seed's 2x."""
    loaded = load_golden(golden)
    for name in NAMES:
        case = get_case(name)
        doc = loads((golden / "cases" / f"{name}.json").read_bytes())
        arrays = {k: decode_array(v) for k, v in flatten(doc).items()}
        sample = case.sample("float64")
        for n in case.input_names:  # seeded inputs, exactly
            assert arrays[f"inputs/{n}"].tobytes() == sample[n].tobytes()
        with reference_mode("float64"):
            value = np.asarray(case.forward(*(jnp.asarray(sample[n]) for n in case.input_names)))
        assert compare(arrays["outputs/value"], value).error <= 1e-12
        c, out_rank = arrays["cotangent"], arrays["outputs/value"].ndim
        jvp = 0.0
        for n in case.diff_names:
            jac = arrays[f"outputs/jacobian/{n}"]
            contracted = np.tensordot(c, jac, axes=out_rank)
            assert compare(arrays[f"outputs/vjp/{n}"], contracted).error <= 1e-12
            t = arrays[f"tangents/{n}"]
            jvp = jvp + np.tensordot(jac, t, axes=t.ndim)
        assert compare(arrays["outputs/jvp"], jvp).error <= 1e-12
        assert np.array_equal(loaded.cases[name].value, arrays["outputs/value"])
    sq = {k: decode_array(v) for k, v in flatten(loads((golden / "cases/square.json").read_bytes())).items()}
    x, c, t = sq["inputs/x"], sq["cotangent"], sq["tangents/x"]
    assert sq["outputs/vjp/x"] == c * 2 * x and sq["outputs/hvp/x"] == 2 * t  # f' = 2x, f'' = 2


def test_sizes_regimes_and_low_precision_columns(tmp_path: Path) -> None:
    """A tiles instance holds its own shapes; -inf inputs round-trip; a low-precision column's truth
    is float64 on the inputs rounded to its dtype, which the reader rounds the same way."""
    dest = tmp_path / "g"
    insts = [
        instance("softmax", "tiles"),
        instance("softmax", "golden", "masked"),
        instance("layernorm", "golden", "offset"),
    ]
    export_golden(dest, insts)
    loaded = load_golden(dest)
    assert list(loaded.cases) == ["softmax@tiles", "softmax~masked", "layernorm~offset"]
    tiles = loaded.cases["softmax@tiles"]
    assert tiles.inputs["x"].shape == instance("softmax", "tiles").shapes[
        "x"
    ] and "tangents" not in json.loads((dest / "cases/softmax@tiles.json").read_text())
    masked = loaded.cases["softmax~masked"]
    assert (
        np.isneginf(masked.inputs["x"]).any() and (masked.value[np.isneginf(masked.inputs["x"])] == 0).all()
    )
    import ml_dtypes

    for col, dt in (("bfloat16", ml_dtypes.bfloat16), ("float16", np.float16)):
        c = masked.columns[col]
        assert c.applicable and c.inputs["x"].dtype == dt
        x = c.inputs["x"].astype(np.float64)
        with reference_mode("float64"):
            truth = np.asarray(get_case("softmax").forward(jnp.asarray(x)))
        assert compare(c.value, truth).error <= 1e-14  # the truth on the rounded inputs
        assert compare(c.value, masked.value).error > 1e-6  # not the float64 truth
    # rows at 1e4 +- 1: bfloat16's 8 bits cannot hold the spread; the column says so, never loosens
    off = loaded.cases["layernorm~offset"].columns
    assert not off["float16"].applicable and "float16" in off["float16"].reason  # rows at 1e4 overflow its sums
    assert off["float32"].applicable and max(t for t, _ in off["float32"].outputs.values()) > 1e-4


def test_refuses_a_case_whose_handwritten_vjp_is_wrong(tmp_path: Path) -> None:
    wrong = Case(
        name="square_wrong",
        description="x**2 with the derivative 2.001x",
        inputs=(Input("x", (), uniform(1.0, 2.0)),),
        forward=lambda x: x * x,
        vjp=lambda p, ct: (ct * 2.001 * p[0],),
    )
    dest = tmp_path / "g"
    with pytest.raises(ref.DisagreementError, match=r"square_wrong: handwritten VJP for 'x' disagrees"):
        export_golden(dest, [get_case("square"), wrong])
    assert list(tmp_path.iterdir()) == []  # no set, no temporary directory


def test_existing_destination_needs_force(golden: Path, tmp_path: Path) -> None:
    dest = tmp_path / "g"
    export_golden(dest, [get_case("square")])
    before = _files(dest)
    with pytest.raises(ExportError, match="already exists; pass --force"):
        export_golden(dest, [get_case("poly_xy")])
    assert _files(dest) == before
    export_golden(dest, [get_case("poly_xy")], force=True)
    assert sorted(_files(dest)) == ["cases/poly_xy.json", "cases/poly_xy.npz", "manifest.json"]
    assert [p.name for p in tmp_path.iterdir()] == ["g"]
    other = tmp_path / "notes"
    other.mkdir()
    (other / "keep.txt").write_text("mine")
    with pytest.raises(ExportError, match="is not a jaxcalc golden set; refusing"):
        export_golden(other, [get_case("square")], force=True)
    assert (other / "keep.txt").read_text() == "mine"


def _start_and_kill(dest: Path, *extra: str) -> None:
    """Run the CLI export with a pause after each case; SIGKILL it once a case file is written."""
    env = {**os.environ, "_JAXCALC_EXPORT_PAUSE": "60"}
    cmd = [*CLI, "export", str(dest), "--cases", "square", "poly_xy", *extra]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        while not list(dest.parent.glob(f".{dest.name}.export-*/cases/square.npz")):
            assert proc.poll() is None, proc.stderr.read().decode()
            assert time.monotonic() < deadline, "export never wrote its first case"
            time.sleep(0.05)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL


def test_killed_export_leaves_nothing_or_the_previous_set(tmp_path: Path) -> None:
    dest = tmp_path / "g"
    _start_and_kill(dest)
    assert not dest.exists()  # a fresh export killed midway leaves no set
    export_golden(dest, [get_case("square")])  # also removes the dead export's temporary directory
    assert [p.name for p in tmp_path.iterdir()] == ["g"]
    before = _files(dest)
    _start_and_kill(dest, "--force")
    assert _files(dest) == before  # the previous set, whole
    load_golden(dest)
    export_golden(dest, [get_case("poly_xy")], force=True)
    assert [p.name for p in tmp_path.iterdir()] == ["g"]


def test_cli_export_json_and_errors(tmp_path: Path, cli: Callable[..., tuple[int, str, str]]) -> None:
    dest = tmp_path / "g"
    rc, out, err = cli("export", str(dest), "--cases", "square", "--json")
    assert rc == 0, err
    summary = json.loads(out)
    assert list(summary["instances"]) == ["square"] and summary["producer"]["x64"] is True
    assert summary["instances"]["square"]["files"]["json"]["sha256"] == sha256_file(
        dest / "cases/square.json"
    )
    for args, msg in (
        ([str(dest), "--cases", "square"], "already exists; pass --force"),
        ([str(tmp_path / "x"), "--cases", "sqaure"], "unknown case 'sqaure'; did you mean square"),
        ([str(tmp_path / "x"), "--sizes", "tile"], "unknown size 'tile'; did you mean tiles?"),
        ([str(tmp_path / "x"), "--regimes", "huge"], "unknown regime 'huge'"),
        (
            [str(tmp_path / "x"), "--dims", "attention.T=5"],
            "case attention has no dim T; its dims: Tq, d, Tk, dv",
        ),
        (
            [str(tmp_path / "x"), "--dims", "attention.Tq=99999", "attention.Tk=99999"],
            "MAX_INSTANCE_ELEMENTS",
        ),
        ([str(tmp_path / "x"), "--dims", "attention.Tq"], "expected CASE.DIM=N"),
        ([str(tmp_path / "no" / "such" / "g")], "parent directory"),
        ([str(tmp_path / "afile" / "g")], "afile is not a directory"),
        ([str(tmp_path / "x"), "--cases", "nosuch"], "unknown case 'nosuch'; see 'jaxcalc cases'"),
    ):
        (tmp_path / "afile").touch()
        rc, out, err = cli("export", *args)
        assert rc == 2 and msg in err and len(err.strip().splitlines()) == 1


def test_a_case_file_larger_than_the_reader_takes_is_not_written(tmp_path: Path, monkeypatch) -> None:
    from jaxcalc.oracle import safety

    monkeypatch.setattr(safety, "MAX_CASE_FILE_BYTES", 500)
    dest = tmp_path / "g"
    msg = r"square: its case file square\.json would be [\d,]+ bytes, over the 500-byte"
    with pytest.raises(ExportError, match=msg):
        export_golden(dest, [get_case("square")])
    assert not dest.exists() and not list(tmp_path.iterdir())
