"""Check results: one row per comparison, and a report that prints as a compact table."""

from __future__ import annotations

import math
from typing import Any, NamedTuple

__all__ = ["CheckResult", "Report"]


class CheckResult(NamedTuple):
    """One comparison: ``a`` (labelled ``a_label``) against reference ``b`` (``b_label``).

    ``where`` names the worst element by parameter name and pytree path (``params['W1'][2, 10]``);
    ``note`` says what a number cannot (a misshapen gradient, a crossed kink, autodiff-only).
    """

    case: str
    check: str
    a_label: str
    b_label: str
    error: float
    tol: float
    where: str
    a_value: float
    b_value: float
    status: str  # "pass", "FAIL", "kink", or "n/a" (an instance its dtype cannot represent)
    note: str = ""
    diagnosis: str = ""  # jaxcalc.diagnose: what kind of wrong a failing row is (one line)

    @property
    def passed(self) -> bool:
        return self.status == "pass"

    def values(self) -> str:
        """Both values at the worst element, or the note where values mean nothing."""
        if math.isnan(self.a_value) and math.isnan(self.b_value) and self.note:
            return self.note  # a row with no values to show (a misshapen gradient)
        text = f"{self.a_value:.10g} vs {self.b_value:.10g}"
        return f"{text} ({self.note})" if self.note else text

    def line(self) -> str:
        """One row: case, check, sides, error vs tolerance, worst element and both values; a failing
        row with a diagnosis gets it on a second, indented line."""
        if self.status == "n/a":
            return f"{self.case:<24} {self.check:<17} n/a   {self.note}"
        row = (
            f"{self.case:<24} {self.check:<17} {self.status:<5} err {self.error:9.2e} (tol {self.tol:.0e})"
            f"  {self.a_label} vs {self.b_label} at {self.where}: {self.values()}"
        )
        if self.diagnosis and self.status == "FAIL":
            row += f"\n{'':24}   diagnosis: {self.diagnosis}"
        return row

    def to_dict(self) -> dict[str, Any]:
        return self._asdict()


_COLUMNS = ("check", "status", "error", "tol", "compared", "worst element", "values")


class Report(NamedTuple):
    """All check results of one or more cases; ``str(report)`` is the table of them."""

    results: tuple[CheckResult, ...]

    @property
    def passed(self) -> bool:
        return all(r.status != "FAIL" for r in self.results)

    @property
    def failures(self) -> tuple[CheckResult, ...]:
        return tuple(r for r in self.results if r.status == "FAIL")

    def counts(self) -> dict[str, int]:
        return {s: sum(r.status == s for r in self.results) for s in ("pass", "FAIL", "kink", "n/a")}

    def summary(self) -> str:
        """The closing line ``N passed, M failed`` (with ``, K kinks`` and ``, L not applicable``
        when there are any)."""
        c = self.counts()
        line = f"{c['pass']} passed, {c['FAIL']} failed"
        line += f", {c['kink']} kinks" if c["kink"] else ""
        return line + (f", {c['n/a']} not applicable" if c["n/a"] else "")

    def table(self, results: tuple[CheckResult, ...] | None = None) -> str:
        """A compact aligned table of ``results`` (default: all), one row per check."""
        results = self.results if results is None else results
        cases = {r.case for r in results}
        head = (("case",) if len(cases) > 1 else ()) + _COLUMNS
        rows = [
            ((r.case,) if len(cases) > 1 else ())
            + (
                r.check,
                r.status,
                f"{r.error:.2e}",
                f"{r.tol:.0e}",
                f"{r.a_label} vs {r.b_label}",
                r.where,
                r.values(),
            )
            for r in results
        ]
        widths = [max(len(str(x)) for x in col) for col in zip(head, *rows, strict=True)]
        lines = [
            "  ".join(str(x).ljust(w) for x, w in zip(row, widths, strict=True)).rstrip()
            for row in [head, *rows]
        ]
        return "\n".join(lines)

    def format(self) -> str:
        """The table, headed by the function or case name(s), closed by the summary line."""
        names = ", ".join(dict.fromkeys(r.case for r in self.results))
        return "\n".join([f"gradient check of {names}:", self.table(), self.summary()])

    def __str__(self) -> str:
        return self.format()

    __repr__ = __str__  # pytest and tracebacks show the table, not a tuple of tuples

    def __add__(self, other: Report) -> Report:  # type: ignore[override]
        return Report(self.results + other.results)
