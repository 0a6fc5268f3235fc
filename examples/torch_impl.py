"""The jaxcalc catalogue in PyTorch: forwards from torch ops, gradients from torch.autograd.

An independent implementation for ``jaxcalc verify``; it computes in the dtype it receives:

    jaxcalc export golden
    jaxcalc verify golden --impl examples/torch_impl.py                    # float64
    jaxcalc verify golden --impl examples/torch_impl.py --dtype float32    # inputs cast to float32

Each case is a function named after it, ``case(inputs, cotangent) -> (value, vjp)`` with NumPy
arrays in and out. Only the forward is written here; the VJP is
``torch.autograd.grad(value, float_inputs, grad_outputs=cotangent)``. Needs ``torch`` (CPU is enough).
"""

from __future__ import annotations

import os
import sys

import torch
import torch.nn.functional as F

__all__ = [
    "square", "poly_xy", "chain_affine_square", "descent_square", "exp_sin", "rosenbrock",
    "quadratic_form", "least_squares", "logistic_regression", "sigmoid", "tanh", "relu",
    "leaky_relu", "softplus", "silu", "gelu_tanh", "gelu_erf", "softmax", "log_softmax",
    "logsumexp", "softmax_cross_entropy", "mse", "kl_divergence", "layernorm", "rmsnorm",
    "linear", "embedding", "mlp", "attention", "causal_self_attention", "transformer_block",
    "adam_step", "padded_attention",
]  # fmt: skip

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # the shared wrapper lives beside this file
from torch_common import Inputs, Result, T, _array, _autograd, _tensor  # noqa: E402, F401


# ----------------------------------------------------------------------------- the seed and functions


@_autograd
def square(x: T) -> T:
    """x**2."""
    return x**2


@_autograd
def poly_xy(x: T, y: T) -> T:
    """3x**2 + 2y."""
    return 3 * x**2 + 2 * y


@_autograd
def chain_affine_square(x: T) -> T:
    """(2x + 3)**2."""
    return (2 * x + 3) ** 2


@_autograd
def descent_square(x0: T) -> T:
    """The 20 iterates of x <- x - 0.1 * 2x."""
    xs, x = [], x0
    for _ in range(20):
        x = x - 0.1 * (2 * x)
        xs.append(x)
    return torch.stack(xs)


@_autograd
def exp_sin(x: T) -> T:
    """exp(sin x) elementwise."""
    return torch.exp(torch.sin(x))


@_autograd
def rosenbrock(x: T) -> T:
    """sum_i 100 (x_{i+1} - x_i**2)**2 + (1 - x_i)**2."""
    return torch.sum(100 * (x[1:] - x[:-1] ** 2) ** 2 + (1 - x[:-1]) ** 2)


@_autograd
def quadratic_form(A: T, b: T, x: T) -> T:
    """x^T A x / 2 + b^T x."""
    return 0.5 * (x @ A @ x) + b @ x


@_autograd
def least_squares(X: T, w: T, b: T, y: T) -> T:
    """mean((Xw + b - y)**2)."""
    return F.mse_loss(X @ w + b, y)


@_autograd
def logistic_regression(X: T, w: T, b: T, y: T) -> T:
    """mean(softplus(z) - y z), z = Xw + b (y enters linearly, so it has a gradient too)."""
    z = X @ w + b
    return torch.mean(F.softplus(z) - y * z)


# ----------------------------------------------------------------------------- activations


@_autograd
def sigmoid(x: T) -> T:
    """1 / (1 + exp(-x)), elementwise."""
    return torch.sigmoid(x)


@_autograd
def tanh(x: T) -> T:
    """tanh(x), elementwise."""
    return torch.tanh(x)


@_autograd
def relu(x: T) -> T:
    """max(x, 0), elementwise."""
    return F.relu(x)


@_autograd
def leaky_relu(x: T) -> T:
    """x if x > 0 else 0.01 x, elementwise."""
    return F.leaky_relu(x, 0.01)


@_autograd
def softplus(x: T) -> T:
    """log(1 + exp x), elementwise."""
    return F.softplus(x)


@_autograd
def silu(x: T) -> T:
    """x sigmoid(x), elementwise."""
    return F.silu(x)


@_autograd
def gelu_tanh(x: T) -> T:
    """x/2 (1 + tanh(sqrt(2/pi)(x + 0.044715 x**3))), elementwise."""
    return F.gelu(x, approximate="tanh")


@_autograd
def gelu_erf(x: T) -> T:
    """x/2 (1 + erf(x / sqrt 2)), elementwise."""
    return F.gelu(x)


# ----------------------------------------------------------------------------- softmax family and losses


@_autograd
def softmax(x: T) -> T:
    """softmax over the last axis."""
    return torch.softmax(x, dim=-1)


@_autograd
def log_softmax(x: T) -> T:
    """log softmax over the last axis."""
    return torch.log_softmax(x, dim=-1)


@_autograd
def logsumexp(x: T) -> T:
    """logsumexp over the last axis, (..., n) -> (...)."""
    return torch.logsumexp(x, dim=-1)


