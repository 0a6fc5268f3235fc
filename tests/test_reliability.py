"""Hostile input, hostile implementations and hostile surroundings: each ends in one error line
(exit 2) or a failed case, never a traceback, a hang, unbounded memory or a lost file.

Tests that need a real process (a setsid grandchild, SIGTERM, /dev/full, a closed pipe) run it
as a subprocess under a timeout and kill what they started."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import time
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from jaxcalc.cases import get_case
from jaxcalc.oracle import safety
from jaxcalc.oracle.arrays import ArrayFormatError, decode_array, load_npz, loads, npz_bytes
from jaxcalc.oracle.exporter import ExportError, export_golden
from jaxcalc.oracle.golden import GoldenError, load_golden, sha256_file
from jaxcalc.oracle.protocol import _Session

Run = Callable[..., tuple[int, str, str]]
ROOT = Path(__file__).resolve().parents[1]
LIMIT = 60  # seconds any subprocess here may take before the test counts it as a hang


@pytest.fixture(scope="module")
def golden(tmp_path_factory: pytest.TempPathFactory) -> Path:
    dest = tmp_path_factory.mktemp("rel") / "golden"
    export_golden(dest, [get_case("square"), get_case("poly_xy")])
    return dest


def _client(tmp_path: Path, body: str) -> str:
    """A --cmd client: ``body`` runs for each request ``req`` (json, sys, os, subprocess imported)."""
    script = tmp_path / "client.py"
    lines = "\n".join("    " + line for line in body.strip().splitlines())
    script.write_text(
        f"import json, os, subprocess, sys\nfor line in sys.stdin:\n    req = json.loads(line)\n{lines}\n"
    )
    return f"{sys.executable} {script}"


def _jaxcalc(*args: object, **kw) -> subprocess.CompletedProcess:
    if "stdout" not in kw:
        kw["capture_output"] = True
    return subprocess.run(
        [sys.executable, "-m", "jaxcalc", *map(str, args)], cwd=ROOT, text=True, timeout=LIMIT, **kw
    )


def _dead(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return Path(f"/proc/{pid}/stat").read_text().split(") ")[1].startswith("Z")


def _one_error_line(rc: int, err: str, msg: str) -> None:
    assert rc == 2 and msg in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err, err


# ----------------------------------------------------------------------------- export: nothing lost


def test_force_replaces_only_a_whole_golden_set(golden: Path, tmp_path: Path) -> None:
    app = tmp_path / "src"
    app.mkdir()
    (app / "manifest.json").write_text('{"name": "my web app", "icons": []}')
    (app / "README.md").write_text("mine")
    with pytest.raises(ExportError, match="not a jaxcalc golden set"):
        export_golden(app, [get_case("square")], force=True)
    assert sorted(p.name for p in app.iterdir()) == ["README.md", "manifest.json"]

    other = tmp_path / "g"
    export_golden(other, [get_case("square")])
    (other / "NOTES.md").write_text("notes")
    with pytest.raises(ExportError, match=r"not part of its golden set \(NOTES.md\)"):
        export_golden(other, [get_case("square")], force=True)
    assert (other / "NOTES.md").read_text() == "notes"
    (other / "NOTES.md").unlink()
    export_golden(other, [get_case("poly_xy")], force=True)  # a whole golden set is replaced
    assert [c["case"] for c in load_golden(other).manifest["instances"]] == ["poly_xy"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["g", "src"]  # no lock file or temporary left


def test_a_second_export_to_a_locked_destination_fails(tmp_path: Path) -> None:
    dest = tmp_path / "g"
    busy = pytest.raises(ExportError, match=rf"another process \(pid {os.getpid()}\) is writing")
    with safety.dir_lock(dest), busy:  # the lock is what a running export holds
        export_golden(dest, [get_case("square")])
    assert not dest.exists()
    export_golden(dest, [get_case("square")])  # the lock is gone with its holder


# ----------------------------------------------------------------------------- hangs


def test_blank_lines_forever_do_not_rearm_the_deadline(golden: Path, tmp_path: Path) -> None:
    cmd = _client(
        tmp_path, 'sys.stdout.write("\\n" * 100000); sys.stdout.flush()\nwhile True: print(flush=True)'
    )
    proc = _jaxcalc("verify", golden, "--cmd", cmd, "--timeout", "1")
    assert proc.returncode == 1 and "no reply within 1 s" in proc.stdout, proc.stdout + proc.stderr
    assert "stalled on" in proc.stdout or proc.stdout.count("no reply") == 2


def test_a_setsid_grandchild_holding_stdout_is_killed_and_does_not_hang(golden: Path, tmp_path: Path) -> None:
    pidfile = tmp_path / "grandchild.pid"
    cmd = _client(
        tmp_path,
        f"""
