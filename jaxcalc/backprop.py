"""Backpropagation by hand: the seed's four steps for a multilayer perceptron of any depth.

1. forward pass   a_l = h_{l-1} W_l + b_l,  h_l = act(a_l)  (no activation on the last layer)
2. loss           L = mean_i ( logsumexp(z_i) - z_i[y_i] ),  z = a_L the logits
3. backward pass  the chain rule, layer by layer from the loss back to the input
4. update         w <- w - lr * dL/dw  (gradient descent)

Parameters are a list of layers ``{"W": (fan_in, fan_out), "b": (fan_out,)}``; a batch is
``(x (B, D) float, labels (B,) int)``. Functions are pure and work in float32 or float64:
the dtype of the parameters sets the dtype of the computation.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import partial
from typing import Literal

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from jaxcalc.cases.activations import relu, relu_grad
from jaxcalc.cases.losses import softmax_cross_entropy, softmax_cross_entropy_vjp
from jaxcalc.seed import update

__all__ = [
    "Params",
    "Batch",
    "ACTIVATIONS",
    "init_mlp",
    "mlp_forward",
    "mlp_loss",
    "mlp_backward",
    "make_train_step",
]

Params = list[dict[str, jax.Array]]
Batch = tuple[ArrayLike, ArrayLike]
Activation = Literal["relu", "tanh"]
ACTIVATIONS = ("relu", "tanh")


def _check_activation(activation: str) -> None:
    if activation not in ACTIVATIONS:
        raise ValueError(f"unknown activation {activation!r}; choose one of {ACTIVATIONS}")


# ----------------------------------------------------------------------------- activations
# Each hidden activation with its local derivative beside it, written in terms of the
# pre-activation a and the activation h = act(a) that the forward pass already holds.


def _act(a: jax.Array, activation: str) -> jax.Array:
    """h = relu(a) = max(a, 0) or h = tanh(a), elementwise.

    Its autodiff takes relu'(0) = 0 as below (jnp.maximum would split a tie as 0.5), which matters
    where a whole layer is dead for a sample and a = b = 0 exactly.
    The relu is the catalogue's (``jaxcalc.cases.activations``): one relu convention in the library.
    """
    return relu(a) if activation == "relu" else jnp.tanh(a)


def _act_grad(a: jax.Array, h: jax.Array, activation: str) -> jax.Array:
    """dh/da, elementwise: relu' = [a > 0] (0 at the kink a = 0), tanh' = 1 - tanh(a)**2 = 1 - h**2."""
    return relu_grad(a) if activation == "relu" else 1 - h * h


# ----------------------------------------------------------------------------- the network


def init_mlp(key: jax.Array, sizes: Sequence[int], dtype: jnp.dtype = jnp.float32) -> Params:
    """Layers for an MLP with widths ``sizes = (D, H_1, ..., K)``: len(sizes) - 1 layers.

    W_l ~ N(0, 2 / fan_in) (He scaling, keeps relu activations of unit order at any depth),
    b_l = 0. The same key always gives the same network.
    """
    sizes = tuple(int(s) for s in sizes)
    if len(sizes) < 2 or min(sizes) < 1:
        raise ValueError(f"sizes must hold at least two positive widths, got {list(sizes)}")
    return _init_mlp(key, sizes, jnp.dtype(dtype))


@partial(jax.jit, static_argnums=(1, 2))
def _init_mlp(key: jax.Array, sizes: tuple[int, ...], dtype: jnp.dtype) -> Params:
    """The draws of :func:`init_mlp`, compiled once per (sizes, dtype).

    All weights come from one normal draw of sum(fan_in * fan_out) values, cut layer by
    layer: one random-bits kernel however deep the network (each costs a slow compile).
    """
    shapes = list(zip(sizes[:-1], sizes[1:], strict=True))
    z = jax.random.normal(key, (sum(i * o for i, o in shapes),), dtype)
    params, start = [], 0
    for fan_in, fan_out in shapes:
        w = z[start : start + fan_in * fan_out].reshape(fan_in, fan_out)
        params.append({"W": w * jnp.sqrt(jnp.asarray(2 / fan_in, dtype)), "b": jnp.zeros((fan_out,), dtype)})
        start += fan_in * fan_out
    return params


def _forward_cache(
    params: Params, x: ArrayLike, activation: str
) -> tuple[jax.Array, list[tuple[jax.Array, jax.Array, jax.Array]]]:
    """Step 1, keeping what the backward pass needs: logits and per layer (h_{l-1}, a_l, h_l)."""
    _check_activation(activation)
    h = jnp.asarray(x, params[0]["W"].dtype)
    cache = []
    for l, layer in enumerate(params):
        a = h @ layer["W"] + layer["b"]  # a_l = h_{l-1} W_l + b_l
        out = a if l == len(params) - 1 else _act(a, activation)
        cache.append((h, a, out))
        h = out
    return h, cache


def mlp_forward(params: Params, x: ArrayLike, *, activation: Activation = "relu") -> jax.Array:
    """Logits z = a_L for inputs x (B, D): returns (B, K); hidden layers use ``activation``."""
    return _forward_cache(params, x, activation)[0]


def _cross_entropy(z: jax.Array, labels: ArrayLike) -> jax.Array:
    """Step 2: L = mean_i (logsumexp(z_i) - z_i[y_i]) for logits z (B, K), labels (B,)."""
    return softmax_cross_entropy(z, jnp.asarray(labels))  # the catalogue's cross-entropy


def _cross_entropy_grad(z: jax.Array, labels: ArrayLike) -> jax.Array:
    """dL/dz = (softmax(z) - onehot(y)) / B, shape (B, K)."""
    return softmax_cross_entropy_vjp(z, jnp.asarray(labels), jnp.ones((), z.dtype))


def mlp_loss(params: Params, batch: Batch, *, activation: Activation = "relu") -> jax.Array:
    """Mean softmax cross-entropy of the MLP on ``batch = (x (B, D), labels (B,))``: a scalar."""
    x, labels = batch
    return _cross_entropy(mlp_forward(params, x, activation=activation), labels)


def mlp_backward(
    params: Params, batch: Batch, *, activation: Activation = "relu"
) -> tuple[jax.Array, Params]:
    """(L, dL/dparams) by the chain rule written out layer by layer, no autodiff.

    Going back through layer l with g = dL/da_l (B, fan_out) in hand:
      dL/dW_l = h_{l-1}^T g              (fan_in, fan_out)   since a_l = h_{l-1} W_l + b_l
      dL/db_l = sum over the batch of g  (fan_out,)
      dL/dh_{l-1} = g W_l^T              (B, fan_in)
      dL/da_{l-1} = dL/dh_{l-1} * act'(a_{l-1})   elementwise, since h_{l-1} = act(a_{l-1})
    """
    x, labels = batch
    z, cache = _forward_cache(params, x, activation)
    loss = _cross_entropy(z, labels)
    g = _cross_entropy_grad(z, labels)  # dL/dz = (softmax(z) - onehot(y)) / B
    grads: Params = [{} for _ in params]
    for l in reversed(range(len(params))):
        h_prev, _, _ = cache[l]
        grads[l] = {
            "W": h_prev.T @ g,  # dL/dW_l = h_{l-1}^T dL/da_l
            "b": jnp.sum(g, axis=0),  # dL/db_l = sum_i dL/da_l[i]
        }
        if l > 0:
            _, a_prev, h_act = cache[l - 1]
            g = (g @ params[l]["W"].T) * _act_grad(a_prev, h_act, activation)  # dL/da_{l-1}
    return loss, grads


def _autodiff_backward(params: Params, batch: Batch, *, activation: Activation = "relu"):
    """(L, dL/dparams) by jax.value_and_grad: the independent witness for :func:`mlp_backward`."""
    return jax.value_and_grad(lambda p: mlp_loss(p, batch, activation=activation))(params)


def make_train_step(
    lr: float,
    grad: Literal["handwritten", "autodiff"] = "handwritten",
    *,
    activation: Activation = "relu",
) -> Callable[[Params, Batch], tuple[Params, jax.Array]]:
    """A jitted step ``(params, batch) -> (new_params, loss)``: forward, loss, backward, update.

    ``grad`` picks the backward pass: "handwritten" (:func:`mlp_backward`) or "autodiff"
    (``jax.value_and_grad``). The loss returned is the one at the incoming params. The
    params buffers are donated, so pass the returned params to the next call and do not
    reuse the old ones; calls with the same shapes and dtypes reuse one compilation.
    """
    if grad not in ("handwritten", "autodiff"):
        raise ValueError(f"unknown grad {grad!r}; choose 'handwritten' or 'autodiff'")
    _check_activation(activation)
    backward = mlp_backward if grad == "handwritten" else _autodiff_backward
    lr = float(lr)

    def step(params: Params, batch: Batch) -> tuple[Params, jax.Array]:
        loss, grads = backward(params, batch, activation=activation)
        return update(params, grads, lr), loss

    return jax.jit(step, donate_argnums=0)
