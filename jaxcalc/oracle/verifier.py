"""Check another implementation against a golden set (``jaxcalc verify``), element by element.

For each instance the implementation gets the golden inputs and the cotangent c in the claimed
dtype (float32: cast; bfloat16 and float16: rounded to the dtype, round to nearest even;
integers as int64, masks as bool), and returns F(inputs) and J^T c for each differentiable input.
Each quantity is compared with the column's float64 truth (for a low-precision column, the truth
computed on the rounded inputs) by ``max|got - truth| / max(max|truth|, floor)`` against the
instance's tolerance for that output and dtype (from the manifest); matching infinities compare
equal, and NaN or an infinity where the truth is finite fails naming the element.

**Dtype honesty.** Every array of a reply must be of the claimed dtype or hold only values that
dtype represents exactly (under bfloat16: a bfloat16 array, or float32 values that are bfloat16
values); a reply computed in higher precision fails with a message that says so.

An instance passes when every quantity does; it is skipped when the implementation answers
``unsupported`` or the column does not apply to it (with the reason); anything else (an error
reply, a wrong shape, NaN, a missing VJP, a stall or crash) fails it with a one-line reason,
and the next instance still runs.
"""

from __future__ import annotations

import math
import re
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from jaxcalc.diagnose import diagnose
from jaxcalc.numerics import FLOAT_DTYPES, compare, np_dtype
from jaxcalc.oracle.arrays import ArrayFormatError, decode_array, encode_array
from jaxcalc.oracle.golden import GoldenCase, GoldenSet
from jaxcalc.oracle.protocol import Program, ReplyError, StartError
from jaxcalc.oracle.safety import one_line

__all__ = [
    "DTYPES",
    "Quantity",
    "CaseResult",
    "Report",
    "impl_program",
    "request_for",
    "judge",
    "verify_cases",
    "summary_line",
    "stage_lines",
    "table_header",
    "format_result",
    "result_json",
]

DTYPES = FLOAT_DTYPES
_MODULE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")


class Quantity(NamedTuple):
    """One compared quantity ('value' or 'vjp x'): error, worst element, both values there."""

    name: str
    error: float
    index: tuple[int, ...]
    got: float
    expected: float
    passed: bool
    diagnosis: dict[str, Any] | None = None  # jaxcalc.diagnose: what kind of wrong, when it failed


class CaseResult(NamedTuple):
    """The verdict on one instance: 'pass', 'FAIL' or 'skip', its quantities, and why it failed."""

    name: str  # the instance id
    verdict: str
    tolerance: float
    quantities: tuple[Quantity, ...]
    message: str = ""
    shapes: str = ""
    tolerances: tuple[float, ...] = ()  # per quantity
    case: str = ""  # the case the implementation was asked for (a stage's is its base case)


def impl_program(target: str, timeout: float) -> Program:
    """The worker process for ``--impl``: ``target`` is a module name or a path to a .py file.

    Raises StartError (one line) when the path does not exist or is not a module name.
    """
    if target.endswith(".py") or "/" in target or "\\" in target:
        path = Path(target)
        if not path.is_file():
            raise StartError(f"--impl {target}: no such file")
        if path.suffix != ".py":
            raise StartError(f"--impl {target}: not a .py file")
        target = str(path.resolve())
    elif not _MODULE.match(target):
        raise StartError(f"--impl {target!r}: not a module name or a path to a .py file")
    worker = Path(__file__).with_name("worker.py")
    return Program([sys.executable, str(worker), target], timeout, hello=True)


def _column_arrays(case: GoldenCase, dtype: str) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """The inputs and cotangent sent for ``dtype``: the column's own (low precision) or cast."""
    col = case.columns.get(dtype)
    if col is not None and col.inputs is not None:
        return col.inputs, col.cotangent
    dt = np_dtype(dtype)

    def cast(a: np.ndarray) -> np.ndarray:
        return a.astype(dt) if a.dtype.kind == "f" else a

    return {n: cast(a) for n, a in case.inputs.items()}, cast(case.cotangent)


def request_for(case: GoldenCase, dtype: str) -> dict[str, Any]:
    """The request body for ``case``: the case name, the instance id, inputs and cotangent in ``dtype``."""
    inputs, ct = _column_arrays(case, dtype)
    return {
        "case": case.case,
        "instance": case.name,
        "inputs": {n: encode_array(a) for n, a in inputs.items()},
        "cotangent": encode_array(ct),
    }


