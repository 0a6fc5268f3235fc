"""Reference outputs of an instance for the golden set, and its tolerance in every dtype column, measured.

Everything is computed by JAX autodiff in float64 with matmuls at 'highest' precision:

* value  = F(inputs)
* vjp    = J^T c           for each differentiable input (c the cotangent probe)
* jvp    = J t             (t the tangent probes, one per differentiable input)
* hvp    = H t             for scalar outputs: the Hessian of F over all differentiable inputs
                           applied to t, one array per input
* jacobian[x] = dF/dx      of shape output.shape + x.shape, where that has at most
                           JACOBIAN_LIMIT elements, in the typical regime

Tangents, the JVP and the HVP are exported at the golden size only, Jacobians at the golden size in
the typical regime (the other regimes' inputs are probed by the VJP); every size has the
value and the VJPs. The handwritten VJP (and JVP, where the case has one) must agree with autodiff to the float64
tolerance, or the instance is refused.

Tolerances are measured per instance and per output (the value and each VJP), never guessed.
For every output ``o`` the verdict is ``max|got - ref| <= tol_o * max(max|ref_o|, floor_o)``: a
normwise relative error with an absolute floor ``floor_o = ABS_FLOOR_ULPS[col] * eps * S / tol_o``,
S the output's largest magnitude (for a truth that is exactly zero everywhere, the largest
magnitude of all the VJPs), so an exactly-zero truth does not turn round-off into an infinite
relative error. Per column:

* ``float32``: JAX evaluates the instance in float32 (forward, autodiff VJP and handwritten VJP,
  every input in float32; a float64 constant lifting the computation is refused) on the inputs
  rounded to float32; ``e`` is the larger normwise error of the
  two VJPs (or of the value) against the float64 reference; tol = max(factor * e, floor) from
  :data:`jaxcalc.numerics.COLUMNS` (10 x e, at least 1e-5). No cap: an ill-conditioned instance
  (rows at 1e4) earns the tolerance its conditioning implies, and a correct float32
  implementation passes it.
* ``float64``: tol = max(1e-10, 10 x the larger of the handwritten-vs-autodiff difference and
  the float32 error scaled by eps64 / eps32), an estimate of what conditioning costs in float64.
* ``bfloat16`` / ``float16`` (FlashAttention's rule): the inputs and the cotangent are rounded to
  the column's dtype first (round to nearest even) and the float64 reference is recomputed on them
  (its value and VJPs are stored with the column); JAX evaluates the instance in that dtype (per-op rounding, float32 accumulation as
  XLA and kernels do); tol = (factor * max|jax - ref| + floor * max|round(ref) - ref|) / max|ref|.

A column is not applicable to an instance (and says why) when its rounded inputs overflow, when
a straightforward evaluation in it is not finite where the truth is, or when its measured
error exceeds NOT_APPLICABLE_ERROR: a correct computation is meaningless there.
"""

from __future__ import annotations

import functools
import math
import warnings
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxcalc.cases import Case, Instance, of_diff
from jaxcalc.numerics import COLUMNS, compare, np_dtype, reference_mode

__all__ = [
    "JACOBIAN_LIMIT",
    "ABS_FLOOR_ULPS",
    "NOT_APPLICABLE_ERROR",
    "FLOAT64_TOLERANCE",
    "DisagreementError",
    "ColumnTolerance",
    "Reference",
    "compute_reference",
]

JACOBIAN_LIMIT = 1024  # most elements of one exported Jacobian block, output.size * input.size
FLOAT64_TOLERANCE = COLUMNS["float64"].exact  # two exact float64 computations: round-off only
# The absolute floor of each column, in units of eps times the output group's largest magnitude.
ABS_FLOOR_ULPS = {"float64": 1024.0, "float32": 16.0, "bfloat16": 1.0, "float16": 2.0}
NOT_APPLICABLE_ERROR = 0.25  # a straightforward evaluation off by more than this means nothing
_F64_FACTOR = 10.0  # float64: safety factor over the conditioning estimate


class DisagreementError(Exception):
    """An instance whose handwritten derivative disagrees with autodiff; it is not exported."""


