"""
How close the transformer step can come to the GEMM rate: the step against its own GEMMs alone.

Times three calls side by side, round-robin, in one process: the fast handwritten training step
of `jaxcalc.bench.fast_block` (as `jaxcalc bench` runs it), a program made of the step's
projection and MLP GEMMs only (the same shapes, forward and backward: 3 x 2 N (4 d^2 + 2 d f)
FLOPs, no attention, no layernorm, no gelu), and the bench's reference GEMM (N x d @ d x f).
Both fractions count the step's whole FLOPs (attention included, as the bench does): the
GEMMs-alone line is therefore the fraction the step would reach if attention and every
elementwise pass were free, an upper bound for this machine's XLA.

Example (the bench's size, then a larger one):

    python scripts/transformer_ceiling.py
    python scripts/transformer_ceiling.py --d=512 --seq=256 --heads=8 --ff=2048 --rounds=8 --number=1
"""

import sys
import time

from _overrides import apply  # --name=value overrides of the settings below

# -----------------------------------------------------------------------------
# configuration: one default per line, each overridable as --name=value
d = 256  # model width
seq = 128  # sequence length T
batch = 8  # sequences per step
heads = 4  # attention heads
ff = 1024  # MLP width
block = 64  # query rows per attention block of the fast step
rounds = 25  # timed samples per call, round-robin
number = 3  # calls per sample
# -----------------------------------------------------------------------------
apply(globals(), sys.argv[1:])
if min(d, seq, batch, heads, ff, block, rounds, number) < 1 or d % heads:
    print("error: sizes must be positive and d a multiple of heads", file=sys.stderr)
    sys.exit(2)

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from jaxcalc.bench.harness import machine_info, versions  # noqa: E402
from jaxcalc.bench.training import _transformer_params, _transformer_train_step  # noqa: E402

params = _transformer_params(d, ff, "float32")
x = jax.random.normal(jax.random.key(4), (batch, seq, d), "float32")
y = jax.random.normal(jax.random.key(5), (batch, seq, d), "float32")
n = batch * seq


def gemms_alone(p, a, u):
    """The step's projection and MLP GEMMs, forward (a [Wq Wk Wv], o Wo, c W1, u W2) and each one's
    two backward GEMMs (dW = in^T dout, din = dout W^T), on stand-in activations a (N, d), u (N, f)."""
    _, _, wq, wk, wv, wo, _, _, w1, _, w2, _ = p
    w3 = jnp.concatenate([wq, wk, wv], axis=1)
    outs = []
    for inp, w in ((a, w3), (a, wo), (a, w1), (u, w2)):
        out = inp @ w
        outs += [out, inp.T @ out, out @ w.T]
    return outs


step = _transformer_train_step(heads, 0.01, "fast", block)
a = jax.random.normal(jax.random.key(6), (n, d), "float32")
u = jax.random.normal(jax.random.key(7), (n, ff), "float32")
gemm_a, gemm_b = a, params[8]  # (N, d) @ (d, f), the bench's reference GEMM
compiled = {
    "step": (step, (params, (x, y))),
    "gemms alone": (jax.jit(gemms_alone), (params, a, u)),
    "gemm": (jax.jit(jnp.matmul), (gemm_a, gemm_b)),
}
times = {k: [] for k in compiled}
for fn, args in compiled.values():
    jax.block_until_ready(fn(*args))
for _ in range(rounds):
    for k, (fn, args) in compiled.items():
        reps = number * (10 if k == "gemm" else 1)
        t0 = time.perf_counter()
        for _ in range(reps):
            out = fn(*args)
        jax.block_until_ready(out)
        times[k].append((time.perf_counter() - t0) / reps)

flops = 3 * (2 * n * (4 * d * d + 2 * d * ff) + 4 * batch * seq * seq * d)
gemm_rate = 2 * n * d * ff / np.median(times["gemm"]) / 1e9
shape = f"d={d}, T={seq}, batch {batch}, {heads} heads, mlp {ff}"
m, v = machine_info(), versions()
print(f"backend {m['backend']} ({m['cpu_model']}, {m['cpu_usable']} CPUs); jax {v['jax']}")
print(f"transformer block {shape}: {flops / 1e9:.2f} GFLOP a step")
print(f"reference GEMM {n}x{d} @ {d}x{ff}: {gemm_rate:.0f} GFLOP/s (median of {rounds})")
for k in ("step", "gemms alone"):
    t = np.median(times[k])
    print(f"{k:12s} {t * 1e3:8.2f} ms  step FLOPs / time / GEMM rate = {flops / t / 1e9 / gemm_rate:.2f}")
print("target: the step >= 0.9; 'gemms alone' bounds it from above")