def _representable(got: np.ndarray, dtype: str) -> tuple[int, ...] | None:
    """None when every value of ``got`` is exactly a ``dtype`` value, else the first index that is not."""
    if got.dtype.name == dtype or dtype == "float64":
        return None
    dt = np_dtype(dtype)
    narrower = (
        got.dtype.kind == "f"
        and got.dtype.itemsize < dt.itemsize
        and "bfloat16" not in (got.dtype.name, dtype)
    )
    if narrower or (got.dtype.name == "bfloat16" and dtype == "float32"):
        return None  # float16 values under float32, bfloat16 under float32: always exact
    with np.errstate(over="ignore", invalid="ignore"):
        back = got.astype(dt).astype(np.float64)
    g = got.astype(np.float64)
    bad = ~((back == g) | (np.isnan(back) & np.isnan(g)))
    if not bad.any():
        return None
    return tuple(int(i) for i in np.unravel_index(int(np.flatnonzero(bad)[0]), got.shape))


def _diagnosis(
    case: GoldenCase, got: np.ndarray, expected: np.ndarray, tol: float, floor: float
) -> dict[str, Any] | None:
    """The diagnosis of a failed quantity, with the instance's dims and inputs as context."""
    d = diagnose(got, expected, tol=tol, atol=floor, dims=case.entry.get("dims"), inputs=case.inputs)
    return d.to_dict() if d is not None else None


def _quantity(
    case: GoldenCase, name: str, got: np.ndarray, expected: np.ndarray, tol: float, floor: float
) -> Quantity:
    c = compare(got, expected, atol=floor)
    passed = bool(c.finite and c.error <= tol)
    why = None if passed else _diagnosis(case, got, expected, tol, floor)
    return Quantity(name, c.error, c.index, c.a_value, c.b_value, passed, why)


def _reply_array(raw: Any, what: str) -> np.ndarray:
    """A reply's array: decoded from JSON (§5), or taken as is when the caller's process made it."""
    if isinstance(raw, np.ndarray):
        if raw.dtype.kind not in "fiub" and raw.dtype.name != "bfloat16":
            raise ArrayFormatError(f"{what}: dtype {raw.dtype.name} is not a numeric dtype")
        return raw
    return decode_array(raw, what, allow_nonfinite=True)


def judge(case: GoldenCase, reply: dict[str, Any], dtype: str) -> CaseResult:
    """Compare one reply (already matched by id) with the golden values of ``case`` in ``dtype``.

    The reply's arrays are JSON arrays as the protocol sends them, or NumPy arrays (in-process
    callers such as :func:`jaxcalc.testing.golden_cases`)."""
    return _judge(case, reply, dtype)._replace(case=case.case)


