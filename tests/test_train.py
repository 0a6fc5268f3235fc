"""Training on the digits: data split, handwritten vs autodiff curves, checkpoints and resume, the CLI."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import pty
import re
import signal
import struct
import subprocess
import sys
import termios
from pathlib import Path

import jax
import numpy as np
import pytest

pytest.importorskip("sklearn", reason="the digits data needs scikit-learn (pip install 'jaxcalc[data]')")

from jaxcalc import checkpoint  # noqa: E402
from jaxcalc.cli import main  # noqa: E402
from jaxcalc.data import MissingExtraError, load_digits, split_indices  # noqa: E402
from jaxcalc.numerics import compare, tolerance  # noqa: E402
from jaxcalc.train import TrainConfig, init_state, train  # noqa: E402

SMALL = TrainConfig(hidden=(32,), epochs=2, batch_size=64, lr=2e-3, seed=3)
SMALL_ARGS = ["--hidden", "32", "--batch-size", "64", "--lr", "0.002", "--seed", "3"]


@pytest.fixture(scope="module")
def digits():
    return load_digits()


def _leaves(tree) -> list[np.ndarray]:
    return [np.asarray(x) for x in jax.tree_util.tree_leaves(tree)]


# ----------------------------------------------------------------------------- data


def test_split_is_fixed_disjoint_and_standardized(digits):
    again = load_digits()
    for a, b in zip(digits, again, strict=True):
        np.testing.assert_array_equal(a, b)
    assert digits.x_train.shape == (1438, 64) and digits.x_test.shape == (359, 64)
    assert digits.x_train.dtype == np.float32 and digits.y_train.dtype == np.int32
    train_idx, test_idx = split_indices(1797)
    assert len(np.intersect1d(train_idx, test_idx)) == 0
    np.testing.assert_array_equal(np.union1d(train_idx, test_idx), np.arange(1797))
    np.testing.assert_allclose(digits.x_train.mean(axis=0), 0, atol=1e-5)
    std = digits.x_train.std(axis=0)
    assert np.all((np.abs(std - 1) < 1e-4) | (std < 1e-6))  # constant pixels stay 0
    assert set(np.unique(digits.y_test)) == set(range(10))


def test_missing_scikit_learn_is_one_line(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "sklearn.datasets", None)
    with pytest.raises(MissingExtraError, match=r"pip install 'jaxcalc\[data\]'"):
        load_digits()
    assert main(["train", "--epochs", "1"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "jaxcalc[data]" in err


# ----------------------------------------------------------------------------- training


def test_handwritten_and_autodiff_give_the_same_curve(digits):
    _, hand = train(SMALL._replace(grad="handwritten"), digits)
    _, auto = train(SMALL._replace(grad="autodiff"), digits)
    a = np.concatenate([r["step_losses"] for r in hand])
    b = np.concatenate([r["step_losses"] for r in auto])
    assert a.shape == (2 * (1438 // 64),)
    cmp = compare(a, b)
    assert cmp.error <= tolerance("float32", "exact"), (
        f"step {cmp.index}: handwritten {cmp.a_value} vs autodiff {cmp.b_value}"
    )
    assert a[-1] < 0.5 * a[0]  # it learns
    for key in ("train_loss", "test_loss"):
        assert compare([r[key] for r in hand], [r[key] for r in auto]).error <= tolerance("float32", "exact")


def test_resume_is_bit_for_bit(digits, tmp_path):
    full_state, full_logs = train(SMALL, digits)
    half_state, half_logs = train(SMALL._replace(epochs=1), digits)
    path = tmp_path / "run.npz"
    checkpoint.save_train_state(path, half_state, SMALL._replace(epochs=1), half_logs)
    state, config, history = checkpoint.load_train_state(path, 64, 10)
    assert (state.epoch, state.step, config.hidden) == (1, 1438 // 64, (32,))
    end_state, rest_logs = train(config._replace(epochs=2), digits, state)
    assert history + rest_logs == full_logs
    for a, b in zip(
        _leaves(end_state.params) + _leaves(end_state.opt_state),
        _leaves(full_state.params) + _leaves(full_state.opt_state),
        strict=True,
    ):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(jax.random.key_data(end_state.key), jax.random.key_data(full_state.key))


def test_save_is_atomic(tmp_path, monkeypatch):
    state = init_state(SMALL, 64, 10)
    path = tmp_path / "run.npz"
    checkpoint.save_train_state(path, state, SMALL, [])
    before = path.read_bytes()
    umask = os.umask(0)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask  # ordinary permissions, not mkstemp's 0o600

    def broken(file, **arrays):
        file.write(b"half a file")
        raise OSError("disk full")

    monkeypatch.setattr(np, "savez", broken)
    with pytest.raises(OSError, match="disk full"):
        checkpoint.save_train_state(path, state._replace(epoch=5), SMALL, [])
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["run.npz"]  # no temporary file left behind


def test_restore_rejects_a_different_shape(tmp_path):
    path = tmp_path / "run.npz"
    checkpoint.save_train_state(path, init_state(SMALL, 64, 10), SMALL, [])
    ckpt = checkpoint.load(path)
    other = [
        {"W": jax.ShapeDtypeStruct((64, 16), np.float32), "b": jax.ShapeDtypeStruct((16,), np.float32)},
        {"W": jax.ShapeDtypeStruct((16, 10), np.float32), "b": jax.ShapeDtypeStruct((10,), np.float32)},
    ]
    with pytest.raises(checkpoint.CheckpointError, match=r"params\[0\]\['W'\] is float32\[64, 32\]"):
        checkpoint.restore_tree(ckpt, "params", other)
    with pytest.raises(checkpoint.CheckpointError, match=r"missing params\[2\]"):
        checkpoint.restore_tree(ckpt, "params", [*other, other[-1]])
    with pytest.raises(checkpoint.CheckpointError, match="64-32-10 model, the data needs 50-32-10"):
        checkpoint.load_train_state(path, 50, 10)


# ----------------------------------------------------------------------------- command line


def _run(argv, capsys):
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_trains_logs_and_resumes(tmp_path, capsys):
    log, ckpt, ckpt2 = tmp_path / "log.json", tmp_path / "run.npz", tmp_path / "two.npz"
    argv = ["train", "--epochs", "2", *SMALL_ARGS, "--json", str(log), "--checkpoint", str(ckpt2)]
    code, out, err = _run(argv, capsys)
    assert code == 0
    assert re.fullmatch(r"test accuracy: \d+\.\d%", out.strip().splitlines()[-1])
    assert "\r" not in out + err and "\x1b" not in out + err  # no progress bar off a terminal
    full = json.loads(log.read_text())
    assert [r["epoch"] for r in full["history"]] == [1, 2]
    assert checkpoint.load(ckpt2).meta["history"] == full["history"]  # every epoch of the run is kept
    assert out.strip().endswith(f"test accuracy: {100 * full['test_accuracy']:.1f}%")

    assert _run(["train", "--epochs", "1", *SMALL_ARGS, "--checkpoint", str(ckpt)], capsys)[0] == 0
    code, out, _ = _run(["train", "--epochs", "2", "--resume", str(ckpt), "--json", str(log)], capsys)
    assert code == 0 and "resumed at epoch 1" in out
    resumed = json.loads(log.read_text())
    assert resumed["history"] == full["history"]
    assert resumed["test_accuracy"] == full["test_accuracy"]


BAD_FILES = {
    "garbage": b"not a checkpoint at all",
    "truncated": None,  # the first half of a real checkpoint
    "foreign_npz": "foreign",  # a valid .npz without jaxcalc metadata
}


@pytest.mark.parametrize("kind", list(BAD_FILES), ids=list(BAD_FILES))
def test_cli_unreadable_checkpoint_is_kept(kind, tmp_path, capsys):
    path = tmp_path / "run.npz"
    if kind == "truncated":
        checkpoint.save_train_state(path, init_state(SMALL, 64, 10), SMALL, [])
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    elif kind == "foreign_npz":
        np.savez(path, weights=np.ones(3))
    else:
        path.write_bytes(BAD_FILES[kind])
    before = path.read_bytes()
    code, out, err = _run(
        ["train", "--epochs", "1", "--resume", str(path), "--checkpoint", str(path)], capsys
    )
    assert code == 2 and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1 and str(path) in err
    assert path.read_bytes() == before


def test_cli_wrong_model_shape_is_refused_and_kept(tmp_path, capsys):
    path = tmp_path / "run.npz"
    assert _run(["train", "--epochs", "1", *SMALL_ARGS, "--checkpoint", str(path)], capsys)[0] == 0
    before = path.read_bytes()
    argv = ["train", "--epochs", "2", "--hidden", "16", "--resume", str(path), "--checkpoint", str(path)]
    code, _, err = _run(argv, capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "--hidden (16,) does not match" in err and "(32,)" in err
    assert path.read_bytes() == before
    assert _run(["train", "--resume", str(tmp_path / "missing.npz")], capsys)[0] == 2


def test_cli_too_many_devices(capsys):
    n = jax.device_count() + 1
    code, _, err = _run(["train", "--epochs", "1", "--devices", str(n)], capsys)
    assert code == 2
    assert err.strip().count("\n") == 0 and f"asked for {n} devices but only {n - 1}" in err


@pytest.mark.slow
def test_default_run_reaches_97_percent(digits):
    state, logs = train(TrainConfig(), digits)
    assert logs[-1]["test_accuracy"] >= 0.97
    assert logs[-1]["train_loss"] < logs[0]["train_loss"] / 10


# ----------------------------------------------------------------------------- hostile input (issue 12)

ROOT = Path(__file__).resolve().parents[1]


@contextlib.contextmanager
def _deadline(seconds: int):
    """Fail, instead of hanging, when the block runs longer than ``seconds``."""

    def expired(signum, frame):
        raise AssertionError(f"still running after {seconds} s")

    previous = signal.signal(signal.SIGALRM, expired)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def _one_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in err, err
    return lines[0]


def test_outputs_colliding_with_inputs_are_refused(tmp_path, cli):
    x = tmp_path / "x"
    code, _, err = cli("train", "--epochs", "1", "--checkpoint", x, "--json", x)
    assert code == 2 and "--checkpoint and --json name the same file" in _one_line(err)
    assert not x.exists()
    ck = tmp_path / "run.npz"
    checkpoint.save_train_state(ck, init_state(SMALL, 64, 10), SMALL, [])
    before = ck.read_bytes()
    (tmp_path / "alias.npz").symlink_to(ck)
    for log in (ck, tmp_path / "alias.npz"):
        code, _, err = cli("train", "--epochs", "1", "--resume", ck, "--json", log)
        assert code == 2 and "would overwrite the checkpoint --resume reads" in _one_line(err)
    assert ck.read_bytes() == before


def test_a_killed_save_leaves_a_temporary_the_next_save_removes(tmp_path):
    target = tmp_path / "ck.npz"
    script = (
        "import sys, time\n"
        "from jaxcalc.checkpoint import atomic_write\n"
        "def write(f):\n"
        "    f.write(b'half'); f.flush(); print('writing', flush=True); time.sleep(120)\n"
        "atomic_write(sys.argv[1], write)\n"
    )
    env = dict(os.environ, PYTHONPATH=str(ROOT), JAX_PLATFORMS="cpu")
    proc = subprocess.Popen(
        [sys.executable, "-c", script, str(target)], stdout=subprocess.PIPE, text=True, env=env
    )
    try:
        with _deadline(60):
            assert proc.stdout.readline().strip() == "writing"
        proc.kill()  # SIGKILL: no cleanup runs
    finally:
        proc.kill()
        proc.wait(timeout=30)
    left = [p.name for p in tmp_path.iterdir()]
    assert len(left) == 1 and re.fullmatch(r"\.tmp-\d+-\w{8}-ck\.npz", left[0]), left
    live = tmp_path / f".tmp-{os.getppid()}-abcdefgh-ck.npz"  # a writer that is still alive is left alone
    live.write_bytes(b"in progress")
    (tmp_path / ".tmp-k3j_x9a2-ck.npz").write_bytes(b"old")  # an older version's, which names no writer
    (tmp_path / ".tmp-k3j_x9a2-other.npz").write_bytes(b"another target's")
    checkpoint.save_train_state(target, init_state(SMALL, 64, 10), SMALL, [])
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ["ck.npz", live.name, ".tmp-k3j_x9a2-other.npz"]
    )
    assert checkpoint.load(target).meta["epoch"] == 0


def test_resume_from_a_fifo_is_refused(tmp_path, cli):
    fifo = tmp_path / "run.npz"
    os.mkfifo(fifo)
    with _deadline(60):
        code, _, err = cli("train", "--epochs", "1", "--resume", fifo)
    assert code == 2 and "is not a regular file" in _one_line(err)


def test_deeply_nested_metadata_is_one_line(tmp_path, cli):
    path = tmp_path / "deep.npz"
    np.savez(path, __meta__=np.array("[" * 100_000 + "]" * 100_000))
    with pytest.raises(checkpoint.CheckpointError, match="nested too deeply"):
        checkpoint.load(path)
    code, _, err = cli("train", "--epochs", "1", "--resume", path)
    assert code == 2 and "nested too deeply" in _one_line(err)


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--seed", str(2**70)], "argument --seed: must lie in [0, 2147483647]"),
        (["--seed", "-1"], "argument --seed: must lie in"),
        (["--hidden", str(2**40)], "argument --hidden: every width must lie in [1, 65536]"),
        (["--hidden", "65536,65536"], "--hidden 65536,65536: a 64-65536-65536-10 MLP has"),
        (["--hidden", ",".join(["8"] * 17)], "argument --hidden: at most 16 hidden layers"),
        (["--batch-size", "100000"], "--batch-size 100000 exceeds the 1438 training examples"),
        (["--batch-size", "0"], "argument --batch-size: must lie in"),
        (["--epochs", "0"], "argument --epochs: must lie in [1, 1000000]"),
        (["--epochs", "1e3"], "argument --epochs: expected an integer"),
        (["--lr", "inf"], "argument --lr: must lie in (0, 10]"),
        (["--lr", "-1"], "argument --lr: must lie in"),
        (["--devices", "0"], "argument --devices: must lie in [1, 4096]"),
        (["--dist-timeout", "1e10"], "argument --dist-timeout: expected an integer"),
        (
            ["--num-processes", str(2**40), "--process-id", "0", "--coordinator", "h:1"],
            "--num-processes: must",
        ),
    ],
)
def test_numeric_options_are_bounded(argv, message, cli):
    with _deadline(120):
        code, _, err = cli("train", "--epochs", "1", *argv) if "--epochs" not in argv else cli("train", *argv)
    assert code == 2 and message in _one_line(err)


def test_resume_with_no_epochs_left_says_so(tmp_path, cli):
    path = tmp_path / "run.npz"
    state = init_state(SMALL, 64, 10)._replace(epoch=60, step=60 * 22)
    checkpoint.save_train_state(path, state, SMALL._replace(epochs=60), [])
    code, _, err = cli("train", "--resume", path, "--epochs", "50")
    line = _one_line(err)
    assert code == 2 and "--epochs 50: the checkpoint" in line and "already holds 60 epochs" in line
    state = state._replace(epoch=100, step=100 * 22)
    checkpoint.save_train_state(path, state, SMALL._replace(epochs=100), [])
    code, _, err = cli("train", "--resume", path)  # the default --epochs is 100
    assert code == 2 and "already holds 100 epochs" in _one_line(err)


def test_help_shows_single_percent_signs(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["train", "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert "97.5%" in out and "%%" not in out
    assert "--coordinator HOST:PORT" in out and "--num-processes N" in out and "--process-id I" in out


def test_progress_bar_on_a_terminal_keeps_log_lines_clean(tmp_path):
    """On a terminal stderr tqdm draws the bar; stdout (a pipe) gets only whole log lines."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))  # a terminal has a size
    env = dict(os.environ, PYTHONPATH=str(ROOT), JAX_PLATFORMS="cpu")
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "jaxcalc", "train", "--epochs", "3", *SMALL_ARGS],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=slave,
            text=True,
            timeout=120,
        )
        os.close(slave)
        slave = None
        chunks = []
        with contextlib.suppress(OSError):  # EIO once the terminal's writer is gone
            while data := os.read(master, 65536):
                chunks.append(data)
    finally:
        os.close(master)
        if slave is not None:
            os.close(slave)
    bar = b"".join(chunks).decode(errors="replace")
    assert proc.returncode == 0
    assert "step" in bar and "\r" in bar and "epoch 3/3" in bar  # tqdm's bar, updated per epoch
    lines = proc.stdout.splitlines()
    assert all("\r" not in ln and "\x1b" not in ln for ln in lines)
    assert [ln.split()[1] for ln in lines if ln.startswith("epoch")] == ["1", "2", "3"]
    assert re.fullmatch(r"test accuracy: \d+\.\d%", lines[-1])


def test_checkpoint_cap_is_on_the_total_unpacked_size(tmp_path, monkeypatch, cli):
    path = tmp_path / "bomb.npz"
    members = {f"m{i}": np.zeros(50_000, np.float32) for i in range(8)}  # 8 x 200 kB, compressing to little
    np.savez_compressed(path, **members)
    assert path.stat().st_size < 100_000
    monkeypatch.setattr(checkpoint, "MAX_BYTES", 1_000_000)  # each member fits, their sum does not
    with pytest.raises(
        checkpoint.CheckpointError, match=r"unpacks to 1,60\d,\d{3} bytes, more than 1,000,000"
    ):
        checkpoint.load(path)
    code, _, err = cli("train", "--epochs", "1", "--resume", path)
    assert code == 2 and "unpacks to" in _one_line(err)
