"""Verifying implementations against a golden set: a correct one passes, planted bugs fail on the right
case and element, and every kind of bad input (golden set, reply, implementation) gives a one-line
error (exit 2) or a failed case while the other cases still run."""

from __future__ import annotations

import io
import json
import pickle
import re
import shutil
import sys
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from jaxcalc.cases import get_case
from jaxcalc.oracle.arrays import ArrayFormatError, decode_array
from jaxcalc.oracle.exporter import export_golden
from jaxcalc.oracle.golden import sha256_file

# From the DESIGN catalogue: two scalar seeds, a matrix-valued map, a loss with integer labels.
NAMES = ("square", "poly_xy", "softmax", "softmax_cross_entropy")
Run = Callable[..., tuple[int, str, str]]


@pytest.fixture(scope="module")
def golden(tmp_path_factory: pytest.TempPathFactory) -> Path:
    dest = tmp_path_factory.mktemp("verify") / "golden"
    export_golden(dest, [get_case(n) for n in NAMES])
    return dest


def _rows(out: str) -> dict[str, str]:
    """Case name -> its verdict, from the printed table."""
    return {w[0]: w[1] for w in map(str.split, out.splitlines()) if w and w[0] in NAMES}


# ----------------------------------------------------------------------------- implementations

JAX_IMPL = '''
"""A correct implementation built from the registry with JAX autodiff, in the inputs' precision."""
import jax
import jax.numpy as jnp
import numpy as np

from jaxcalc.cases import REGISTRY

BUGS = {bugs!r}


def _make(case):
    def fn(inputs, cotangent):
        x64 = cotangent.dtype == np.float64
        with jax.enable_x64(x64), jax.default_matmul_precision("highest"):
            prim = [
                jnp.asarray(a if a.dtype.kind == "f" else a.astype(np.int64 if x64 else np.int32))
                for a in (inputs[n] for n in case.input_names)
            ]

            def f(*diff):
                full = list(prim)
                for k, d in zip(case.diff_index, diff):
                    full[k] = d
                return case.forward(*full)

            value, pullback = jax.vjp(f, *(prim[k] for k in case.diff_index))
            vjp = {{n: np.array(g) for n, g in zip(case.diff_names, pullback(jnp.asarray(cotangent)))}}
        for name, kind, arg in BUGS.get(case.name, ()):
            g = vjp[name]
            if kind == "scale":
                vjp[name] = g * arg
            else:  # nudge one element by 1% of the largest
                g[tuple(arg)] += 0.01 * np.abs(g).max()
        return np.asarray(value), vjp

    return fn


for _name, _case in REGISTRY.items():
    globals()[_name] = _make(_case)
'''

# Answers from the golden files themselves; each case can be told to misbehave.
ECHO_CMD = """
import json, os, sys, time
root, plan = sys.argv[1], json.loads(sys.argv[2])
for line in sys.stdin:
    req = json.loads(line)
    rid, case = req["id"], req["case"]
    with open(os.path.join(root, "cases", case + ".json")) as f:
        out = json.load(f)["outputs"]
    reply = {"id": rid, "value": out["value"], "vjp": out["vjp"]}
    how = plan.get(case, "ok")
    if how == "hang":
        time.sleep(600)
    if how == "exit":
        print("dying on purpose", file=sys.stderr, flush=True)
        sys.exit(7)
    if how == "garbage":
        print("this is not json", flush=True)
        continue
    if how in ("unsupported", "boom"):
        reply = {"id": rid, "error": how}
    if how == "shape":
        reply["value"] = {"dtype": "float64", "shape": [7, 3], "data": reply["value"]["data"]}
    if how in ("nan", "inf", "null"):
        reply["vjp"]["x"]["data"][9] = {"nan": float("nan"), "inf": float("inf"), "null": None}[how]
    if how == "wrong_id":
        reply["id"] = rid + 100
    if how == "missing_vjp":
        reply["vjp"] = {}
    if how == "not_array":
        reply["value"] = reply["value"]["data"]
    if how == "extra_vjp":
        reply["vjp"]["labels"] = reply["vjp"]["x"]
    print(json.dumps(reply), flush=True)
"""


