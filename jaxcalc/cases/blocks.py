"""Blocks of current language models: RoPE, SwiGLU, dropout, label smoothing and the z-loss.

rope (rotary position embedding, the half-split layout of GPT-NeoX and LLaMA), x (H, T, D), D even:
  theta_i = 10000^(-2i / D) for i < D/2, angle[t, i] = t theta_i (each angle used for both halves)
  out = x cos(angle) + rotate_half(x) sin(angle),  rotate_half([x1, x2]) = [-x2, x1]
  The map is a rotation per (t, pair): dx = ct cos - rotate_half(ct sin) (its transpose).

swiglu (LLaMA's feed-forward): out = (silu(x Wg) * (x Wu)) Wd, x (N, D), Wg and Wu (D, F), Wd (F, Do).

dropout with the mask as an input (kind 'mask', True = kept, so the map is deterministic and the
mask is not differentiable), p = 0.25: out = where(keep, x / (1 - p), 0); dx = where(keep, ct / (1 - p), 0).

label_smoothed_cross_entropy (F.cross_entropy(label_smoothing=0.1)), logits (N, C):
  q = (1 - s) onehot(label) + s / C,  loss = mean_n -sum_j q_j log softmax(logits_n)_j
  dlogits = ct (softmax - q) / N

z_loss (PaLM's auxiliary loss on the softmax normalizer), coefficient 1e-4:
  loss = 1e-4 mean_n logsumexp(logits_n)^2,  dlogits = ct 1e-4 2 lse_n softmax(logits_n) / N
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

from jaxcalc.cases._base import (
    Case,
    Input,
    fan_in,
    integers,
    large_rows,
    normal,
    register,
    std_uniform,
)
from jaxcalc.cases.activations import silu, silu_grad
from jaxcalc.cases.softmax import log_softmax, logsumexp, softmax

__all__ = [
    "ROPE_BASE",
    "rope",
    "rope_vjp",
    "swiglu",
    "swiglu_vjp",
    "DROPOUT_P",
    "dropout",
    "dropout_vjp",
    "LABEL_SMOOTHING",
    "label_smoothed_cross_entropy",
    "label_smoothed_cross_entropy_vjp",
    "Z_LOSS_COEF",
    "z_loss",
    "z_loss_vjp",
]

ROPE_BASE = 10000.0
DROPOUT_P = 0.25
LABEL_SMOOTHING = 0.1
Z_LOSS_COEF = 1e-4


# ----------------------------------------------------------------------------- rope


def _angles(t: int, d: int, dtype: jnp.dtype) -> tuple[jax.Array, jax.Array]:
    """(cos, sin) of t theta_i, each (T, D): the D/2 frequencies repeated for both halves."""
    theta = ROPE_BASE ** (-jnp.arange(0, d, 2, dtype=dtype) / d)
    ang = jnp.arange(t, dtype=dtype)[:, None] * theta[None, :]
    ang = jnp.concatenate([ang, ang], axis=-1)
    return jnp.cos(ang), jnp.sin(ang)


def _rotate_half(x: jax.Array) -> jax.Array:
    """[x1, x2] -> [-x2, x1] over the last axis."""
    x1, x2 = jnp.split(x, 2, axis=-1)
    return jnp.concatenate([-x2, x1], axis=-1)


def _rotate_half_t(c: jax.Array) -> jax.Array:
    """The transpose of :func:`_rotate_half`: [c1, c2] -> [c2, -c1] = -rotate_half(c)."""
    return -_rotate_half(c)


def rope(x: ArrayLike) -> jax.Array:
    """x cos(t theta) + rotate_half(x) sin(t theta), positions t over axis -2: x (..., T, D) -> same."""
    x = jnp.asarray(x)
    cos, sin = _angles(x.shape[-2], x.shape[-1], x.dtype)
    return x * cos + _rotate_half(x) * sin


def rope_vjp(primals: tuple, ct: ArrayLike) -> tuple[jax.Array]:
    """(dx,) = ct cos + rotate_half^T(ct sin): the inverse rotation of ct."""
    x, ct = jnp.asarray(primals[0]), jnp.asarray(ct)
    cos, sin = _angles(x.shape[-2], x.shape[-1], x.dtype)
    return (ct * cos + _rotate_half_t(ct * sin),)


# ----------------------------------------------------------------------------- swiglu


def swiglu(x: ArrayLike, Wg: ArrayLike, Wu: ArrayLike, Wd: ArrayLike) -> jax.Array:
    """(silu(x Wg) * (x Wu)) Wd: x (N, D) -> (N, Do)."""
    x = jnp.asarray(x)
    return (silu(x @ jnp.asarray(Wg)) * (x @ jnp.asarray(Wu))) @ jnp.asarray(Wd)


def swiglu_vjp(primals: tuple, ct: ArrayLike) -> tuple[jax.Array, ...]:
    """(dx, dWg, dWu, dWd): with a = x Wg, b = x Wu, m = silu(a) b, dm = ct Wd^T,
    da = dm b silu'(a), db = dm silu(a), dx = da Wg^T + db Wu^T."""
    x, Wg, Wu, Wd = (jnp.asarray(p) for p in primals)
    ct = jnp.asarray(ct)
    a, b = x @ Wg, x @ Wu
    s = silu(a)
    dm = ct @ Wd.T
    da, db = dm * b * silu_grad(a), dm * s
    return da @ Wg.T + db @ Wu.T, x.T @ da, x.T @ db, (s * b).T @ ct


