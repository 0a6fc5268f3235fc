"""Gradient descent: closed-form trajectories, pytree losses, and `jaxcalc descent` printing the seed."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxcalc import seed
from jaxcalc.descent import descent, descent_with_grad


def seed_loop(x0=10, learning_rate=0.1, steps=20) -> list[str]:
    """The seed's own loop, verbatim, in plain Python floats."""

    def f(x):
        return x**2

    def derivative_f(x):
        return 2 * x

    x = x0
    lines = []
    for i in range(steps):
        grad = derivative_f(x)
        x = x - learning_rate * grad
        lines.append(f"Epoch {i + 1}: x = {x:.4f}, f(x) = {f(x):.4f}")
    return lines


# ----------------------------------------------------------------------------- the library


def test_trajectory_is_closed_form():
    # x_n = x0 (1 - 2 lr)**n = 10 * 0.8**n
    closed = 10 * 0.8 ** np.arange(1, 21)
    with jax.enable_x64(True):
        auto = descent(seed.square, jnp.asarray(10.0), 0.1, 20)
        hand = jax.jit(descent_with_grad, static_argnums=(0, 1, 4))(
            seed.square, seed.square_grad, jnp.asarray(10.0), 0.1, 20
        )
    for traj in (auto, hand):
        assert traj.params.shape == (20,)
        np.testing.assert_allclose(traj.params, closed, rtol=1e-13)
        np.testing.assert_allclose(traj.losses, closed**2, rtol=1e-13)
    assert round(float(hand.params[0]), 4) == 8.0
    assert round(float(hand.params[-1]), 4) == 0.1153


def test_fused_loop_on_a_pytree_loss():
    target = {"w": jnp.array([1.0, -2.0, 0.5]), "b": jnp.asarray(3.0)}

    def loss(p):
        return jnp.sum((p["w"] - target["w"]) ** 2) + (p["b"] - target["b"]) ** 2

    x0 = {"w": jnp.zeros(3), "b": jnp.asarray(-1.0)}
    with jax.enable_x64(True):
        x0 = jax.tree.map(lambda v: jnp.asarray(v, jnp.float64), x0)
        traj = descent(loss, x0, 0.25, 6)
    factor = (1 - 2 * 0.25) ** np.arange(1, 7)  # each coordinate: t + (x0 - t)(1 - 2 lr)**n
    np.testing.assert_allclose(traj.params["w"], np.asarray(target["w"]) * (1 - factor[:, None]), rtol=1e-13)
    np.testing.assert_allclose(traj.params["b"], 3.0 + (-1.0 - 3.0) * factor, rtol=1e-13)
    assert traj.losses.shape == (6,)
    assert np.all(np.diff(np.asarray(traj.losses)) < 0)


# ----------------------------------------------------------------------------- jaxcalc descent


def test_cli_prints_the_seeds_lines_exactly(cli):
    expected = seed_loop()
    assert expected[0] == "Epoch 1: x = 8.0000, f(x) = 64.0000"
    assert expected[-1] == "Epoch 20: x = 0.1153, f(x) = 0.0133"
    rc, out, err = cli("descent")
    assert rc == 0, err
    assert out.splitlines() == expected
    assert out.splitlines()[0] == "Epoch 1: x = 8.0000, f(x) = 64.0000"
    assert out.splitlines()[-1] == "Epoch 20: x = 0.1153, f(x) = 0.0133"


@pytest.mark.parametrize(
    ("x0", "lr", "steps"), [(10, 0.1, 20), (-3.5, 0.05, 7), (2.0, 0.7, 5), (1e3, 0.3, 12)]
)
def test_cli_matches_the_seed_loop_for_other_settings(cli, x0, lr, steps):
    rc, out, _ = cli("descent", "--x0", str(x0), "--lr", str(lr), "--steps", str(steps))
    assert rc == 0
    assert out.splitlines() == seed_loop(x0, lr, steps)


def test_cli_chain_affine_square_converges_to_minus_1_5(cli):
    rc, out, _ = cli("descent", "--fn", "chain_affine_square", "--lr", "0.05", "--steps", "60")
    assert rc == 0
    lines = out.splitlines()
    assert len(lines) == 60
    assert lines[-1] == "Epoch 60: x = -1.5000, f(x) = 0.0000"


def test_lr_1_oscillates_and_says_so(cli):
    rc, out, _ = cli("descent", "--lr", "1")
    assert rc == 0
    lines = out.splitlines()
    assert lines[0] == "Epoch 1: x = -10.0000, f(x) = 100.0000"
    assert lines[19] == "Epoch 20: x = 10.0000, f(x) = 100.0000"
    assert "oscillate between ±10" in lines[-1]
    assert "does not converge" in lines[-1]


def test_lr_1_5_diverges_and_says_so(cli):
    rc, out, _ = cli("descent", "--lr", "1.5")
    assert rc == 0
    lines = out.splitlines()
    assert lines[:20] == seed_loop(10, 1.5, 20)
    assert len(lines) == 21
    assert "diverges" in lines[-1]


def test_overflow_to_inf_is_commented(cli):
    rc, out, _ = cli("descent", "--lr", "1e6", "--steps", "40")
    assert rc == 0
    lines = out.splitlines()
    assert any("inf" in line or "nan" in line for line in lines[:-1])
    assert lines[-1].startswith("note:")
    assert "overflow" in lines[-1] and "diverges" in lines[-1]


def test_json_output(cli):
    rc, out, _ = cli("descent", "--json", "--steps", "3")
    assert rc == 0
    report = json.loads(out)
    assert [e["x"] for e in report["epochs"]] == pytest.approx([8.0, 6.4, 5.12], rel=1e-15)
    assert report["behaviour"] == "converges"
    assert report["backend"] == jax.default_backend()


def test_help_lists_the_functions(cli):
    with pytest.raises(SystemExit) as exc:
        cli("descent", "--help")
    assert exc.value.code == 0


@pytest.mark.parametrize(
    "argv",
    [
        ["--steps", "-3"],
        ["--steps", "0"],
        ["--steps", "many"],
        ["--lr", "abc"],
        ["--lr", "nan"],
        ["--lr", "-0.1"],
        ["--fn", "cube"],
        ["--x0", "nan"],
        ["--x0", "inf"],
    ],
)
def test_bad_arguments_exit_2_with_one_line(cli, argv):
    rc, out, err = cli("descent", *argv)
    assert rc == 2
    assert out == ""
    assert len(err.strip().splitlines()) == 1
    assert err.startswith("error:")
    assert "Traceback" not in err


def test_bad_argument_in_a_real_process_has_no_traceback():
    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys; from jaxcalc.cli import main; sys.exit(main())",
            "descent",
            "--steps",
            "-3",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    assert proc.stdout == ""
    assert "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines() == ["error: --steps must be between 1 and 100000, got -3"]


def test_seed_descent_script_prints_the_seed(tmp_path):
    script = Path(__file__).resolve().parents[1] / "scripts" / "seed_descent.py"
    proc = subprocess.run(
        [sys.executable, str(script), "--repeat=0"], capture_output=True, text=True, timeout=300, cwd=tmp_path
    )
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].startswith(f"backend: {jax.default_backend()}, device: ")
    epochs = [line for line in lines if line.startswith("Epoch ")]
    assert epochs == seed_loop()
    bad = subprocess.run(
        [sys.executable, str(script), "--steps=x"], capture_output=True, text=True, timeout=300
    )
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