@pytest.fixture(scope="module")
def echo(tmp_path_factory: pytest.TempPathFactory, golden: Path) -> Callable[[dict], str]:
    script = tmp_path_factory.mktemp("echo") / "echo.py"
    script.write_text(ECHO_CMD)
    return lambda plan: f"{sys.executable} {script} {golden} '{json.dumps(plan)}'"


# ----------------------------------------------------------------------------- correct and buggy


def test_correct_passes_and_a_planted_bug_fails_at_its_element(
    golden: Path, tmp_path: Path, cli: Run
) -> None:
    """float64: the three correct cases pass; the nudged element of one VJP is found and named."""
    impl = tmp_path / "buggy.py"
    impl.write_text(JAX_IMPL.format(bugs={"softmax_cross_entropy": [("logits", "nudge", (2, 5))]}))
    report = tmp_path / "report.json"
    rc, out, err = cli("verify", golden, "--impl", impl, "--json", report)
    assert rc == 1, out + err
    assert _rows(out) == {n: "FAIL" if n == "softmax_cross_entropy" else "pass" for n in NAMES}
    assert out.splitlines()[-1] == "3 passed, 1 failed, 0 skipped"
    data = json.loads(report.read_text())
    assert data["summary"] == "3 passed, 1 failed, 0 skipped" and data["dtype"] == "float64"
    bad = [c for c in data["instances"] if c["verdict"] == "FAIL"]
    assert [c["case"] for c in bad] == ["softmax_cross_entropy"]
    q = {x["name"]: x for x in bad[0]["quantities"]}
    assert q["value"]["passed"] and not q["vjp logits"]["passed"]
    assert q["vjp logits"]["index"] == [2, 5] and "vjp logits error" in bad[0]["message"]
    assert q["vjp logits"]["got"] != q["vjp logits"]["expected"]
    assert abs(q["vjp logits"]["error"] - 0.01) < 1e-9  # exactly the planted 1 % of the largest element


def test_float32_passes_but_a_gradient_scaled_by_1_001_fails(golden: Path, tmp_path: Path, cli: Run) -> None:
    """The calibrated float32 tolerances let float32 round-off through and catch a 0.1 % scale error."""
    impl = tmp_path / "scaled.py"
    impl.write_text(JAX_IMPL.format(bugs={"softmax": [("x", "scale", 1.001)]}))
    rc, out, err = cli("verify", golden, "--impl", impl, "--dtype", "float32")
    assert rc == 1, out + err
    assert _rows(out) == {n: "FAIL" if n == "softmax" else "pass" for n in NAMES}
    assert "vjp x error 1.00e-03 > 1.0e-05" in out
    assert out.splitlines()[-1] == "3 passed, 1 failed, 0 skipped"


def test_correct_implementation_exits_zero(golden: Path, tmp_path: Path, cli: Run) -> None:
    impl = tmp_path / "jax_impl.py"
    impl.write_text(JAX_IMPL.format(bugs={}))
    rc, out, err = cli(
        "verify", golden, "--impl", impl, "--dtype", "float32", "--cases", "softmax_cross_entropy"
    )
    assert rc == 0, out + err
    assert out.splitlines()[-1] == "1 passed, 0 failed, 0 skipped"


# ----------------------------------------------------------------------------- the --cmd protocol

BAD_REPLIES = {
    "shape": "value: shape [7, 3], expected [3, 7]",
    "nan": "vjp x is not finite at [1, 2]",
    "inf": "vjp x is not finite at [1, 2]",
    "null": "vjp x is not finite at [1, 2]",
    "garbage": "reply is not a JSON line",
    "exit": "exited with status 7 without replying: dying on purpose",
    "boom": "implementation error: boom",
    "wrong_id": "reply carries id",
    "missing_vjp": "vjp x: missing from the reply",
    "not_array": "value: expected an array object",
    "extra_vjp": "vjp for ['labels']: not differentiable",
}