class ColumnTolerance(NamedTuple):
    """One dtype column of one instance: per output its tolerance, floor and measured error.

    ``outputs`` maps 'value' and 'vjp/<name>' to {'tolerance', 'floor', 'measured_error'}.
    Low-precision columns carry the float64 reference computed on the inputs and cotangent rounded
    to their dtype (``arrays``); the float64 and float32 columns share the instance's arrays.
    """

    name: str
    applicable: bool
    reason: str
    outputs: dict[str, dict[str, float]]
    arrays: dict[str, Any] | None = None

    @property
    def tolerance(self) -> float:
        """The largest per-output tolerance (a summary; verdicts use each output's own)."""
        return max((o["tolerance"] for o in self.outputs.values()), default=0.0)


class Reference(NamedTuple):
    """The golden arrays of one instance plus the measurements behind its tolerances."""

    instance: Instance
    inputs: dict[str, np.ndarray]
    cotangent: np.ndarray
    tangents: dict[str, np.ndarray]
    value: np.ndarray
    vjp: dict[str, np.ndarray]
    jvp: np.ndarray
    hvp: dict[str, np.ndarray] | None
    jacobian: dict[str, np.ndarray]
    handwritten_error: float
    columns: dict[str, ColumnTolerance]

    @property
    def case(self) -> Case:
        return self.instance.case

    def document(self) -> dict[str, Any]:
        """The arrays as the nested case document (before JSON encoding)."""
        golden = self.instance.size == "golden"
        outputs: dict[str, Any] = {"value": self.value, "vjp": self.vjp}
        if golden:
            outputs["jvp"] = self.jvp
        if self.hvp is not None and golden:
            outputs["hvp"] = self.hvp
        if self.jacobian and golden:
            outputs["jacobian"] = self.jacobian
        doc: dict[str, Any] = {"inputs": self.inputs, "cotangent": self.cotangent, "outputs": outputs}
        if golden:
            doc["tangents"] = self.tangents
        low = {c.name: c.arrays for c in self.columns.values() if c.arrays is not None and c.applicable}
        if low:
            doc["columns"] = low
        return doc


def _host(tree: Any) -> Any:
    return jax.tree.map(lambda a: np.asarray(a, dtype=np.asarray(a).dtype), tree)


# ----------------------------------------------------------------------------- programs
# One jitted program per case and kind; jit's cache keys on shapes and dtypes, so every regime
# of a size, and every instance of the same shapes, reuses the compiled program.


# On CPU, skipping LLVM's heavy optimisation passes cuts compile time by a third to a half for
# the small programs most instances are; HLO-level rewrites still run, so rounding is unchanged.
QUICK_COMPILE_ELEMENTS = 100_000  # instances with fewer input elements compile quick
_FAST = {"xla_backend_optimization_level": 0}


def _jit(fn: Callable, quick: bool) -> Callable:
    options = _FAST if quick and jax.default_backend() == "cpu" else None
    return jax.jit(fn, compiler_options=options)


@functools.cache
def _reference_program(
    case: Case, small: tuple[int, ...], scalar: bool, golden: bool, quick: bool
) -> Callable:
    def everything(primals: tuple, ct: jax.Array, t: tuple, low: tuple, evals: tuple) -> dict[str, Any]:
        f, diff = of_diff(case, primals)
        value, pullback = jax.vjp(f, *diff)
        out = {"value": value, "vjp": pullback(ct)}
        if golden:
            out["jvp"] = jax.jvp(f, diff, t)[1]
        if scalar:
            out["hvp"] = jax.jvp(jax.grad(f, argnums=tuple(range(len(diff)))), diff, t)[1]
        if small:
            out["jacobian"] = jax.jacrev(f, argnums=small)(*diff)
        out["hand_vjp"] = case.positional_vjp(primals, ct)
        if case.jvp is not None and golden:
            out["hand_jvp"] = case.jvp(primals, t)

        def value_vjp(p: tuple, c: jax.Array) -> tuple:
            g, d = of_diff(case, p)
            v, pb = jax.vjp(g, *d)
            return v, pb(c)

        # the float64 references of the low-precision columns, on their rounded inputs
        out["low"] = tuple(value_vjp(p, c) for p, c in low)
        # straightforward evaluations in float32, bfloat16 and float16 (inputs already in the
        # dtype; weakly typed constants keep the dtype, and any float64 result is caught below)
        # (autodiff only in bfloat16 and float16: a third compiled copy of the backward pass
        # would cost more compile time than it tells)
        out["evals"] = tuple(
            (*value_vjp(p, c), case.positional_vjp(p, c) if k == 0 else None)
            for k, (p, c) in enumerate(evals)
        )
        return out

    return _jit(everything, quick)


