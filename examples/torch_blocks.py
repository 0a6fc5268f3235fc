"""The block and generative-model cases in PyTorch: forwards from torch ops, VJPs from torch.autograd.

``torch_impl.py`` re-exports every function here, so ``jaxcalc verify golden --impl
examples/torch_impl.py`` covers these cases too. Each is ``case(inputs, cotangent) -> (value, vjp)``
with NumPy arrays in and out, computed in the dtype received. Needs ``torch`` (CPU is enough).
"""

from __future__ import annotations


import torch
import torch.nn.functional as F
import os as _os
import sys as _sys

_sys.path.insert(0, _os.path.dirname(_os.path.abspath(__file__)))  # torch_common lives beside this file
from torch_common import Inputs, Result, T, _autograd  # noqa: E402, F401

__all__ = [
    "vae_elbo", "ddpm_loss", "gan_losses", "gpt_lm_loss", "backprop_mlp", "gqa_attention",
    "cross_attention", "batchnorm", "groupnorm", "rope", "swiglu", "dropout",
    "label_smoothed_cross_entropy", "z_loss", "lstm_cell", "gru_cell", "conv1d", "conv2d", "max_pool2d",
    "avg_pool2d", "selective_scan", "moe_top2",
]  # fmt: skip





def _heads(a: T, n: int) -> T:
    """(T, n * dh) -> (n, T, dh)."""
    t, e = a.shape
    return a.reshape(t, n, e // n).transpose(0, 1)


def _merge(a: T) -> T:
    """(n, T, dh) -> (T, n * dh)."""
    n, t, dh = a.shape
    return a.transpose(0, 1).reshape(t, n * dh)


# ----------------------------------------------------------------------------- generative models


@_autograd
def vae_elbo(x, eps, We, be, Wmu, bmu, Wlv, blv, Wd1, bd1, Wd2, bd2) -> T:
    """Negative ELBO: mean_n [||x - xhat||^2 / 2 + KL(q(z | x) || N(0, I))], z = mu + exp(logvar / 2) eps."""
    h = torch.tanh(F.linear(x, We.T, be))
    mu, logvar = F.linear(h, Wmu.T, bmu), F.linear(h, Wlv.T, blv)
    z = mu + torch.exp(0.5 * logvar) * eps
    xhat = F.linear(torch.tanh(F.linear(z, Wd1.T, bd1)), Wd2.T, bd2)
    recon = 0.5 * F.mse_loss(xhat, x, reduction="sum")
    kl = -0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp())
    return (recon + kl) / x.shape[0]


@_autograd
def ddpm_loss(x0, noise, t, W1, wt, b1, W2, b2) -> T:
    """DDPM epsilon-prediction loss, linear betas 1e-4..0.02 over 1000 steps, a silu denoiser fed t / 1000."""
    betas = torch.linspace(1e-4, 0.02, 1000, dtype=x0.dtype)
    abar = torch.cumprod(1 - betas, dim=0)[t][:, None]
    xt = abar.sqrt() * x0 + (1 - abar).sqrt() * noise
    tau = (t.to(x0.dtype) / 1000)[:, None]
    eps_hat = F.linear(F.silu(F.linear(xt, W1.T, b1) + tau * wt), W2.T, b2)
    return F.mse_loss(eps_hat, noise)


@_autograd
def gan_losses(z, x_real, Wg1, bg1, Wg2, bg2, Wd1, bd1, wd2, bd2) -> T:
    """stack([L_D, L_G]) of the non-saturating GAN, via binary cross-entropy on the logits."""
    x_fake = F.linear(torch.tanh(F.linear(z, Wg1.T, bg1)), Wg2.T, bg2)

    def disc(x: T) -> T:
        return F.linear(torch.tanh(F.linear(x, Wd1.T, bd1)), wd2.T, bd2)[:, 0]

    lr, lf = disc(x_real), disc(x_fake)
    bce = F.binary_cross_entropy_with_logits
    l_d = bce(lr, torch.ones_like(lr)) + bce(lf, torch.zeros_like(lf))
    return torch.stack([l_d, bce(lf, torch.ones_like(lf))])


def _block(x: T, p: dict[str, T], prefix: str) -> T:
    """Pre-norm transformer block with 2 causal heads (the catalogue's transformer_block)."""
    d = x.shape[-1:]
    a = F.layer_norm(x, d, p[prefix + "ln1_gamma"], p[prefix + "ln1_beta"], 1e-5)
    q, k, v = (_heads(a @ p[prefix + w], 2) for w in ("Wq", "Wk", "Wv"))
    h = x + _merge(F.scaled_dot_product_attention(q, k, v, is_causal=True)) @ p[prefix + "Wo"]
    c = F.layer_norm(h, d, p[prefix + "ln2_gamma"], p[prefix + "ln2_beta"], 1e-5)
    u = F.gelu(F.linear(c, p[prefix + "W1"].T, p[prefix + "b1"]), approximate="tanh")
    return h + F.linear(u, p[prefix + "W2"].T, p[prefix + "b2"])


@_autograd
def gpt_lm_loss(ids: T, targets: T, table: T, **p: T) -> T:
    """Cross-entropy of a 2-block GPT with the output head tied to the token embedding."""
    x = F.embedding(ids, table)
    for k in range(2):
        x = _block(x, p, f"b{k}_")
    y = F.layer_norm(x, x.shape[-1:], p["lnf_gamma"], p["lnf_beta"], 1e-5)
    return F.cross_entropy(y @ table.T, targets)


@_autograd
def backprop_mlp(x, labels, W1, b1, W2, b2) -> T:
    """cross_entropy(relu(x W1 + b1) W2 + b2, labels): the network jaxcalc train trains."""
    return F.cross_entropy(F.linear(F.relu(F.linear(x, W1.T, b1)), W2.T, b2), labels)


