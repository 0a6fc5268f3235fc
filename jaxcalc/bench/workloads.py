"""The benchmark registry and the runner shared by ``jaxcalc bench`` and ``scripts/bench.py``.

A workload is a function ``(cfg, limits) -> WorkloadResult``; ``limits`` holds the machine
limits measured first in the same process (``fma_latency_ns``, ``vector_fma_gfma``).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Sequence

import jax

from jaxcalc.bench.batched import batched_descent
from jaxcalc.bench.config import BenchConfig
from jaxcalc.bench.descent import seed_descent
from jaxcalc.bench.gradcheck import gradcheck
from jaxcalc.bench.harness import machine_info, matmul_precision, versions
from jaxcalc.bench.limits import fma_chain_latency, vector_fma_peak
from jaxcalc.bench.report import BenchReport, WorkloadResult, withhold_thin_verdicts
from jaxcalc.bench.training import mlp_step, transformer_step

__all__ = ["WORKLOADS", "Workload", "select", "run_bench"]

Workload = Callable[[BenchConfig, dict[str, float]], WorkloadResult]

WORKLOADS: dict[str, Workload] = {
    "seed_descent": seed_descent,
    "batched_descent": batched_descent,
    "mlp_step": mlp_step,
    "transformer_step": transformer_step,
    "gradcheck": gradcheck,
}


def select(names: Sequence[str] | None) -> list[str]:
    """The workloads to run, in registry order; None or empty means all. ValueError on unknown names."""
    if not names:
        return list(WORKLOADS)
    unknown = [n for n in names if n not in WORKLOADS]
    if unknown:
        raise ValueError(f"unknown workload {unknown[0]!r}; choose from {', '.join(WORKLOADS)}")
    return [n for n in WORKLOADS if n in set(names)]


def run_bench(
    cfg: BenchConfig,
    names: Sequence[str] | None = None,
    *,
    quick: bool = False,
    command: str = "",
    progress: Callable[[str], None] | None = None,
) -> BenchReport:
    """Measure the machine limits, then each selected workload, all in this process."""
    chosen = select(names)
    say = progress or (lambda _msg: None)
    t0 = time.perf_counter()
    machine = machine_info()
    precision = jax.default_matmul_precision(cfg.precision) if cfg.precision else contextlib.nullcontext()
    with precision:
        settings = {"dtype": cfg.dtype, "matmul_precision": matmul_precision(), "repeats": cfg.repeats}
        say("measuring machine limits")
        chain = fma_chain_latency(cfg)
        peak = vector_fma_peak(cfg)
        limits = {
            "fma_latency_ns": chain.figures["latency"].value,
            "vector_fma_gfma": peak.figures["peak"].value,
            "vector_fma_elements": peak.figures["array"].value,
            "vector_fma_chain": peak.figures["chain per pass"].value,
        }
        results = []
        for name in chosen:
            say(f"running {name}")
            results.append(withhold_thin_verdicts(WORKLOADS[name](cfg, limits)))
    return BenchReport(
        command=command,
        quick=quick,
        machine=machine,
        versions=versions(),
        settings=settings,
        limits=[chain, peak],
        workloads=results,
        wall_s=time.perf_counter() - t0,
    )
