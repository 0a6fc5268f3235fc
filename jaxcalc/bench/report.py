"""Benchmark results as data: figures with units, rows, targets; printed as tables or JSON.

A :class:`Figure` is one number with its unit (and, for a timing, its spread). A workload
returns a :class:`WorkloadResult`: its configuration, rows of figures, the compile time of
each jitted step, and targets judged on ratios measured in the same process.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

from jaxcalc.bench.harness import Timing

__all__ = [
    "MIN_VERDICT_REPEATS",
    "Figure",
    "Row",
    "Target",
    "WorkloadResult",
    "BenchReport",
    "figure",
    "format_report",
    "withhold_thin_verdicts",
]

FORMAT_VERSION = 2  # 2: a target's "met" is null when its figures had too few repeats

# A target's verdict needs medians over at least this many samples: with one or two, a median
# is (or averages in) the first timed call, which for an uncached check includes its compile.
MIN_VERDICT_REPEATS = 3


class Figure(NamedTuple):
    """A value with its unit; timings and rates also carry min, max and quartiles."""

    value: float
    unit: str
    spread: dict[str, float] | None = None

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"value": _clean(self.value), "unit": self.unit}
        if self.spread:
            d.update({k: _clean(v) for k, v in self.spread.items()})
        return d

    def cell(self) -> str:
        text = _fmt(self.value)
        if self.spread:
            text += f" [{_fmt(self.spread['min'])}-{_fmt(self.spread['max'])}]"
        return text


def figure(x: float | Timing, unit: str) -> Figure:
    """A Figure from a plain number, or from a Timing (median value, spread kept)."""
    if isinstance(x, Timing):
        spread = {
            "min": x.min,
            "max": x.max,
            "q1": x.q1,
            "q3": x.q3,
            "repeats": x.repeats,
            "number": x.number,
        }
        return Figure(float(x.median), unit, spread)
    return Figure(float(x), unit)


class Row(NamedTuple):
    """One measured variant: a name and its figures, in display order."""

    name: str
    figures: dict[str, Figure]

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "figures": {k: f.to_dict() for k, f in self.figures.items()}}


class Target(NamedTuple):
    """A goal on a ratio: ``value`` (what was measured) against ``threshold`` under ``op``."""

    name: str
    value: float
    op: str  # ">=" or "<="
    threshold: float
    unit: str
    note: str = ""
    withheld: str = ""  # why no verdict is given (too few repeats); empty when the figure supports one

    @property
    def met(self) -> bool | None:
        """Whether the goal is met; None when the verdict is withheld."""
        if self.withheld:
            return None
        if not math.isfinite(self.value):
            return False
        return self.value >= self.threshold if self.op == ">=" else self.value <= self.threshold

    def to_dict(self) -> dict[str, Any]:
        d = self._asdict()
        d["value"] = _clean(self.value)
        d["met"] = self.met
        return d

    def line(self) -> str:
        if self.withheld:
            verdict = f"not enough repeats for a verdict ({self.withheld})"
        else:
            verdict = "met" if self.met else "NOT met"
        note = f"  ({self.note})" if self.note else ""
        goal = f"{_fmt(self.value)} {self.unit} {self.op} {_fmt(self.threshold)}"
        return f"  target {self.name}: {goal}: {verdict}{note}"


class WorkloadResult(NamedTuple):
    """Everything one workload measured."""

    name: str
    title: str
    config: dict[str, Any]
    rows: list[Row]
    compile: dict[str, float]  # jitted step -> seconds (lower + compile)
    targets: list[Target]
    notes: list[str]

    def to_dict(self) -> dict[str, Any]:
        return {
            "title": self.title,
            "config": self.config,
            "rows": [r.to_dict() for r in self.rows],
            "compile": {k: {"value": _clean(v), "unit": "s"} for k, v in self.compile.items()},
            "targets": [t.to_dict() for t in self.targets],
            "notes": list(self.notes),
        }


def withhold_thin_verdicts(result: WorkloadResult) -> WorkloadResult:
    """``result`` with every target's verdict withheld when any of its timings has fewer than
    :data:`MIN_VERDICT_REPEATS` samples (the targets are ratios of those timings' medians)."""
    spreads = [f.spread for r in result.rows for f in r.figures.values() if f.spread]
    counts = [int(s["repeats"]) for s in spreads if "repeats" in s]
    if not counts or min(counts) >= MIN_VERDICT_REPEATS:
        return result
    why = f"medians of {min(counts)} sample(s); a verdict needs {MIN_VERDICT_REPEATS}"
    return result._replace(targets=[t._replace(withheld=why) for t in result.targets])


class BenchReport(NamedTuple):
    """A whole run: where it ran, with what, the machine limits and every workload."""

    command: str
    quick: bool
    machine: dict[str, Any]
    versions: dict[str, Any]
    settings: dict[str, Any]
    limits: list[Row]
    workloads: list[WorkloadResult]
    wall_s: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "format_version": FORMAT_VERSION,
            "command": self.command,
            "quick": self.quick,
            "machine": self.machine,
            "versions": self.versions,
            "settings": self.settings,
            "limits": {r.name: next(iter(r.figures.values())).to_dict() | _extra(r) for r in self.limits},
            "workloads": {w.name: w.to_dict() for w in self.workloads},
            "wall": {"value": _clean(self.wall_s), "unit": "s"},
        }


