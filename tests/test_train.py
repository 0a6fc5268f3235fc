"""Training on the digits: data split, handwritten vs autodiff curves, checkpoints and resume, the CLI."""

from __future__ import annotations

import json
import os
import re
import sys

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
    log, ckpt = tmp_path / "log.json", tmp_path / "run.npz"
    code, out, _ = _run(["train", "--epochs", "2", *SMALL_ARGS, "--json", str(log)], capsys)
    assert code == 0
    assert re.fullmatch(r"test accuracy: \d+\.\d%", out.strip().splitlines()[-1])
    full = json.loads(log.read_text())
    assert [r["epoch"] for r in full["history"]] == [1, 2]
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
