"""The network ``jaxcalc train`` trains, as a case: its forward and its own backward pass.

``backprop_mlp`` is :func:`jaxcalc.backprop.mlp_loss` with one relu hidden layer (train's default
architecture, ``hidden=(128,)``): for x (B, D), labels (B,) int in [0, C),

  a = x W1 + b1,  h = relu(a),  logits = h W2 + b2,  loss = softmax_cross_entropy(logits, labels)

Its parameter gradients are exactly those :func:`jaxcalc.backprop.mlp_backward` returns, the
backward pass that training applies, so the oracle checks the very code that trains. Training never
needs dL/dx; the case writes it by hand here, dx = ((softmax - onehot) / B W2^T * [a > 0]) W1^T.

Inputs keep away from relu's kink: b1 is drawn after x and W1 (from the same keys) and puts every
column of x W1 + b1 in the middle of its widest gap, so no pre-activation sits near 0.
"""

from __future__ import annotations

import math
import zlib

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

from jaxcalc.cases._base import Case, Input, fan_in, integers, normal, register, subkey
from jaxcalc.cases.activations import relu, relu_grad
from jaxcalc.cases.layers import linear, linear_vjp
from jaxcalc.cases.losses import softmax_cross_entropy_vjp

__all__ = ["backprop_mlp", "backprop_mlp_vjp", "backprop_mlp_stages"]

_NAME = "backprop_mlp"
_X, _W1 = normal(1.0), fan_in(math.sqrt(2.0))  # He scaling, as init_mlp draws


def _params(W1, b1, W2, b2) -> list[dict[str, jax.Array]]:
    return [{"W": jnp.asarray(W1), "b": jnp.asarray(b1)}, {"W": jnp.asarray(W2), "b": jnp.asarray(b2)}]


def backprop_mlp(x: ArrayLike, labels: ArrayLike, W1, b1, W2, b2) -> jax.Array:
    """jaxcalc.backprop.mlp_loss of the relu network [(W1, b1), (W2, b2)] on (x, labels): ()."""
    from jaxcalc import backprop  # jaxcalc.backprop imports the cases: import it when called

    return backprop.mlp_loss(_params(W1, b1, W2, b2), (x, labels), activation="relu")


def backprop_mlp_vjp(primals: tuple, ct: ArrayLike) -> tuple[jax.Array, ...]:
    """(dx, dW1, db1, dW2, db2): ct times mlp_backward's gradients, and dx written here."""
    from jaxcalc import backprop

    x, labels, W1, b1, W2, b2 = (jnp.asarray(p) for p in primals)
    ct = jnp.asarray(ct)
    _, grads = backprop.mlp_backward(_params(W1, b1, W2, b2), (x, labels), activation="relu")
    a = linear(x, W1, b1)
    dlogits = softmax_cross_entropy_vjp(linear(relu(a), W2, b2), labels, ct)
    dx = ((dlogits @ W2.T) * relu_grad(a)) @ W1.T
    (g1, g2) = grads
    return dx, ct * g1["W"], ct * g1["b"], ct * g2["W"], ct * g2["b"]


def backprop_mlp_stages(inputs: dict, ct) -> list[tuple[str, str, dict, np.ndarray]]:
    """fc1 (linear), act (relu), fc2 (linear), loss (softmax_cross_entropy)."""
    h = lambda a: np.asarray(a, np.float64)  # noqa: E731
    with jax.enable_x64(True):
        x, W1, b1, W2, b2 = (jnp.asarray(inputs[k], jnp.float64) for k in ("x", "W1", "b1", "W2", "b2"))
        labels, ct = jnp.asarray(inputs["labels"]), jnp.asarray(ct, jnp.float64)
        a = linear(x, W1, b1)
        u = relu(a)
        logits = linear(u, W2, b2)
        dlogits = softmax_cross_entropy_vjp(logits, labels, ct)
        du = linear_vjp(u, W2, b2, dlogits)[0]
        return [
            ("fc1", "linear", {"x": h(x), "W": h(W1), "b": h(b1)}, h(du * relu_grad(a))),
            ("act", "relu", {"x": h(a)}, h(du)),
            ("fc2", "linear", {"x": h(u), "W": h(W2), "b": h(b2)}, h(dlogits)),
            ("loss", "softmax_cross_entropy", {"logits": h(logits), "labels": np.asarray(labels)}, h(ct)),
        ]


def _bias_between_kinks(key, shape, dims) -> np.ndarray:
    """b1 such that every column of x W1 + b1 sits mid-way in its widest gap near zero.

    x and W1 are drawn again from their own keys (keys follow from names), so this is a pure
    function of the case's seed. Each column's values are shifted so the midpoint of the widest gap
    between consecutive sorted values lands on zero (so each unit is on for some rows, off for others).
    """
    ck = jax.random.key(zlib.crc32(_NAME.encode()))
    x = _X(subkey(ck, "x"), (dims["B"], dims["D"]), dims)
    W1 = _W1(subkey(ck, "W1"), (dims["D"], dims["H"]), dims)
    a = np.sort(x @ W1, axis=0)
    if a.shape[0] < 2:
        return -a[0] + 0.5
    j = np.argmax(a[1:] - a[:-1], axis=0)  # zero between two rows: each unit on for some rows, off for others
    cols = np.arange(a.shape[1])
    return -(a[j, cols] + a[j + 1, cols]) / 2


register(
    Case(
        name=_NAME,
        description=(
            "the network jaxcalc train trains, jaxcalc.backprop.mlp_loss with one relu layer: "
            "softmax_cross_entropy(relu(x W1 + b1) W2 + b2, labels), its backward pass mlp_backward -> ()"
        ),
        inputs=(
            Input("x", ("B", "D"), _X),
            Input("labels", ("B",), integers("C"), kind="int"),
            Input("W1", ("D", "H"), _W1),
            Input("b1", ("H",), _bias_between_kinks),
            Input("W2", ("H", "C"), fan_in(math.sqrt(2.0))),
            Input("b2", ("C",), normal(0.1)),
        ),
        settings={"activation": "relu", "relu_grad_at_0": 0.0},
        # large: the digits network train runs (64 features, 128 hidden, 10 classes, batch 128)
        sizes={
            "golden": {"B": 8, "D": 5, "H": 7, "C": 3},
            "tiles": {"B": 65, "D": 33, "H": 65, "C": 10},
            "large": {"B": 128, "D": 64, "H": 128, "C": 10},
        },
        forward=backprop_mlp,
        vjp=backprop_mlp_vjp,
        stages=backprop_mlp_stages,
        tags=("composite", "network", "loss", "training"),
    )
)
