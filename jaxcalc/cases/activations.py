"""Elementwise activations, each with its handwritten derivative right beside it.

For every activation ``NAME`` there are two pure functions, ``NAME(x)`` and ``NAME_grad(x)``
(the elementwise derivative f'(x)), both shaped like ``x``. Each is registered as a case on
x of shape (3, 5), with VJP ``ct * f'(x)`` and JVP ``f'(x) * t`` (the Jacobian is diagonal).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import jax
import jax.numpy as jnp
from jax.scipy.special import erf
from jax.typing import ArrayLike

from jaxcalc.cases._base import (
    Case,
    Input,
    Sampler,
    away_from_zero,
    large_magnitude,
    normal,
    register,
    tiny_magnitude,
)

__all__ = [
    "LEAKY_SLOPE",
    "sigmoid",
    "sigmoid_grad",
    "tanh",
    "tanh_grad",
    "relu",
    "relu_grad",
    "leaky_relu",
    "leaky_relu_grad",
    "softplus",
    "softplus_grad",
    "silu",
    "silu_grad",
    "gelu_tanh",
    "gelu_tanh_grad",
    "gelu_erf",
    "gelu_erf_grad",
]

LEAKY_SLOPE = 0.01
_GELU_C = math.sqrt(2.0 / math.pi)  # sqrt(2/pi), the tanh approximation's scale
_GELU_K = 0.044715  # the tanh approximation's cubic coefficient
_INV_SQRT2 = 1.0 / math.sqrt(2.0)
_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)


def sigmoid(x: ArrayLike) -> jax.Array:
    """sigma(x) = 1 / (1 + exp(-x)), by XLA's logistic, which never overflows and keeps full
    relative accuracy for large negative x. (Its autodiff reuses the output, s (1 - s), as
    PyTorch's backward does, so a low-precision evaluation of it rounds as theirs does.)"""
    return jax.nn.sigmoid(jnp.asarray(x))


def sigmoid_grad(x: ArrayLike) -> jax.Array:
    """sigma'(x) = sigma(x)(1 - sigma(x)) = sigma(x) sigma(-x), the second form without cancellation."""
    x = jnp.asarray(x)
    return sigmoid(x) * sigmoid(-x)


def tanh(x: ArrayLike) -> jax.Array:
    """tanh(x)."""
    return jnp.tanh(jnp.asarray(x))


def tanh_grad(x: ArrayLike) -> jax.Array:
    """tanh'(x) = 1 - tanh(x)**2."""
    t = tanh(x)
    return 1.0 - t * t


def relu(x: ArrayLike) -> jax.Array:
    """relu(x) = max(x, 0)."""
    x = jnp.asarray(x)
    return jnp.maximum(x, jnp.zeros_like(x))


def relu_grad(x: ArrayLike) -> jax.Array:
    """relu'(x) = 1 for x > 0, else 0 (undefined at the kink x = 0; 0 is used there)."""
    x = jnp.asarray(x)
    return jnp.where(x > 0, 1.0, 0.0).astype(x.dtype)


def leaky_relu(x: ArrayLike) -> jax.Array:
    """leaky_relu(x) = x for x > 0, else 0.01 x."""
    x = jnp.asarray(x)
    return jnp.where(x > 0, x, LEAKY_SLOPE * x)


def leaky_relu_grad(x: ArrayLike) -> jax.Array:
    """leaky_relu'(x) = 1 for x > 0, else 0.01 (kink at x = 0)."""
    x = jnp.asarray(x)
    return jnp.where(x > 0, 1.0, LEAKY_SLOPE).astype(x.dtype)


def softplus(x: ArrayLike) -> jax.Array:
    """softplus(x) = log(1 + exp(x)), computed as max(x, 0) + log1p(exp(-|x|)) to stay finite."""
    x = jnp.asarray(x)
    return jnp.maximum(x, 0.0) + jnp.log1p(jnp.exp(-jnp.abs(x)))


def softplus_grad(x: ArrayLike) -> jax.Array:
    """softplus'(x) = exp(x) / (1 + exp(x)) = sigma(x)."""
    return sigmoid(x)


def silu(x: ArrayLike) -> jax.Array:
    """silu(x) = x sigma(x)."""
    x = jnp.asarray(x)
    return x * sigmoid(x)


def silu_grad(x: ArrayLike) -> jax.Array:
    """silu'(x) = sigma(x) + x sigma(x)(1 - sigma(x)) = sigma(x)(1 + x(1 - sigma(x)))."""
    x = jnp.asarray(x)
    return sigmoid(x) * (1.0 + x * sigmoid(-x))  # 1 - sigma(x) = sigma(-x), without cancellation


def gelu_tanh(x: ArrayLike) -> jax.Array:
    """gelu_tanh(x) = x/2 (1 + tanh(u)), u = sqrt(2/pi)(x + 0.044715 x**3)."""
    x = jnp.asarray(x)
    u = _GELU_C * (x + _GELU_K * x**3)
    return 0.5 * x * (1.0 + jnp.tanh(u))


def gelu_tanh_grad(x: ArrayLike) -> jax.Array:
    """gelu_tanh'(x) = (1 + tanh u)/2 + x/2 (1 - tanh(u)**2) sqrt(2/pi)(1 + 3 * 0.044715 x**2)."""
    x = jnp.asarray(x)
    th = jnp.tanh(_GELU_C * (x + _GELU_K * x**3))
    du = _GELU_C * (1.0 + 3.0 * _GELU_K * x * x)  # du/dx
    return 0.5 * (1.0 + th) + 0.5 * x * (1.0 - th * th) * du


def gelu_erf(x: ArrayLike) -> jax.Array:
    """gelu_erf(x) = x/2 (1 + erf(x / sqrt 2)) = x Phi(x), Phi the standard normal CDF."""
    x = jnp.asarray(x)
    return 0.5 * x * (1.0 + erf(x * _INV_SQRT2))


def gelu_erf_grad(x: ArrayLike) -> jax.Array:
    """gelu_erf'(x) = Phi(x) + x phi(x), phi(x) = exp(-x**2/2) / sqrt(2 pi) the normal density."""
    x = jnp.asarray(x)
    cdf = 0.5 * (1.0 + erf(x * _INV_SQRT2))
    return cdf + x * _INV_SQRT_2PI * jnp.exp(-0.5 * x * x)


# ----------------------------------------------------------------------------- cases

_SHAPE = ("m", "n")
# tiles: a row length past 64 that is no multiple of 32
_SIZES = {"golden": {"m": 3, "n": 5}, "tiles": {"m": 5, "n": 67}, "large": {"m": 1024, "n": 1024}}
# large: arguments of both signs out to 1000, past where exp overflows; tiny: near 1e-5, where
# exp-based formulas cancel. Kinked functions keep away from the kink, so they get no 'tiny'.
_SMOOTH = {"large": {"x": large_magnitude()}, "tiny": {"x": tiny_magnitude()}}
_KINKED = {"large": {"x": large_magnitude(0.5, 1000.0)}}
# (the kinked ones also keep 0.5 away from their kink at 0)


def _elementwise_case(
    name: str,
    description: str,
    f: Callable[[ArrayLike], jax.Array],
    df: Callable[[ArrayLike], jax.Array],
    sampler: Sampler,
    tags: tuple[str, ...] = (),
    regimes: dict | None = None,
) -> Case:
    """An elementwise case: diagonal Jacobian diag(f'(x)), so VJP = ct f'(x) and JVP = f'(x) t."""
    return register(
        Case(
            name=name,
            description=description,
            inputs=(Input("x", _SHAPE, sampler),),
            forward=f,
            vjp=lambda p, ct: (ct * df(p[0]),),
            jvp=lambda p, t: df(p[0]) * t[0],
            tags=("elementwise", "activation", *tags),
            sizes=_SIZES,
            regimes=_SMOOTH if regimes is None else regimes,
        )
    )


_elementwise_case("sigmoid", "1 / (1 + exp(-x)), elementwise", sigmoid, sigmoid_grad, normal(2.0))
_elementwise_case("tanh", "tanh(x), elementwise", tanh, tanh_grad, normal(1.5))
_elementwise_case("relu", "max(x, 0), elementwise (kink at 0)", relu, relu_grad, away_from_zero(), ("kink",), _KINKED)
_elementwise_case(
    "leaky_relu",
    "x if x > 0 else 0.01 x, elementwise (kink at 0)",
    leaky_relu,
    leaky_relu_grad,
    away_from_zero(),
    ("kink",),
    _KINKED,
)
_elementwise_case("softplus", "log(1 + exp(x)), elementwise", softplus, softplus_grad, normal(2.0))
_elementwise_case("silu", "x sigmoid(x), elementwise", silu, silu_grad, normal(2.0))
_elementwise_case(
    "gelu_tanh",
    "x/2 (1 + tanh(sqrt(2/pi)(x + 0.044715 x**3))), elementwise",
    gelu_tanh,
    gelu_tanh_grad,
    normal(1.5),
)
_elementwise_case("gelu_erf", "x/2 (1 + erf(x / sqrt 2)), elementwise", gelu_erf, gelu_erf_grad, normal(1.5))