# ----------------------------------------------------------------------------- attention


@_autograd
def gqa_attention(x, Wq, Wk, Wv, Wo) -> T:
    """Causal attention, 4 query heads over 2 key/value heads (sdpa's enable_gqa), then Wo."""
    q, k, v = _heads(x @ Wq, 4), _heads(x @ Wk, 2), _heads(x @ Wv, 2)
    return _merge(F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)) @ Wo


@_autograd
def cross_attention(x, ctx, Wq, Wk, Wv, Wo) -> T:
    """2-head attention of x's queries over ctx's keys and values, no mask, then Wo."""
    q, k, v = _heads(x @ Wq, 2), _heads(ctx @ Wk, 2), _heads(ctx @ Wv, 2)
    return _merge(F.scaled_dot_product_attention(q, k, v)) @ Wo


# ----------------------------------------------------------------------------- norms and blocks


@_autograd
def batchnorm(x, gamma, beta) -> T:
    """F.batch_norm with the batch's statistics (training=True), eps 1e-5."""
    return F.batch_norm(x, None, None, gamma, beta, training=True, eps=1e-5)


@_autograd
def groupnorm(x, gamma, beta) -> T:
    """F.group_norm with 3 groups, eps 1e-5."""
    return F.group_norm(x, 3, gamma, beta, eps=1e-5)


@_autograd
def rope(x) -> T:
    """Rotary embedding, half-split layout, base 10000, positions along axis -2."""
    t, d = x.shape[-2], x.shape[-1]
    theta = 10000.0 ** (-torch.arange(0, d, 2, dtype=x.dtype) / d)
    ang = torch.arange(t, dtype=x.dtype)[:, None] * theta[None, :]
    ang = torch.cat([ang, ang], dim=-1)
    x1, x2 = x.chunk(2, dim=-1)
    return x * ang.cos() + torch.cat([-x2, x1], dim=-1) * ang.sin()


@_autograd
def swiglu(x, Wg, Wu, Wd) -> T:
    """(silu(x Wg) * (x Wu)) Wd."""
    return (F.silu(x @ Wg) * (x @ Wu)) @ Wd


@_autograd
def dropout(x, keep) -> T:
    """Inverted dropout with a given keep-mask: x * keep / (1 - 0.25)."""
    return torch.where(keep, x / (1 - 0.25), torch.zeros_like(x))


@_autograd
def label_smoothed_cross_entropy(logits, labels) -> T:
    """F.cross_entropy with label_smoothing=0.1."""
    return F.cross_entropy(logits, labels, label_smoothing=0.1)


@_autograd
def z_loss(logits) -> T:
    """1e-4 mean(logsumexp(logits)^2)."""
    return 1e-4 * torch.logsumexp(logits, dim=-1).pow(2).mean()


# ----------------------------------------------------------------------------- recurrent cells


@_autograd
def lstm_cell(x, h, c, W_ih, W_hh, b_ih, b_hh) -> T:
    """torch.lstm_cell (what nn.LSTMCell runs), output concat([h', c'])."""
    h1, c1 = torch.lstm_cell(x, (h, c), W_ih, W_hh, b_ih, b_hh)
    return torch.cat([h1, c1], dim=-1)


@_autograd
def gru_cell(x, h, W_ih, W_hh, b_ih, b_hh) -> T:
    """torch.gru_cell (what nn.GRUCell runs)."""
    return torch.gru_cell(x, h, W_ih, W_hh, b_ih, b_hh)


# ----------------------------------------------------------------------------- convolution and pooling


@_autograd
def conv1d(x, w, b) -> T:
    """F.conv1d with stride 2, padding 2, dilation 3."""
    return F.conv1d(x, w, b, stride=2, padding=2, dilation=3)


@_autograd
def conv2d(x, w, b) -> T:
    """F.conv2d with stride 2, padding 1, dilation 2, groups 2."""
    return F.conv2d(x, w, b, stride=2, padding=1, dilation=2, groups=2)


@_autograd
def max_pool2d(x) -> T:
    """F.max_pool2d with kernel 3, stride 2."""
    return F.max_pool2d(x, 3, stride=2)


@_autograd
def avg_pool2d(x) -> T:
    """F.avg_pool2d with kernel 3, stride 2, padding 1 (padding counted)."""
    return F.avg_pool2d(x, 3, stride=2, padding=1)


@_autograd
def selective_scan(x, dt, A_log, B, C) -> T:
    """h_t = exp(softplus(dt_t) A) h_{t-1} + softplus(dt_t) x_t B_t, A = -exp(A_log), y_t = h_t C_t."""
    delta, A = F.softplus(dt), -torch.exp(A_log)
    h = torch.zeros_like(A)
    ys = []
    for t in range(x.shape[0]):
        h = torch.exp(delta[t, :, None] * A) * h + (delta[t] * x[t])[:, None] * B[t][None, :]
        ys.append(h @ C[t])
    return torch.stack(ys)


@_autograd
def moe_top2(x, Wr, W1, W2) -> T:
    """torch.topk over the router logits, softmax over the two chosen, experts silu(x W1[e]) W2[e]."""
    top = torch.topk(x @ Wr, 2, dim=-1)
    gates = torch.softmax(top.values, dim=-1)  # (N, 2)
    out = torch.einsum("nef,efd->ned", F.silu(torch.einsum("nd,edf->nef", x, W1)), W2)
    picked = torch.gather(out, 1, top.indices[:, :, None].expand(-1, -1, out.shape[-1]))  # (N, 2, D)
    return torch.einsum("nk,nkd->nd", gates, picked)