@pytest.mark.parametrize("how", list(BAD_REPLIES), ids=list(BAD_REPLIES))
def test_bad_reply_fails_that_case_only(how: str, golden: Path, echo: Callable, cli: Run) -> None:
    rc, out, err = cli("verify", golden, "--cmd", echo({"softmax": how}), "--timeout", "20")
    assert rc == 1, out + err
    assert _rows(out) == {**{n: "FAIL" if n == "softmax" else "pass" for n in NAMES}}
    assert BAD_REPLIES[how] in out
    assert out.splitlines()[-1] == "3 passed, 1 failed, 0 skipped"


def test_unsupported_is_skipped_and_json_to_stdout(golden: Path, echo: Callable, cli: Run) -> None:
    rc, out, err = cli("verify", golden, "--cmd", echo({"poly_xy": "unsupported"}), "--json", "-")
    assert rc == 0
    report = json.loads(out)
    assert report["summary"] == "3 passed, 0 failed, 1 skipped" and report["skipped"] == 1
    assert [c["verdict"] for c in report["instances"]] == ["pass", "skip", "pass", "pass"]


def test_a_stall_is_killed_and_the_program_restarted(golden: Path, echo: Callable, cli: Run) -> None:
    rc, out, err = cli("verify", golden, "--cmd", echo({"poly_xy": "hang"}), "--timeout", "2")
    assert rc == 1 and "no reply within 2 s" in out
    assert _rows(out) == {**{n: "FAIL" if n == "poly_xy" else "pass" for n in NAMES}}


def test_repeated_stalls_stop_the_wait(golden: Path, echo: Callable, cli: Run) -> None:
    plan = {n: "hang" for n in NAMES}
    rc, out, err = cli("verify", golden, "--cmd", echo(plan), "--timeout", "1")
    assert rc == 1 and out.count("no reply within 1 s") == 3
    assert "not run: the implementation stalled on 3 requests in a row" in out
    assert out.splitlines()[-1] == "0 passed, 4 failed, 0 skipped"


def test_command_never_goes_through_a_shell(golden: Path, tmp_path: Path, cli: Run) -> None:
    marker = tmp_path / "marker"
    rc, out, err = cli("verify", golden, "--cmd", f"echo hi; touch {marker}", "--cases", "square")
    assert rc == 1 and "reply is not a JSON line: b'hi; touch" in out
    assert not marker.exists()


@pytest.mark.parametrize(
    ("args", "msg"),
    [
        (["--cmd", "no-such-program-xyz --flag"], "cannot run 'no-such-program-xyz'"),
        (["--cmd", "python 'unbalanced"], "--cmd: cannot split"),
        (["--cmd", "  "], "--cmd: empty command"),
        (["--impl", "does/not/exist.py"], "--impl does/not/exist.py: no such file"),
        (["--impl", "no_such_module_xyz"], "cannot import no_such_module_xyz: ModuleNotFoundError"),
        (["--impl", "x; rm"], "not a module name or a path to a .py file"),
        (["--cmd", "true", "--timeout", "-1"], "must be a positive number of seconds"),
        (["--cmd", "true", "--impl", "m"], "not allowed with argument"),
        (
            ["--cmd", "true", "--cases", "softmx"],
            "'softmx' is neither a case nor an instance of this golden set; did you mean softmax?",
        ),
    ],
    ids=["no-program", "bad-quotes", "empty", "no-file", "no-module", "bad-name", "timeout", "both", "case"],
)
def test_usage_errors_are_one_line(args: list[str], msg: str, golden: Path, cli: Run) -> None:
    rc, out, err = cli("verify", golden, *args)
    assert rc == 2 and msg in err and len(err.strip().splitlines()) == 1, err


