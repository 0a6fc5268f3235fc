"""The timing harness shared by ``jaxcalc bench`` and ``scripts/bench.py``.

Rules every figure follows:

* compile time is measured apart: ``compile_jitted`` times ``jit(f).lower(...)`` and
  ``.compile()`` and hands back the compiled executable, which is what the steady-state
  timings then call, so no timed call ever compiles;
* every timed call ends in ``block_until_ready`` (or the caller's own ``sync``) before the
  clock is read, so asynchronous dispatch cannot hide work;
* a timing is ``repeats`` samples of the mean time per call over ``number`` calls (``number``
  grows until one sample lasts ``min_time``) and is reported as median, quartiles, min and max;
  variants compared with each other are sampled in turn (round-robin), so a shared machine's
  changing load falls on all of them alike;
* every comparison is a ratio of two timings taken in the same process, one after the other.
"""

from __future__ import annotations

import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from importlib import metadata
from typing import Any, NamedTuple

import jax

__all__ = [
    "Timing",
    "CompileTime",
    "time_call",
    "time_calls",
    "compile_jitted",
    "machine_info",
    "versions",
    "matmul_precision",
]


class Timing(NamedTuple):
    """Seconds per call over ``repeats`` samples: median, quartiles q1/q3, min and max."""

    median: float
    q1: float
    q3: float
    min: float
    max: float
    repeats: int
    number: int

    def scaled(self, factor: float) -> Timing:
        """The same timing with every statistic multiplied by ``factor`` (e.g. 1/steps, 1e9)."""
        f = float(factor)
        return self._replace(
            median=self.median * f, q1=self.q1 * f, q3=self.q3 * f, min=self.min * f, max=self.max * f
        )

    def rate(self, work: float) -> Timing:
        """``work`` per second: median = work/median; min and max swap (the fastest call is the max rate)."""
        w = float(work)
        return self._replace(
            median=w / self.median, q1=w / self.q3, q3=w / self.q1, min=w / self.max, max=w / self.min
        )


class CompileTime(NamedTuple):
    """Seconds spent tracing and lowering to StableHLO, and compiling that to an executable."""

    lower_s: float
    compile_s: float

    @property
    def total_s(self) -> float:
        return self.lower_s + self.compile_s


def _quartiles(xs: list[float]) -> tuple[float, float]:
    if len(xs) < 2:
        return xs[0], xs[0]
    q = statistics.quantiles(xs, n=4, method="inclusive")
    return q[0], q[2]


def _calibrate(sample: Callable[[int], float], min_time: float, max_number: int) -> tuple[int, float]:
    """Double ``number`` from 1 until ``number`` calls take ``min_time``; returns (number, last seconds)."""
    number = 1
    elapsed = sample(number)
    while elapsed < min_time and number < max_number:
        grow = number * 2 if elapsed <= 0 else max(number * 2, int(number * min_time / elapsed))
        number = min(max_number, grow)
        elapsed = sample(number)
    return number, elapsed


def _timing(samples: list[float], number: int) -> Timing:
    samples = sorted(samples)
    q1, q3 = _quartiles(samples)
    return Timing(statistics.median(samples), q1, q3, samples[0], samples[-1], len(samples), number)


def time_calls(
    calls: dict[str, Callable[[], Any]],
    *,
    repeats: int = 5,
    min_time: float = 0.05,
    max_number: int = 1_000_000,
    warmup: int = 1,
    sync: Callable[[Any], Any] | dict[str, Callable[[Any], Any]] = jax.block_until_ready,
    settle: int = 0,
) -> dict[str, Timing]:
    """Time each zero-argument call: seconds per call, as a :class:`Timing` per name.

    Every call runs ``warmup`` times untimed first (caches, page faults, thread pools). Then
    each call's ``number`` doubles from 1 until ``number`` calls take ``min_time`` seconds,
    and ``repeats`` rounds follow in which every call takes one sample of ``number`` calls in
    turn: interleaving spreads a shared machine's changing load evenly over the variants
    compared. ``sync(result)`` (one function, or one per name) runs on the last result of a
    sample before the clock is read. A stateful call (donated buffers, an optimizer) keeps its
    own state; every call must be a valid step. With ``settle``, every sample follows that many
    untimed calls of the same call, so that it meets its own caches, allocations and thread
    pools rather than those the previous call in turn left behind; the first round (the
    calibration, where a first call's compilation shows) is taken as it comes.
    """
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    syncs = sync if isinstance(sync, dict) else {name: sync for name in calls}

    def sampler(name: str) -> Callable[[int], float]:
        call, done = calls[name], syncs[name]

        def sample(n: int, settled: bool = False) -> float:
            for _ in range(settle if settled else 0):
                done(call())
            t0 = time.perf_counter()
            out = None
            for _ in range(n):
                out = call()
            done(out)
            return time.perf_counter() - t0

        return sample

    samplers = {name: sampler(name) for name in calls}
    for name in calls:
        for _ in range(warmup):
            syncs[name](calls[name]())
    numbers, samples = {}, {}
    for name, sample in samplers.items():
        numbers[name], first = _calibrate(sample, min_time, max_number)
        samples[name] = [first / numbers[name]]
    for _ in range(repeats - 1):
        for name, sample in samplers.items():
            samples[name].append(sample(numbers[name], True) / numbers[name])
    return {name: _timing(samples[name], numbers[name]) for name in calls}


def time_call(
    call: Callable[[], Any],
    *,
    repeats: int = 5,
    min_time: float = 0.05,
    max_number: int = 1_000_000,
    warmup: int = 1,
    sync: Callable[[Any], Any] = jax.block_until_ready,
) -> Timing:
    """Time one zero-argument call: :func:`time_calls` with a single entry."""
    return time_calls(
        {"call": call}, repeats=repeats, min_time=min_time, max_number=max_number, warmup=warmup, sync=sync
    )["call"]


def compile_jitted(jitted: Any, *args: Any, **kwargs: Any) -> tuple[Any, CompileTime]:
    """Lower and compile ``jitted`` (a ``jax.jit`` function) for ``args``; returns (executable, times).

    The executable is called like ``jitted`` with arguments of the same shapes and dtypes, and
    never compiles again, so later timings are steady state.
    """
    t0 = time.perf_counter()
    lowered = jitted.lower(*args, **kwargs)
    t1 = time.perf_counter()
    compiled = lowered.compile()
    t2 = time.perf_counter()
    return compiled, CompileTime(t1 - t0, t2 - t1)


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def matmul_precision() -> str:
    """The matmul precision in force: jax_default_matmul_precision, or 'default' when unset."""
    return str(jax.config.jax_default_matmul_precision or "default")


def machine_info() -> dict[str, Any]:
    """Backend, device kind and count, CPU model and counts, OS, and the load average now."""
    dev = jax.devices()[0]
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        usable = os.cpu_count() or 0
    try:
        load = [round(x, 2) for x in os.getloadavg()]
    except OSError:
        load = []
    return {
        "backend": jax.default_backend(),
        "device_kind": dev.device_kind,
        "device_count": jax.device_count(),
        "cpu_model": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "cpu_usable": usable,
        "platform": platform.platform(),
        "load_average_1_5_15min": load,
    }


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def versions() -> dict[str, str | None]:
    """Versions of Python, jaxcalc, jax, jaxlib, numpy and torch (None when not installed)."""
    from jaxcalc import __version__

    return {
        "python": sys.version.split()[0],
        "jaxcalc": __version__,
        "jax": jax.__version__,
        "jaxlib": _version("jaxlib"),
        "numpy": _version("numpy"),
        "torch": _version("torch"),
    }
