"""
Cold start of a gradient check: 10 small functions checked in a fresh process, jaxcalc vs torch.

jaxcalc runs check_function (full mode, float64, the gradient given as jax.grad of the same
function) on 10 small scalar losses (at most 100 inputs each); torch runs
torch.autograd.gradcheck plus gradgradcheck on the same 10 functions written in torch. Each
side runs in its own fresh Python subprocess, `repeats` times, alternating; the time printed is
the checking alone (after imports, first call included: that is the cold start) and the whole
process's wall time. The last line prints jaxcalc's check time over torch's.

With --cache_dir=DIR the jaxcalc processes use JAX's persistent compilation cache in DIR (the
documented opt-in: JAX_COMPILATION_CACHE_DIR), filled by one untimed process first, so the
timed processes start fresh but find their programs compiled.

Example:

    python scripts/bench_coldstart.py --repeats=3
    python scripts/bench_coldstart.py --repeats=3 --cache_dir=/tmp/jaxcalc-cache
"""

import json
import os
import subprocess
import sys
import time

from _overrides import apply  # --name=value overrides of the settings below

# -----------------------------------------------------------------------------
# configuration: one default per line, each overridable as --name=value
repeats = 3  # fresh processes per side
cache_dir = ""  # JAX persistent compilation cache for the jaxcalc side ("" = none: truly cold)
side = ""  # internal: "jax" or "torch" runs one side in this process and prints JSON
# -----------------------------------------------------------------------------
apply(globals(), sys.argv[1:])


def _data():
    import numpy as np

    rng = np.random.default_rng(0)
    return {
        "mlp": (rng.standard_normal((4, 6)), rng.standard_normal((6, 3)), rng.standard_normal((5, 4))),
        "softmax_ce": (rng.standard_normal((5, 4)), np.array([0, 3, 1, 2, 1])),
        "layernorm": (rng.standard_normal((4, 5)),),
        "logistic": (rng.standard_normal(10), rng.standard_normal((12, 10)), rng.uniform(size=12) > 0.5),
        "logsumexp": (rng.standard_normal(20),),
        "quadratic": (rng.standard_normal(8), rng.standard_normal((8, 8))),
        "least_squares": (rng.standard_normal(6), rng.standard_normal((10, 6)), rng.standard_normal(10)),
        "rosenbrock": (rng.uniform(-1, 1, 10),),
        "softplus": (rng.standard_normal(30),),
        "attention": (rng.standard_normal((3, 4)), rng.standard_normal((3, 4)), rng.standard_normal((3, 4))),
    }


def _jax_side():
    t0 = time.perf_counter()
    import jax
    import jax.numpy as jnp

    from jaxcalc import check_function

    d = _data()
    fns = {
        "mlp": (lambda W1, W2, x: jnp.sum(jnp.tanh(x @ W1) @ W2), 2),
        "softmax_ce": (lambda z, y: -jnp.mean(jax.nn.log_softmax(z)[jnp.arange(5), y]), 1),
        "layernorm": (
            lambda x: jnp.sum(
                ((x - x.mean(-1, keepdims=True)) / jnp.sqrt(x.var(-1, keepdims=True) + 1e-5)) ** 3
            ),
            1,
        ),
        "logistic": (lambda w, X, y: jnp.mean(jnp.logaddexp(0.0, X @ w) - y * (X @ w)), 1),
        "logsumexp": (lambda x: jax.scipy.special.logsumexp(x), 1),
        "quadratic": (lambda x, A: x @ A @ x, 1),
        "least_squares": (lambda w, X, y: jnp.mean((X @ w - y) ** 2), 1),
        "rosenbrock": (lambda x: jnp.sum(100 * (x[1:] - x[:-1] ** 2) ** 2 + (1 - x[:-1]) ** 2), 1),
        "softplus": (lambda x: jnp.sum(jax.nn.softplus(x) ** 2), 1),
        "attention": (lambda q, k, v: jnp.sum(jax.nn.softmax(q @ k.T / 2.0, axis=-1) @ v), 3),
    }
    t1 = time.perf_counter()
    passed = []
    for name, (f, n) in fns.items():
        argnums = tuple(range(n))
        r = check_function(
            f, d[name], jax.grad(f, argnums=argnums), argnums=argnums, dtype="float64", name=name
        )
        passed.append(r.passed)
    return {"import_s": t1 - t0, "check_s": time.perf_counter() - t1, "passed": all(passed)}


