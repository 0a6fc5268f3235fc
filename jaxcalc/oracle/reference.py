"""Reference outputs of a case for the golden set, and its float32 tolerance, measured.

Everything is computed by JAX autodiff in float64 with matmuls at 'highest' precision:

* value  = F(inputs)
* vjp    = J^T c           for each differentiable input (c the cotangent probe)
* jvp    = J t             (t the tangent probes, one per differentiable input)
* hvp    = H t             for scalar outputs: the Hessian of F over all differentiable inputs
                           applied to t, one array per input
* jacobian[x] = dF/dx      of shape output.shape + x.shape, where that has at most
                           JACOBIAN_LIMIT elements

The handwritten VJP (and JVP, where the case has one) must agree with autodiff to the float64
tolerance, or the case is refused. The float32 tolerance is measured, not guessed: the case is
evaluated in float32 (x64 off, forward + autodiff VJP + handwritten VJP) on the float64 inputs
rounded to float32, its normwise error against the float64 values is taken, then
tolerance = min(max(FLOAT32_FACTOR * error, FLOAT32_FLOOR), FLOAT32_CAP). The cap stays below
1e-3 so that a gradient off by a factor 1.001 always fails.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxcalc.cases import Case
from jaxcalc.numerics import compare, reference_mode, tolerance

__all__ = [
    "JACOBIAN_LIMIT",
    "FLOAT32_FACTOR",
    "FLOAT32_FLOOR",
    "FLOAT32_CAP",
    "FLOAT64_TOLERANCE",
    "DisagreementError",
    "Reference",
    "compute_reference",
]

JACOBIAN_LIMIT = 4096  # most elements of one exported Jacobian block, output.size * input.size
FLOAT64_TOLERANCE = tolerance("float64", "exact")  # two exact float64 computations: round-off only
FLOAT32_FACTOR = 10.0  # safety factor over the measured float32 error
FLOAT32_FLOOR = 1e-5  # about 80 float32 ulps: room for another summation order
FLOAT32_CAP = 5e-4  # below 1e-3: a 0.1 % error in a gradient must fail


class DisagreementError(Exception):
    """A case whose handwritten derivative disagrees with autodiff; it is not exported."""


class Reference(NamedTuple):
    """The golden arrays of one case plus the measurements behind its tolerances."""

    case: Case
    inputs: dict[str, np.ndarray]
    cotangent: np.ndarray
    tangents: dict[str, np.ndarray]
    value: np.ndarray
    vjp: dict[str, np.ndarray]
    jvp: np.ndarray
    hvp: dict[str, np.ndarray] | None
    jacobian: dict[str, np.ndarray]
    handwritten_error: float
    float32_error: float
    float32_worst: str

    @property
    def float32_tolerance(self) -> float:
        """min(max(FACTOR * measured float32 error, FLOOR), CAP)."""
        return min(max(FLOAT32_FACTOR * self.float32_error, FLOAT32_FLOOR), FLOAT32_CAP)

    def document(self) -> dict[str, Any]:
        """The arrays as the nested case document (before JSON encoding)."""
        outputs: dict[str, Any] = {"value": self.value, "vjp": self.vjp, "jvp": self.jvp}
        if self.hvp is not None:
            outputs["hvp"] = self.hvp
        if self.jacobian:
            outputs["jacobian"] = self.jacobian
        return {
            "inputs": self.inputs,
            "cotangent": self.cotangent,
            "tangents": self.tangents,
            "outputs": outputs,
        }


def _of_diff(case: Case, primals: tuple) -> tuple[Callable[..., jax.Array], tuple]:
    """F as a function of the differentiable inputs only, the others held at ``primals``."""
    idx = case.diff_index

    def f(*diff: jax.Array) -> jax.Array:
        full = list(primals)
        for k, d in zip(idx, diff, strict=True):
            full[k] = d
        return case.forward(*full)

    return f, tuple(primals[k] for k in idx)


def _host(tree: Any) -> Any:
    return jax.tree.map(lambda a: np.asarray(a, dtype=np.float64), tree)


def compute_reference(case: Case) -> Reference:
    """All golden arrays of ``case`` in float64, its handwritten derivatives checked, float32 measured.

    Raises DisagreementError when the handwritten VJP or JVP differs from autodiff by more than
    FLOAT64_TOLERANCE (normwise relative), naming the input, worst element and both values.
    """
    inputs = case.sample("float64")
    ct, tangents = case.probes("float64")
    names = case.diff_names
    out_size = math.prod(case.output_shape())
    small = tuple(k for k, n in enumerate(names) if out_size * inputs[n].size <= JACOBIAN_LIMIT)
    scalar = case.output_shape() == () and bool(names)

    def everything(primals: tuple, ct: jax.Array, t: tuple) -> dict[str, Any]:
        # One traced function per case, so each case compiles once instead of op by op.
        f, diff = _of_diff(case, primals)
        value, pullback = jax.vjp(f, *diff)
        out = {"value": value, "vjp": pullback(ct), "jvp": jax.jvp(f, diff, t)[1]}
        if scalar:
            out["hvp"] = jax.jvp(jax.grad(f, argnums=tuple(range(len(names)))), diff, t)[1]
        if small:
            out["jacobian"] = jax.jacrev(f, argnums=small)(*diff)
        out["hand_vjp"] = tuple(case.vjp(primals, ct))
        if case.jvp is not None:
            out["hand_jvp"] = case.jvp(primals, t)
        return out

    with reference_mode("float64"):
        primals = tuple(jnp.asarray(inputs[n]) for n in case.input_names)
        t = tuple(jnp.asarray(tangents[n]) for n in names)
        res = _host(jax.jit(everything)(primals, jnp.asarray(ct), t))
    vjp = dict(zip(names, res["vjp"], strict=True))
    jvp = res["jvp"]
    hvp = dict(zip(names, res["hvp"], strict=True)) if scalar else None
    jacobian = {names[k]: j for k, j in zip(small, res.get("jacobian", ()), strict=True)}
    handwritten = res["hand_vjp"]
    hand_jvp = res.get("hand_jvp")
    hw = 0.0
    pairs = [(f"VJP for {n!r}", hand, vjp[n]) for n, hand in zip(names, handwritten, strict=True)]
    if hand_jvp is not None:
        pairs.append(("JVP", hand_jvp, jvp))
    for what, hand, auto in pairs:
        c = compare(hand, auto)
        if not c.error <= FLOAT64_TOLERANCE:
            raise DisagreementError(
                f"case {case.name}: handwritten {what} disagrees with autodiff: error {c.error:.3g} > "
                f"{FLOAT64_TOLERANCE:g} at {c.where()} (handwritten {c.a_value!r}, autodiff {c.b_value!r})"
            )
        hw = max(hw, c.error)
    value64 = res["value"]
    err32, worst = _float32_error(case, inputs, ct, value64, vjp)
    return Reference(
        case=case,
        inputs=inputs,
        cotangent=ct,
        tangents=tangents,
        value=value64,
        vjp=vjp,
        jvp=jvp,
        hvp=hvp,
        jacobian=jacobian,
        handwritten_error=hw,
        float32_error=err32,
        float32_worst=worst,
    )


def _float32_error(
    case: Case,
    inputs: dict[str, np.ndarray],
    ct: np.ndarray,
    value: np.ndarray,
    vjp: dict[str, np.ndarray],
) -> tuple[float, str]:
    """Largest normwise error of a float32 evaluation (value, autodiff and handwritten VJPs) vs float64.

    Runs with x64 off so that no float64 constant in a case can lift the computation out of
    float32; integer inputs go in as int32. Returns the error and which quantity was worst.
    """
    with warnings.catch_warnings(), jax.enable_x64(False), jax.default_matmul_precision("highest"):
        warnings.filterwarnings("ignore", message=".*dtype.*is not available.*")
        primals = tuple(
            jnp.asarray(inputs[n].astype(np.int32 if inputs[n].dtype.kind == "i" else np.float32))
            for n in case.input_names
        )
        ct32 = jnp.asarray(ct.astype(np.float32))

        def evaluate(primals: tuple, ct: jax.Array) -> tuple:
            f, diff = _of_diff(case, primals)
            value, pullback = jax.vjp(f, *diff)
            return value, pullback(ct), tuple(case.vjp(primals, ct))

        value32, auto32, hand32 = jax.device_get(jax.jit(evaluate)(primals, ct32))
    found = [("value", value32, value)]
    for n, a, h in zip(case.diff_names, auto32, hand32, strict=True):
        found += [(f"autodiff vjp {n}", a, vjp[n]), (f"handwritten vjp {n}", h, vjp[n])]
    worst, err = "value", 0.0
    for what, got, ref in found:
        if np.asarray(got).dtype != np.float32:
            raise DisagreementError(f"case {case.name}: float32 evaluation of {what} gave {got.dtype}")
        e = compare(got, ref).error
        if not math.isfinite(e):
            raise DisagreementError(f"case {case.name}: float32 evaluation of {what} is not finite")
        if e > err:
            worst, err = what, e
    return err, worst