# ----------------------------------------------------------------------------- the reference


def _quick(inputs: dict[str, np.ndarray]) -> bool:
    return sum(a.size for a in inputs.values()) < QUICK_COMPILE_ELEMENTS


def _round(a: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """Float arrays rounded to ``dtype`` and back to float64; other arrays unchanged."""
    if a.dtype.kind != "f":
        return a
    with np.errstate(over="ignore"):
        return a.astype(dtype).astype(np.float64)


def compute_reference(inst: Instance | Case) -> Reference:
    """All golden arrays of ``inst`` in float64, its handwritten derivatives checked, every column measured.

    Raises DisagreementError when the handwritten VJP or JVP differs from autodiff by more than
    the float64 tolerance (normwise relative), naming the input, worst element and both values.
    """
    from jaxcalc.cases import instance as make_instance

    inst = make_instance(inst) if isinstance(inst, Case) else inst
    case = inst.case
    inputs = inst.sample("float64")
    ct, tangents = inst.probes("float64")
    names = case.diff_names
    out_size = math.prod(inst.output_shape)
    golden = inst.size == "golden"  # the JVP, HVP and Jacobians are exported at the golden size only
    jac = golden and inst.regime == "typical"
    small = tuple(k for k, n in enumerate(names) if jac and out_size * inputs[n].size <= JACOBIAN_LIMIT)
    scalar = inst.output_shape == () and bool(names) and golden
    low_cols = [c for c in COLUMNS.values() if c.low]
    low_inputs = [({n: _round(a, c.dtype) for n, a in inputs.items()}, _round(ct, c.dtype)) for c in low_cols]

    eval_cols = [c for c in COLUMNS if c != "float64"]
    evals = []
    for col in eval_cols:
        src = inputs if col == "float32" else low_inputs[[c.name for c in low_cols].index(col)][0]
        c_src = ct if col == "float32" else low_inputs[[c.name for c in low_cols].index(col)][1]
        evals.append((tuple(_cast(src[n], col) for n in case.input_names), _cast(c_src, col)))
    with reference_mode("float64"), warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=RuntimeWarning)
        program = _reference_program(case, small, scalar, golden, _quick(inputs))
        res = _host(
            program(
                inst.primals(inputs),
                jnp.asarray(ct),
                tuple(jnp.asarray(tangents[n]) for n in names),
                tuple((inst.primals(li), lc) for li, lc in low_inputs),
                tuple(evals),
            )
        )
    got = {col: _unpack(case, col, e) for col, e in zip(eval_cols, res["evals"], strict=True)}
    vjp = dict(zip(names, res["vjp"], strict=True))
    jvp = res.get("jvp")
    hvp = dict(zip(names, res["hvp"], strict=True)) if scalar else None
    jacobian = {names[k]: j for k, j in zip(small, res.get("jacobian", ()), strict=True)}
    hw_err = _check_handwritten(inst, vjp, jvp, res)

    ref_out = {"value": res["value"], **{f"vjp/{n}": vjp[n] for n in names}}
    columns = {"float32": _measured_column("float32", ref_out, got["float32"], factor_rule=True)}
    columns["float64"] = _float64_column(ref_out, hw_err, columns["float32"])
    for col, (li, lc), (lv, lvjp) in zip(low_cols, low_inputs, res["low"], strict=True):
        low_ref = {"value": lv, **{f"vjp/{n}": g for n, g in zip(names, lvjp, strict=True)}}
        columns[col.name] = _low_column(col.name, inputs, li, lc, low_ref, got[col.name])
    columns = {name: columns[name] for name in COLUMNS}  # table order
    return Reference(
        instance=inst,
        inputs=inputs,
        cotangent=ct,
        tangents=tangents,
        value=res["value"],
        vjp=vjp,
        jvp=jvp,
        hvp=hvp,
        jacobian=jacobian,
        handwritten_error=hw_err["max"],
        columns=columns,
    )