if not os.path.exists({str(pidfile)!r}):
    p = subprocess.Popen(["setsid", "sleep", "300"])  # inherits our stdout and leaves our group
    open({str(pidfile)!r}, "w").write(str(p.pid))
print(json.dumps({{"id": req["id"], "error": "unsupported"}}), flush=True)
""",
    )
    proc = _jaxcalc("verify", golden, "--cmd", cmd)
    assert "0 passed, 0 failed, 2 skipped" in proc.stdout and "Traceback" not in proc.stderr, proc.stderr
    pid = int(pidfile.read_text())
    try:
        assert _dead(pid)
    finally:
        if not _dead(pid):
            os.kill(pid, signal.SIGKILL)


def test_sigterm_to_verify_ends_the_implementation_and_its_children(golden: Path, tmp_path: Path) -> None:
    pidfile = tmp_path / "pids"
    cmd = _client(
        tmp_path,
        f"""
p = subprocess.Popen(["sleep", "300"])
open({str(pidfile)!r}, "w").write(f"{{os.getpid()}} {{p.pid}}")
p.wait()
""",
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "jaxcalc", "verify", str(golden), "--cmd", cmd],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + LIMIT
        while (
            not (pidfile.exists() and len(pidfile.read_text().split()) == 2) and time.monotonic() < deadline
        ):
            time.sleep(0.1)
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=LIMIT)
    finally:
        proc.kill()
    pids = [int(p) for p in pidfile.read_text().split()]
    assert proc.returncode == 143 and err.strip() == "error: terminated", err
    try:
        assert all(_dead(p) for p in pids)
    finally:
        for p in pids:
            if not _dead(p):
                os.kill(p, signal.SIGKILL)


# ----------------------------------------------------------------------------- memory


def test_reply_and_stderr_lines_are_capped(tmp_path: Path) -> None:
    """An endless line fails the request at the cap; an endless stderr line is cut, not hoarded."""
    script = (
        "import sys; sys.stderr.write('e' * 50000 + '\\n'); sys.stderr.flush(); sys.stdout.write('x' * 10**6)"
    )
    session = _Session([sys.executable, "-c", script], max_line=1000)
    try:
        with pytest.raises(Exception, match="longer than"):
            session.receive(LIMIT)
        time.sleep(0.2)
        assert max(map(len, session.stderr)) <= safety.MAX_STDERR_LINE + 10
    finally:
        session.kill()


def test_npz_total_and_header_claims_are_refused_before_allocation(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "bomb.npz"
    path.write_bytes(npz_bytes({f"a{k}": np.zeros(1000) for k in range(4)}))  # 4 x 8 kB
    monkeypatch.setattr(safety, "MAX_NPZ_TOTAL", 20_000)
    with pytest.raises(ArrayFormatError, match="over the 20000 limit"):
        load_npz(path, "cases/bomb.npz")
    monkeypatch.undo()
    for shape in ("(1125899906842624,)", "(-5,)", "(" + "1," * 40 + ")"):
        header = f"{{'descr': '<f8', 'fortran_order': False, 'shape': {shape}, }}".ljust(117) + "\n"
        member = b"\x93NUMPY\x01\x00" + len(header).to_bytes(2, "little") + header.encode() + b"\0" * 64
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w") as zf:
            zf.writestr("x.npy", member)
        path.write_bytes(buf.getvalue())
        with pytest.raises(ArrayFormatError, match="cases/bomb.npz:x.npy"):
            load_npz(path, "cases/bomb.npz")


def test_case_file_larger_than_its_manifest_entry_is_refused_unread(golden: Path, tmp_path: Path) -> None:
    copy = tmp_path / "g"
    import shutil

    shutil.copytree(golden, copy)
    with open(copy / "cases/square.json", "ab") as f:
        f.write(b" " * 10_000)
    with pytest.raises(GoldenError, match=r"cases/square.json is \d+ bytes, the manifest says \d+"):
        load_golden(copy)


def test_npz_errors_name_the_file_under_cases(golden: Path, tmp_path: Path) -> None:
    import shutil

    copy = tmp_path / "g"
    shutil.copytree(golden, copy)
    (copy / "cases/square.npz").write_bytes(b"not a zip at all")
    manifest = json.loads((copy / "manifest.json").read_text())
    files = manifest["instances"][0]["files"]["npz"]
    files["sha256"], files["bytes"] = sha256_file(copy / "cases/square.npz"), 16
    (copy / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(GoldenError, match=rf"^{copy}/cases/square.npz: not an npz"):
        load_golden(copy)


# ----------------------------------------------------------------------------- no tracebacks


@pytest.mark.parametrize(
    "obj, msg",
    [
        ({"dtype": "float64", "shape": [1] * 65, "data": [1.0]}, "65 dimensions"),
        ({"dtype": "float64", "shape": [10**400], "data": []}, "more than"),
        ({"dtype": "float64", "shape": [], "data": [10**400]}, "too large for a float"),
        ({"dtype": "int64", "shape": [], "data": [10**400]}, "not a 64-bit integer"),
    ],
)
def test_decode_refuses_huge_shapes_and_numbers(obj: object, msg: str) -> None:
    with pytest.raises(ArrayFormatError, match=msg):
        decode_array(obj, "x")


def test_deep_json_is_refused_without_recursion_error() -> None:
    for text in ("[" * 100_000 + "]" * 100_000, '{"a":' * 200 + "1" + "}" * 200):
        with pytest.raises(ValueError, match="nested deeper than 64"):
            loads(text)


@pytest.mark.parametrize(
    "edit, msg",
    [
        (lambda m: {**m, "producer": "x"}, "'producer' must be an object"),
        (lambda m: {**m, "deep": json.loads("[" * 500 + "]" * 500)}, "nested deeper"),
        (
            lambda m: {**m, "instances": [{**m["instances"][0], "tolerances": "x"}]},
            "'tolerances' must be an object",
        ),
        (lambda m: {**m, "instances": [{**m["instances"][0], "inputs": [7]}]}, "bad input 7"),
    ],
)
def test_malformed_manifests_are_one_line(edit, msg: str, golden: Path, tmp_path: Path, cli: Run) -> None:
    import shutil

    copy = tmp_path / "g"
    shutil.copytree(golden, copy)
    manifest = json.loads((copy / "manifest.json").read_text())
    (copy / "manifest.json").write_text(json.dumps(edit(manifest)))
    rc, out, err = cli("verify", copy, "--cmd", "true")
    _one_error_line(rc, err, msg)


def test_error_text_is_escaped_on_one_line(golden: Path, tmp_path: Path, cli: Run) -> None:
    """Newlines cannot forge rows, escape codes and CR never reach the terminal, surrogates print."""
    forged = '"boom\\n99 passed, 0 failed, 0 skipped\\r\\x1b[2K\\ud800"'
    cmd = _client(tmp_path, f'print(json.dumps({{"id": req["id"], "error": {forged}}}), flush=True)')
    rc, out, err = cli("verify", golden, "--cmd", cmd)
    assert rc == 1 and out.splitlines()[-1] == "0 passed, 2 failed, 0 skipped"
    assert "\x1b" not in out and "\r" not in out
    assert not [line for line in out.splitlines() if line.startswith("99 passed")]
    assert "boom\\n99 passed, 0 failed, 0 skipped\\r\\x1b[2K\\ud800" in out


def test_deep_reply_fails_that_case_only(golden: Path, tmp_path: Path, cli: Run) -> None:
    cmd = _client(
        tmp_path,
        """
