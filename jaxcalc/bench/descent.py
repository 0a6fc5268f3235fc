"""seed_descent: the seed's loop x <- x - 0.1 * 2x from x0 = 10, per step, four ways.

Pure Python floats; a Python loop around a jitted step (each step pays one dispatch); one fused
``lax.scan`` of all steps; and the same scan unrolled. The floor under all of them is the
latency of one dependent multiply-add, measured alongside.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from jaxcalc.bench.config import BenchConfig
from jaxcalc.bench.harness import compile_jitted, time_calls
from jaxcalc.bench.report import Row, Target, WorkloadResult, figure
from jaxcalc.descent import Trajectory, descent
from jaxcalc.numerics import compare
from jaxcalc.seed import square, square_grad, update

__all__ = ["LR", "X0", "python_descent", "step", "seed_descent"]

LR = 0.1  # the seed's learning rate
X0 = 10.0  # the seed's start


def _py_derivative(x: float) -> float:
    """f'(x) = 2x on a Python float (the seed's derivative_f)."""
    return 2 * x


def python_descent(x: float, steps: int, lr: float = LR) -> float:
    """The seed's loop in pure Python floats, without its print: grad = 2x; x = x - lr * grad."""
    for _ in range(steps):
        grad = _py_derivative(x)
        x = x - lr * grad
    return x


def step(x: jax.Array) -> jax.Array:
    """One update x <- x - lr * f'(x) with f'(x) = 2x, elementwise."""
    return update(x, square_grad(x), LR)


def _fused(x: jax.Array, steps: int, unroll: int) -> jax.Array:
    """``steps`` updates inside one lax.scan (``unroll`` steps per loop iteration); returns x_steps."""
    return lax.scan(lambda x, _: (step(x), None), x, None, length=steps, unroll=unroll)[0]


def _closed_form(steps: int) -> float:
    """x_n = x0 (1 - 2 lr)^n, in float64."""
    return X0 * (1 - 2 * LR) ** steps


def _error(value: object, ref: float) -> float:
    return compare(np.asarray(value, np.float64), np.float64(ref)).error


def normal_steps(dtype: str | np.dtype) -> int:
    """The most steps after which x0 * 0.8^n is still a normal number of ``dtype``.

    Past it the iterate is subnormal and then 0 (the true value underflows), so a relative error
    against the closed form measures the underflow, not the descent.
    """
    tiny = float(jnp.finfo(jnp.dtype(dtype)).tiny)
    return int(np.floor(np.log(tiny / X0) / np.log(1 - 2 * LR)))


def seed_descent(cfg: BenchConfig, limits: dict[str, float]) -> WorkloadResult:
    """ns per step of the seed's descent, four ways, against one dependent FMA's latency.

    The latency bound is measured in the same round-robin as the variants it bounds.
    """
    from jaxcalc.bench.limits import fma_chain_call

    rows: list[Row] = []
    compiles: dict[str, float] = {}
    targets: list[Target] = []
    x0 = jnp.asarray(X0, jnp.dtype(cfg.dtype))
    jit_step, ct = compile_jitted(jax.jit(step), x0)
    compiles["step (per-step jit)"] = ct.total_s
    chain_call, chain_len = fma_chain_call(cfg)

    def dispatch(m: int) -> jax.Array:
        x = x0
        for _ in range(m):
            x = jit_step(x)
        return x

    bound_name = "bound: one dependent FMA chain"
    for n in cfg.seed_steps:
        m_py, m_jit = min(n, cfg.seed_python_max_steps), min(n, cfg.seed_dispatch_max_steps)
        calls: dict[str, Callable[[], object]] = {
            "python": lambda m=m_py: python_descent(X0, m),
            "jit per step": lambda m=m_jit: dispatch(m),
        }
        steps = {"python": m_py, "jit per step": m_jit, bound_name: chain_len}
        fused: dict[str, Callable[[jax.Array], object]] = {
            "fused scan": jax.jit(lambda x, n=n: _fused(x, n, 1)),
            f"fused scan unroll={cfg.seed_unroll}": jax.jit(lambda x, n=n: _fused(x, n, cfg.seed_unroll)),
            "jaxcalc.descent (keeps trajectory)": jax.jit(lambda x, n=n: descent(square, x, LR, n)),
        }
        for name, fn in fused.items():
            compiled, ct = compile_jitted(fn, x0)
            compiles[f"{name}, {n} steps"] = ct.total_s
            calls[name], steps[name] = (lambda c=compiled: c(x0)), n
        calls[bound_name] = chain_call
        times = time_calls(calls, repeats=cfg.repeats, min_time=cfg.min_time)
        per_step = {name: t.scaled(1e9 / steps[name]) for name, t in times.items()}
        py, bound = per_step["python"].median, per_step[bound_name].median
        for name, t in per_step.items():
            fig = {
                "time/step": figure(t, "ns"),
                "speedup vs python": figure(py / t.median, "x"),
                "vs FMA latency": figure(t.median / bound, "x bound"),
                "timed steps": figure(steps[name], "steps"),
            }
            computed_in = "float64" if name == "python" else cfg.dtype
            if name != bound_name and steps[name] <= normal_steps(computed_in):
                out = calls[name]()
                value = out.params[-1] if isinstance(out, Trajectory) else out
                fig["error"] = figure(_error(value, _closed_form(steps[name])), "rel")
            rows.append(Row(f"{n} steps: {name}", fig))
        best = min((k for k in per_step if k.startswith("fused")), key=lambda k: per_step[k].median)
        targets.append(
            Target(
                f"fused vs pure Python per step, {n} steps",
                py / per_step[best].median,
                ">=",
                100.0,
                "x",
                note=f"best: {best}; one FMA's latency caps the ratio at {py / bound:.0f}x here",
            )
        )
    return WorkloadResult(
        "seed_descent",
        "x <- x - 0.1 * 2x from x0 = 10, ns per step four ways",
        {"dtype": cfg.dtype, "python": "float64 (Python float)", "steps": list(cfg.seed_steps)},
        rows,
        compiles,
        targets,
        [
            "bound: the measured latency of one multiply-add in a dependent chain x <- a x + b "
            f"({chain_len} FMAs, {_BLOCK_NOTE}); a step cannot start before the previous x exists",
            "pure Python and the per-step jit are timed over 'timed steps' and reported per step",
            "error: relative to the closed form x0 * 0.8^n (float64) at the steps actually run; "
            f"left out ('-') where that reference underflows the dtype computed in: x0 * 0.8^n is "
            f"below the smallest normal {cfg.dtype} after {normal_steps(cfg.dtype)} steps and the "
            f"smallest normal float64 (pure Python) after {normal_steps('float64')} steps",
        ],
    )


_BLOCK_NOTE = "64 per loop iteration, so loop overhead is amortized"
