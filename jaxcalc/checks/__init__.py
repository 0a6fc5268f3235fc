"""The gradient checker (DESIGN §4): catalogue cases and users' functions, three witnesses each.

See :mod:`jaxcalc.checks.core` for the list of checks and how errors are measured.
"""

from jaxcalc.checks.core import CHECKS, check_case, check_cases, check_function, run_checks
from jaxcalc.checks.report import CheckResult, Report

__all__ = ["CHECKS", "CheckResult", "Report", "check_case", "check_cases", "check_function", "run_checks"]
