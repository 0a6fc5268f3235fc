"""The gradient checker (DESIGN §4): catalogue cases and users' functions, three witnesses each.

See :mod:`jaxcalc.checks.core` for the list of checks and how errors are measured, and
:mod:`jaxcalc.checks.user` for checking your own function (pytrees, ``argnums``).
"""

from jaxcalc.checks.core import CHECKS, check_case, check_cases, run_checks, select_checks
from jaxcalc.checks.report import CheckResult, Report
from jaxcalc.checks.user import check_function

__all__ = [
    "CHECKS",
    "CheckResult",
    "Report",
    "check_case",
    "check_cases",
    "check_function",
    "run_checks",
    "select_checks",
]