# ----------------------------------------------------------------------------- dropout


def _keep_mask(key: jax.Array, shape: tuple[int, ...], dims: object = None) -> np.ndarray:
    """A fixed keep-mask: each element kept with probability 1 - p, both values present."""
    keep = std_uniform(key, shape) >= DROPOUT_P
    flat = keep.reshape(-1)
    if flat.size >= 2:
        flat[0], flat[1] = True, False
    return flat.reshape(shape)


def _dropout_scale(dtype: jnp.dtype) -> jax.Array:
    return jnp.asarray(1.0 / (1.0 - DROPOUT_P), dtype)


def dropout(x: ArrayLike, keep: ArrayLike) -> jax.Array:
    """where(keep, x / (1 - p), 0), p = 0.25, the mask an input: x (...) -> same."""
    x = jnp.asarray(x)
    return jnp.where(jnp.asarray(keep), x * _dropout_scale(x.dtype), 0.0)


def _kept_cotangent(keep: jax.Array, ct: jax.Array) -> jax.Array:
    """where(keep, ct / (1 - p), 0): the kept elements pass the cotangent, scaled like the forward."""
    return jnp.where(keep, ct * _dropout_scale(ct.dtype), 0.0)


def dropout_vjp(primals: tuple, ct: ArrayLike) -> tuple[jax.Array]:
    """(dx,) = where(keep, ct / (1 - p), 0)."""
    return (_kept_cotangent(jnp.asarray(primals[1]), jnp.asarray(ct)),)


# ----------------------------------------------------------------------------- losses on logits


def _smoothed_target(labels: jax.Array, c: int, dtype: jnp.dtype) -> jax.Array:
    """q = (1 - s) onehot(labels) + s / C: (..., C)."""
    onehot = (jnp.arange(c) == labels[..., None]).astype(dtype)
    return (1.0 - LABEL_SMOOTHING) * onehot + LABEL_SMOOTHING / c


def label_smoothed_cross_entropy(logits: ArrayLike, labels: ArrayLike) -> jax.Array:
    """mean_n -sum_j q_j log softmax(logits_n)_j, q = 0.9 onehot + 0.1 / C: logits (N, C) -> ()."""
    lp = log_softmax(logits)
    picked = jnp.take_along_axis(lp, jnp.asarray(labels)[..., None], axis=-1)[..., 0]
    # (1 - s) nll of the label + s times the mean over classes of -log p
    return -jnp.mean((1.0 - LABEL_SMOOTHING) * picked + LABEL_SMOOTHING * jnp.mean(lp, axis=-1))


def label_smoothed_cross_entropy_vjp(primals: tuple, ct: ArrayLike) -> tuple[jax.Array]:
    """(dlogits,) = ct (softmax(logits) - q) / N."""
    logits, labels = jnp.asarray(primals[0]), jnp.asarray(primals[1])
    q = _smoothed_target(labels, logits.shape[-1], logits.dtype)
    return (jnp.asarray(ct) * (softmax(logits) - q) / logits.shape[0],)


def z_loss(logits: ArrayLike) -> jax.Array:
    """1e-4 mean_n logsumexp(logits_n)^2: logits (N, C) -> ()."""
    lse = logsumexp(logits)
    return Z_LOSS_COEF * jnp.mean(lse * lse)


