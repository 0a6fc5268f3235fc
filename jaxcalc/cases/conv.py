"""Convolution and pooling as torch.nn.functional computes them (NC[H]W layouts), backward by hand.

conv1d / conv2d (cross-correlation, F.conv1d / F.conv2d), x (N, Cin, *S), w (Cout, Cin / groups, *K),
b (Cout,), with fixed stride s, zero padding p, dilation d and groups g:

  out[n, o, y] = b[o] + sum_{i in o's group, a} w[o, i, a] xpad[n, i, y s + a d]
  (y and a multi-indices over the spatial axes; out size floor((S + 2p - d (K - 1) - 1) / s) + 1)

The backward pass walks the kernel offsets a: each offset reads a strided slice of xpad, so
dw[:, :, a] = sum ct * slice_a(xpad) and dxpad's slice_a += w[:, :, a]^T ct, then the padding is cut.

max_pool2d (F.max_pool2d, kernel 3, stride 2, overlapping windows): each window's max; its
cotangent goes to the argmax of the window (inputs are distinct, so there are no ties), and an
element that is the max of two windows gets both. avg_pool2d (kernel 3, stride 2, padding 1,
count_include_pad=True): each window's mean over 9 entries, padding counted as zeros.
"""

from __future__ import annotations

import itertools

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

from jaxcalc.cases._base import Case, Input, fan_in, normal, register, std_uniform, subkey

__all__ = [
    "CONV1D",
    "CONV2D",
    "POOL",
    "conv1d",
    "conv2d",
    "conv_vjp",
    "max_pool2d",
    "max_pool2d_vjp",
    "avg_pool2d",
    "avg_pool2d_vjp",
]

CONV1D = {"stride": 2, "padding": 2, "dilation": 3, "groups": 1}
CONV2D = {"stride": 2, "padding": 1, "dilation": 2, "groups": 2}
POOL = {"kernel": 3, "stride": 2, "avg_padding": 1}


def _conv(x: ArrayLike, w: ArrayLike, b: ArrayLike, s: dict) -> jax.Array:
    x, w = jnp.asarray(x), jnp.asarray(w)
    nd = x.ndim - 2
    spec = {1: ("NCH", "OIH", "NCH"), 2: ("NCHW", "OIHW", "NCHW")}[nd]
    out = jax.lax.conv_general_dilated(
        x, w, window_strides=(s["stride"],) * nd, padding=[(s["padding"], s["padding"])] * nd,
        rhs_dilation=(s["dilation"],) * nd, feature_group_count=s["groups"], dimension_numbers=spec,
        precision=jax.lax.Precision.HIGHEST,
    )  # fmt: skip
    return out + jnp.asarray(b).reshape((-1,) + (1,) * nd)


def conv1d(x: ArrayLike, w: ArrayLike, b: ArrayLike) -> jax.Array:
    """F.conv1d(x, w, b, stride=2, padding=2, dilation=3): x (N, Cin, L) -> (N, Cout, Lo)."""
    return _conv(x, w, b, CONV1D)


def conv2d(x: ArrayLike, w: ArrayLike, b: ArrayLike) -> jax.Array:
    """F.conv2d(x, w, b, stride=2, padding=1, dilation=2, groups=2): x (N, Cin, H, W) -> (N, Cout, Ho, Wo)."""
    return _conv(x, w, b, CONV2D)


def _offset_slices(a: tuple[int, ...], out: tuple[int, ...], stride: int, dilation: int) -> tuple:
    """The strided slice of xpad that kernel offset ``a`` reads: a d + y s for y < out, per spatial axis."""
    return tuple(
        slice(ai * dilation, ai * dilation + (o - 1) * stride + 1, stride)
        for ai, o in zip(a, out, strict=True)
    )


def _geometry(s: dict) -> tuple[int, int, int, int]:
    """(stride, padding, dilation, groups) as the backward pass reads them."""
    return s["stride"], s["padding"], s["dilation"], s["groups"]


