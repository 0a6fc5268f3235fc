"""jaxcalc bench: the harness's statistics, the report's structure and units, and that every
benchmarked variant computes what it claims (closed forms, jax.grad, PyTorch). No speed is asserted."""

from __future__ import annotations

import json
import math
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxcalc.bench import QUICK, WORKLOADS, BenchConfig, compile_jitted, time_call, time_calls
from jaxcalc.bench.batched import blocked_descent, inner_loop_elements
from jaxcalc.bench.descent import python_descent
from jaxcalc.bench.harness import Timing
from jaxcalc.bench.report import Figure
from jaxcalc.cli import main

UNITS = {
    "ns", "ns/FMA", "ms", "s", "x", "x bound", "rel", "steps", "G/s", "GB/s", "GFLOP/s", "GFMA/s", "fraction",
    "elements", "FMA", "B", "bool", "",
}  # fmt: skip

TINY = BenchConfig(
    repeats=2,
    min_time=0.0,
    seed_steps=(20, 2000),
    seed_python_max_steps=500,
    seed_dispatch_max_steps=20,
    batched_sizes=(1 << 14,),
    chunks=(2048,),
    mlp_sizes=(12, 16, 16, 3),  # wide enough that no example has every relu unit off (a kink)
    mlp_batch=6,
    tf_d=8,
    tf_seq=4,
    tf_batch=2,
    tf_heads=2,
    tf_ff=16,
    tf_block=2,  # two query blocks: the causal skip is exercised
    gc_shape=(3, 4, 2, 4),
    gc_repeats=1,
    fma_chain_steps=1 << 10,
    fma_peak_shapes=((1024, 4),),
    fma_peak_work=1 << 14,
)
LIMITS = {"fma_latency_ns": 1.0, "vector_fma_gfma": 1.0, "vector_fma_elements": 1024, "vector_fma_chain": 4}


# ----------------------------------------------------------------------------- harness


def test_timing_statistics_are_ordered_and_count_every_call():
    calls = {"a": 0, "b": 0}

    def make(name):
        def call():
            calls[name] += 1
            return jnp.zeros(())

        return call

    times = time_calls({k: make(k) for k in calls}, repeats=4, min_time=0.0, warmup=1)
    for name, t in times.items():
        assert t.min <= t.q1 <= t.median <= t.q3 <= t.max
        assert t.repeats == 4 and t.number == 1
        assert calls[name] == 1 + 4  # one warm-up, four samples of one call


def test_timing_rate_and_scale_are_exact_transforms():
    t = Timing(median=2.0, q1=1.5, q3=3.0, min=1.0, max=4.0, repeats=3, number=1)
    r = t.rate(8.0)
    assert (r.median, r.min, r.max, r.q1, r.q3) == (4.0, 2.0, 8.0, 8.0 / 3.0, 8.0 / 1.5)
    s = t.scaled(1e3)
    assert (s.median, s.min, s.max) == (2000.0, 1000.0, 4000.0)
    with pytest.raises(ValueError):
        time_call(lambda: None, repeats=0)


def test_compile_jitted_returns_the_executable_and_times_both_phases():
    x = jnp.arange(5.0)
    compiled, ct = compile_jitted(jax.jit(lambda x: 3 * x + 1), x)
    np.testing.assert_array_equal(compiled(x), 3 * np.arange(5.0) + 1)
    assert ct.lower_s > 0 and ct.compile_s > 0 and ct.total_s == ct.lower_s + ct.compile_s


# ----------------------------------------------------------------------------- kernels


def test_python_descent_is_the_seeds_loop():
    # the seed's 20 epochs from x = 10 with lr 0.1 end at 0.1153 (10 * 0.8^20)
    assert python_descent(10.0, 20) == pytest.approx(10 * 0.8**20, rel=1e-12)
    assert f"{python_descent(10.0, 20):.4f}" == "0.1153"