@_autograd
def softmax_cross_entropy(logits: T, labels: T) -> T:
    """mean over rows of -log softmax(logits)[label]."""
    return F.cross_entropy(logits, labels)


@_autograd
def mse(pred: T, target: T) -> T:
    """mean((pred - target)**2)."""
    return F.mse_loss(pred, target)


@_autograd
def kl_divergence(p_logits: T, q_logits: T) -> T:
    """mean over rows of KL(softmax(p_logits) || softmax(q_logits)), via F.kl_div with log targets."""
    lp, lq = torch.log_softmax(p_logits, -1), torch.log_softmax(q_logits, -1)
    return F.kl_div(lq, lp, reduction="batchmean", log_target=True)


# ----------------------------------------------------------------------------- layers and networks


@_autograd
def layernorm(x: T, gamma: T, beta: T) -> T:
    """gamma (x - mu) / sqrt(var + 1e-5) + beta over the last axis."""
    return F.layer_norm(x, x.shape[-1:], gamma, beta, eps=1e-5)


@_autograd
def rmsnorm(x: T, gamma: T) -> T:
    """gamma x / sqrt(mean(x**2) + 1e-6) over the last axis."""
    return F.rms_norm(x, x.shape[-1:], gamma, eps=1e-6)


@_autograd
def linear(x: T, W: T, b: T) -> T:
    """xW + b (torch stores weights as (out, in), hence W^T)."""
    return F.linear(x, W.T, b)


@_autograd
def embedding(ids: T, table: T) -> T:
    """table[ids], through F.embedding."""
    return F.embedding(ids, table)


@_autograd
def mlp(x: T, labels: T, W1: T, b1: T, W2: T, b2: T) -> T:
    """softmax_cross_entropy(gelu_tanh(x W1 + b1) W2 + b2, labels)."""
    return F.cross_entropy(F.gelu(x @ W1 + b1, approximate="tanh") @ W2 + b2, labels)


@_autograd
def attention(q: T, k: T, v: T) -> T:
    """softmax(q k^T / sqrt d) v, by torch's scaled_dot_product_attention."""
    return F.scaled_dot_product_attention(q, k, v)


@_autograd
def padded_attention(q: T, k: T, v: T, mask: T) -> T:
    """scaled_dot_product_attention with a boolean mask (True = visible); a query row that sees no
    key would be NaN there, so its row attends to every key and is then zeroed."""
    alive = mask.any(dim=-1, keepdim=True)
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask | ~alive)
    return torch.where(alive, out, torch.zeros((), dtype=out.dtype))


def _self_attention(x: T, Wq: T, Wk: T, Wv: T, Wo: T, heads: int = 2) -> T:
    """Causal attention of ``heads`` heads over x (n, D): split, attend with is_causal, merge, times Wo."""
    n, d = x.shape

    def split(a: T) -> T:
        return a.reshape(n, heads, d // heads).transpose(0, 1)  # (heads, n, d/heads)

    o = F.scaled_dot_product_attention(split(x @ Wq), split(x @ Wk), split(x @ Wv), is_causal=True)
    return o.transpose(0, 1).reshape(n, d) @ Wo


@_autograd
def causal_self_attention(x: T, Wq: T, Wk: T, Wv: T, Wo: T) -> T:
    """2 heads of size 4, each position attending to itself and earlier ones."""
    return _self_attention(x, Wq, Wk, Wv, Wo)


@_autograd
def transformer_block(
    x: T, ln1_gamma: T, ln1_beta: T, Wq: T, Wk: T, Wv: T, Wo: T,
    ln2_gamma: T, ln2_beta: T, W1: T, b1: T, W2: T, b2: T,
) -> T:  # fmt: skip
    """h = x + attn(ln1(x)); out = h + gelu_tanh(ln2(h) W1 + b1) W2 + b2."""
    d = x.shape[-1:]
    h = x + _self_attention(F.layer_norm(x, d, ln1_gamma, ln1_beta, 1e-5), Wq, Wk, Wv, Wo)
    u = F.layer_norm(h, d, ln2_gamma, ln2_beta, 1e-5) @ W1 + b1
    return h + F.gelu(u, approximate="tanh") @ W2 + b2


@_autograd
def adam_step(p: T, g: T, m: T, v: T) -> T:
    """Adam's 3rd step (lr 1e-3, betas 0.9, 0.999, eps 1e-8) as a differentiable map; stack [p', m', v']."""
    lr, b1, b2, eps, t = 1e-3, 0.9, 0.999, 1e-8, 3
    m1 = b1 * m + (1 - b1) * g
    v1 = b2 * v + (1 - b2) * g * g
    p1 = p - lr * (m1 / (1 - b1**t)) / (torch.sqrt(v1 / (1 - b2**t)) + eps)
    return torch.stack([p1, m1, v1])


# The blocks, the generative models and the primitives live beside this file (verify puts its
# folder on sys.path; so does this line, for a loader that does not).
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from torch_blocks import *  # noqa: E402, F403
from torch_blocks import __all__ as _blocks  # noqa: E402
from torch_primitives import *  # noqa: E402, F403
from torch_primitives import __all__ as _primitives  # noqa: E402

__all__ += _blocks + _primitives
