"""A two-layer perceptron under softmax cross-entropy, with backprop written layer by layer.

Forward, for x (N, D), labels (N) int in [0, C), W1 (D, H), b1 (H), W2 (H, C), b2 (C):

  z = x W1 + b1,   u = gelu_tanh(z),   logits = u W2 + b2,   loss = softmax_cross_entropy(logits, labels)

Backward, the chain rule one layer at a time from the loss down:

  dlogits = ct (softmax(logits) - onehot(labels)) / N
  du, dW2, db2 = linear_vjp(u, W2, b2, dlogits)
  dz = du * gelu_tanh'(z)
  dx, dW1, db1 = linear_vjp(x, W1, b1, dz)
"""

from __future__ import annotations

import jax
from jax.typing import ArrayLike

from jaxcalc.cases._base import Case, Input, fan_in, integers, normal, register
from jaxcalc.cases.activations import gelu_tanh, gelu_tanh_grad
from jaxcalc.cases.layers import linear, linear_vjp
from jaxcalc.cases.losses import softmax_cross_entropy, softmax_cross_entropy_vjp

__all__ = ["mlp", "mlp_vjp", "mlp_hidden", "mlp_head"]


def mlp_hidden(x: ArrayLike, W1: ArrayLike, b1: ArrayLike) -> jax.Array:
    """Hidden activations u = gelu_tanh(x W1 + b1): (..., H)."""
    return gelu_tanh(linear(x, W1, b1))


def mlp_head(u: ArrayLike, labels: ArrayLike, W2: ArrayLike, b2: ArrayLike) -> jax.Array:
    """Loss of the output layer: softmax_cross_entropy(u W2 + b2, labels): ()."""
    return softmax_cross_entropy(linear(u, W2, b2), labels)


def mlp(
    x: ArrayLike, labels: ArrayLike, W1: ArrayLike, b1: ArrayLike, W2: ArrayLike, b2: ArrayLike
) -> jax.Array:
    """softmax_cross_entropy(gelu_tanh(x W1 + b1) W2 + b2, labels), the mean over the N rows: ()."""
    return mlp_head(mlp_hidden(x, W1, b1), labels, W2, b2)


def mlp_vjp(
    x: ArrayLike,
    labels: ArrayLike,
    W1: ArrayLike,
    b1: ArrayLike,
    W2: ArrayLike,
    b2: ArrayLike,
    ct: ArrayLike,
) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array, jax.Array]:
    """Handwritten backprop of :func:`mlp`: (dx, dW1, db1, dW2, db2); labels get no cotangent."""
    z = linear(x, W1, b1)  # forward again, keeping what the backward pass needs
    u = gelu_tanh(z)
    logits = linear(u, W2, b2)
    dlogits = softmax_cross_entropy_vjp(logits, labels, ct)  # ct (p - onehot) / N
    du, dW2, db2 = linear_vjp(u, W2, b2, dlogits)  # logits = u W2 + b2
    dz = du * gelu_tanh_grad(z)  # u = gelu_tanh(z), elementwise
    dx, dW1, db1 = linear_vjp(x, W1, b1, dz)  # z = x W1 + b1
    return dx, dW1, db1, dW2, db2


# ----------------------------------------------------------------------------- case

register(
    Case(
        name="mlp",
        description=(
            "softmax_cross_entropy(gelu_tanh(x W1 + b1) W2 + b2, labels): x (8,5), labels (8) in [0,3), "
            "W1 (5,7), b1 (7), W2 (7,3), b2 (3) -> ()"
        ),
        inputs=(
            Input("x", ("N", "I"), normal(1.0)),
            Input("labels", ("N",), integers("C"), kind="int"),
            # weights ~ N(0, 1/fan_in): pre-activations and logits of unit scale, softmax not saturated
            Input("W1", ("I", "H"), fan_in()),
            Input("b1", ("H",), normal(0.1)),
            Input("W2", ("H", "C"), fan_in()),
            Input("b2", ("C",), normal(0.1)),
        ),
        # tiles: batch rows past 64 and every matmul axis straddling a 32-tile
        sizes={"golden": {"N": 8, "I": 5, "H": 7, "C": 3}, "tiles": {"N": 65, "I": 33, "H": 35, "C": 17},
               "large": {"N": 1024, "I": 784, "H": 1024, "C": 10}},
        forward=mlp,
        vjp=lambda p, ct: mlp_vjp(*p, ct),
        # inner: x -> hidden activations (8, 7); outer: hidden -> loss
        chain=lambda p: (lambda u: mlp_head(u, p[1], p[4], p[5]), lambda x: mlp_hidden(x, p[2], p[3])),
        tags=("composite", "network", "loss"),
    )
)