# ----------------------------------------------------------------------------- --impl misbehaving

IMPL_BAD = """
import json, os, sys, time
import numpy as np

ROOT = {root!r}


def _golden(case):
    with open(os.path.join(ROOT, "cases", case + ".json")) as f:
        out = json.load(f)["outputs"]
    arr = lambda a: np.array(a["data"], dtype=a["dtype"]).reshape(a["shape"])
    return arr(out["value"]), {{k: arr(v) for k, v in out["vjp"].items()}}


def square(inputs, cotangent):
    raise ValueError("square is broken")


def poly_xy(inputs, cotangent):
    os._exit(7)


def softmax(inputs, cotangent):
    time.sleep(600)


def softmax_cross_entropy(inputs, cotangent):
    print("chatter on stdout must not break the protocol")
    return _golden("softmax_cross_entropy")
"""


def test_impl_that_raises_exits_or_hangs(golden: Path, tmp_path: Path, cli: Run) -> None:
    impl = tmp_path / "bad_impl.py"
    impl.write_text(IMPL_BAD.format(root=str(golden)))
    rc, out, err = cli("verify", golden, "--impl", impl, "--timeout", "2")
    assert rc == 1
    assert _rows(out) == {"square": "FAIL", "poly_xy": "FAIL", "softmax": "FAIL",
                          "softmax_cross_entropy": "pass"}  # fmt: skip
    assert "square raised ValueError: square is broken" in out
    assert "implementation exited with status 7 without replying" in out
    assert "no reply within 2 s" in out


@pytest.mark.parametrize(
    "source", ["raise ImportError('needs\\na GPU')", "def broken(:\n"], ids=["raises", "syntax"]
)
def test_impl_that_does_not_import(source: str, golden: Path, tmp_path: Path, cli: Run) -> None:
    impl = tmp_path / "noimport.py"
    impl.write_text(source)
    rc, out, err = cli("verify", golden, "--impl", impl)
    assert rc == 2 and f"cannot import {impl}" in err and len(err.strip().splitlines()) == 1


# ----------------------------------------------------------------------------- bad golden sets


def _tamper(golden: Path, tmp_path: Path, rel: str, data: bytes, *, rehash: bool) -> Path:
    """A copy of the set with file ``rel`` replaced; ``rehash`` updates its sha256 and bytes."""
    copy = tmp_path / "copy"
    shutil.copytree(golden, copy)
    (copy / rel).write_bytes(data)
    if rehash:
        manifest = json.loads((copy / "manifest.json").read_text())
        for entry in manifest["instances"]:
            for f in entry["files"].values():
                if f["path"] == rel:
                    f["sha256"], f["bytes"] = sha256_file(copy / rel), len(data)
        (copy / "manifest.json").write_text(json.dumps(manifest))
    return copy


