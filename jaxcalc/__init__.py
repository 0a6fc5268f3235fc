"""jaxcalc: derivatives, gradients, the chain rule, descent and backprop, checked three ways.

Importing jaxcalc never changes JAX's global configuration (x64 stays as the caller set it).
"""

from jaxcalc.descent import Trajectory, descent, descent_step, descent_with_grad
from jaxcalc.numerics import TOLERANCES, compare, reference_mode
from jaxcalc.seed import (
    affine,
    chain_affine_square,
    chain_affine_square_grad,
    poly_xy,
    poly_xy_gradient,
    poly_xy_partials,
    square,
    square_grad,
    update,
)

__version__ = "0.1.0"

__all__ = [
    "TOLERANCES",
    "Trajectory",
    "affine",
    "chain_affine_square",
    "chain_affine_square_grad",
    "compare",
    "descent",
    "descent_step",
    "descent_with_grad",
    "poly_xy",
    "poly_xy_gradient",
    "poly_xy_partials",
    "reference_mode",
    "square",
    "square_grad",
    "update",
]