@pytest.mark.parametrize("chunk,unroll", [(256, 1), (512, 4)])
def test_blocked_descent_really_blocks_and_matches_the_closed_form(chunk, unroll):
    x = jax.random.uniform(jax.random.key(0), (4096,), jnp.float32, -10, 10)
    compiled, _ = compile_jitted(jax.jit(lambda x: blocked_descent(x, 30, chunk, unroll)), x)
    assert inner_loop_elements(compiled.as_text()) == chunk  # the innermost loop iterates on one chunk
    np.testing.assert_allclose(compiled(x), np.asarray(x, np.float64) * 0.8**30, rtol=1e-5)


def test_inner_loop_elements_reads_the_carry_of_while_loops():
    text = "  %while.5 = (s32[], f32[128,64]{1,0}, bf16[32]{0}) while(%tuple), condition=%c, body=%b"
    assert inner_loop_elements(text) == 32
    assert inner_loop_elements("ROOT %add = f32[8] add(%a, %b)") == 0


# ----------------------------------------------------------------------------- report


def _figures(obj):
    """Every {'value', 'unit'} figure in a JSON report, wherever it sits."""
    if isinstance(obj, dict):
        if "unit" in obj and "value" in obj:
            yield obj
        else:
            for v in obj.values():
                yield from _figures(v)
    elif isinstance(obj, list):
        for v in obj:
            yield from _figures(v)


def test_cli_quick_json_report_has_machine_versions_units_and_correct_results(tmp_path, capsys):
    out = tmp_path / "bench.json"
    rc = main(["bench", "--quick", "--json", str(out)])  # every workload, at quick sizes
    assert rc == 0
    text = capsys.readouterr().out
    assert "seed_descent" in text and "compile time of each jitted step" in text
    report = json.loads(out.read_text())
    assert report["quick"] is True
    assert {"backend", "device_kind", "cpu_count", "cpu_model"} <= set(report["machine"])
    assert report["machine"]["backend"] == jax.default_backend()
    assert {"jax", "jaxlib", "numpy", "python", "jaxcalc"} <= set(report["versions"])
    assert report["settings"]["dtype"] == "float32" and report["settings"]["matmul_precision"]
    assert list(report["workloads"]) == list(WORKLOADS)  # all of them, in registry order
    for name, workload in report["workloads"].items():
        assert workload["rows"] and workload["compile"] is not None, name
    figures = list(_figures(report))
    assert len(figures) > 50
    for f in figures:
        assert f["unit"] in UNITS, f
        assert f["value"] is None or isinstance(f["value"], (int, float))
        if "min" in f:
            assert f["min"] <= f["value"] <= f["max"] and f["repeats"] in (QUICK.repeats, QUICK.gc_repeats)
    assert report["limits"]["dependent FMA chain latency"]["unit"] == "ns/FMA"

    seed = report["workloads"]["seed_descent"]
    names = [r["name"] for r in seed["rows"]]
    for variant in ("python", "jit per step", "fused scan", "fused scan unroll=64"):
        assert f"1000000 steps: {variant}" in names and f"20 steps: {variant}" in names
    for row in seed["rows"]:
        if "error" in row["figures"]:  # every variant lands on x0 * 0.8^n
            assert row["figures"]["error"]["value"] < 1e-5, row
    errors = {r["name"]: r["figures"].get("error") for r in seed["rows"]}
    assert errors["20 steps: fused scan"] is not None and errors["20 steps: python"] is not None
    assert errors["1000000 steps: fused scan"] is None  # x0 * 0.8^n underflows: no relative error
    assert errors["1000000 steps: python"] is None
    assert all(isinstance(t["met"], bool) and t["op"] == ">=" for t in seed["targets"])
    assert seed["compile"] and all(c["unit"] == "s" and c["value"] > 0 for c in seed["compile"].values())

    batched = report["workloads"]["batched_descent"]
    rows = {r["name"].split(": ", 1)[1]: r["figures"] for r in batched["rows"]}
    n, chunk = QUICK.batched_sizes[0], QUICK.chunks[0]
    assert rows[f"blocked: chunk {chunk}"]["loop carries"]["value"] == chunk
    assert rows["naive: scan over steps"]["loop carries"]["value"] == n
    for name, figs in rows.items():
        if "error" in figs:
            assert figs["error"]["value"] < 1e-5, name
            # updates/s and traffic describe the same timing: traffic = 8 bytes per update (float32)
            assert figs["traffic"]["value"] == pytest.approx(8 * figs["updates"]["value"], rel=1e-9)
    assert batched["targets"][0]["threshold"] == 3.0