def _judge(case: GoldenCase, reply: dict[str, Any], dtype: str) -> CaseResult:
    col = case.columns[dtype]
    tol = max((t for t, _ in col.outputs.values()), default=0.0)
    shapes = case.shapes()

    def fail(msg: str, done: list[Quantity], tols: list[float]) -> CaseResult:
        return CaseResult(case.name, "FAIL", tol, tuple(done), msg, shapes, tuple(tols))

    if "error" in reply:
        if reply["error"] == "unsupported":
            return CaseResult(case.name, "skip", tol, (), "unsupported", shapes)
        return fail(f"implementation error: {one_line(reply['error'], 300)}", [], [])
    value = col.value if col.value is not None else case.value
    vjps = col.vjp if col.vjp is not None else case.vjp
    done: list[Quantity] = []
    tols: list[float] = []
    wanted = [("value", "value", reply.get("value"), value)]
    vjp = reply.get("vjp")
    if "value" not in reply:
        return fail("reply has no 'value'", done, tols)
    if not isinstance(vjp, dict):
        return fail("reply has no 'vjp' object", done, tols)
    wanted += [(f"vjp {n}", f"vjp/{n}", vjp.get(n), vjps[n]) for n in case.diff_names]
    for what, key, raw, expected in wanted:
        if raw is None:
            return fail(f"{what}: missing from the reply", done, tols)
        try:
            got = _reply_array(raw, what)
        except ArrayFormatError as exc:
            return fail(str(exc), done, tols)
        if got.shape != expected.shape:
            why = _diagnosis(case, got.astype(np.float64), expected, *col.outputs[key]) if got.size else None
            hint = f": {why['line']}" if why and why["kind"] != "none" else ""
            return fail(f"{what}: shape {list(got.shape)}, expected {list(expected.shape)}{hint}", done, tols)
        where = _representable(got, dtype)
        if where is not None:
            return fail(
                f"{what}: {got.dtype.name} value {float(got[where])!r} at [{', '.join(map(str, where))}] is not a "
                f"{dtype} value: computed in higher precision than the claimed {dtype}",
                done,
                tols,
            )
        t, floor = col.outputs[key]
        done.append(_quantity(case, what, got.astype(np.float64), expected, t, floor))
        tols.append(t)
    extra = sorted(set(vjp) - set(case.diff_names))
    if extra:
        return fail(f"vjp for {extra}: not differentiable inputs of {case.case}", done, tols)
    bad = [(q, t) for q, t in zip(done, tols, strict=True) if not q.passed]
    if bad:
        q, t = bad[0]
        why = "is not finite" if not math.isfinite(q.error) else f"error {q.error:.2e} > {t:.1e}"
        return fail(f"{q.name} {why} at [{', '.join(map(str, q.index))}]", done, tols)
    return CaseResult(case.name, "pass", tol, tuple(done), "", shapes, tuple(tols))


def verify_cases(golden: GoldenSet, program: Program, dtype: str) -> Iterator[CaseResult]:
    """Ask ``program`` for each case of ``golden`` in turn and judge the replies, yielding as it goes."""
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {DTYPES}")
    for case in golden.cases.values():
        col = case.columns.get(dtype)
        if col is None:
            why = f"this golden set has no {dtype} column"
            yield CaseResult(case.name, "skip", 0.0, (), why, case.shapes(), case=case.case)
            continue
        if not col.applicable:
            why = f"not applicable in {dtype}: {col.reason}"
            yield CaseResult(case.name, "skip", 0.0, (), why, case.shapes(), case=case.case)
            continue
        try:
            reply = program.ask(request_for(case, dtype))
        except ReplyError as exc:
            yield CaseResult(
                case.name, "FAIL", case.tolerances[dtype], (), str(exc), case.shapes(), case=case.case
            )
            continue
        yield judge(case, reply, dtype)


def stage_lines(golden: GoldenSet, results: list[CaseResult]) -> dict[str, str]:
    """For each failing composite whose stages were verified: one line naming the failing stages,
    or saying that every stage passes, so the composition itself is wrong."""
    by_id = {r.name: r for r in results}
    out = {}
    for r in results:
        if r.verdict != "FAIL":
            continue
        stages = [c for c in golden.cases.values() if c.stage_of == r.name and c.name in by_id]
        if not stages:
            continue
        verdicts = [(c.entry["stage"], by_id[c.name]) for c in stages]
        bad = [(s, v) for s, v in verdicts if v.verdict == "FAIL"]
        if bad:
            named = ", ".join(f"{s} ({v.message})" if v.message else s for s, v in bad)
            ok = [s for s, v in verdicts if v.verdict == "pass"]
            out[r.name] = f"stages of {r.name}: FAIL {named}" + (f"; pass {', '.join(ok)}" if ok else "")
        elif all(v.verdict == "pass" for _, v in verdicts):
            out[r.name] = (
                f"stages of {r.name}: all {len(verdicts)} pass ({', '.join(s for s, _ in verdicts)}): "
                "the composition itself is wrong"
            )
    return out


def summary_line(results: list[CaseResult]) -> str:
    """Exactly ``N passed, M failed, K skipped`` (counting instances)."""
    n = {v: sum(r.verdict == v for r in results) for v in ("pass", "FAIL", "skip")}
    return f"{n['pass']} passed, {n['FAIL']} failed, {n['skip']} skipped"


def _num(x: float) -> str:
    return f"{x:.9g}"


