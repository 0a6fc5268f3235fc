"""Check another implementation against a golden set (``jaxcalc verify``), element by element.

For each case the implementation gets the golden inputs (floats cast to the chosen dtype,
integers as int64) and the cotangent c, and returns F(inputs) and J^T c for each differentiable
input. Each quantity is compared with the golden float64 value by the normwise relative error
``max|got - expected| / max(max|expected|, 1e-30)`` against the case's tolerance for that dtype
(from the manifest). A case passes when every quantity does; it is skipped when the
implementation answers ``unsupported``; anything else (an error reply, a wrong shape, NaN, a
missing VJP, a stall or crash) fails it with a one-line reason, and the next case still runs.
"""

from __future__ import annotations

import math
import re
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from jaxcalc.numerics import compare
from jaxcalc.oracle.arrays import ArrayFormatError, decode_array, encode_array
from jaxcalc.oracle.golden import GoldenCase, GoldenSet
from jaxcalc.oracle.protocol import Program, ReplyError, StartError
from jaxcalc.oracle.safety import one_line

__all__ = [
    "DTYPES",
    "Quantity",
    "CaseResult",
    "impl_program",
    "request_for",
    "judge",
    "verify_cases",
    "summary_line",
    "table_header",
    "format_result",
    "result_json",
]

DTYPES = ("float64", "float32")
_MODULE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")


class Quantity(NamedTuple):
    """One compared quantity ('value' or 'vjp x'): error, worst element, both values there."""

    name: str
    error: float
    index: tuple[int, ...]
    got: float
    expected: float
    passed: bool


class CaseResult(NamedTuple):
    """The verdict on one case: 'pass', 'FAIL' or 'skip', its quantities, and why it failed."""

    name: str
    verdict: str
    tolerance: float
    quantities: tuple[Quantity, ...]
    message: str = ""


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


def request_for(case: GoldenCase, dtype: str) -> dict[str, Any]:
    """The request body for ``case``: its inputs and cotangent, floats cast to ``dtype``."""

    def cast(a: np.ndarray) -> np.ndarray:
        return a.astype(dtype) if a.dtype.kind == "f" else a

    return {
        "case": case.name,
        "inputs": {n: encode_array(cast(a)) for n, a in case.inputs.items()},
        "cotangent": encode_array(cast(case.cotangent)),
    }


def _quantity(name: str, got: np.ndarray, expected: np.ndarray, tol: float) -> Quantity:
    c = compare(got, expected)
    return Quantity(name, c.error, c.index, c.a_value, c.b_value, bool(c.finite and c.error <= tol))


def judge(case: GoldenCase, reply: dict[str, Any], dtype: str) -> CaseResult:
    """Compare one reply (already matched by id) with the golden values of ``case``."""
    tol = case.tolerances[dtype]

    def fail(msg: str, done: list[Quantity]) -> CaseResult:
        return CaseResult(case.name, "FAIL", tol, tuple(done), msg)

    if "error" in reply:
        if reply["error"] == "unsupported":
            return CaseResult(case.name, "skip", tol, (), "unsupported")
        return fail(f"implementation error: {one_line(reply['error'], 300)}", [])
    done: list[Quantity] = []
    wanted = [("value", reply.get("value"), case.value)]
    vjp = reply.get("vjp")
    if "value" not in reply:
        return fail("reply has no 'value'", done)
    if not isinstance(vjp, dict):
        return fail("reply has no 'vjp' object", done)
    wanted += [(f"vjp {n}", vjp.get(n), case.vjp[n]) for n in case.diff_names]
    for what, raw, expected in wanted:
        if raw is None:
            return fail(f"{what}: missing from the reply", done)
        try:
            got = decode_array(raw, what, allow_nonfinite=True)
        except ArrayFormatError as exc:
            return fail(str(exc), done)
        if got.shape != expected.shape:
            return fail(f"{what}: shape {list(got.shape)}, expected {list(expected.shape)}", done)
        done.append(_quantity(what, got, expected, tol))
    extra = sorted(set(vjp) - set(case.diff_names))
    if extra:
        return fail(f"vjp for {extra}: not differentiable inputs of {case.name}", done)
    bad = [q for q in done if not q.passed]
    if bad:
        q = bad[0]
        why = "is not finite" if not math.isfinite(q.error) else f"error {q.error:.2e} > {tol:.1e}"
        return fail(f"{q.name} {why} at [{', '.join(map(str, q.index))}]", done)
    return CaseResult(case.name, "pass", tol, tuple(done))


def verify_cases(golden: GoldenSet, program: Program, dtype: str) -> Iterator[CaseResult]:
    """Ask ``program`` for each case of ``golden`` in turn and judge the replies, yielding as it goes."""
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {DTYPES}")
    for case in golden.cases.values():
        try:
            reply = program.ask(request_for(case, dtype))
        except ReplyError as exc:
            yield CaseResult(case.name, "FAIL", case.tolerances[dtype], (), str(exc))
            continue
        yield judge(case, reply, dtype)


def summary_line(results: list[CaseResult]) -> str:
    """Exactly ``N passed, M failed, K skipped``."""
    n = {v: sum(r.verdict == v for r in results) for v in ("pass", "FAIL", "skip")}
    return f"{n['pass']} passed, {n['FAIL']} failed, {n['skip']} skipped"


def _num(x: float) -> str:
    return f"{x:.9g}"


def format_result(r: CaseResult) -> list[str]:
    """Table rows for one case: the first names it and its verdict, one row per quantity."""
    rows = []
    head = f"{r.name:24} {r.verdict:7}"
    for k, q in enumerate(r.quantities):
        where = "[" + ", ".join(map(str, q.index)) + "]"
        mark = "" if q.passed else "  <--"
        rows.append(
            f"{head if k == 0 else '':32} {q.name:16} {q.error:9.2e} {r.tolerance:8.1e} {where:>10} "
            f"{_num(q.got):>17} {_num(q.expected):>17}{mark}"
        )
    if r.message:  # may quote the implementation: escaped, so it cannot forge rows or move the cursor
        rows.append(f"{head if not rows else '':32} {one_line(r.message, 400)}")
    return rows


def table_header() -> str:
    """The column titles of :func:`format_result` rows."""
    return (
        f"{'case':24} {'verdict':7} {'quantity':16} {'error':>9} {'tol':>8} {'worst':>10} "
        f"{'got':>17} {'expected':>17}"
    )


def result_json(r: CaseResult) -> dict[str, Any]:
    """One case's result as JSON-safe data (a non-finite error becomes null with finite false)."""
    return {
        "case": r.name,
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
                "expected": q.expected,
                "passed": q.passed,
            }
            for q in r.quantities
        ],
    }
