"""The case catalogue: one registry that the CLI, the checks, the export and the tests iterate.

Importing this package registers every case; modules are grouped by concept.
"""

from jaxcalc.cases import seed as _seed  # noqa: F401  (registers the seed's cases)
from jaxcalc.cases._base import (
    REGISTRY,
    Case,
    Input,
    UnknownCaseError,
    case_names,
    get_case,
    register,
)

__all__ = ["REGISTRY", "Case", "Input", "UnknownCaseError", "case_names", "get_case", "register"]
