"""jaxcalc: derivatives, gradients, the chain rule, descent and backprop, checked three ways.

Every derivative is written by hand, taken by JAX autodiff and estimated by finite
differences, and the three must agree. The package face re-exports the public names of its
modules; the case catalogue is ``jaxcalc.cases.REGISTRY``.

Importing jaxcalc never changes JAX's global configuration (x64 stays as the caller set it).
"""

from jaxcalc import optim
from jaxcalc.backprop import init_mlp, make_train_step, mlp_backward, mlp_forward, mlp_loss
from jaxcalc.cases import REGISTRY, Case, Input, case_names, get_case
from jaxcalc.chain import ChainRuleResult, chain_rule_check, chain_rule_product
from jaxcalc.checks import CheckResult, Report, check_case, check_cases, check_function
from jaxcalc.descent import Trajectory, classify_lr, descent, descent_step, descent_with_grad
from jaxcalc.diagnose import Diagnosis, diagnose
from jaxcalc.newton import minimize
from jaxcalc.numerics import TOLERANCES, compare, reference_mode
from jaxcalc.seed import (
    affine,
    affine_grad,
    chain_affine_square,
    chain_affine_square_grad,
    poly_xy,
    poly_xy_gradient,
    poly_xy_partials,
    square,
    square_grad,
    update,
)
from jaxcalc.testing import assert_grads

__version__ = "0.1.0"

__all__ = [
    "REGISTRY",
    "TOLERANCES",
    "Case",
    "Diagnosis",
    "ChainRuleResult",
    "CheckResult",
    "Input",
    "Report",
    "Trajectory",
    "affine",
    "affine_grad",
    "assert_grads",
    "case_names",
    "chain_affine_square",
    "chain_affine_square_grad",
    "chain_rule_check",
    "chain_rule_product",
    "check_case",
    "check_cases",
    "check_function",
    "classify_lr",
    "compare",
    "descent",
    "descent_step",
    "descent_with_grad",
    "diagnose",
    "get_case",
    "init_mlp",
    "make_train_step",
    "minimize",
    "mlp_backward",
    "mlp_forward",
    "mlp_loss",
    "optim",
    "poly_xy",
    "poly_xy_gradient",
    "poly_xy_partials",
    "reference_mode",
    "square",
    "square_grad",
    "update",
]