if req["case"] == "square":
    print('{"id": %d, "value": %s}' % (req["id"], "[" * 5000 + "]" * 5000), flush=True)
else:
    print(json.dumps({"id": req["id"], "error": "unsupported"}), flush=True)
""",
    )
    rc, out, err = cli("verify", golden, "--cmd", cmd)
    assert (
        rc == 1
        and "reply refused: JSON nested deeper than 64" in out
        and "0 passed, 1 failed, 1 skipped" in out
    )


def test_numeric_options_are_bounded_and_negative_numbers_are_values(golden: Path, cli: Run) -> None:
    rc, out, err = cli("verify", golden, "--cmd", "true", "--timeout", "1e10")
    _one_error_line(rc, err, "--timeout: must be a positive number of seconds, at most 86400")
    rc, out, err = cli("descent", "--x0", "-1e3", "--steps", "1")
    assert rc == 0 and out.splitlines()[0] == "Epoch 1: x = -800.0000, f(x) = 640000.0000"
    rc, out, err = cli("descent", "--lr", "-1e-3")
    _one_error_line(rc, err, "--lr must be a positive finite number")


def test_unwritable_json_is_refused_before_any_work(golden: Path, tmp_path: Path, cli: Run) -> None:
    marker = tmp_path / "started"
    cmd = _client(tmp_path, f"open({str(marker)!r}, 'w')")
    for target, msg in (("/proc/self/report.json", "cannot write --json"), (str(tmp_path), "is a directory")):
        rc, out, err = cli("verify", golden, "--cmd", cmd, "--json", target)
        _one_error_line(rc, err, msg)
    assert not marker.exists()


def test_cases_typo_gets_a_suggestion(golden: Path, cli: Run) -> None:
    rc, out, err = cli("verify", golden, "--cmd", "true", "--cases", "sqare")
    _one_error_line(rc, err, "did you mean square?")


# ----------------------------------------------------------------------------- output that cannot be written


def test_full_disk_and_closed_pipe_are_errors_not_success(golden: Path, tmp_path: Path) -> None:
    impl = tmp_path / "impl.py"
    impl.write_text("def square(inputs, c):\n    return inputs['x'] ** 2, {'x': 2 * inputs['x'] * c}\n")
    with open("/dev/full", "w") as full:
        proc = _jaxcalc("verify", golden, "--impl", impl, stdout=full, stderr=subprocess.PIPE)
    assert proc.returncode == 2 and proc.stderr.strip().startswith("error: cannot write the output"), (
        proc.stderr
    )
    read, write = os.pipe()
    os.close(read)  # the reader has gone, like `| head -n 1` after its line
    try:
        proc = _jaxcalc("verify", golden, "--impl", impl, stdout=write, stderr=subprocess.PIPE)
    finally:
        os.close(write)
    assert proc.returncode == 2 and "broken pipe" in proc.stderr and "Traceback" not in proc.stderr, (
        proc.stderr
    )


# ----------------------------------------------------------------------------- honest results


def test_longdouble_replies_pass_and_a_run_that_verifies_nothing_exits_1(
    golden: Path, tmp_path: Path, cli: Run
) -> None:
    impl = tmp_path / "ld.py"
    impl.write_text(
        "import numpy as np\n"
        "def square(inputs, c):\n"
        "    x = inputs['x'].astype(np.longdouble)\n"
        "    return x * x, {'x': 2 * x * c}\n"
    )
    rc, out, err = cli("verify", golden, "--impl", impl)
    assert rc == 0 and "1 passed, 0 failed, 1 skipped" in out, out + err
    empty = tmp_path / "empty.py"
    empty.write_text("# implements nothing\n")
    rc, out, err = cli("verify", golden, "--impl", empty)
    assert rc == 1 and "0 passed, 0 failed, 2 skipped" in out
    assert "nothing was verified: all 2 cases were skipped" in err


def test_bench_only_help_lists_the_workloads() -> None:
    from jaxcalc.bench import WORKLOADS

    proc = _jaxcalc("bench", "--help")
    text = " ".join(proc.stdout.split())
    assert proc.returncode == 0 and f"(of: {', '.join(WORKLOADS)}; default all)" in text


def test_json_output_keeps_links_and_writes_fifos_in_place(golden: Path, tmp_path: Path) -> None:
    # A --json path that is a symbolic link updates its target and keeps the link; a FIFO is
    # written into, never replaced by a regular file; a FIFO nobody reads is a one-line error,
    # not a hang. (A device such as /dev/full takes the in-place path too.)
    import threading

    impl = tmp_path / "impl.py"
    impl.write_text("def square(inputs, c):\n    return inputs['x'] ** 2, {'x': 2 * inputs['x'] * c}\n")
    target, link = tmp_path / "target.json", tmp_path / "link.json"
    target.write_text("old\n")
    link.symlink_to(target)
    proc = _jaxcalc("verify", golden, "--impl", impl, "--cases", "square", "--json", link)
    assert proc.returncode == 0, proc.stderr
    assert link.is_symlink() and json.loads(target.read_text())["passed"] == 1

    fifo = tmp_path / "report.fifo"
    os.mkfifo(fifo)
    got: list[bytes] = []
    reader = threading.Thread(target=lambda: got.append(fifo.read_bytes()), daemon=True)
    reader.start()
    proc = _jaxcalc("verify", golden, "--impl", impl, "--cases", "square", "--json", fifo)
    reader.join(timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert fifo.is_fifo() and json.loads(got[0])["passed"] == 1

    proc = _jaxcalc("verify", golden, "--impl", impl, "--cases", "square", "--json", fifo)
    assert proc.returncode == 2 and proc.stderr.strip().startswith("error: cannot write"), proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and fifo.is_fifo()


def test_a_case_file_replaced_by_a_link_or_a_fifo_is_named_so_unread(golden: Path, tmp_path: Path) -> None:
    import shutil

    impl = tmp_path / "impl.py"
    impl.write_text("def square(inputs, c):\n    return inputs['x'] ** 2, {'x': 2 * inputs['x'] * c}\n")
    for kind, msg in (("link", "is a symbolic link, not the file itself"), ("fifo", "is not a regular file")):
        copy = tmp_path / f"golden-{kind}"
        shutil.copytree(golden, copy)
        case = copy / "cases" / "square.json"
        kept = tmp_path / f"square-{kind}.json"
        case.rename(kept)
        case.symlink_to(kept) if kind == "link" else os.mkfifo(case)  # a FIFO nobody writes: no hang
        proc = _jaxcalc("verify", copy, "--impl", impl, "--cases", "square")
        _one_error_line(proc.returncode, proc.stderr, f"cases/square.json {msg}")


def test_a_huge_reply_is_refused_before_it_is_serialised(golden: Path, tmp_path: Path) -> None:
    from jaxcalc.oracle.safety import MAX_REPLY_NUMBERS

    impl = tmp_path / "impl.py"
    impl.write_text(
        "import numpy as np\n"
        f"def square(inputs, c):\n    return np.zeros({MAX_REPLY_NUMBERS} + 1), "
        "{'x': 2 * inputs['x'] * c}\n"
        "def poly_xy(inputs, c):\n"
        "    x, y = inputs['x'], inputs['y']\n"
        "    return 3 * x * x + 2 * y, {'x': 6 * x * c, 'y': 2 * c + 0 * y}\n"
    )
    report = tmp_path / "report.json"
    proc = _jaxcalc("verify", golden, "--impl", impl, "--json", report)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr
    text = report.read_text()
    assert "over the limit of" in text and json.loads(text)["passed"] >= 1
