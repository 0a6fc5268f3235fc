"""The primitive cases of the jaxcalc catalogue in PyTorch: forwards from torch ops, VJPs from
torch.autograd. Same convention as torch_impl.py (which re-exports these):
``case(inputs, cotangent) -> (value, {name: vjp})`` with NumPy arrays in and out."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
import os as _os
import sys as _sys

_sys.path.insert(0, _os.path.dirname(_os.path.abspath(__file__)))  # torch_common lives beside this file
from torch_common import Inputs, Result, T, _autograd  # noqa: E402, F401


__all__ = [
    "add", "sub", "mul", "div", "pow", "maximum", "minimum", "where",
    "abs", "sqrt", "rsqrt", "exp", "log", "log1p", "expm1", "sin", "cos", "reciprocal", "clip",
    "sum_axis", "mean_axis", "prod_axis", "max_axis", "min_axis", "var_axis", "cumsum",
    "transpose", "reshape", "strided_slice", "concatenate", "stack", "pad", "broadcast_to", "gather",
    "scatter_add", "batched_matmul", "einsum", "topk_values",
    "logaddexp", "atan2", "hypot", "flip", "roll", "norm_axis", "logsumexp_axis", "index_select",
    "masked_fill", "triu",
]  # fmt: skip




def _binary(name: str, op: Callable[[T, T], T]) -> Callable[[Inputs, np.ndarray], Result]:
    def forward(x: T, y: T, s: T) -> T:
        return op(op(x, y), s)

    forward.__name__ = name
    forward.__doc__ = f"{name}({name}(x, y), s) with broadcasting: x (B,1,N), y (M,1), s () -> (B,M,N)."
    return _autograd(forward)


add = _binary("add", torch.add)
sub = _binary("sub", torch.sub)
mul = _binary("mul", torch.mul)
div = _binary("div", torch.div)
pow = _binary("pow", torch.pow)  # noqa: A001
maximum = _binary("maximum", torch.maximum)
minimum = _binary("minimum", torch.minimum)


@_autograd
def where(cond: T, x: T, y: T) -> T:
    """torch.where(cond, x, y): cond (M,1), x (B,1,N), y () -> (B,M,N)."""
    return torch.where(cond, x, y)


def _unary(name: str, op: Callable[[T], T]) -> Callable[[Inputs, np.ndarray], Result]:
    def forward(x: T) -> T:
        return op(x)

    forward.__name__ = name
    forward.__doc__ = f"{name}(x) elementwise."
    return _autograd(forward)


abs = _unary("abs", torch.abs)  # noqa: A001
sqrt = _unary("sqrt", torch.sqrt)
rsqrt = _unary("rsqrt", torch.rsqrt)
exp = _unary("exp", torch.exp)
log = _unary("log", torch.log)
log1p = _unary("log1p", torch.log1p)
expm1 = _unary("expm1", torch.expm1)
sin = _unary("sin", torch.sin)
cos = _unary("cos", torch.cos)
reciprocal = _unary("reciprocal", torch.reciprocal)
clip = _unary("clip", lambda x: torch.clamp(x, -0.5, 0.75))


@_autograd
def sum_axis(x: T) -> T:
    """sum over dim 1, keepdim."""
    return torch.sum(x, 1, keepdim=True)


@_autograd
def mean_axis(x: T) -> T:
    """mean over dim 1, keepdim."""
    return torch.mean(x, 1, keepdim=True)


@_autograd
def prod_axis(x: T) -> T:
    """product over dim 1, keepdim."""
    return torch.prod(x, 1, keepdim=True)


@_autograd
def max_axis(x: T) -> T:
    """max over dim 1, keepdim (values)."""
    return torch.amax(x, 1, keepdim=True)


@_autograd
def min_axis(x: T) -> T:
    """min over dim 1, keepdim (values)."""
    return torch.amin(x, 1, keepdim=True)


@_autograd
def var_axis(x: T) -> T:
    """unbiased variance over dim 1, keepdim."""
    return torch.var(x, 1, keepdim=True)


@_autograd
def cumsum(x: T) -> T:
    """cumulative sum along dim 1."""
    return torch.cumsum(x, 1)


@_autograd
def transpose(x: T) -> T:
    """x.permute(2, 0, 1)."""
    return x.permute(2, 0, 1)


@_autograd
def reshape(x: T) -> T:
    """x (A, B, C) -> (C, A*B), row-major."""
    return x.reshape(x.shape[2], -1)


@_autograd
def strided_slice(x: T) -> T:
    """x[1::2, ::3]."""
    return x[1::2, ::3]


@_autograd
def concatenate(a: T, b: T) -> T:
    """torch.cat([a, b], 1)."""
    return torch.cat([a, b], 1)


@_autograd
def stack(a: T, b: T, c: T) -> T:
    """torch.stack([a, b, c], 1)."""
    return torch.stack([a, b, c], 1)


@_autograd
def pad(x: T) -> T:
    """zero padding: rows (1, 2), columns (3, 0) (F.pad lists the last axis first)."""
    return torch.nn.functional.pad(x, (3, 0, 1, 2))


@_autograd
def broadcast_to(x: T) -> T:
    """x (M, 1, K) -> (3, M, 2, K)."""
    return torch.broadcast_to(x, (3, x.shape[0], 2, x.shape[2]))


@_autograd
def gather(x: T, index: T) -> T:
    """torch.gather(x, 0, index)."""
    return torch.gather(x, 0, index)


@_autograd
def scatter_add(x: T, index: T, src: T) -> T:
    """torch.scatter_add(x, 0, index, src)."""
    return torch.scatter_add(x, 0, index, src)


@_autograd
def batched_matmul(a: T, b: T) -> T:
    """a (B,1,M,K) @ b (H,K,N) -> (B,H,M,N)."""
    return torch.matmul(a, b)


@_autograd
def einsum(a: T, w: T) -> T:
    """einsum('bmk,kn->bnm')."""
    return torch.einsum("bmk,kn->bnm", a, w)


@_autograd
def topk_values(x: T) -> T:
    """torch.topk(x, 3).values."""
    return torch.topk(x, 3).values


@_autograd
def logaddexp(x: T, y: T) -> T:
    """torch.logaddexp(x, y), broadcasting."""
    return torch.logaddexp(x, y)


@_autograd
def atan2(y: T, x: T) -> T:
    """torch.atan2(y, x), broadcasting."""
    return torch.atan2(y, x)


@_autograd
def hypot(x: T, y: T) -> T:
    """torch.hypot(x, y), broadcasting."""
    return torch.hypot(x, y)


@_autograd
def flip(x: T) -> T:
    """torch.flip(x, (1,))."""
    return torch.flip(x, (1,))


@_autograd
def roll(x: T) -> T:
    """torch.roll(x, 2, 1)."""
    return torch.roll(x, 2, 1)


@_autograd
def norm_axis(x: T) -> T:
    """L2 norm over dim 1, keepdim."""
    return torch.linalg.vector_norm(x, 2, 1, keepdim=True)


@_autograd
def logsumexp_axis(x: T) -> T:
    """torch.logsumexp(x, 1, keepdim=True)."""
    return torch.logsumexp(x, 1, keepdim=True)


@_autograd
def index_select(x: T, ids: T) -> T:
    """torch.index_select(x, 1, ids)."""
    return torch.index_select(x, 1, ids)


@_autograd
def masked_fill(x: T, mask: T) -> T:
    """x.masked_fill(mask, -1.5), the mask broadcast over rows."""
    return x.masked_fill(mask, -1.5)


@_autograd
def triu(x: T) -> T:
    """torch.triu(x)."""
    return torch.triu(x)
