"""batched_descent: the seed's update on millions of independent x, naive vs cache-blocked.

Naive: every step is a full pass over the array (a Python loop of jitted steps, or a scan
whose body XLA cannot fuse across steps), so each step reads and writes every x once.
Cache-blocked: the array is cut into chunks of a few thousand elements and all steps run on
one chunk while it sits in cache, before the next chunk is touched; the array crosses memory
once. Both are set against a copy of the same array and the vector FMA peak, measured in the
same round-robin.
"""

from __future__ import annotations

import re
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from jaxcalc.bench.config import BenchConfig
from jaxcalc.bench.descent import LR, X0, step
from jaxcalc.bench.harness import compile_jitted, time_calls
from jaxcalc.bench.limits import copy_calls, fma_peak_call
from jaxcalc.bench.report import Row, Target, WorkloadResult, figure
from jaxcalc.numerics import compare

__all__ = ["blocked_descent", "inner_loop_elements", "batched_descent"]


def blocked_descent(x: jax.Array, steps: int, chunk: int, unroll: int) -> jax.Array:
    """All ``steps`` updates on one ``chunk`` of x (n,), then the next chunk, in place; returns x_steps."""
    xc = x.reshape(-1, chunk)

    def one_chunk(j, xc):
        row = lax.dynamic_index_in_dim(xc, j, keepdims=False)
        row = lax.fori_loop(0, steps, lambda _, r: step(r), row, unroll=unroll)
        return lax.dynamic_update_index_in_dim(xc, row, j, 0)

    return lax.fori_loop(0, xc.shape[0], one_chunk, xc).reshape(x.shape)


def _naive_scan(x: jax.Array, steps: int) -> jax.Array:
    """``steps`` full passes over x inside one loop."""
    return lax.fori_loop(0, steps, lambda _, x: step(x), x)


def inner_loop_elements(hlo_text: str) -> int:
    """Elements of the smallest float array carried by any while loop of compiled HLO text (0: none).

    For the cache-blocked kernel this is the chunk XLA really iterates on; for the naive scan,
    the whole array.
    """
    sizes = []
    for line in hlo_text.splitlines():
        if " while(" not in line:
            continue
        carry = line.split("=", 1)[1].split(" while(", 1)[0]
        for dims in re.findall(r"(?:f16|bf16|f32|f64)\[([\d,]*)\]", carry):
            sizes.append(int(np.prod([int(d) for d in dims.split(",") if d] or [1])))
    return min(sizes) if sizes else 0


def _stepper(compiled: Callable[[jax.Array], jax.Array], x: jax.Array, calls: int) -> Callable[[], jax.Array]:
    """A call running ``calls`` donated calls of ``compiled`` on its own copy of x; state carries over."""
    state = {"x": jnp.copy(x)}

    def run() -> jax.Array:
        for _ in range(calls):
            state["x"] = compiled(state["x"])
        return state["x"]

    return run