def conv_vjp(primals: tuple, ct: ArrayLike, settings: dict) -> tuple[jax.Array, jax.Array, jax.Array]:
    """(dx, dw, db) of a convolution with ``settings``, offset by offset (module docstring)."""
    x, w, _ = (jnp.asarray(p) for p in primals)
    ct = jnp.asarray(ct)
    stride, pad, dil, groups = _geometry(settings)
    n, cin = x.shape[:2]
    cout, cg = w.shape[:2]
    nd, out = x.ndim - 2, ct.shape[2:]
    xpad = jnp.pad(x, [(0, 0), (0, 0)] + [(pad, pad)] * nd)
    ctg = ct.reshape(n, groups, cout // groups, *out)
    wg = w.reshape(groups, cout // groups, cg, *w.shape[2:])
    dxpad = jnp.zeros_like(xpad)
    dw = jnp.zeros_like(wg)
    for a in itertools.product(*(range(k) for k in w.shape[2:])):
        sl = (slice(None), slice(None)) + _offset_slices(a, out, stride, dil)
        patch = xpad[sl].reshape(n, groups, cg, *out)
        wa = wg[(slice(None),) * 3 + a]  # (groups, Cout / groups, Cg)
        dw = dw.at[(slice(None),) * 3 + a].set(jnp.einsum("ngo...,ngi...->goi", ctg, patch))
        dxpad = dxpad.at[sl].add(jnp.einsum("ngo...,goi->ngi...", ctg, wa).reshape(n, cin, *out))
    dx = _crop(dxpad, pad, x.shape[2:])
    return dx, dw.reshape(w.shape), jnp.sum(ct, axis=(0, *range(2, ct.ndim)))


# ----------------------------------------------------------------------------- pooling


def _windows(x: jax.Array, k: int, stride: int, out: tuple[int, int]) -> tuple[list, jax.Array]:
    """The k*k offsets' slices and the stacked window entries (..., Ho, Wo, k*k)."""
    offs = [
        (slice(None), slice(None)) + _offset_slices(a, out, stride, 1)
        for a in itertools.product(range(k), repeat=2)
    ]
    return offs, jnp.stack([x[sl] for sl in offs], axis=-1)


def max_pool2d(x: ArrayLike) -> jax.Array:
    """F.max_pool2d(x, kernel_size=3, stride=2): x (N, C, H, W) -> (N, C, Ho, Wo)."""
    k, s = POOL["kernel"], POOL["stride"]
    return jax.lax.reduce_window(jnp.asarray(x), -jnp.inf, jax.lax.max, (1, 1, k, k), (1, 1, s, s), "VALID")


def _argmax_mask(win: jax.Array) -> jax.Array:
    """One-hot of each window's argmax (..., k*k): where the window's cotangent goes."""
    return (jnp.arange(win.shape[-1]) == jnp.argmax(win, axis=-1)[..., None]).astype(win.dtype)


def max_pool2d_vjp(primals: tuple, ct: ArrayLike) -> tuple[jax.Array]:
    """(dx,): each window's cotangent added at its argmax; overlapping windows accumulate."""
    x, ct = jnp.asarray(primals[0]), jnp.asarray(ct)
    k, s = POOL["kernel"], POOL["stride"]
    offs, win = _windows(x, k, s, ct.shape[2:])
    routed = _argmax_mask(win) * ct[..., None]
    dx = jnp.zeros_like(x)
    for j, sl in enumerate(offs):
        dx = dx.at[sl].add(routed[..., j])
    return (dx,)


def avg_pool2d(x: ArrayLike) -> jax.Array:
    """F.avg_pool2d(x, 3, stride=2, padding=1) (count_include_pad): x (N, C, H, W) -> (N, C, Ho, Wo)."""
    k, s, p = POOL["kernel"], POOL["stride"], POOL["avg_padding"]
    pads = ((0, 0), (0, 0), (p, p), (p, p))
    summed = jax.lax.reduce_window(jnp.asarray(x), 0.0, jax.lax.add, (1, 1, k, k), (1, 1, s, s), pads)
    return summed / (k * k)


def avg_pool2d_vjp(primals: tuple, ct: ArrayLike) -> tuple[jax.Array]:
    """(dx,): each window's cotangent / 9 spread over its entries (padding cut off at the end)."""
    x, ct = jnp.asarray(primals[0]), jnp.asarray(ct)
    k, s, p = POOL["kernel"], POOL["stride"], POOL["avg_padding"]
    dxpad = jnp.zeros(x.shape[:2] + tuple(d + 2 * p for d in x.shape[2:]), x.dtype)
    for a in itertools.product(range(k), repeat=2):
        sl = (slice(None), slice(None)) + _offset_slices(a, ct.shape[2:], s, 1)
        dxpad = dxpad.at[sl].add(ct / (k * k))
    return (_crop(dxpad, p, x.shape[2:]),)


def _crop(dxpad: jax.Array, p: int, size: tuple[int, ...]) -> jax.Array:
    """The cotangent of the unpadded input: dxpad without its p-wide border."""
    return dxpad[(slice(None), slice(None)) + tuple(slice(p, p + d) for d in size)]


def _distinct(spread: float = 3.0):
    """Values of a random permutation of an evenly spaced grid over [-spread, spread]: no two equal,
    neighbours 2 spread / n apart, so a window's max stays the max under small perturbations."""

    def sample(key, shape, dims=None):
        n = int(np.prod(shape))
        grid = np.linspace(-spread, spread, n)
        return grid[np.argsort(std_uniform(subkey(key, 0), (n,)))].reshape(shape)

    return sample


register(
    Case(
        name="conv1d",
        description="F.conv1d(x, w, b, stride=2, padding=2, dilation=3): x (2,3,11), w (4,3,3) -> (2,4,4)",
        inputs=(
            Input("x", ("N", "Cin", "L"), normal(1.0)),
            Input("w", ("Cout", "Cin", "K"), fan_in()),
            Input("b", ("Cout",), normal(0.1)),
        ),  # fmt: skip
        settings=CONV1D,
        sizes={
            "golden": {"N": 2, "Cin": 3, "L": 11, "Cout": 4, "K": 3},
            "tiles": {"N": 2, "Cin": 5, "L": 67, "Cout": 33, "K": 5},
            "large": {"N": 16, "Cin": 256, "L": 4096, "Cout": 256, "K": 3},
        },  # fmt: skip
        forward=conv1d,
        vjp=lambda p, ct: conv_vjp(p, ct, CONV1D),
        jvp=lambda p, t: conv1d(t[0], p[1], t[2]) + conv1d(p[0], t[1], 0 * t[2]),
        tags=("convolution", "block"),
    )
)

register(
    Case(
        name="conv2d",
        description=(
            "F.conv2d(x, w, b, stride=2, padding=1, dilation=2, groups=2): "
            "x (2,4,7,6), w (6,2,3,2) -> (2,6,3,3)"
        ),
        inputs=(
            Input("x", ("N", "Cin", "H", "W"), normal(1.0)),
            Input("w", ("Cout", "Cg", "KH", "KW"), fan_in()),
            Input("b", ("Cout",), normal(0.1)),
        ),  # fmt: skip
        settings=CONV2D,
        # Cin = 2 Cg (groups = 2) and Cout even at every size
        sizes={
            "golden": {"N": 2, "Cin": 4, "H": 7, "W": 6, "Cout": 6, "Cg": 2, "KH": 3, "KW": 2},
            "tiles": {"N": 1, "Cin": 4, "H": 33, "W": 20, "Cout": 34, "Cg": 2, "KH": 3, "KW": 3},
            "large": {"N": 16, "Cin": 64, "H": 64, "W": 64, "Cout": 128, "Cg": 32, "KH": 3, "KW": 3},
        },  # fmt: skip
        forward=conv2d,
        vjp=lambda p, ct: conv_vjp(p, ct, CONV2D),
        jvp=lambda p, t: conv2d(t[0], p[1], t[2]) + conv2d(p[0], t[1], 0 * t[2]),
        tags=("convolution", "block"),
    )
)

register(
    Case(
        name="max_pool2d",
        description="F.max_pool2d(x, 3, stride=2), overlapping windows, distinct inputs: x (2,3,7,8) -> (2,3,3,3)",  # noqa: E501
        inputs=(Input("x", ("N", "C", "H", "W"), _distinct()),),
        settings={"kernel": POOL["kernel"], "stride": POOL["stride"], "padding": 0},
        sizes={
            "golden": {"N": 2, "C": 3, "H": 7, "W": 8},
            "tiles": {"N": 1, "C": 2, "H": 33, "W": 35},
            "large": {"N": 16, "C": 64, "H": 128, "W": 128},
        },
        forward=max_pool2d,
        vjp=max_pool2d_vjp,
        tags=("pooling", "block", "kink"),
    )
)

register(
    Case(
        name="avg_pool2d",
        description="F.avg_pool2d(x, 3, stride=2, padding=1), padding counted: x (2,3,7,8) -> (2,3,4,4)",
        inputs=(Input("x", ("N", "C", "H", "W"), normal(1.0)),),
        settings={
            "kernel": POOL["kernel"],
            "stride": POOL["stride"],
            "padding": POOL["avg_padding"],
            "count_include_pad": True,
        },  # fmt: skip
        sizes={
            "golden": {"N": 2, "C": 3, "H": 7, "W": 8},
            "tiles": {"N": 1, "C": 2, "H": 33, "W": 35},
            "large": {"N": 16, "C": 64, "H": 128, "W": 128},
        },
        forward=avg_pool2d,
        vjp=avg_pool2d_vjp,
        jvp=lambda p, t: avg_pool2d(t[0]),
        tags=("pooling", "block"),
    )
)