def _extra(row: Row) -> dict[str, Any]:
    """The figures of a limit row after the first one (how it was measured, sizes)."""
    rest = list(row.figures.items())[1:]
    return {k: f.to_dict() for k, f in rest}


def _clean(v: float) -> float | None:
    """JSON has no inf/nan: those become null."""
    v = float(v)
    return v if math.isfinite(v) else None


def _fmt(v: float) -> str:
    if not math.isfinite(v):
        return str(v)
    a = abs(v)
    if a == 0:
        return "0"
    if a >= 1e5 or a < 1e-3:
        return f"{v:.3g}"
    if a >= 100:
        return f"{v:.0f}"
    if a >= 10:
        return f"{v:.1f}"
    return f"{v:.3g}"


def _table(rows: list[Row], indent: str = "  ") -> list[str]:
    keys: list[str] = []
    units: dict[str, str] = {}
    for r in rows:
        for k, f in r.figures.items():
            if k not in keys:
                keys.append(k)
                units[k] = f.unit
    header = ["variant"] + [f"{k} [{units[k]}]" if units[k] else k for k in keys]
    body = [[r.name] + [r.figures[k].cell() if k in r.figures else "-" for k in keys] for r in rows]
    widths = [max(len(line[i]) for line in [header, *body]) for i in range(len(header))]
    out = [indent + "  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)).rstrip()]
    out += [
        indent + "  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)).rstrip() for line in body
    ]
    return out


def format_report(report: BenchReport) -> str:
    """The human-readable tables: machine, limits, each workload with its targets, compile times."""
    m, s, v = report.machine, report.settings, report.versions
    lines = [
        f"jaxcalc bench{' --quick' if report.quick else ''}: backend {m['backend']}, "
        f"device {m['device_kind']} "
        f"({m['cpu_model']}, {m['cpu_usable']} usable CPUs), dtype {s['dtype']}, "
        f"matmul precision {s['matmul_precision']}",
        f"versions: jax {v['jax']}, jaxlib {v['jaxlib']}, numpy {v['numpy']}, torch {v['torch']}, "
        f"python {v['python']}; load average at start {m['load_average_1_5_15min']}",
        "timings: median [min-max] over repeats; every ratio is measured within this process",
        "",
        "machine limits (measured in this process)",
        *_table(report.limits),
    ]
    for w in report.workloads:
        cfg = ", ".join(f"{k}={val}" for k, val in w.config.items())
        lines += ["", f"{w.name}: {w.title}", f"  config: {cfg}", *_table(w.rows)]
        lines += [t.line() for t in w.targets]
        lines += [f"  note: {n}" for n in w.notes]
    compiles = [(w.name, k, t) for w in report.workloads for k, t in w.compile.items()]
    if compiles:
        lines += ["", "compile time of each jitted step (trace + lower + compile, measured apart)"]
        width = max(len(f"{a}/{b}") for a, b, _ in compiles)
        lines += [f"  {f'{a}/{b}'.ljust(width)}  {t * 1e3:8.1f} ms" for a, b, t in compiles]
    lines += ["", f"total wall time {report.wall_s:.1f} s"]
    return "\n".join(lines)