def _check_handwritten(inst: Instance, vjp: dict, jvp: np.ndarray, res: dict) -> dict[str, float]:
    """Handwritten VJP/JVP vs autodiff in float64; returns the error per output and the max."""
    names = inst.case.diff_names
    errors = {"value": 0.0}
    pairs = [
        (f"vjp/{n}", f"VJP for {n!r}", hand, vjp[n]) for n, hand in zip(names, res["hand_vjp"], strict=True)
    ]
    if "hand_jvp" in res:
        pairs.append(("jvp", "JVP", res["hand_jvp"], jvp))
    for key, what, hand, auto in pairs:
        c = compare(hand, auto)
        if not c.error <= FLOAT64_TOLERANCE:
            raise DisagreementError(
                f"{inst.id}: handwritten {what} disagrees with autodiff: error {c.error:.3g} > "
                f"{FLOAT64_TOLERANCE:g} at {c.where()} (handwritten {c.a_value!r}, autodiff {c.b_value!r})"
            )
        errors[key] = c.error
    errors["max"] = max(errors.values())
    return errors


def _cast(a: np.ndarray, col: str) -> np.ndarray:
    """A float input in the column's dtype (an exact cast for rounded inputs); others unchanged."""
    if a.dtype.kind != "f":
        return a
    with np.errstate(over="ignore"):
        return a.astype(np_dtype(col))


def _unpack(case: Case, col: str, ev: tuple) -> dict[str, Any]:
    """One straightforward evaluation as {'value': (v,), 'vjp/x': (autodiff[, handwritten])}; an
    array not in the column's dtype (a float64 constant lifting the computation) is refused."""
    value, auto, hand = ev
    out: dict[str, Any] = {"value": (np.asarray(value),)}
    for k, (n, a) in enumerate(zip(case.diff_names, auto, strict=True)):
        out[f"vjp/{n}"] = (np.asarray(a),) if hand is None else (np.asarray(a), np.asarray(hand[k]))
    dt = np_dtype(col)
    for key, arrays in out.items():
        for a in arrays:
            if a.dtype != dt:
                raise DisagreementError(f"case {case.name}: the {col} evaluation of {key} gave {a.dtype}")
    return out


def _group_scale(ref_out: dict[str, np.ndarray], key: str) -> float:
    """The magnitude an output's absolute floor is taken at: its own largest finite magnitude, or,
    for an output whose truth is exactly zero everywhere, the largest over its group (the value,
    or all the VJPs), so that round-off around a zero truth is judged at the problem's scale."""

    def mag(k: str) -> float:
        a = ref_out[k]
        return float(np.max(np.abs(np.where(np.isfinite(a), a, 0.0)), initial=0.0))

    own = mag(key)
    if own > 0 or key == "value":
        return own
    return max((mag(k) for k in ref_out if k.startswith("vjp/")), default=0.0)


def _floor(col: str, ref_out: dict[str, np.ndarray], key: str, tol: float) -> float:
    """The scale floor of one output: ABS_FLOOR_ULPS[col] * eps * S / tol (see the module docstring)."""
    return ABS_FLOOR_ULPS[col] * COLUMNS[col].eps * _group_scale(ref_out, key) / tol


def _measured_error(col: str, ref: np.ndarray, got: tuple, ref_out: dict, key: str) -> float:
    """Largest normwise error of the evaluations in ``got`` against ``ref``, with the column's floor
    taken at a unit tolerance (a measure of absolute round-off near zero truths)."""
    atol = ABS_FLOOR_ULPS[col] * COLUMNS[col].eps * _group_scale(ref_out, key)
    return max(compare(g.astype(np.float64), ref, atol=atol).error for g in got)


def _measured_column(col: str, ref_out: dict, got: dict, factor_rule: bool) -> ColumnTolerance:
    """float32: tol = max(factor * measured, floor) per output."""
    spec = COLUMNS[col]
    outputs = {}
    for key, ref in ref_out.items():
        e = _measured_error(col, ref, got[key], ref_out, key)
        if not math.isfinite(e) or e > NOT_APPLICABLE_ERROR:
            why = "is not finite" if not math.isfinite(e) else f"is off by {e:.3g}"
            return ColumnTolerance(col, False, f"a straightforward {col} evaluation of {key} {why}", {})
        tol = max(spec.factor * e, spec.floor)
        outputs[key] = {"tolerance": tol, "floor": _floor(col, ref_out, key, tol), "measured_error": e}
    return ColumnTolerance(col, True, "", outputs)


