"""The machine's limits, measured in the benchmark's own process with the same compiler.

* ``fma_chain_latency``: ns per multiply-add in ONE dependent chain x <- a x + b (a scalar
  loop of fused straight-line blocks), the floor under any sequential descent step;
* ``vector_fma_peak``: multiply-adds per second over many independent elements (each element
  runs a short chain, the array sits in cache), the ceiling for elementwise compute;
* ``copy_bandwidth``: bytes read + written per second copying an n-element array into an
  existing buffer (the best of NumPy's memcpy and an XLA copy into a donated buffer);
* ``gemm_throughput``: FLOP/s of one (m, k) @ (k, n) matmul, counting 2 m k n.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from jaxcalc.bench.config import BenchConfig
from jaxcalc.bench.harness import compile_jitted, time_call, time_calls
from jaxcalc.bench.report import Row, figure

__all__ = [
    "fma_chain_call",
    "fma_chain_latency",
    "fma_peak_call",
    "vector_fma_peak",
    "copy_calls",
    "copy_bandwidth",
    "gemm_call",
    "gemm_throughput",
]

_BLOCK = 64  # dependent multiply-adds per loop iteration: loop overhead is 1/64 of an iteration


def _chain_kernel(x: jax.Array, a: jax.Array, b: jax.Array, blocks: int, k: int) -> jax.Array:
    """``blocks * k`` multiply-adds x <- a x + b, elementwise; each element is one dependent chain."""

    def body(_, x):
        for _ in range(k):
            x = x * a + b
        return x

    return lax.fori_loop(0, blocks, body, x)


def _ab(dtype: str) -> tuple[jax.Array, jax.Array]:
    # runtime arguments, so nothing is constant-folded; fixed point b / (1 - a) = 1 keeps x normal
    return jnp.asarray(0.5, dtype), jnp.asarray(0.5, dtype)


def fma_chain_call(cfg: BenchConfig) -> tuple[Callable[[], jax.Array], int]:
    """A call running one dependent chain of multiply-adds on a scalar, and its length."""
    blocks = max(1, cfg.fma_chain_steps // _BLOCK)
    a, b = _ab(cfg.dtype)
    x = jnp.asarray(1.0, cfg.dtype)
    compiled, _ = compile_jitted(jax.jit(lambda x, a, b: _chain_kernel(x, a, b, blocks, _BLOCK)), x, a, b)
    return (lambda: compiled(x, a, b)), blocks * _BLOCK


def fma_chain_latency(cfg: BenchConfig) -> Row:
    """ns per step of one dependent multiply-add chain on a scalar (measured, not derived)."""
    call, n = fma_chain_call(cfg)
    t = time_call(call, repeats=cfg.repeats, min_time=cfg.min_time)
    return Row(
        "dependent FMA chain latency",
        {"latency": figure(t.scaled(1e9 / n), "ns/FMA"), "chain": figure(n, "FMA")},
    )


def fma_peak_call(cfg: BenchConfig, m: int, k: int) -> tuple[Callable[[], jax.Array], int]:
    """A call doing multiply-adds on ``m`` independent elements in cache, and how many it does.

    Each pass runs ``k`` dependent multiply-adds per element (one fused loop over the array);
    passes repeat in a loop until the call holds ``cfg.fma_peak_work`` multiply-adds.
    """
    a, b = _ab(cfg.dtype)
    blocks = max(1, cfg.fma_peak_work // (m * k))
    x = jnp.ones((m,), cfg.dtype)
    compiled, _ = compile_jitted(jax.jit(lambda x, a, b: _chain_kernel(x, a, b, blocks, k)), x, a, b)
    return (lambda: compiled(x, a, b)), m * k * blocks


def vector_fma_peak(cfg: BenchConfig) -> Row:
    """Multiply-adds per second over independent elements: the best of ``cfg.fma_peak_shapes``."""
    calls, work = {}, {}
    for shape in cfg.fma_peak_shapes:
        calls[shape], work[shape] = fma_peak_call(cfg, *shape)
    times = time_calls(calls, repeats=cfg.repeats, min_time=cfg.min_time)
    rates = {s: times[s].rate(work[s] / 1e9) for s in calls}
    best = max(rates, key=lambda s: rates[s].median)
    return Row(
        "vector FMA throughput",
        {
            "peak": figure(rates[best], "GFMA/s"),
            "flops": figure(2 * rates[best].median, "GFLOP/s"),
            "array": figure(best[0], "elements"),
            "chain per pass": figure(best[1], "FMA"),
        },
    )


def copy_calls(n: int, dtype: str) -> tuple[dict[str, Callable[[], object]], int]:
    """Calls copying ``n`` elements into an existing buffer (NumPy memcpy, XLA copy into a donated
    buffer), and the bytes each moves (read + write)."""
    itemsize = jnp.dtype(dtype).itemsize
    src_np = np.ones((n,), np.float32 if itemsize == 4 else np.float16)
    dst_np = np.zeros_like(src_np)
    src = jnp.ones((n,), dtype)
    state = {"dst": jnp.zeros((n,), dtype)}
    compiled, _ = compile_jitted(jax.jit(lambda s, d: d.at[:].set(s), donate_argnums=1), src, state["dst"])

    def xla_copy() -> jax.Array:
        state["dst"] = compiled(src, state["dst"])
        return state["dst"]

    return {"numpy memcpy": lambda: np.copyto(dst_np, src_np), "XLA copy": xla_copy}, 2 * n * itemsize


def copy_bandwidth(n: int, dtype: str, cfg: BenchConfig) -> Row:
    """GB/s copying ``n`` elements of ``dtype`` into an existing buffer (the better of two copies)."""
    calls, nbytes = copy_calls(n, dtype)
    times = time_calls(calls, repeats=cfg.repeats, min_time=cfg.min_time)
    how = min(times, key=lambda k: times[k].median)
    return Row(
        f"copy bandwidth, {nbytes / 2 / 2**20:.0f} MiB ({how})",
        {"bandwidth": figure(times[how].rate(nbytes / 1e9), "GB/s"), "bytes": figure(nbytes, "B")},
    )


def gemm_call(m: int, k: int, n: int, cfg: BenchConfig) -> tuple[Callable[[], jax.Array], int, str]:
    """A call multiplying (m, k) @ (k, n) in ``cfg.dtype``, its FLOPs (2 m k n), and its name."""
    ka, kb = jax.random.split(jax.random.key(0))
    a = jax.random.normal(ka, (m, k), cfg.dtype)
    b = jax.random.normal(kb, (k, n), cfg.dtype)
    compiled, _ = compile_jitted(jax.jit(jnp.matmul), a, b)
    return (lambda: compiled(a, b)), 2 * m * k * n, f"GEMM {cfg.dtype} {m}x{k} @ {k}x{n}"


def gemm_throughput(m: int, k: int, n: int, cfg: BenchConfig) -> Row:
    """GFLOP/s of a (m, k) @ (k, n) matmul in ``cfg.dtype`` at the matmul precision in force."""
    call, flops, name = gemm_call(m, k, n, cfg)
    t = time_call(call, repeats=cfg.repeats, min_time=cfg.min_time)
    return Row(name, {"throughput": figure(t.rate(flops / 1e9), "GFLOP/s")})
