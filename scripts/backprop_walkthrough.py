"""
Backpropagation, the seed's four steps, on a generated problem: points on interleaved spiral
arms, one class per arm, learned by an MLP whose backward pass is written by hand. It walks
one step slowly (forward pass, loss, backward pass, update), checking the handwritten
gradient of every layer against jax.grad, then trains and shows the loss falling, with the
gradient check repeated as it goes. Runs unchanged on CPU, GPU or TPU.

    python scripts/backprop_walkthrough.py
    python scripts/backprop_walkthrough.py --steps=2000 --hidden=64 --activation=tanh --dtype=float64
"""

import sys
import time

from _overrides import apply  # --name=value overrides of the settings below

# -----------------------------------------------------------------------------
# configuration: every line can be overridden with --key=value
classes = 3  # spiral arms, one class each
points = 100  # points per arm
noise = 0.2  # spread of the points around each arm
hidden = 32  # width of each hidden layer
depth = 2  # number of hidden layers
activation = "relu"  # hidden activation: "relu" or "tanh"
grad = "handwritten"  # backward pass used for training: "handwritten" or "autodiff"
lr = 0.5  # learning rate
steps = 500  # full-batch training steps
log_every = 50  # print the loss (and re-check the gradients) this often
dtype = "float32"  # "float32" or "float64"
seed = 0  # jax.random.key(seed) draws the data and the initial weights


# -----------------------------------------------------------------------------
def usage(message: str) -> None:
    print(f"error: {message}", file=sys.stderr)
    sys.exit(2)


apply(globals(), sys.argv[1:])
if activation not in ("relu", "tanh") or grad not in ("handwritten", "autodiff"):
    usage("activation must be relu or tanh, grad handwritten or autodiff")
if dtype not in ("float32", "float64") or min(classes - 1, points, hidden, depth, steps, log_every) < 1:
    usage("bad configuration; see --help")
# -----------------------------------------------------------------------------

import jax  # noqa: E402 (configuration first, then JAX)

jax.config.update("jax_enable_x64", dtype == "float64")  # this script's own process only
import jax.numpy as jnp  # noqa: E402

from jaxcalc.backprop import init_mlp, make_train_step, mlp_backward, mlp_forward, mlp_loss  # noqa: E402
from jaxcalc.numerics import compare, tolerance  # noqa: E402

print(f"backend: {jax.default_backend()}, device: {jax.devices()[0].device_kind}, dtype: {dtype}")

# the data: arm k holds points at radius r in (0, 1], angle 4r + 2 pi k / classes, plus noise
k_data, k_noise, k_init = jax.random.split(jax.random.key(seed), 3)
r = jnp.tile(jnp.linspace(0.05, 1.0, points, dtype=dtype), classes)
labels = jnp.repeat(jnp.arange(classes), points)
theta = 4 * r + 2 * jnp.pi * labels / classes + noise * jax.random.normal(k_noise, r.shape, dtype)
x = jnp.stack([r * jnp.cos(theta), r * jnp.sin(theta)], axis=1)
batch = (x, labels)
sizes = (2,) + (hidden,) * depth + (classes,)
params = init_mlp(k_init, sizes, jnp.dtype(dtype))
n_params = sum(p.size for p in jax.tree.leaves(params))
print(f"data: {x.shape[0]} points in {classes} spiral arms; MLP {sizes}, {activation}, {n_params} weights")

# one step, slowly: the seed's four steps
logits = mlp_forward(params, x, activation=activation)  # 1. forward pass: compute predictions
print(f"1. forward pass: logits {tuple(logits.shape)}, a_l = h_(l-1) W_l + b_l, h_l = {activation}(a_l)")
loss, grads = mlp_backward(params, batch, activation=activation)  # 2. loss and 3. backward pass
print(
    f"2. loss: mean softmax cross-entropy = {float(loss):.6f} (log {classes} = {float(jnp.log(classes)):.6f})"
)
reference = jax.grad(mlp_loss)(params, batch, activation=activation)
print("3. backward pass, layer by layer from the loss back (handwritten vs jax.grad):")
tol = tolerance(dtype, "exact")
for layer in reversed(range(len(params))):
    for name in ("W", "b"):
        c = compare(grads[layer][name], reference[layer][name])
        verdict = "agree" if c.error <= tol else "DISAGREE"
        shape = tuple(grads[layer][name].shape)
        print(f"   dL/d{name}{layer + 1} {shape}: rel err {c.error:.1e}, worst at {c.where()} -> {verdict}")
step = make_train_step(lr, grad, activation=activation)
params, _ = step(params, batch)  # 4. update weights: w <- w - lr * dL/dw
new_loss = float(mlp_loss(params, batch, activation=activation))
print(f"4. update: w <- w - {lr:g} * dL/dw; loss {float(loss):.6f} -> {new_loss:.6f}")

# training: the same four steps, jitted, compiled once
print(f"training {steps} steps, {grad} gradients:")
both_grads = jax.jit(  # handwritten and autodiff gradients together, compiled once
    lambda p: (
        mlp_backward(p, batch, activation=activation)[1],
        jax.grad(mlp_loss)(p, batch, activation=activation),
    )
)
accuracy_of = jax.jit(
    lambda p: jnp.mean(jnp.argmax(mlp_forward(p, x, activation=activation), axis=1) == labels)
)


def max_rel(a, b) -> float:
    """Largest normwise relative error over the layers' gradients."""
    return max(compare(u, v).error for u, v in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True))


t0 = time.perf_counter()
for i in range(1, steps + 1):
    params, loss = step(params, batch)
    if i % log_every == 0 or i == steps:
        err = max_rel(*both_grads(params))
        accuracy = float(accuracy_of(params))
        verdict = "agree" if err <= tol else "DISAGREE"
        print(
            f"step {i:5d}: loss {float(loss):.4f}, accuracy {accuracy:.1%}, vs jax.grad {err:.1e} {verdict}"
        )
elapsed = time.perf_counter() - t0
final = float(mlp_loss(params, batch, activation=activation))
print(f"loss {float(jnp.log(classes)):.4f} (chance) -> {final:.4f} after {steps} steps; {elapsed:.2f} s")
