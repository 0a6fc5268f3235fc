"""`jaxcalc demo`: the seed end to end, the backend named, every concept shown, exit 1 on a disagreement."""

from __future__ import annotations

import json
import types

import jax
import pytest

import jaxcalc.demo
import jaxcalc.seed

CONCEPTS = (
    "derivative",
    "partial derivatives",
    "gradient",
    "chain rule",
    "chain rule (vector)",
    "descent step",
    "descent loop",
    "backprop",
)


def test_demo_text(cli):
    rc, out, err = cli("demo")
    assert rc == 0, out + err
    lines = out.splitlines()
    assert f"backend {jax.default_backend()}" in lines[0]
    assert jax.devices()[0].device_kind in lines[0]
    for concept in CONCEPTS:
        assert any(line.startswith(concept + " ") for line in lines), concept
    for column in ("handwritten", "autodiff", "finite diff", "max rel err", "verdict"):
        assert column in out
    assert "DISAGREE" not in out
    # the seed's own numbers appear: 2x at 3, 6x at 1.5, 4(2x+3) at 0.5, the -0.05 step, x_20
    for seed_value in ("6", "9", "16", "-0.05", "0.1152921505"):
        assert f" {seed_value} " in out
    assert lines[-1].startswith("all ") and "agree" in lines[-1]


def test_demo_json(cli):
    rc, out, _ = cli("demo", "--json")
    assert rc == 0
    report = json.loads(out)
    assert report["backend"] == jax.default_backend()
    assert report["device"] == jax.devices()[0].device_kind
    assert report["dtype"] == "float64"
    assert report["passed"] is True
    assert {row["concept"] for row in report["rows"]} == set(CONCEPTS)
    for row in report["rows"]:
        assert row["verdict"] == "agree"
        assert all(c["error"] <= c["tolerance"] for c in row["checks"])
        assert {c["pair"] for c in row["checks"]} >= {"handwritten vs autodiff", "finite diff vs autodiff"}
    step = next(r for r in report["rows"] if r["concept"] == "descent step")
    assert step["handwritten"] == pytest.approx(-0.05, abs=1e-15)
    loop = next(r for r in report["rows"] if r["concept"] == "descent loop")
    assert round(loop["handwritten"][0], 4) == 8.0 and round(loop["handwritten"][-1], 4) == 0.1153


def test_demo_exits_1_on_a_wrong_derivative(cli, monkeypatch):
    # the classic slip: d/dx (2x + 3)**2 written as 2(2x + 3), forgetting g'(x) = 2
    monkeypatch.setattr(jaxcalc.seed, "chain_affine_square_grad", lambda x: 2 * jaxcalc.seed.affine(x))
    # The demo is one compiled call of jaxcalc.demo._witnesses, cached by function: a fresh copy of
    # that function makes it trace the wrong derivative, and leaves the cached correct program (and
    # every other compiled program of this process, which jax.clear_caches() would drop) alone.
    w = jaxcalc.demo._witnesses
    fresh = types.FunctionType(w.__code__, w.__globals__, w.__name__, w.__defaults__, w.__closure__)
    monkeypatch.setattr(jaxcalc.demo, "_witnesses", fresh)
    rc, out, _ = cli("demo")
    assert rc == 1
    assert "DISAGREE" in out
    bad = [line for line in out.splitlines() if line.startswith("DISAGREE chain rule:")]
    assert bad and "handwritten vs autodiff" in bad[0]