def test_bad_only_name_is_a_one_line_usage_error(capsys):
    assert main(["bench", "--quick", "--only", "seed_descent", "nope"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "unknown workload 'nope'" in err and "seed_descent" in err


def test_unwritable_json_path_is_refused_before_running(tmp_path, capsys):
    assert main(["bench", "--quick", "--json", str(tmp_path / "missing" / "r.json")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_verdicts_are_withheld_when_medians_have_too_few_repeats():
    from jaxcalc.bench.report import (
        MIN_VERDICT_REPEATS,
        Row,
        Target,
        WorkloadResult,
        figure,
        withhold_thin_verdicts,
    )

    def result(repeats):
        t = Timing(median=1.0, q1=1.0, q3=1.0, min=1.0, max=1.0, repeats=repeats, number=1)
        rows = [Row("a", {"time": figure(t, "s")}), Row("ref", {"throughput": figure(2.0, "GFLOP/s")})]
        return WorkloadResult("w", "t", {}, rows, {}, [Target("a vs b", 0.5, ">=", 10.0, "x")], [])

    thin = withhold_thin_verdicts(result(1)).targets[0]
    assert thin.met is None and thin.to_dict()["met"] is None
    assert "not enough repeats for a verdict" in thin.line() and "NOT met" not in thin.line()
    enough = withhold_thin_verdicts(result(MIN_VERDICT_REPEATS)).targets[0]
    assert enough.met is False and enough.line().endswith("NOT met")


def test_normal_steps_is_where_the_closed_form_leaves_the_normal_range():
    from jaxcalc.bench.descent import X0, normal_steps

    for dtype in ("float32", "float64", "bfloat16"):
        n, tiny = normal_steps(dtype), float(jnp.finfo(dtype).tiny)
        assert X0 * 0.8**n >= tiny > X0 * 0.8 ** (n + 1)


def test_figure_json_never_holds_nan():
    assert Figure(math.inf, "x").to_dict() == {"value": None, "unit": "x"}
    json.dumps(Figure(math.nan, "ms").to_dict(), allow_nan=False)


# ----------------------------------------------------------------------------- train steps


def _by_name(result):
    return {r.name: r.figures for r in result.rows}


def test_train_steps_agree_with_jax_grad_and_torch():
    from jaxcalc.bench.training import mlp_step, torch_available, transformer_step

    use_torch = torch_available()  # the PyTorch rows are checked too when torch is installed
    for workload in (mlp_step, transformer_step):
        result = workload(TINY.replace(use_torch=use_torch), LIMITS)
        rows = _by_name(result)
        expected = {"handwritten", "jax.grad"} | ({"pytorch eager"} if use_torch else set())
        if workload is transformer_step:
            expected.add("handwritten, catalogue VJP")
        assert expected <= set(rows)
        for name in expected:
            # same starting weights and batch: same loss, same first SGD update as jax.grad
            assert rows[name]["loss error"].value < 1e-5, (result.name, name)
            assert rows[name]["update error"].value < 1e-4, (result.name, name)
            assert rows[name]["throughput"].unit == "GFLOP/s" and rows[name]["vs GEMM"].unit == "fraction"
        assert {"handwritten", "jax.grad"} <= set(result.compile) <= expected
        assert len(result.targets) == (3 if use_torch else 2)


@pytest.mark.parametrize("seq,block", [(5, 0), (5, 2), (6, 3)])
def test_fast_block_gradients_are_jax_grads_of_the_catalogue_block(seq, block):
    from jaxcalc.bench.fast_block import attention_blocks, loss_and_grads
    from jaxcalc.bench.training import _transformer_params
    from jaxcalc.cases.transformer import transformer_block

    assert attention_blocks(5, 2) == [(0, 2), (2, 4), (4, 5)] and attention_blocks(5, 0) == [(0, 5)]
    with jax.enable_x64(True):
        params = tuple(p.astype(jnp.float64) for p in _transformer_params(8, 16, "float32"))
        x = jax.random.normal(jax.random.key(0), (2, seq, 8), jnp.float64)
        y = jax.random.normal(jax.random.key(1), (2, seq, 8), jnp.float64)

        def loss(params):
            return 0.5 * jnp.mean((transformer_block(x, *params, n_heads=2) - y) ** 2)

        ref_loss, ref = jax.jit(jax.value_and_grad(loss))(params)  # one program, not op by op
        got_loss, got = jax.jit(lambda p: loss_and_grads(p, x, y, 2, block))(params)
    assert float(got_loss) == pytest.approx(float(ref_loss), rel=1e-12)
    for g, r in zip(got, ref, strict=True):
        np.testing.assert_allclose(g, r, rtol=1e-9, atol=1e-12)


def test_gradcheck_problem_is_the_same_function_on_both_sides_with_its_true_gradient():
    torch = pytest.importorskip("torch", reason="torch.autograd.gradcheck side of the comparison")
    from jaxcalc.bench.gradcheck import _torch_function, make_problem

    p = make_problem(*TINY.gc_shape)
    assert p.n_params == 4 * (3 + 1) + 2 * (4 + 1)
    with jax.enable_x64(True):
        value = float(jax.jit(p.f)(*p.args))
        grads = jax.jit(p.grad)(*p.args)
        auto = jax.jit(jax.grad(p.f, argnums=(0, 1, 2, 3)))(*p.args)
    for g, a in zip(grads, auto, strict=True):  # the handwritten gradient checked is the true one
        np.testing.assert_allclose(g, a, rtol=1e-10, atol=1e-14)
    tf, targs = _torch_function(p)
    assert all(t.dtype == torch.float64 for t in targs)
    assert float(tf(*targs).detach()) == pytest.approx(value, rel=1e-12)  # torch checks the same function


def test_gradcheck_checkers_run_and_pass_on_the_problem():
    pytest.importorskip("torch", reason="torch.autograd.gradcheck side of the comparison")
    from jaxcalc.bench.gradcheck import checkers, make_problem

    calls = checkers(make_problem(*TINY.gc_shape))
    assert len(calls) >= 5  # jaxcalc full and fast, check_grads, torch slow (maybe also on 1 thread) and fast
    # the cheap ones here; the full check runs in `jaxcalc bench` (it compiles for seconds)
    for name in ("jaxcalc fast (directional)", "torch gradcheck", "torch gradcheck fast_mode"):
        assert calls[name]() is True, name


def test_the_compiled_fast_row_compiles_its_program_and_restores_the_executor():
    from jaxcalc.bench.gradcheck import checkers, make_problem
    from jaxcalc.checks import witnesses

    calls = checkers(make_problem(*TINY.gc_shape), use_torch=False)

    def compiled_runs():
        return sum(
            key[-1] == "xla" and not isinstance(run, witnesses._Tiered)
            for p in _live_programs()
            for key, run in p.runs.items()
        )

    before, had = witnesses.EXECUTOR, compiled_runs()
    assert calls["jaxcalc fast (directional)"]() is True
    assert compiled_runs() == had  # the plain row leaves the executor to `auto`
    assert calls["jaxcalc fast, compiled"]() is True
    assert witnesses.EXECUTOR == before
    assert compiled_runs() == had + 1  # one program compiled by XLA, not run on the host


def _live_programs():
    import gc
    import warnings

    from jaxcalc.checks import witnesses

    with warnings.catch_warnings():  # isinstance on every live object touches torch's deprecated aliases
        warnings.simplefilter("ignore")
        return [o for o in gc.get_objects() if isinstance(o, witnesses._Program)]


def test_gradcheck_workload_reports_every_checker_and_the_ratio(monkeypatch):
    import jaxcalc.bench.gradcheck as gc

    seen = []

    def fake_checkers(problem, use_torch=True):
        names = ["jaxcalc full (per element)", "jaxcalc fast (directional)", "torch gradcheck"]
        return {n: (lambda n=n: seen.append(n) or n != "jaxcalc fast (directional)") for n in names}

    monkeypatch.setattr(gc, "checkers", fake_checkers)
    result = gc.gradcheck(TINY.replace(gc_repeats=3), LIMITS)
    rows = _by_name(result)
    assert [f["passed"].value for f in rows.values()] == [1.0, 0.0, 1.0]  # verdicts kept, not assumed
    # every check timed once per repeat, no untimed warm-up before the first (its compile shows);
    # each later sample follows one untimed call of the same check (settle=1)
    assert len(seen) == 3 * (1 + 2 * 2)
    assert seen[:3] == ["jaxcalc full (per element)", "jaxcalc fast (directional)", "torch gradcheck"]
    assert rows["jaxcalc full (per element)"]["vs jaxcalc full"].value == 1.0
    t = result.targets[0]
    assert t.threshold == 10.0 and t.unit == "x"
    assert t.value == pytest.approx(rows["torch gradcheck"]["vs jaxcalc full"].value)


def test_the_fast_mode_pairs_compare_like_with_like():
    """The first-order row makes only the checks torch's fast_mode makes (first derivatives);
    the default fast row adds the Hessian's, and is paired with gradcheck plus gradgradcheck."""
    from jaxcalc.bench.gradcheck import FAST_MODE_PAIRS, FIRST_ORDER, fast_mode_ratios, make_problem
    from jaxcalc.checks import check_function

    p = make_problem(*TINY.gc_shape)
    first = check_function(p.f, p.args, grad_fn=p.grad, mode="fast", dtype="float64", checks=FIRST_ORDER)
    every = check_function(p.f, p.args, grad_fn=p.grad, mode="fast", dtype="float64")
    assert {r.check for r in first.results} == set(FIRST_ORDER)
    assert {r.check for r in every.results} == set(FIRST_ORDER) | {"hvp", "hessian_symmetry"}
    pairs = {(p.ours, p.theirs) for p in FAST_MODE_PAIRS if p.like_for_like}
    assert pairs == {
        ("jaxcalc fast, compiled, first order", "torch gradcheck fast_mode"),
        ("jaxcalc fast, compiled", "torch gradcheck + gradgradcheck fast_mode"),
    }

    class T:  # a Timing's median is all the ratios read
        def __init__(self, median):
            self.median = median

    times = {"jaxcalc fast, compiled": T(3.0), "torch gradcheck fast_mode": T(2.0)}
    assert fast_mode_ratios(times) == {FAST_MODE_PAIRS[2]: 1.5}  # pairs with a side missing are left out


def test_the_second_order_torch_row_runs_and_passes():
    pytest.importorskip("torch", reason="torch.autograd.gradgradcheck side of the comparison")
    from jaxcalc.bench.gradcheck import checkers, make_problem

    calls = checkers(make_problem(*TINY.gc_shape))
    assert calls["torch gradcheck + gradgradcheck fast_mode"]() is True
    assert calls["jaxcalc fast, compiled, first order"]() is True


def test_the_transformer_ceiling_script_times_the_step_and_its_gemms(tmp_path):
    """scripts/transformer_ceiling.py at a tiny size: both fractions printed, bad sizes exit 2."""
    import subprocess
    import sys

    script = Path(__file__).resolve().parent.parent / "scripts" / "transformer_ceiling.py"
    tiny = ["--d=16", "--seq=8", "--batch=2", "--heads=2", "--ff=32", "--block=4", "--rounds=1", "--number=1"]
    run = subprocess.run([sys.executable, str(script), *tiny], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    lines = {line.split()[0]: line for line in run.stdout.splitlines() if line}
    for key in ("step", "gemms"):
        fraction = float(lines[key].rsplit("=", 1)[1])
        assert 0 < fraction < 100
    bad = subprocess.run([sys.executable, str(script), "--d=15", "--heads=2"], capture_output=True, text=True)
    assert bad.returncode == 2 and "multiple of heads" in bad.stderr
