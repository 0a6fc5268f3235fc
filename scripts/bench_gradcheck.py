"""
What a gradient check costs: jaxcalc's checks against torch.autograd.gradcheck and jax's check_grads.

The function checked is a tanh MLP's mean cross-entropy as a function of its weights (float64),
with h (n_in + 1) + k (h + 1) parameters; jaxcalc checks the handwritten gradient of
jaxcalc.backprop.mlp_backward against autodiff and per-element finite differences. Each checker is
timed end to end, the way a user calls it, in turn (round-robin) so that a shared machine's load
falls on all of them alike; after the first round (where jaxcalc's compile shows, as the max),
each timed call follows one untimed call of the same checker, so that it does not run in the
caches and thread pools the previous checker left (torch's 1-thread run made the next jaxcalc
call 1.7x slower). The last lines print torch's slow mode time over jaxcalc's full check, and
jaxcalc's compiled fast mode over torch's fast_mode: its first-order checks against
gradcheck(fast_mode=True), and all its checks, the Hessian's included, against gradcheck plus
gradgradcheck in fast mode (both like for like), then all of them against gradcheck alone.

Example (about 3K parameters):

    python scripts/bench_gradcheck.py --hidden=96 --repeats=3
"""

import sys

from _overrides import apply  # --name=value overrides of the settings below

from jaxcalc.bench.gradcheck import checkers, fast_mode_ratios, make_problem
from jaxcalc.bench.harness import machine_info, time_calls, versions

# -----------------------------------------------------------------------------
# configuration: one default per line, each overridable as --name=value
n_in = 20  # inputs per example
hidden = 96  # hidden width (tanh)
n_out = 10  # classes
batch = 16  # examples in the fixed batch
repeats = 3  # timed calls per checker (each call is one whole check)
use_torch = True  # include torch.autograd.gradcheck (slow and fast_mode) when torch is installed
target = 10.0  # required ratio: torch gradcheck (slow) time / jaxcalc full check time
# -----------------------------------------------------------------------------
apply(globals(), sys.argv[1:])
if min(n_in, hidden, n_out, batch, repeats) < 1:
    sys.exit("error: sizes and repeats must be positive")

# -----------------------------------------------------------------------------
problem = make_problem(n_in, hidden, n_out, batch)
m, v = machine_info(), versions()
shape = f"{n_in}-{hidden}-{n_out}, batch {batch}"
print(f"gradient check of a tanh MLP loss {shape}: {problem.n_params} parameters, float64")
print(
    f"backend {m['backend']} ({m['cpu_model']}, {m['cpu_usable']} CPUs); jax {v['jax']}, torch {v['torch']}"
)

verdicts = {}


def keep_verdict(name, check):
    def call():
        verdicts[name] = check()
        return verdicts[name]

    return call


calls = {name: keep_verdict(name, check) for name, check in checkers(problem, use_torch).items()}
times = time_calls(calls, repeats=repeats, min_time=0.0, warmup=0, sync=lambda _: None, settle=1)

# -----------------------------------------------------------------------------
full = times["jaxcalc full (per element)"].median
width = max(len(name) for name in times)
print(
    f"{'checker'.ljust(width)}  {'median s':>9}  {'min s':>8}  {'max s':>8}  {'/ jaxcalc full':>14}  passed"
)
for name, t in times.items():
    stats = f"{t.median:9.3f}  {t.min:8.3f}  {t.max:8.3f}  {t.median / full:14.3g}"
    print(f"{name.ljust(width)}  {stats}  {verdicts[name]}")
slow = [k for k in times if k.startswith("torch gradcheck") and "fast_mode" not in k]
if slow:
    fastest = min(slow, key=lambda k: times[k].median)
    ratio = times[fastest].median / full
    verdict = "met" if ratio >= target else "NOT met"
    print(f"{fastest} / jaxcalc full = {ratio:.3g}x (target >= {target:g}x): {verdict}")
    for pair, fast in fast_mode_ratios(times).items():
        ratio = f"{pair.ours} / {pair.theirs} = {fast:.3g}x ({pair.what}"
        if pair.like_for_like:
            print(f"{ratio}, like for like; target <= 1x): {'met' if fast <= 1.0 else 'NOT met'}")
        else:
            print(f"{ratio}; no target)")
else:
    print("torch not installed: no ratio to report")
