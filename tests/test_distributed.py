"""`jaxcalc train` over jax.distributed: real processes on 127.0.0.1, compared with one process.

Every process is started in its own session and killed (with its whole group) when a test
ends, passes or fails; every wait has a timeout.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("sklearn", reason="the digits data needs scikit-learn (pip install 'jaxcalc[data]')")

from jaxcalc import checkpoint  # noqa: E402
from jaxcalc.cli import main  # noqa: E402
from jaxcalc.data import load_digits  # noqa: E402
from jaxcalc.train import TrainConfig, train  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
ARGS = ["--hidden", "16", "--batch-size", "64", "--lr", "0.003", "--seed", "5"]
CONFIG = TrainConfig(hidden=(16,), batch_size=64, lr=0.003, seed=5)
RUN_S = 120  # the longest any launched process may run
DIST_TIMEOUT = 15  # --dist-timeout of the failure tests (a dead peer is seen sooner)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Proc:
    """One `python -m jaxcalc train` process, its stdout and stderr read by threads."""

    def __init__(self, argv: list[str]) -> None:
        env = {  # nothing that would make JAX detect a cluster of its own
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("SLURM_", "OMPI_", "TPU_", "KUBERNETES_", "JAX_COORDINATOR"))
            and k != "XLA_FLAGS"
        }
        env.update(JAX_PLATFORMS="cpu", PYTHONPATH=str(ROOT))
        self.popen = subprocess.Popen(
            [sys.executable, "-m", "jaxcalc", "train", *argv],
            cwd=ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        self.lines: queue.Queue[str] = queue.Queue()
        self.out: list[str] = []
        self.err: list[str] = []
        self._readers = [
            threading.Thread(target=self._read, args=(self.popen.stdout, self.out, True), daemon=True),
            threading.Thread(target=self._read, args=(self.popen.stderr, self.err, False), daemon=True),
        ]
        for t in self._readers:
            t.start()

    def _read(self, stream, into: list[str], tell: bool) -> None:
        for line in stream:
            into.append(line.rstrip("\n"))
            if tell:
                self.lines.put(line)

    def wait_for(self, text: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if text in self.lines.get(timeout=0.2):
                    return
            except queue.Empty:
                if self.popen.poll() is not None and self.lines.empty():
                    break
        raise AssertionError(f"no {text!r} within {timeout} s; stdout {self.out}, stderr {self.err}")

    def finish(self, timeout: float) -> tuple[int, float]:
        """(exit status, seconds waited); raises when the process is still running after ``timeout``."""
        t0 = time.monotonic()
        try:
            code = self.popen.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(
                f"still running after {timeout} s; stdout {self.out}, stderr {self.err}"
            ) from None
        for t in self._readers:
            t.join(timeout=5)
        return code, time.monotonic() - t0

    def kill(self) -> None:
        if self.popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.popen.pid, signal.SIGKILL)
            self.popen.wait(timeout=30)


@pytest.fixture
def launch():
    """Start processes; every one of them (and its children) is killed at the end of the test."""
    started: list[Proc] = []

    def start(argv: list[str]) -> Proc:
        started.append(Proc(argv))
        return started[-1]

    yield start
    for p in started:
        p.kill()


def _cluster(launch, n: int, argv: list[str], per_process: dict[int, list[str]] | None = None) -> list[Proc]:
    port = _free_port()
    return [
        launch(
            [
                *argv,
                *(per_process or {}).get(i, []),
                "--coordinator",
                f"127.0.0.1:{port}",
                "--num-processes",
                str(n),
                "--process-id",
                str(i),
            ]
        )
        for i in range(n)
    ]


def _relative(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.max(np.abs(a - b) / np.abs(b)))


@pytest.fixture(scope="module")
def digits():
    return load_digits()


@pytest.fixture(scope="module")
def reference(digits) -> list[dict]:
    """The history of one process training 4 epochs; a shorter run's is its first epochs (the
    two-process run of 3 epochs below is checked against the first 3)."""
    return train(CONFIG._replace(epochs=4), digits)[1]


def _assert_same_run(history: list[dict], reference: list[dict]) -> None:
    assert [r["epoch"] for r in history] == [r["epoch"] for r in reference]
    for got, want in zip(history, reference, strict=True):
        for key in ("train_loss", "test_loss"):
            assert _relative(got[key], want[key]) <= 1e-6, (got["epoch"], key, got[key], want[key])
        assert _relative(got["step_losses"], want["step_losses"]) <= 1e-6, got["epoch"]
        assert got["test_accuracy"] == want["test_accuracy"], got["epoch"]


def test_two_processes_train_like_one(launch, reference, tmp_path, capsys):
    (tmp_path / "p0").mkdir()
    (tmp_path / "p1").mkdir()
    extra = {
        i: [
            "--checkpoint",
            str(tmp_path / f"p{i}" / "run.npz"),
            "--json",
            str(tmp_path / f"p{i}" / "log.json"),
        ]
        for i in (0, 1)
    }
    procs = _cluster(launch, 2, ["--epochs", "3", *ARGS], extra)
    codes = [p.finish(RUN_S)[0] for p in procs]
    assert codes == [0, 0], [p.err for p in procs]
    lead, other = procs
    assert "over 2 processes" in lead.out[0] and "cpu x2" in lead.out[0]
    assert other.out == [] and other.err == []  # only process 0 prints ...
    assert os.listdir(tmp_path / "p1") == []  # ... and writes
    log = json.loads((tmp_path / "p0" / "log.json").read_text())
    assert log["processes"] == 2 and len(log["devices"]) == 2
    assert lead.out[-1] == f"test accuracy: {100 * log['test_accuracy']:.1f}%"
    assert not any("Gloo" in line for line in lead.out + lead.err)  # the runtime's chatter is held back

    _assert_same_run(log["history"], reference[:3])
    assert log["test_accuracy"] == reference[2]["test_accuracy"]

    # The checkpoint of two processes resumes in one.
    ck, log1 = tmp_path / "p0" / "run.npz", tmp_path / "one.json"
    assert main(["train", "--epochs", "4", "--resume", str(ck), "--json", str(log1)]) == 0
    assert "resumed at epoch 3" in capsys.readouterr().out
    _assert_same_run(json.loads(log1.read_text())["history"], reference)


def test_one_process_checkpoint_resumes_in_two(launch, digits, reference, tmp_path):
    state, first = train(CONFIG._replace(epochs=1), digits)
    ck = tmp_path / "run.npz"
    checkpoint.save_train_state(ck, state, CONFIG._replace(epochs=1), first)
    log = tmp_path / "log.json"
    procs = _cluster(launch, 2, ["--epochs", "3", "--resume", str(ck)], {0: ["--json", str(log)]})
    assert [p.finish(RUN_S)[0] for p in procs] == [0, 0], [p.err for p in procs]
    assert "resumed at epoch 1" in procs[0].out[0]
    _assert_same_run(json.loads(log.read_text())["history"], reference[:3])


def _one_error_line(proc: Proc) -> str:
    assert len(proc.err) == 1, proc.err
    assert proc.err[0].startswith("error: ") and "Traceback" not in proc.err[0]
    return proc.err[0]


def test_an_unreadable_resume_stops_every_process_alike(launch, tmp_path):
    missing = tmp_path / "missing.npz"  # process 0 reads it and tells the others
    procs = _cluster(launch, 2, ["--epochs", "3", "--resume", str(missing)])
    for p in procs:
        assert p.finish(RUN_S)[0] == 2
        assert f"checkpoint {str(missing)!r} does not exist" in _one_error_line(p)


@pytest.mark.parametrize(
    "victim, how",
    [(1, "SIGKILL"), (0, "SIGKILL"), (1, "SIGTERM")],
    ids=["worker_killed", "coordinator_killed", "worker_terminated"],
)
def test_a_dead_process_ends_the_others(launch, victim, how):
    argv = ["--epochs", "100000", *ARGS, "--dist-timeout", str(DIST_TIMEOUT)]
    procs = _cluster(launch, 2, argv)
    procs[0].wait_for("epoch    1", RUN_S)  # training is under way
    if how == "SIGKILL":
        procs[victim].kill()  # the process and its supervisor, without a word
    else:
        procs[victim].popen.send_signal(signal.SIGTERM)  # to the supervisor, which passes it on
        assert procs[victim].finish(30)[0] == 2
        assert f"process {victim} of the distributed run stopped: it was ended by SIGTERM" in _one_error_line(
            procs[victim]
        )
    survivor = procs[1 - victim]
    code, waited = survivor.finish(3 * DIST_TIMEOUT + 30)
    assert code == 2
    line = _one_error_line(survivor)
    assert f"process {1 - victim} of the distributed run stopped: " in line
    # Whichever notices first: the failed all-reduce, or (for process 0) the runtime's lost connection.
    said = ["another process of the run died"] + (["lost the coordinator 127.0.0.1:"] if victim == 0 else [])
    assert any(s in line for s in said), line


def test_unreachable_coordinator(launch):
    port = _free_port()  # nobody listens there
    argv = [
        "--epochs",
        "1",
        "--coordinator",
        f"127.0.0.1:{port}",
        "--num-processes",
        "2",
        "--process-id",
        "1",
    ]
    proc = launch([*argv, "--dist-timeout", "1"])
    code, _ = proc.finish(60)
    assert code == 2
    line = _one_error_line(proc)
    assert f"could not reach the coordinator 127.0.0.1:{port} within 1 s" in line


def test_process_id_out_of_range(launch):
    port = _free_port()
    common = ["--epochs", "1", "--coordinator", f"127.0.0.1:{port}", "--num-processes", "2"]
    good = launch([*common, "--process-id", "0", "--dist-timeout", "1"])
    bad = launch([*common, "--process-id", "2"])
    assert bad.finish(60)[0] == 2
    assert "--process-id 2 is out of range for --num-processes 2 (0..1)" in _one_error_line(bad)
    assert good.finish(60)[0] == 2
    assert "not every process connected to 127.0.0.1" in _one_error_line(good)


def test_distributed_without_a_cluster_is_one_line(launch):
    proc = launch(["--epochs", "1", "--distributed", "--dist-timeout", "1"])
    assert proc.finish(60)[0] == 2
    assert "found no multi-process run to join" in _one_error_line(proc)


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--coordinator", "127.0.0.1:1"], "give --coordinator, --num-processes and --process-id together"),
        (["--coordinator", "nohost", "--num-processes", "2", "--process-id", "0"], "expected HOST:PORT"),
        (
            ["--coordinator", "h:1", "--num-processes", "0", "--process-id", "0"],
            "--num-processes: must lie in",
        ),
    ],
)
def test_bad_distributed_flags(argv, message, cli):
    code, _, err = cli("train", "--epochs", "1", *argv)
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1