def format_result(r: CaseResult) -> list[str]:
    """Table rows for one instance, each naming it: one row per quantity with that quantity's verdict
    (the first also gives the shapes), then the instance's verdict and reason when it failed or was
    skipped."""
    rows = []
    head = f"{r.name:32} {r.verdict:7}"
    for k, q in enumerate(r.quantities):
        where = "[" + ", ".join(map(str, q.index)) + "]"
        mark = "" if q.passed else "  <--"
        tol = r.tolerances[k] if k < len(r.tolerances) else r.tolerance
        shapes = f"  {r.shapes}" if k == 0 and r.shapes else ""
        own = f"{r.name:32} {'pass' if q.passed else 'FAIL':7}"  # each quantity's own verdict
        rows.append(
            f"{own} {q.name:16} {q.error:9.2e} {tol:8.1e} {where:>10} "
            f"{_num(q.got):>17} {_num(q.expected):>17}{mark}{shapes}"
        )
        if q.diagnosis:
            rows.append(f"{head} {'':16} diagnosis: {q.diagnosis['line']}")
    if r.message:  # may quote the implementation: escaped, so it cannot forge rows or move the cursor
        shapes = f"  {r.shapes}" if not rows and r.shapes else ""
        rows.append(f"{head} {one_line(r.message, 400)}{shapes}")
    return rows


def table_header() -> str:
    """The column titles of :func:`format_result` rows."""
    return (
        f"{'instance':32} {'verdict':7} {'quantity':16} {'error':>9} {'tol':>8} {'worst':>10} "
        f"{'got':>17} {'expected':>17}"
    )


def result_json(r: CaseResult) -> dict[str, Any]:
    """One case's result as JSON-safe data (a non-finite error becomes null with finite false)."""
    return {
        "instance": r.name,
        "case": r.case or r.name.split("@")[0].split("~")[0],
        "shapes": r.shapes,
        "verdict": r.verdict,
        "tolerance": r.tolerance,
        "message": r.message,
        "quantities": [
            {
                "name": q.name,
                "error": q.error if math.isfinite(q.error) else None,
                "finite": math.isfinite(q.error),
                "index": list(q.index),
                "got": q.got if math.isfinite(q.got) else repr(q.got),
                "expected": q.expected if math.isfinite(q.expected) else repr(q.expected),
                "passed": q.passed,
                "tolerance": r.tolerances[k] if k < len(r.tolerances) else r.tolerance,
                "diagnosis": q.diagnosis,
            }
            for k, q in enumerate(r.quantities)
        ],
    }


@dataclass(frozen=True)
class Report:
    """What :func:`jaxcalc.oracle.verify` found: one CaseResult per instance, in manifest order.

    ``ok`` is true when nothing failed and something passed (all skipped is not a pass).
    ``format()`` gives the table ``jaxcalc verify`` prints; ``to_json()`` its ``--json`` report.
    """

    golden: str
    producer: dict[str, Any]
    implementation: str
    dtype: str
    results: tuple[CaseResult, ...]
    stages: dict[str, str] = field(default_factory=dict)

    def _count(self, verdict: str) -> int:
        return sum(r.verdict == verdict for r in self.results)

    @property
    def passed(self) -> int:
        return self._count("pass")

    @property
    def failed(self) -> int:
        return self._count("FAIL")

    @property
    def skipped(self) -> int:
        return self._count("skip")

    @property
    def ok(self) -> bool:
        return self.failed == 0 and self.passed > 0

    @property
    def failures(self) -> tuple[CaseResult, ...]:
        return tuple(r for r in self.results if r.verdict == "FAIL")

    @property
    def summary(self) -> str:
        """``N passed, M failed, K skipped``."""
        return summary_line(list(self.results))

    def rows(self) -> list[str]:
        """The table: header, each instance's rows, the stage lines, the summary line."""
        out = [table_header()]
        for r in self.results:
            out.extend(format_result(r))
        out.extend(self.stages.values())
        out.append(self.summary)
        return out

    def format(self) -> str:
        return "\n".join(self.rows())

    def to_json(self) -> dict[str, Any]:
        """JSON-safe data: every instance's result, the stage lines and the counts."""
        return {
            "golden": self.golden,
            "producer": self.producer,
            "implementation": self.implementation,
            "dtype": self.dtype,
            "instances": [result_json(r) for r in self.results],
            "stages": self.stages,
            "summary": self.summary,
            "passed": self.passed,
            "failed": self.failed,
            "skipped": self.skipped,
        }