class _Trap:
    """Unpickling this would create a file; verify must refuse it without ever unpickling."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple:
        return (Path.touch, (self.path,))


def _pickled_npz(marker: Path) -> bytes:
    """An npz whose one member is an object array: an .npy header, then a pickle (as np.save writes)."""
    member = io.BytesIO()
    header = {"descr": "|O", "fortran_order": False, "shape": (1,)}
    np.lib.format.write_array_header_1_0(member, header)
    member.write(pickle.dumps(np.array([_Trap(marker)], dtype=object), protocol=3))
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("inputs/x.npy", member.getvalue())
    return buf.getvalue()


def test_bad_golden_sets_are_refused(golden: Path, tmp_path: Path, echo: Callable, cli: Run) -> None:
    cmd = echo({})
    marker = tmp_path / "unpickled"
    flipped = bytearray((golden / "cases/softmax.json").read_bytes())
    flipped[200] ^= 0x01
    doc = json.loads((golden / "cases/square.json").read_text())
    doc["outputs"]["value"] = [1.0]
    manifest = json.loads((golden / "manifest.json").read_text())
    manifest["instances"][0]["files"]["json"]["path"] = "../outside.json"
    cases = [
        (lambda: tmp_path / "nowhere", "does not exist"),
        (lambda: _tamper(golden, tmp_path, "cases/softmax.json", bytes(flipped), rehash=False), "sha256"),
        (lambda: _tamper(golden, tmp_path, "cases/square.npz", _pickled_npz(marker), rehash=True), "pickled"),
        (lambda: _tamper(golden, tmp_path, "cases/square.json", json.dumps(doc).encode(), rehash=True),
         "outputs/value: expected an array object {dtype, shape, data}, got a list"),
        (lambda: _tamper(golden, tmp_path, "manifest.json", b"{not json", rehash=False), "not valid JSON"),
        (lambda: _tamper(golden, tmp_path, "manifest.json", json.dumps(manifest).encode(), rehash=False),
         "files.json must give path cases/square.json"),
    ]  # fmt: skip
    for make, msg in cases:
        root = make()
        rc, out, err = cli("verify", root, "--cmd", cmd)
        assert rc == 2 and msg in err and len(err.strip().splitlines()) == 1, err
        shutil.rmtree(tmp_path / "copy", ignore_errors=True)
    no_manifest = tmp_path / "empty"
    no_manifest.mkdir()
    rc, out, err = cli("verify", no_manifest, "--cmd", cmd)
    assert rc == 2 and "has no manifest.json" in err
    assert not marker.exists()


@pytest.mark.parametrize(
    ("obj", "msg"),
    [
        ([1.0, 2.0], "expected an array object"),
        ({"dtype": "float64", "shape": [2]}, "missing ['data']"),
        ({"dtype": "float64", "shape": [1], "data": [1.0], "x": 1}, "unexpected ['x']"),
        ({"dtype": "object", "shape": [1], "data": [1.0]}, "dtype 'object' is not one of"),
        ({"dtype": "float64", "shape": [-1], "data": []}, "shape must be a list of non-negative integers"),
        ({"dtype": "float64", "shape": 2, "data": [1.0, 2.0]}, "shape must be a list"),
        ({"dtype": "float64", "shape": [2, 2], "data": [1.0, 2.0]}, "needs 4 values, data has 2"),
        ({"dtype": "float64", "shape": [2], "data": [[1.0], [2.0]]}, "data[0] is a list, not a number"),
        ({"dtype": "float64", "shape": [1], "data": ["1.0"]}, "data[0] is a string"),
        ({"dtype": "float64", "shape": [1], "data": [True]}, "data[0] is a boolean"),
        ({"dtype": "float64", "shape": [1], "data": [float("nan")]}, "not a finite number"),
        ({"dtype": "float64", "shape": [1], "data": [None]}, "data[0] is null"),
        ({"dtype": "int64", "shape": [1], "data": [1.5]}, "not a 64-bit integer"),
        ({"dtype": "int64", "shape": [1], "data": [2**63]}, "not a 64-bit integer"),
    ],
)
def test_decode_refuses_anything_not_in_the_format(obj: object, msg: str) -> None:
    with pytest.raises(ArrayFormatError, match="^where: .*" + re.escape(msg)):
        decode_array(obj, "where")


def test_a_pickled_npz_member_is_refused_unread(tmp_path: Path) -> None:
    from jaxcalc.oracle.arrays import load_npz

    marker = tmp_path / "unpickled"
    path = tmp_path / "evil.npz"
    path.write_bytes(_pickled_npz(marker))
    with pytest.raises(ArrayFormatError, match="pickled objects; refused"):
        load_npz(path)
    path.write_bytes(pickle.dumps({"a": 1}))
    with pytest.raises(ArrayFormatError, match="not an npz"):
        load_npz(path)
    assert not marker.exists()
