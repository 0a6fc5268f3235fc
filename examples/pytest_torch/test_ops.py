"""ops.py against the jaxcalc golden set: value and VJP of every instance of each op's case, in
float64, float32, bfloat16 and float16, computed by torch.autograd in that dtype.

    pytest examples/pytest_torch                       # every instance in every dtype
    pytest examples/pytest_torch -k "softmax and large"
    JAXCALC_GOLDEN=/path/to/golden pytest examples/pytest_torch

Test ids are ``<instance id>-<dtype>``, e.g. ``test_op[layernorm~offset-float32]``.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import ops
import pytest
import torch

from jaxcalc.testing import GoldenInstance, golden_cases

GOLDEN = Path(os.environ.get("JAXCALC_GOLDEN", Path(__file__).resolve().parents[2] / "golden"))
DTYPES = ("float64", "float32", "bfloat16", "float16")
# golden case name -> our op, called with the instance's inputs and settings as keyword arguments
OPS: dict[str, Callable[..., torch.Tensor]] = {
    "softmax": ops.softmax,
    "log_softmax": ops.log_softmax,
    "softmax_cross_entropy": ops.cross_entropy,
    "layernorm": ops.layernorm,
    "rmsnorm": ops.rmsnorm,
    "gelu_tanh": ops.gelu_tanh,
    "attention": ops.attention,
    "padded_attention": ops.attention,
}
CASES = tuple(OPS)
INSTANCES = [
    pytest.param(inst, id=f"{inst.id}-{dtype}")
    for dtype in DTYPES
    for inst in golden_cases(GOLDEN, dtype=dtype, cases=CASES)
]


def to_torch(a: np.ndarray) -> torch.Tensor:
    """A golden input as a tensor of the same dtype; bfloat16 (an ml_dtypes array, which torch
    cannot read) goes through float32, which holds every bfloat16 value exactly."""
    if a.dtype.name == "bfloat16":
        return torch.from_numpy(a.astype(np.float32)).to(torch.bfloat16)
    return torch.from_numpy(a.copy())


def value_and_vjp(inst: GoldenInstance) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The op's value on the instance's inputs and J^T cotangent for each differentiable input."""
    x = {name: to_torch(a) for name, a in inst.inputs.items()}
    for name in inst.differentiable:
        x[name].requires_grad_(True)
    out = OPS[inst.case](**x, **inst.settings)  # the case's eps etc.
    wrt = [x[name] for name in inst.differentiable]
    grads = torch.autograd.grad(out, wrt, grad_outputs=to_torch(inst.cotangent))
    return out.detach(), dict(zip(inst.differentiable, grads, strict=True))


@pytest.mark.parametrize("inst", INSTANCES)
def test_op(inst: GoldenInstance) -> None:
    inst.assert_matches(*value_and_vjp(inst))
