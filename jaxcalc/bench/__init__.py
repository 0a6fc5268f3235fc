"""Jitted benchmarks, side by side and against the machine's own measured limits.

``run_bench(cfg, names)`` measures the limits (one dependent FMA's latency, vector FMA
throughput) and then each workload of ``WORKLOADS`` in one process, returning a
:class:`BenchReport` that prints as tables (``format_report``) or JSON (``.to_dict()``).
"""

from jaxcalc.bench.config import DTYPES, FULL, PRECISIONS, QUICK, BenchConfig
from jaxcalc.bench.harness import (
    CompileTime,
    Timing,
    compile_jitted,
    machine_info,
    time_call,
    time_calls,
    versions,
)
from jaxcalc.bench.report import BenchReport, Figure, Row, Target, WorkloadResult, format_report
from jaxcalc.bench.workloads import WORKLOADS, run_bench, select

__all__ = [
    "DTYPES",
    "FULL",
    "PRECISIONS",
    "QUICK",
    "WORKLOADS",
    "BenchConfig",
    "BenchReport",
    "CompileTime",
    "Figure",
    "Row",
    "Target",
    "Timing",
    "WorkloadResult",
    "compile_jitted",
    "format_report",
    "machine_info",
    "run_bench",
    "select",
    "time_call",
    "time_calls",
    "versions",
]
