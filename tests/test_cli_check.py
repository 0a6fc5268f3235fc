"""`jaxcalc cases` and `jaxcalc check`: the catalogue listed, rows and closing line, exit codes 0/1/2."""

from __future__ import annotations

import dataclasses
import json

import jax.numpy as jnp

from jaxcalc.cases import REGISTRY, get_case


def test_cases_lists_the_whole_catalogue(cli):
    rc, out, _ = cli("cases")
    assert rc == 0
    assert out.strip().splitlines()[-1].startswith(f"{len(REGISTRY)} cases; ")
    assert "transformer_block" in out and "ids(n) int" in out and "sizes: golden n=6,V=5,D=4; tiles" in out
    assert "regimes: typical, large, masked" in out


def test_cases_json(cli):
    rc, out, _ = cli("cases", "--json")
    rows = json.loads(out)
    assert rc == 0 and [r["name"] for r in rows] == list(REGISTRY)
    emb = next(r for r in rows if r["name"] == "embedding")
    assert emb["output_shape"] == [6, 4]
    assert [(i["name"], i["differentiable"]) for i in emb["inputs"]] == [("ids", False), ("table", True)]


def test_check_prints_rows_and_the_closing_line(cli, tmp_path):
    report = tmp_path / "check.json"
    rc, out, _ = cli("check", "softmax", "square", "--regimes", "typical", "--json", report)
    lines = out.strip().splitlines()
    assert rc == 0
    assert lines[0].startswith("# backend ") and "2 instances of 2 cases" in lines[0]
    assert lines[-1] == "16 passed, 0 failed"  # softmax 7 checks, square 9 (with hvp, Hessian)
    assert sum(line.startswith("softmax ") for line in lines) == 7
    data = json.loads(report.read_text())
    assert data["summary"] == {"pass": 16, "FAIL": 0, "kink": 0, "n/a": 0}
    assert {r["case"] for r in data["results"]} == {"softmax", "square"}
    assert data["machine"]["backend"] and data["dtype"] == "float64"
    # every regime: the large and masked instances run the exact checks only (no finite differences)
    rc, out, _ = cli("check", "softmax")
    rows = [line for line in out.splitlines() if line.startswith("softmax~")]
    assert rc == 0 and {r.split()[0] for r in rows} == {"softmax~large", "softmax~masked"}
    assert not any(" fd_jvp " in r or " jacobian_fd " in r for r in rows) and len(rows) == 8


def test_check_exits_1_and_names_the_element_when_a_derivative_is_wrong(cli, monkeypatch):
    case = get_case("linear")

    def bad(p, ct):  # db forgets to sum over the batch: takes row 0 only
        dx, dW, _ = case.vjp(p, ct)
        return dx, dW, jnp.asarray(ct)[0]

    monkeypatch.setitem(REGISTRY, "linear", dataclasses.replace(case, vjp=bad))
    rc, out, _ = cli("check", "linear", "--failures-only")
    assert rc == 1
    fail = [line for line in out.splitlines() if " FAIL " in line]
    assert fail and fail[0].startswith("linear") and "vjp " in fail[0]
    assert "handwritten vs autodiff at db[" in fail[0]
    assert out.strip().splitlines()[-1].endswith("failed") and " 0 failed" not in out


def test_check_unknown_name_suggests_close_names(cli):
    rc, out, err = cli("check", "sofmax")
    assert rc == 2 and out == ""
    assert err.strip().startswith("error: unknown case 'sofmax'; did you mean softmax")


def test_check_bad_dtype_is_a_usage_error(cli):
    rc, _, err = cli("check", "square", "--dtype", "float8")
    assert rc == 2 and len(err.strip().splitlines()) == 1
    rc, _, err = cli("check", "square", "--sizes", "huge")
    assert rc == 2 and "unknown size 'huge'" in err


def test_check_low_precision_columns(cli):
    for dtype in ("bfloat16", "float16"):
        rc, out, _ = cli("check", "linear", "softmax", "--regimes", "typical", "--dtype", dtype)
        assert rc == 0 and dtype in out.splitlines()[0], out
        assert out.strip().splitlines()[-1].endswith(" 0 failed")


def test_check_float32_and_fast(cli):
    rc, out, _ = cli("check", "mlp", "--dtype", "float32", "--fast")
    assert rc == 0 and "jacobian_fd" not in out and "float32" in out.splitlines()[0]
