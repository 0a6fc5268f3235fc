"""What the PyTorch examples share: a case as ``case(inputs, cotangent) -> (value, vjp)`` from a
torch forward, with the VJP from ``torch.autograd.grad``, in the dtype it receives (float64,
float32, bfloat16 or float16)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

__all__ = ["Inputs", "Result", "T", "_autograd", "_tensor", "_array"]

Inputs = dict[str, np.ndarray]
Result = tuple[np.ndarray, dict[str, np.ndarray]]
T = torch.Tensor


def _tensor(a: np.ndarray) -> T:
    """A NumPy array as a tensor; bfloat16 (an ml_dtypes array, which torch cannot read) goes
    through float32, which holds every bfloat16 value exactly."""
    if a.dtype.name == "bfloat16":
        return torch.from_numpy(a.astype(np.float32)).to(torch.bfloat16)
    return torch.from_numpy(np.array(a, copy=True))


def _array(t: T) -> np.ndarray:
    """A tensor as a NumPy array of the same dtype; bfloat16 comes back as float32 holding bfloat16
    values (exactly representable, so jaxcalc accepts it as computed in bfloat16)."""
    t = t.detach()
    return (t.float() if t.dtype == torch.bfloat16 else t).numpy()


def _autograd(forward: Callable[..., T]) -> Callable[[Inputs, np.ndarray], Result]:
    """Wrap ``forward(**tensors)`` as a case: float inputs get requires_grad, integers and masks stay
    as they are. Computes in the dtype it receives (float64, float32, bfloat16 or float16)."""

    def case(inputs: Inputs, cotangent: np.ndarray) -> Result:
        tensors = {k: _tensor(a) for k, a in inputs.items()}
        floats = [k for k, t in tensors.items() if t.is_floating_point()]
        for k in floats:
            tensors[k].requires_grad_(True)
        out = forward(**tensors)
        ct = _tensor(cotangent).to(out.dtype)
        grads = torch.autograd.grad(out, [tensors[k] for k in floats], grad_outputs=ct, allow_unused=True)
        vjp = {
            k: _array(torch.zeros_like(tensors[k]) if g is None else g)
            for k, g in zip(floats, grads, strict=True)
        }
        return _array(out), vjp

    case.__name__ = case.__qualname__ = forward.__name__
    case.__doc__ = forward.__doc__
    return case
