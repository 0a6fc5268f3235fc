"""The PyTorch eager side of the training benchmarks: the same shapes, weights and SGD step.

Each builder takes the JAX parameters (copied into torch tensors, so both sides start from the
same weights) and returns ``(step, first)``: ``step()`` runs one SGD train step in place and
``first`` is ``(loss, new_params)`` of one step from the starting weights, for the agreement check.
Imported only when torch is installed.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["available_threads", "with_threads", "mlp_step_torch", "transformer_step_torch"]

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float64": torch.float64}


def available_threads() -> int:
    """Threads PyTorch uses for intra-op parallelism."""
    return torch.get_num_threads()


def with_threads(call: Callable[[], Any], n: int) -> Callable[[], Any]:
    """``call`` run with PyTorch limited to ``n`` threads (the setting is restored after)."""

    def run() -> Any:
        before = torch.get_num_threads()
        torch.set_num_threads(n)
        try:
            return call()
        finally:
            torch.set_num_threads(before)

    return run


def _tensor(a: Any, dtype: str, grad: bool = False) -> torch.Tensor:
    t = torch.tensor(np.asarray(a, np.float32)).to(_DTYPES[dtype])
    return t.requires_grad_(grad)


def _sgd_builder(
    params: list[torch.Tensor], loss_fn: Callable[[], torch.Tensor], lr: float
) -> tuple[Callable[[], torch.Tensor], tuple[float, list[np.ndarray]]]:
    opt = torch.optim.SGD(params, lr=lr)

    def step() -> torch.Tensor:
        opt.zero_grad(set_to_none=True)
        loss = loss_fn()
        loss.backward()
        opt.step()
        return loss

    saved = [p.detach().clone() for p in params]
    loss = float(step().detach())
    first = (loss, [p.detach().float().numpy().copy() for p in params])
    with torch.no_grad():
        for p, s in zip(params, saved, strict=True):
            p.copy_(s)
    return step, first


def mlp_step_torch(
    layers: Sequence[dict[str, Any]], x: Any, labels: Any, lr: float, dtype: str
) -> tuple[Callable[[], torch.Tensor], tuple[float, list[np.ndarray]]]:
    """SGD step of a relu MLP: logits = ... relu(x W1 + b1) ... W_L + b_L, mean cross-entropy."""
    ws = [(_tensor(layer["W"], dtype, True), _tensor(layer["b"], dtype, True)) for layer in layers]
    xt = _tensor(x, dtype)
    yt = torch.tensor(np.asarray(labels), dtype=torch.long)

    def loss_fn() -> torch.Tensor:
        h = xt
        for i, (W, b) in enumerate(ws):
            h = torch.addmm(b, h, W)
            if i < len(ws) - 1:
                h = torch.relu(h)
        return F.cross_entropy(h, yt)

    return _sgd_builder([t for pair in ws for t in pair], loss_fn, lr)


def _block(x: torch.Tensor, p: Sequence[torch.Tensor], n_heads: int) -> torch.Tensor:
    """Pre-norm block: h = x + attn(ln1(x)), out = h + gelu_tanh(ln2(h) W1 + b1) W2 + b2."""
    g1, be1, Wq, Wk, Wv, Wo, g2, be2, W1, b1, W2, b2 = p
    B, T, D = x.shape
    a = F.layer_norm(x, (D,), g1, be1, eps=1e-5)

    def heads(t: torch.Tensor) -> torch.Tensor:
        return t.view(B, T, n_heads, D // n_heads).transpose(1, 2)

    o = F.scaled_dot_product_attention(heads(a @ Wq), heads(a @ Wk), heads(a @ Wv), is_causal=True)
    h = x + o.transpose(1, 2).reshape(B, T, D) @ Wo
    c = F.layer_norm(h, (D,), g2, be2, eps=1e-5)
    return h + F.gelu(torch.addmm(b1, c.reshape(B * T, D), W1), approximate="tanh").view(B, T, -1) @ W2 + b2


def transformer_step_torch(
    params: Sequence[Any], x: Any, y: Any, n_heads: int, lr: float, dtype: str
) -> tuple[Callable[[], torch.Tensor], tuple[float, list[np.ndarray]]]:
    """SGD step on L = 0.5 mean((block(x) - y)^2) over the block's 12 weights."""
    ps = [_tensor(p, dtype, True) for p in params]
    xt, yt = _tensor(x, dtype), _tensor(y, dtype)

    def loss_fn() -> torch.Tensor:
        return 0.5 * torch.mean((_block(xt, ps, n_heads) - yt) ** 2)

    return _sgd_builder(ps, loss_fn, lr)