def _float64_column(ref_out: dict, hw_err: dict, f32: ColumnTolerance) -> ColumnTolerance:
    """float64: max(1e-10, 10 x max(handwritten vs autodiff, float32 error x eps64/eps32)) per output."""
    scale = COLUMNS["float64"].eps / COLUMNS["float32"].eps
    outputs = {}
    for key in ref_out:
        e32 = f32.outputs[key]["measured_error"] if f32.applicable else 0.0
        e = max(hw_err.get(key, 0.0), e32 * scale)
        tol = max(FLOAT64_TOLERANCE, _F64_FACTOR * e)
        outputs[key] = {"tolerance": tol, "floor": _floor("float64", ref_out, key, tol), "measured_error": e}
    return ColumnTolerance("float64", True, "", outputs)


def _low_column(
    col: str,
    inputs: dict[str, np.ndarray],
    rounded: dict[str, np.ndarray],
    ct: np.ndarray,
    ref_out: dict[str, Any],
    got: dict[str, Any],
) -> ColumnTolerance:
    """bfloat16 / float16: FlashAttention's rule on the rounded inputs (see the module docstring)."""
    spec = COLUMNS[col]
    for n, a in rounded.items():
        if a.dtype.kind == "f" and (np.isfinite(a) != np.isfinite(inputs[n])).any():
            return ColumnTolerance(col, False, f"input {n} overflows {col}", {})
    if not np.isfinite(ct).all():
        return ColumnTolerance(col, False, f"the cotangent overflows {col}", {})
    ref_out = {k: np.asarray(v, np.float64) for k, v in ref_out.items()}
    for key, ref in ref_out.items():
        if not np.isfinite(ref).all() and not key == "value":
            return ColumnTolerance(col, False, f"the truth of {key} on the rounded inputs is not finite", {})
    outputs = {}
    for key, ref in ref_out.items():
        fin = np.isfinite(ref)
        scale = float(np.max(np.abs(np.where(fin, ref, 0.0)), initial=0.0))
        bad = [g for g in got[key] if (np.isfinite(g.astype(np.float64)) != fin).any()]
        if bad:
            return ColumnTolerance(
                col, False, f"a straightforward {col} evaluation of {key} is not finite", {}
            )
        with np.errstate(over="ignore", invalid="ignore"):
            err_abs = max(
                float(np.max(np.abs(np.where(fin, g.astype(np.float64) - ref, 0.0)), initial=0.0))
                for g in got[key]
            )
            round_abs = float(np.max(np.abs(np.where(fin, _round(ref, spec.dtype) - ref, 0.0)), initial=0.0))
        atol = ABS_FLOOR_ULPS[col] * spec.eps * _group_scale(ref_out, key)
        denom = max(scale, atol, 1e-300)
        e = err_abs / denom
        calibrated = (spec.factor * err_abs + spec.floor * round_abs) / denom
        tol = max(calibrated, spec.eps / 2)  # at least half an ulp; the floor below covers zero truths
        if e > NOT_APPLICABLE_ERROR or calibrated > NOT_APPLICABLE_ERROR:
            what = (
                f"is off by {e:.3g}" if e > NOT_APPLICABLE_ERROR else f"needs a tolerance of {calibrated:.3g}"
            )
            return ColumnTolerance(
                col, False, f"a straightforward {col} evaluation of {key} {what}: meaningless there", {}
            )
        outputs[key] = {
            "tolerance": tol,
            "floor": atol / tol,
            "measured_error": e,
            "rounding_error": round_abs / denom,
        }
    # The column's inputs and cotangent are the instance's rounded to the dtype (round to nearest
    # even), so only the truth on them is stored.
    arrays = {
        "outputs": {"value": ref_out["value"], "vjp": {k[4:]: v for k, v in ref_out.items() if k != "value"}}
    }
    return ColumnTolerance(col, True, "", outputs, arrays)
