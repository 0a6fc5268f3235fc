"""What gradient checking costs: jaxcalc's full and fast checks vs torch.autograd.gradcheck and check_grads.

The function checked is a small tanh MLP's mean cross-entropy as a function of its weights,
L(W1, b1, W2, b2) on a fixed batch, in float64, with ``h (n_in + 1) + k (h + 1)`` parameters;
jaxcalc is given the handwritten gradient of :func:`jaxcalc.backprop.mlp_backward` to check.
Each checker is timed end to end as a user calls it (jaxcalc's check traces and compiles its
witness program inside the call, so its time includes that compile).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import numpy as np

from jaxcalc.bench.config import BenchConfig
from jaxcalc.bench.harness import time_calls
from jaxcalc.bench.report import Row, Target, WorkloadResult, figure
from jaxcalc.bench.training import torch_available

__all__ = [
    "FAST_MODE_PAIRS",
    "FIRST_ORDER",
    "Pair",
    "Problem",
    "make_problem",
    "checkers",
    "fast_mode_ratios",
    "gradcheck",
]

# The checks of first derivatives that torch.autograd.gradcheck's fast_mode also makes: the
# handwritten VJP against autodiff, J t against a finite difference, and <J^T c, t> = <c, J t>.
FIRST_ORDER = ("vjp", "fd_jvp", "dot_identity")


class Pair(NamedTuple):
    """Two fast-mode checkers timed side by side; a target (<= 1x) only where both do the same work."""

    ours: str
    theirs: str
    what: str
    like_for_like: bool


# The default fast mode also checks the Hessian: like for like against torch's gradcheck plus
# gradgradcheck, and without a target against its first-order fast_mode.
FAST_MODE_PAIRS = (
    Pair("jaxcalc fast, compiled, first order", "torch gradcheck fast_mode", "first derivatives", True),
    Pair(
        "jaxcalc fast, compiled",
        "torch gradcheck + gradgradcheck fast_mode",
        "first and second derivatives",
        True,
    ),
    Pair(
        "jaxcalc fast, compiled",
        "torch gradcheck fast_mode",
        "jaxcalc's Hessian checks included, torch's none",
        False,
    ),
)


class Problem(NamedTuple):
    """The function to check, its handwritten gradient and its float64 arguments."""

    f: Callable[..., jax.Array]  # f(W1, b1, W2, b2) -> scalar
    grad: Callable[..., tuple[jax.Array, ...]]  # handwritten (dL/dW1, dL/db1, dL/dW2, dL/db2)
    args: tuple[np.ndarray, ...]  # W1 (n_in, h), b1 (h,), W2 (h, k), b2 (k,), float64
    x: np.ndarray  # (batch, n_in) float64
    labels: np.ndarray  # (batch,) int64

    @property
    def n_params(self) -> int:
        return sum(a.size for a in self.args)


def make_problem(n_in: int, hidden: int, n_out: int, batch: int) -> Problem:
    """A tanh MLP loss L(W1, b1, W2, b2) = mean_i CE(tanh(x W1 + b1) W2 + b2, y) with seeded data."""
    from jaxcalc.backprop import init_mlp, mlp_backward, mlp_loss

    with jax.enable_x64(True):
        layers = init_mlp(jax.random.key(7), (n_in, hidden, n_out), np.float64)
        kb1, kb2, kx, ky = jax.random.split(jax.random.key(8), 4)
        args = (
            np.asarray(layers[0]["W"]),
            np.asarray(0.1 * jax.random.normal(kb1, (hidden,), np.float64)),
            np.asarray(layers[1]["W"]),
            np.asarray(0.1 * jax.random.normal(kb2, (n_out,), np.float64)),
        )
        x = np.asarray(jax.random.normal(kx, (batch, n_in), np.float64))
        labels = np.asarray(jax.random.randint(ky, (batch,), 0, n_out))

    def as_layers(W1, b1, W2, b2):
        return [{"W": W1, "b": b1}, {"W": W2, "b": b2}]

    def f(W1, b1, W2, b2):
        return mlp_loss(as_layers(W1, b1, W2, b2), (x, labels), activation="tanh")

    def grad(W1, b1, W2, b2):
        g = mlp_backward(as_layers(W1, b1, W2, b2), (x, labels), activation="tanh")[1]
        return g[0]["W"], g[0]["b"], g[1]["W"], g[1]["b"]

    return Problem(f, grad, args, x, labels)


def _torch_function(p: Problem) -> tuple[Callable[..., Any], tuple[Any, ...]]:
    import torch
    import torch.nn.functional as F

    xt, yt = torch.from_numpy(p.x.copy()), torch.from_numpy(p.labels.copy()).long()

    def f(W1, b1, W2, b2):
        return F.cross_entropy(torch.tanh(xt @ W1 + b1) @ W2 + b2, yt)

    return f, tuple(torch.from_numpy(a.copy()).requires_grad_(True) for a in p.args)


def _compiled(check: Callable[[], bool]) -> Callable[[], bool]:
    """``check`` with its witness program compiled by XLA from the first call
    (``JAXCALC_WITNESS=xla``), not run on the host first: its first call holds the compile,
    later calls show the compiled speed a function checked again and again reaches."""
    from jaxcalc.checks import witnesses

    def call() -> bool:
        before, witnesses.EXECUTOR = witnesses.EXECUTOR, "xla"
        try:
            return check()
        finally:
            witnesses.EXECUTOR = before

    return call


def checkers(p: Problem, use_torch: bool = True) -> dict[str, Callable[[], bool]]:
    """Each gradient checker as a zero-argument call on problem ``p`` returning whether it passed."""
    from jaxcalc.checks import check_function

    calls: dict[str, Callable[[], bool]] = {
        "jaxcalc full (per element)": lambda: (
            check_function(p.f, p.args, grad_fn=p.grad, mode="full", dtype="float64").passed
        ),
        "jaxcalc fast (directional)": lambda: (
            check_function(p.f, p.args, grad_fn=p.grad, mode="fast", dtype="float64").passed
        ),
        "jaxcalc fast, compiled": _compiled(
            lambda: check_function(p.f, p.args, grad_fn=p.grad, mode="fast", dtype="float64").passed
        ),
        # torch's fast_mode checks first derivatives only: the same three checks, like for like
        "jaxcalc fast, compiled, first order": _compiled(
            lambda: (
                check_function(
                    p.f, p.args, grad_fn=p.grad, mode="fast", dtype="float64", checks=FIRST_ORDER
                ).passed
            )
        ),
    }

    def check_grads() -> bool:
        from jax.test_util import check_grads as jax_check_grads

        with jax.enable_x64(True):
            jax_check_grads(p.f, p.args, order=1)  # raises on a mismatch
        return True

    calls["jax.test_util.check_grads (order 1)"] = check_grads
    if use_torch and torch_available():
        import torch

        tf, targs = _torch_function(p)
        from jaxcalc.bench.torch_side import available_threads, with_threads

        calls["torch gradcheck"] = lambda: bool(torch.autograd.gradcheck(tf, targs))
        if available_threads() > 1:  # a shared machine can stall torch's multi-threaded small ops
            calls["torch gradcheck, 1 thread"] = with_threads(calls["torch gradcheck"], 1)
        calls["torch gradcheck fast_mode"] = lambda: bool(torch.autograd.gradcheck(tf, targs, fast_mode=True))
        # jaxcalc's fast mode also checks the Hessian (hvp, symmetry): like for like, torch's
        # second-order check in its fast mode too
        calls["torch gradcheck + gradgradcheck fast_mode"] = lambda: bool(
            torch.autograd.gradcheck(tf, targs, fast_mode=True)
            and torch.autograd.gradgradcheck(tf, targs, fast_mode=True)
        )
    return calls


def fast_mode_ratios(times: dict[str, Any]) -> dict[Pair, float]:
    """Median time ratios of :data:`FAST_MODE_PAIRS` whose two checkers were both timed."""
    return {
        pair: times[pair.ours].median / times[pair.theirs].median
        for pair in FAST_MODE_PAIRS
        if pair.ours in times and pair.theirs in times
    }


def gradcheck(cfg: BenchConfig, limits: dict[str, float]) -> WorkloadResult:
    """Seconds per gradient check of a few-thousand-parameter loss, every checker side by side."""
    p = make_problem(*cfg.gc_shape)
    verdicts: dict[str, bool] = {}

    def keep_verdict(name: str, check: Callable[[], bool]) -> Callable[[], bool]:
        def call() -> bool:
            verdicts[name] = check()
            return verdicts[name]

        return call

    calls = {name: keep_verdict(name, check) for name, check in checkers(p, cfg.use_torch).items()}
    # every call is timed: no warm-up, one call per sample (each check is a whole user-facing call)
    times = time_calls(calls, repeats=cfg.gc_repeats, min_time=0.0, warmup=0, sync=lambda _: None, settle=1)
    full = times["jaxcalc full (per element)"].median
    rows = [
        Row(
            name,
            {
                "time": figure(t.scaled(1e3), "ms"),
                "vs jaxcalc full": figure(t.median / full, "x"),
                "passed": figure(float(verdicts[name]), "bool"),
            },
        )
        for name, t in times.items()
    ]
    targets = []
    notes = [
        "each check timed end to end as called, median of the repeats; jaxcalc's first call "
        "compiles its witness program (the max), later calls of the same function reuse it; "
        "every sample after the first round follows one untimed call of the same checker",
    ]
    slow = [k for k in times if k.startswith("torch gradcheck") and "fast_mode" not in k]
    if slow:
        fastest = min(slow, key=lambda k: times[k].median)
        targets.append(
            Target(
                "torch gradcheck (slow mode) time vs jaxcalc full",
                times[fastest].median / full,
                ">=",
                10.0,
                "x",
                note=f"against the faster slow-mode run ({fastest})",
            )
        )
        for pair, ratio in fast_mode_ratios(times).items():
            if pair.like_for_like:
                name = f"{pair.ours} time vs {pair.theirs}"
                targets.append(Target(name, ratio, "<=", 1.0, "x", note=f"{pair.what}, like for like"))
            else:
                notes.append(f"{pair.ours} / {pair.theirs} = {ratio:.3g}x ({pair.what}; no target)")
    else:
        notes.append("torch gradcheck: skipped (torch not installed or disabled)")
    n_in, hidden, n_out, batch = cfg.gc_shape
    return WorkloadResult(
        "gradcheck",
        f"checking the gradient of a tanh MLP loss with {p.n_params} parameters, float64",
        {
            "shape": f"{n_in}-{hidden}-{n_out}",
            "batch": batch,
            "params": p.n_params,
            "repeats": cfg.gc_repeats,
        },
        rows,
        {},
        targets,
        notes,
    )
