"""
The seed's gradient descent on f(x) = x**2, as one fused compiled loop on whatever backend
JAX finds (CPU, GPU or TPU). It prints the seed's lines exactly as the seed's Python loop
does, checks every iterate against the closed form x_n = x* + (x0 - x*)(1 - lr f'')**n and
times the fused loop.

    python scripts/seed_descent.py
    python scripts/seed_descent.py --lr=1.5 --steps=10
    python scripts/seed_descent.py --fn=chain_affine_square --lr=0.05 --steps=60 --dtype=float32
"""

import math
import sys
import time

from _overrides import apply  # --name=value overrides of the settings below

# -----------------------------------------------------------------------------
# configuration: every line can be overridden with --key=value
fn = "square"  # "square" (f = x**2) or "chain_affine_square" (f = (2x + 3)**2)
x0 = 10.0  # starting point, the seed's x = 10
lr = 0.1  # learning rate eta, the seed's 0.1
steps = 20  # epochs, the seed's 20
dtype = "float64"  # "float64" (what the seed's Python floats are) or "float32"
repeat = 200  # time this many calls of the compiled loop (0 to skip)


# -----------------------------------------------------------------------------
def usage(message: str) -> None:
    print(f"error: {message}", file=sys.stderr)
    sys.exit(2)


apply(globals(), sys.argv[1:])
minimizer, curvature = {"square": (0.0, 2.0), "chain_affine_square": (-1.5, 8.0)}.get(fn, (None, None))
if minimizer is None or dtype not in ("float64", "float32") or steps < 1 or not math.isfinite(x0 + lr):
    usage("bad configuration; see --help")
# -----------------------------------------------------------------------------

import jax  # noqa: E402 (configuration first, then JAX)

jax.config.update("jax_enable_x64", dtype == "float64")  # this script's own process only
import jax.numpy as jnp  # noqa: E402

from jaxcalc import seed  # noqa: E402
from jaxcalc.descent import classify_lr, descent_with_grad  # noqa: E402

print(f"backend: {jax.default_backend()}, device: {jax.devices()[0].device_kind}, dtype: {dtype}")
print(f"gradient descent on {fn}, x0 = {x0:g}, lr = {lr:g}, {steps} steps, one compiled call")

# the fused loop: x <- x - lr * f'(x) with the handwritten derivative, all steps in one lax.scan
f, f_grad = getattr(seed, fn), getattr(seed, f"{fn}_grad")
loop = jax.jit(lambda x, lr: descent_with_grad(f, f_grad, x, lr, steps))
start = jnp.asarray(x0, dtype)
traj = jax.block_until_ready(loop(start, lr))

# the seed's print statement, verbatim
for i, (x, fx) in enumerate(zip(traj.params.tolist(), traj.losses.tolist(), strict=True)):
    print(f"Epoch {i + 1}: x = {x:.4f}, f(x) = {fx:.4f}")

# the seed's own loop in plain Python floats, and the closed form
x, seed_xs = x0, []
for _ in range(steps):
    x = x - lr * float(f_grad(x))
    seed_xs.append(x)
gap, closed = x0 - minimizer, []
for _ in range(
    steps
):  # x_n - x* = (x0 - x*)(1 - lr f'')**n, by repeated products (inf, not an error, on overflow)
    gap *= 1 - lr * curvature
    closed.append(minimizer + gap)
xs = traj.params.tolist()
finite = all(math.isfinite(v) for v in xs + closed)
if finite:
    err_seed = max(abs(a - b) / max(abs(b), 1e-300) for a, b in zip(xs, seed_xs, strict=True))
    err_closed = max(abs(a - b) / max(abs(b), 1e-300) for a, b in zip(xs, closed, strict=True))
    print(f"max rel diff vs the seed's Python loop: {err_seed:.1e}; vs closed form: {err_closed:.1e}")
behaviour = classify_lr(traj.params - minimizer, x0 - minimizer)
if behaviour != "converges" or not finite:
    what = {
        "oscillates": "oscillate and do not converge",
        "diverges": "diverge",
        "overflows": "overflow to inf",
    }
    print(
        f"note: with lr = {lr:g} the iterates {what.get(behaviour, 'do not move')}; "
        f"descent on {fn} converges only for 0 < lr < {2 / curvature:g}"
    )

if repeat > 0:
    t0 = time.perf_counter()
    for _ in range(repeat):
        out = loop(start, lr)
    jax.block_until_ready(out)
    per_call = (time.perf_counter() - t0) / repeat
    print(f"fused loop: {per_call * 1e6:.1f} us per call of {steps} steps ({repeat} calls, compiled once)")