def batched_descent(cfg: BenchConfig, limits: dict[str, float]) -> WorkloadResult:
    """Updates/s and GB/s of naive vs cache-blocked batched descent, against copy bandwidth and FMA peak."""
    steps, dtype = cfg.batched_steps, jnp.dtype(cfg.dtype)
    rows: list[Row] = []
    compiles: dict[str, float] = {}
    targets: list[Target] = []
    notes: list[str] = []
    for n in cfg.batched_sizes:
        pass_bytes = 2 * n * dtype.itemsize  # one step reads and writes every x once
        x_init = jax.random.uniform(jax.random.key(1), (n,), dtype, -X0, X0)
        ref = np.asarray(x_init, np.float64) * (1 - 2 * LR) ** steps
        variants: dict[str, tuple[Callable[[jax.Array], jax.Array], int]] = {
            "naive: python loop of jitted steps": (jax.jit(step, donate_argnums=0), steps),
            "naive: scan over steps": (jax.jit(lambda x: _naive_scan(x, steps), donate_argnums=0), 1),
        }
        for c in cfg.chunks:
            fn = jax.jit(lambda x, c=c: blocked_descent(x, steps, c, cfg.block_unroll), donate_argnums=0)
            variants[f"blocked: chunk {c}"] = (fn, 1)
        calls: dict[str, Callable[[], object]] = {}
        carried: dict[str, int] = {}
        errors: dict[str, float] = {}
        for name, (fn, reps) in variants.items():
            compiled, ct = compile_jitted(fn, x_init)
            compiles[f"{name}, n={n}"] = ct.total_s
            carried[name] = inner_loop_elements(compiled.as_text()) if reps == 1 else n
            errors[name] = compare(np.asarray(_stepper(compiled, x_init, reps)(), np.float64), ref).error
            calls[name] = _stepper(compiled, x_init, reps)
        copies, copy_bytes = copy_calls(n, cfg.dtype)
        shape = (int(limits["vector_fma_elements"]), int(limits["vector_fma_chain"]))
        peak_call, peak_work = fma_peak_call(cfg, *shape)
        refs = {f"copy ({k})": c for k, c in copies.items()} | {"FMA peak": peak_call}
        times = time_calls(calls | refs, repeats=cfg.repeats, min_time=cfg.min_time)
        copy_name = min((k for k in refs if k.startswith("copy")), key=lambda k: times[k].median)
        copy_gbs = times[copy_name].rate(copy_bytes / 1e9)
        peak = times["FMA peak"].rate(peak_work / 1e9)
        naive = min((k for k in calls if k.startswith("naive")), key=lambda k: times[k].median)
        for name in calls:
            t = times[name]
            rate = t.rate(n * steps / 1e9)
            traffic = pass_bytes * steps / t.median / 1e9
            rows.append(
                Row(
                    f"n={n}: {name}",
                    {
                        "time": figure(t.scaled(1e3), "ms"),
                        "updates": figure(rate, "G/s"),
                        "vs FMA peak": figure(rate.median / peak.median, "fraction"),
                        "traffic": figure(traffic, "GB/s"),
                        "vs copy": figure(traffic / copy_gbs.median, "fraction"),
                        "speedup vs naive": figure(times[naive].median / t.median, "x"),
                        "loop carries": figure(carried[name], "elements"),
                        "error": figure(errors[name], "rel"),
                    },
                )
            )
        rows.append(Row(f"n={n}: reference: {copy_name}", {"traffic": figure(copy_gbs, "GB/s")}))
        peak_row = f"n={n}: reference: vector FMA peak ({shape[0]} elements, {shape[1]} per pass)"
        rows.append(Row(peak_row, {"updates": figure(peak, "G/s")}))
        best = min((k for k in calls if k.startswith("blocked")), key=lambda k: times[k].median)
        targets.append(
            Target(
                f"cache-blocked vs naive, n={n}",
                times[naive].median / times[best].median,
                ">=",
                3.0,
                "x",
                note=f"{best} vs the faster naive ({naive})",
            )
        )
        notes.append(f"n={n}: the array is {n * dtype.itemsize / 2**20:.0f} MiB")
    notes += [
        "traffic: the bytes a naive step moves (read + write every x), times steps, per second; the "
        "blocked kernel keeps them in cache, so its figure can exceed the copy bandwidth",
        "one update = one multiply-add; FMA peak: the best kernel of the limits sweep (k dependent "
        "multiply-adds per element per pass over an array in cache), re-timed in the same round-robin "
        "as the variants, as is the copy",
        "loop carries: read from the compiled HLO, the array the innermost while loop iterates on "
        "(the chunk, when XLA really blocks)",
        f"blocked: unroll={cfg.block_unroll} steps per inner loop iteration; the chunk loop runs on one "
        "thread while XLA splits a naive full-array pass over the cores",
        f"error: relative to x0 * 0.8^{steps} in float64",
    ]
    return WorkloadResult(
        "batched_descent",
        f"{steps} steps of x <- x - 0.1 * 2x on n independent x, naive vs cache-blocked",
        {"dtype": cfg.dtype, "n": list(cfg.batched_sizes), "steps": steps, "chunks": list(cfg.chunks)},
        rows,
        compiles,
        targets,
        notes,
    )
