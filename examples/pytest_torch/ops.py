"""Transformer building blocks in plain PyTorch, the ops this project owns.

Each op computes in the dtype of its inputs (float64, float32, bfloat16 or float16). Gradients come
from autograd, except softmax's, which is handwritten as a fused kernel's would be. test_ops.py
checks values and VJPs against the jaxcalc golden set.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = ["softmax", "log_softmax", "cross_entropy", "layernorm", "rmsnorm", "gelu_tanh", "attention"]


class _Softmax(torch.autograd.Function):
    """softmax over the last axis: y = exp(x - max) / sum exp(x - max)."""

    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:
        e = torch.exp(x - x.amax(-1, keepdim=True))
        y = e / e.sum(-1, keepdim=True)
        ctx.save_for_backward(y)
        return y

    @staticmethod
    def backward(ctx, g: Tensor) -> Tensor:
        (y,) = ctx.saved_tensors
        # J = diag(y) - y y^T, so J^T g = y * (g - sum(g * y))
        return y * (g - (g * y).sum(-1, keepdim=True))


def softmax(x: Tensor) -> Tensor:
    """softmax over the last axis, x (..., n) -> (..., n); -inf entries get probability 0."""
    return _Softmax.apply(x)


def log_softmax(x: Tensor) -> Tensor:
    """x - logsumexp(x) over the last axis, x (..., n) -> (..., n).

    The shift by the row max keeps exp finite; the result does not depend on it, so autograd
    treats it as a constant.
    """
    m = x.detach().amax(-1, keepdim=True)
    return x - m - torch.log(torch.exp(x - m).sum(-1, keepdim=True))


def cross_entropy(logits: Tensor, labels: Tensor) -> Tensor:
    """mean over rows of -log softmax(logits)[label]: logits (N, C), labels (N,) int -> ()."""
    return -log_softmax(logits).gather(-1, labels[:, None]).mean()


def layernorm(x: Tensor, gamma: Tensor, beta: Tensor, eps: float = 1e-5) -> Tensor:
    """gamma (x - mu) / sqrt(var + eps) + beta over the last axis: x (N, D), gamma, beta (D,).

    var is the biased variance of the centred rows (two passes), so a large mean does not cancel
    the variance away.
    """
    xc = x - x.mean(-1, keepdim=True)
    var = (xc * xc).mean(-1, keepdim=True)
    return xc * torch.rsqrt(var + eps) * gamma + beta


def rmsnorm(x: Tensor, gamma: Tensor, eps: float = 1e-6) -> Tensor:
    """gamma x / sqrt(mean(x**2) + eps) over the last axis: x (N, D), gamma (D,)."""
    return x * torch.rsqrt((x * x).mean(-1, keepdim=True) + eps) * gamma


def gelu_tanh(x: Tensor) -> Tensor:
    """x/2 (1 + tanh(sqrt(2/pi) (x + 0.044715 x**3))), elementwise (GPT-2's approximation)."""
    return 0.5 * x * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x * x * x)))


def attention(q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None = None) -> Tensor:
    """softmax(q k^T / sqrt(d)) v over the keys: q (Tq, d), k (Tk, d), v (Tk, dv) -> (Tq, dv).

    ``mask`` (Tq, Tk) bool, True where a query sees a key; a query that sees no key gets zeros
    (not the NaN of a softmax over nothing). As fused attention kernels do, scores and softmax are
    kept in float32 for bfloat16/float16 inputs, and the weights are rounded to v's dtype for the
    product with v; autograd then carries the score gradients in float32 too.
    """
    acc = torch.promote_types(q.dtype, torch.float32)
    s = (q.to(acc) @ k.to(acc).transpose(-2, -1)) / math.sqrt(q.shape[-1])
    if mask is None:
        return softmax(s).to(v.dtype) @ v
    seen = mask.any(-1, keepdim=True)
    s = s.masked_fill(~mask, -math.inf).masked_fill(~seen, 0.0)
    return (softmax(s) * seen).to(v.dtype) @ v
