"""Check results: one row per comparison, and a report that sums them up."""

from __future__ import annotations

from typing import Any, NamedTuple

__all__ = ["CheckResult", "Report"]


class CheckResult(NamedTuple):
    """One comparison: ``a`` (labelled ``a_label``) against reference ``b`` (``b_label``)."""

    case: str
    check: str
    a_label: str
    b_label: str
    error: float
    tol: float
    where: str
    a_value: float
    b_value: float
    status: str  # "pass", "FAIL" or "kink"
    diagnosis: str = ""  # jaxcalc.diagnose: what kind of wrong a failing row is (one line)

    @property
    def passed(self) -> bool:
        return self.status == "pass"

    def line(self) -> str:
        """One row: case, check, sides, error vs tolerance, worst element and both values; a failing
        row with a diagnosis gets it on a second, indented line."""
        row = (
            f"{self.case:<24} {self.check:<17} {self.status:<5} err {self.error:9.2e} (tol {self.tol:.0e})"
            f"  {self.a_label} vs {self.b_label} at {self.where}:"
            f" {self.a_value:.10g} vs {self.b_value:.10g}"
        )
        if self.diagnosis and self.status == "FAIL":
            row += f"\n{'':24}   diagnosis: {self.diagnosis}"
        return row

    def to_dict(self) -> dict[str, Any]:
        return self._asdict()


class Report(NamedTuple):
    """All check results of one or more cases."""

    results: tuple[CheckResult, ...]

    @property
    def passed(self) -> bool:
        return all(r.status != "FAIL" for r in self.results)

    @property
    def failures(self) -> tuple[CheckResult, ...]:
        return tuple(r for r in self.results if r.status == "FAIL")

    def counts(self) -> dict[str, int]:
        return {s: sum(r.status == s for r in self.results) for s in ("pass", "FAIL", "kink")}

    def summary(self) -> str:
        """The closing line ``N passed, M failed`` (with ``, K kinks`` when there are any)."""
        c = self.counts()
        line = f"{c['pass']} passed, {c['FAIL']} failed"
        return line + (f", {c['kink']} kinks" if c["kink"] else "")

    def format(self) -> str:
        return "\n".join([r.line() for r in self.results] + [self.summary()])

    def __add__(self, other: Report) -> Report:  # type: ignore[override]
        return Report(self.results + other.results)