def z_loss_vjp(primals: tuple, ct: ArrayLike) -> tuple[jax.Array]:
    """(dlogits,) = ct 1e-4 2 lse_n softmax(logits_n) / N."""
    logits = jnp.asarray(primals[0])
    lse = logsumexp(logits)[..., None]
    return (jnp.asarray(ct) * Z_LOSS_COEF * _square_grad(lse) * softmax(logits) / logits.shape[0],)


def _square_grad(a: jax.Array) -> jax.Array:
    """d a^2 / da = 2 a."""
    return 2.0 * a


# ----------------------------------------------------------------------------- cases

register(
    Case(
        name="rope",
        description=(
            "rotary position embedding, half-split: x cos(t theta) + rotate_half(x) sin(t theta), "
            "theta_i = 10000^(-2i/D), t the position: x (2,5,6) -> (2,5,6)"
        ),
        inputs=(Input("x", ("H", "T", "D"), normal(1.0)),),
        settings={"base": ROPE_BASE, "layout": "half-split (rotate_half)"},
        sizes={
            "golden": {"H": 2, "T": 5, "D": 6},
            "tiles": {"H": 2, "T": 65, "D": 34},
            "large": {"H": 8, "T": 1024, "D": 64},
        },
        forward=rope,
        vjp=rope_vjp,
        jvp=lambda p, t: rope(t[0]),
        tags=("block", "position"),
    )
)

register(
    Case(
        name="swiglu",
        description="(silu(x Wg) * (x Wu)) Wd, no biases: x (4,5), Wg, Wu (5,7), Wd (7,3) -> (4,3)",
        inputs=(
            Input("x", ("N", "D"), normal(1.0)),
            Input("Wg", ("D", "F"), fan_in()),
            Input("Wu", ("D", "F"), fan_in()),
            Input("Wd", ("F", "Do"), fan_in()),
        ),
        sizes={
            "golden": {"N": 4, "D": 5, "F": 7, "Do": 3},
            "tiles": {"N": 33, "D": 33, "F": 35, "Do": 34},
            "large": {"N": 1024, "D": 1024, "F": 2816, "Do": 1024},
        },
        forward=swiglu,
        vjp=swiglu_vjp,
        tags=("block", "activation"),
    )
)

register(
    Case(
        name="dropout",
        description="where(keep, x / (1 - 0.25), 0) with the keep-mask an input (bool, not differentiable)",
        inputs=(Input("x", ("N", "D"), normal(1.0)), Input("keep", ("N", "D"), _keep_mask, kind="mask")),
        settings={"p": DROPOUT_P},
        sizes={"golden": {"N": 4, "D": 6}, "tiles": {"N": 65, "D": 67}, "large": {"N": 1024, "D": 4096}},
        forward=dropout,
        vjp=dropout_vjp,
        jvp=lambda p, t: dropout(t[0], p[1]),
        tags=("block", "mask"),
    )
)

register(
    Case(
        name="label_smoothed_cross_entropy",
        description="F.cross_entropy(logits, labels, label_smoothing=0.1): targets 0.9 onehot + 0.1 / C",
        inputs=(Input("logits", ("N", "C"), normal(2.0)), Input("labels", ("N",), integers("C"), kind="int")),
        settings={"label_smoothing": LABEL_SMOOTHING},
        sizes={"golden": {"N": 4, "C": 7}, "tiles": {"N": 3, "C": 2051}, "large": {"N": 512, "C": 32768}},
        regimes={"large": {"logits": large_rows()}},
        forward=label_smoothed_cross_entropy,
        vjp=label_smoothed_cross_entropy_vjp,
        tags=("loss", "classification"),
    )
)

register(
    Case(
        name="z_loss",
        description="PaLM's z-loss 1e-4 mean_n logsumexp(logits_n)^2: logits (4,7) -> ()",
        inputs=(Input("logits", ("N", "C"), normal(2.0)),),
        settings={"coef": Z_LOSS_COEF},
        sizes={"golden": {"N": 4, "C": 7}, "tiles": {"N": 3, "C": 2051}, "large": {"N": 512, "C": 32768}},
        regimes={"large": {"logits": large_rows()}},
        forward=z_loss,
        vjp=z_loss_vjp,
        tags=("loss",),
    )
)
