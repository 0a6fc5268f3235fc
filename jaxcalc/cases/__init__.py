"""The case catalogue: one registry that the CLI, the checks, the export and the tests iterate.

Importing this package registers every case; modules are grouped by concept.
"""

# Importing each module registers its cases, in catalogue order.
from jaxcalc.cases import (  # noqa: F401, I001
    seed,
    functions,
    activations,
    softmax,
    losses,
    layers,
    mlp,
    attention,
    transformer,
    optim_step,
)
from jaxcalc.cases import generative  # noqa: F401, E402, I001
from jaxcalc.cases import gpt  # noqa: F401, E402, I001
from jaxcalc.cases import backprop_mlp  # noqa: F401, E402, I001
from jaxcalc.cases import attention_blocks  # noqa: F401, E402, I001
from jaxcalc.cases import norms  # noqa: F401, E402, I001
from jaxcalc.cases import blocks  # noqa: F401, E402, I001
from jaxcalc.cases import recurrent  # noqa: F401, E402, I001
from jaxcalc.cases import conv  # noqa: F401, E402, I001
from jaxcalc.cases import moe  # noqa: F401, E402, I001
from jaxcalc.cases import elementwise, unary, reductions, shapes, extras  # noqa: F401, E402, I001
from jaxcalc.cases._base import (
    DEFAULT_SIZES,
    MAX_INSTANCE_ELEMENTS,
    REGIMES,
    REGISTRY,
    SIZES,
    Case,
    Input,
    Instance,
    SpecError,
    UnknownCaseError,
    case_names,
    get_case,
    instance,
    instances,
    of_diff,
    parse_instance_id,
    stage_instances,
    register,
)
from jaxcalc.cases.select import parse_dims, select_instances  # noqa: E402

__all__ = [
    "DEFAULT_SIZES",
    "MAX_INSTANCE_ELEMENTS",
    "REGIMES",
    "REGISTRY",
    "SIZES",
    "Case",
    "Input",
    "Instance",
    "SpecError",
    "select_instances",
    "parse_dims",
    "UnknownCaseError",
    "case_names",
    "get_case",
    "instance",
    "instances",
    "of_diff",
    "parse_instance_id",
    "stage_instances",
    "register",
]