def _torch_side():
    t0 = time.perf_counter()
    import torch

    d = _data()

    def t(a, grad):
        x = torch.from_numpy(a.copy())
        return x.double().requires_grad_(True) if grad else x

    fns = {
        "mlp": (lambda W1, W2, x: torch.sum(torch.tanh(x @ W1) @ W2), 2),
        "softmax_ce": (lambda z, y: torch.nn.functional.cross_entropy(z, y), 1),
        "layernorm": (
            lambda x: torch.sum(
                ((x - x.mean(-1, keepdim=True)) / torch.sqrt(x.var(-1, unbiased=False, keepdim=True) + 1e-5))
                ** 3
            ),
            1,
        ),
        "logistic": (
            lambda w, X, y: torch.mean(torch.logaddexp(torch.zeros(()).double(), X @ w) - y * (X @ w)),
            1,
        ),
        "logsumexp": (lambda x: torch.logsumexp(x, 0), 1),
        "quadratic": (lambda x, A: x @ A @ x, 1),
        "least_squares": (lambda w, X, y: torch.mean((X @ w - y) ** 2), 1),
        "rosenbrock": (lambda x: torch.sum(100 * (x[1:] - x[:-1] ** 2) ** 2 + (1 - x[:-1]) ** 2), 1),
        "softplus": (lambda x: torch.sum(torch.nn.functional.softplus(x) ** 2), 1),
        "attention": (lambda q, k, v: torch.sum(torch.softmax(q @ k.T / 2.0, dim=-1) @ v), 3),
    }
    t1 = time.perf_counter()
    passed = []
    for name, (f, n) in fns.items():
        args = [t(a, i < n) for i, a in enumerate(d[name])]
        if name == "logistic":
            args[2] = args[2].double()
        passed.append(torch.autograd.gradcheck(f, args) and torch.autograd.gradgradcheck(f, args))
    return {"import_s": t1 - t0, "check_s": time.perf_counter() - t1, "passed": all(passed)}


if side:
    print(json.dumps(_jax_side() if side == "jax" else _torch_side()))
    sys.exit(0)

# -----------------------------------------------------------------------------
here = os.path.abspath(__file__)
env = {**os.environ, "PYTHONPATH": os.path.dirname(os.path.dirname(here)), "OMP_NUM_THREADS": "1"}
jax_env = dict(env)
if cache_dir:
    jax_env.update(
        JAX_COMPILATION_CACHE_DIR=cache_dir,
        JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
        JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="0",
    )
    subprocess.run([sys.executable, here, "--side=jax"], env=jax_env, capture_output=True, check=True)
jax_label = "jaxcalc check_function (full)" + (", persistent cache" if cache_dir else "")
runs = {jax_label: [], "torch gradcheck + gradgradcheck": []}
for _ in range(repeats):
    for label, s in zip(runs, ("jax", "torch"), strict=True):
        start = time.perf_counter()
        side_env = jax_env if s == "jax" else env
        out = subprocess.run(
            [sys.executable, here, f"--side={s}"], env=side_env, capture_output=True, text=True
        )
        wall = time.perf_counter() - start
        if out.returncode:
            sys.exit(f"error: the {s} side failed: {out.stderr.strip().splitlines()[-1]}")
        runs[label].append({**json.loads(out.stdout), "wall_s": wall})

print(f"cold start: 10 small functions checked in a fresh process, median of {repeats}, float64")
width = max(map(len, runs))
print(f"{'checker'.ljust(width)}  {'check s':>8}  {'import s':>8}  {'process s':>9}  passed")


def med(rows, key):
    return sorted(r[key] for r in rows)[len(rows) // 2]


for label, rows in runs.items():
    stats = f"{med(rows, 'check_s'):8.3f}  {med(rows, 'import_s'):8.3f}  {med(rows, 'wall_s'):9.3f}"
    print(f"{label.ljust(width)}  {stats}  {all(r['passed'] for r in rows)}")
j, t = (med(rows, "check_s") for rows in runs.values())
print(f"jaxcalc / torch check time = {j / t:.3g}x (target <= 1x): {'met' if j <= t else 'NOT met'}")
