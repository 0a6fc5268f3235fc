"""`jaxcalc descent`: the seed's gradient-descent loop, one fused compiled call, the seed's lines.

With the defaults it prints exactly what the seed's Python loop prints,
``Epoch 1: x = 8.0000, f(x) = 64.0000`` through ``Epoch 20: x = 0.1153, f(x) = 0.0133``.
When the learning rate is too large for the iterates to settle, a closing note says so.
"""

from __future__ import annotations

import argparse
import json
import math
from collections.abc import Callable
from typing import NamedTuple

__all__ = ["FUNCTIONS", "register", "run"]

MAX_STEPS = 100_000


class _Fn(NamedTuple):
    """A seed function of one variable with its handwritten derivative and its geometry."""

    formula: str
    minimizer: float  # x* where f is least
    curvature: float  # f'' (constant for these quadratics); descent converges iff 0 < lr < 2 / f''


FUNCTIONS: dict[str, _Fn] = {
    "square": _Fn("f(x) = x**2, f'(x) = 2x", 0.0, 2.0),
    "chain_affine_square": _Fn("f(x) = (2x + 3)**2, f'(x) = 4(2x + 3)", -1.5, 8.0),
}


def _functions(name: str) -> tuple[Callable, Callable]:
    """The forward and handwritten derivative from jaxcalc.seed for ``name``."""
    from jaxcalc import seed

    return getattr(seed, name), getattr(seed, f"{name}_grad")


def register(sub: argparse._SubParsersAction) -> None:
    choices = "; ".join(f"{k}: {v.formula}" for k, v in FUNCTIONS.items())
    p = sub.add_parser(
        "descent",
        help="the seed's gradient-descent loop on f(x) = x**2, printed epoch by epoch",
        description="Run x <- x - lr * f'(x) with the handwritten derivative, all steps in one "
        "compiled call, and print the seed's lines 'Epoch i: x = ..., f(x) = ...'.",
    )
    p.add_argument("--fn", default="square", help=f"function to minimise ({choices}; default square)")
    p.add_argument("--x0", type=float, default=10.0, help="starting point (default 10)")
    p.add_argument("--lr", type=float, default=0.1, help="learning rate eta (default 0.1)")
    p.add_argument("--steps", type=int, default=20, help=f"number of epochs, 1..{MAX_STEPS} (default 20)")
    p.add_argument("--json", action="store_true", help="print the trajectory as JSON instead")
    p.set_defaults(func=run, x64=True)


def _validate(args: argparse.Namespace) -> None:
    from jaxcalc.cli import UsageError

    if args.fn not in FUNCTIONS:
        raise UsageError(f"unknown --fn {args.fn!r}; choose one of: {', '.join(FUNCTIONS)}")
    if not math.isfinite(args.x0):
        raise UsageError(f"--x0 must be a finite number, got {args.x0}")
    if not (math.isfinite(args.lr) and args.lr > 0):
        raise UsageError(f"--lr must be a positive finite number, got {args.lr}")
    if not 1 <= args.steps <= MAX_STEPS:
        raise UsageError(f"--steps must be between 1 and {MAX_STEPS}, got {args.steps}")


def _note(behaviour: str, fn: _Fn, x0: float, lr: float) -> str | None:
    """A closing line for a run that does not converge; None when it converges."""
    limit = 2 / fn.curvature
    if behaviour == "converges":
        return None
    if behaviour == "stalls":
        return f"note: x0 = {x0:g} is already the minimum of f; x stays there"
    if behaviour == "oscillates":
        mirror = 2 * fn.minimizer - x0
        pair = f"±{abs(x0):g}" if fn.minimizer == 0 else f"{x0:g} and {mirror:g}"
        return (
            f"note: lr = {lr:g} makes x oscillate between {pair}; it does not converge (needs lr < {limit:g})"
        )
    if behaviour == "overflows":
        return (
            f"note: lr = {lr:g} makes |x| grow every step until the values overflow to inf (inf/nan above); "
            f"gradient descent diverges (it converges only for 0 < lr < {limit:g})"
        )
    return (
        f"note: lr = {lr:g} makes |x| grow every step; gradient descent diverges "
        f"(it converges only for 0 < lr < {limit:g})"
    )


def run(args: argparse.Namespace) -> int:
    _validate(args)
    from functools import partial

    import jax
    import jax.numpy as jnp

    from jaxcalc.descent import classify_lr, descent_with_grad

    f, f_grad = _functions(args.fn)
    fn = FUNCTIONS[args.fn]
    fused = jax.jit(partial(descent_with_grad, f, f_grad), static_argnums=2)  # one compiled call
    traj = fused(jnp.asarray(args.x0, jnp.float64), args.lr, args.steps)
    xs = [float(v) for v in traj.params]
    fs = [float(v) for v in traj.losses]
    behaviour = classify_lr(traj.params, args.x0, minimizer=fn.minimizer, losses=traj.losses)
    note = _note(behaviour, fn, args.x0, args.lr)
    if args.json:
        report = {
            "fn": args.fn,
            "x0": args.x0,
            "lr": args.lr,
            "steps": args.steps,
            "backend": jax.default_backend(),
            "device": jax.devices()[0].device_kind,
            "behaviour": behaviour,
            "note": note,
            "epochs": [
                {
                    "epoch": i + 1,
                    "x": x if math.isfinite(x) else str(x),
                    "f": v if math.isfinite(v) else str(v),
                }
                for i, (x, v) in enumerate(zip(xs, fs, strict=True))
            ],
        }
        print(json.dumps(report, indent=2))
        return 0
    # The seed's format string, verbatim: f"Epoch {i+1}: x = {x:.4f}, f(x) = {f(x):.4f}".
    print(
        "\n".join(
            f"Epoch {i + 1}: x = {x:.4f}, f(x) = {v:.4f}" for i, (x, v) in enumerate(zip(xs, fs, strict=True))
        )
    )
    if note:
        print(note)
    return 0
