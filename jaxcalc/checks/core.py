"""The gradient checker: every derivative against two independent witnesses (DESIGN §4).

For a case of the catalogue (:func:`check_case`) or any user function (:func:`check_function`)
it compares

* ``vjp``            handwritten VJP vs ``jax.vjp``;
* ``jvp``            handwritten JVP vs ``jax.jvp`` (where a handwritten JVP is given);
* ``fd_jvp``         ``jax.jvp`` along the tangent vs a 5-point central difference;
* ``jacobian_fd``    the full per-element FD Jacobian (vmapped, jitted) vs ``jax.jacrev``;
* ``jacobian_modes`` ``jax.jacfwd`` vs ``jax.jacrev``;
* ``vjp_fd``         handwritten VJP vs cᵀJ from the FD Jacobian (handwritten vs FD, directly);
* ``dot_identity``   ⟨c, J t⟩ (autodiff JVP) vs ⟨Jᵀc, t⟩ (handwritten VJP);
* ``chain_forward`` / ``chain_reverse``  J_(f∘g) = J_f(g(x))·J_g(x) for composite cases;
* ``hvp``            Hessian-vector product (forward-over-reverse) vs FD of the gradient;
* ``hessian_symmetry``  H = Hᵀ for scalar losses.

Errors are normwise relative, ``||a - b||inf / max(||b||inf, tiny)``; every result names the
case, the check, which side is which, the worst element and both values there. A failing
finite-difference comparison whose left and right one-sided differences disagree is reported
as a kink, not as a wrong gradient.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxcalc import fd
from jaxcalc.checks.report import CheckResult, Report
from jaxcalc.checks.witnesses import Context, witnesses
from jaxcalc.diagnose import diagnose
from jaxcalc.numerics import compare, reference_mode, tolerance

__all__ = ["CHECKS", "check_case", "check_cases", "check_function", "run_checks"]

CHECKS = (
    "vjp",
    "jvp",
    "fd_jvp",
    "jacobian_fd",
    "jacobian_modes",
    "vjp_fd",
    "dot_identity",
    "chain_forward",
    "chain_reverse",
    "hvp",
    "hessian_symmetry",
)

# One-sided differences disagreeing by more than this (relative) mark a kink.
KINK_RATIO = 0.05

# ----------------------------------------------------------------------------- helpers


def _label_index(name: str, index: tuple[int, ...]) -> str:
    return f"{name}[{', '.join(str(i) for i in index)}]"


def _compare_named(
    a: Sequence[jax.Array], b: Sequence[jax.Array], names: Sequence[str]
) -> tuple[float, str, float, float]:
    """Worst normwise error over matching arrays; returns (error, 'name[i, j]', a_val, b_val)."""
    worst = (-1.0, "", 0.0, 0.0)
    for ai, bi, name in zip(a, b, names, strict=True):
        if np.shape(ai) != np.shape(bi):
            # A transposed or misshapen gradient is a failure to report, not a crash.
            where = f"{name} shape {np.shape(ai)} != {np.shape(bi)}"
            return (float("inf"), where, float("nan"), float("nan"), ai, bi, name)
        c = compare(ai, bi)
        if c.error > worst[0]:
            # the worst pair rides along (positions 4-6) so that a failure can be diagnosed
            worst = (c.error, _label_index(name, c.index), c.a_value, c.b_value, ai, bi, name)
    return worst


def _result(ctx: Context, check: str, a_label: str, b_label: str, worst, kind: str) -> CheckResult:
    err, where, av, bv = worst[:4]
    tol = tolerance(ctx.dtype, kind)
    status = "pass" if err <= tol else "FAIL"
    why = ""
    if status == "FAIL" and len(worst) == 7:
        d = diagnose(np.asarray(worst[4]), np.asarray(worst[5]), tol=tol)
        why = f"{worst[6]}: {d.line}" if d is not None else ""
    return CheckResult(ctx.name, check, a_label, b_label, float(err), tol, where, av, bv, status, why)


def _kink(ctx: Context, tangents: tuple[jax.Array, ...]) -> bool:
    """True when left and right differences along ``tangents`` disagree: the point is a kink."""
    left, right = fd.one_sided(ctx.f_diff, ctx.diff, tangents)
    scale = max(float(jnp.max(jnp.abs(left))), float(jnp.max(jnp.abs(right))), 1e-300)
    return float(jnp.max(jnp.abs(left - right))) / scale > KINK_RATIO


def _split_columns(jac: np.ndarray, ctx: Context, out_shape: tuple[int, ...] = ()) -> tuple[np.ndarray, ...]:
    """Split the last axis (one entry per element of all diff inputs, flattened in order) into one
    array per input: a (*out, n_total) Jacobian becomes (*out, *in_shape) blocks, a flat vector
    (``out_shape=()``) one array per input."""
    blocks, start = [], 0
    for x in ctx.diff:
        blocks.append(jac[..., start : start + x.size].reshape(out_shape + x.shape))
        start += x.size
    return tuple(blocks)


# ----------------------------------------------------------------------------- checks


def run_checks(
    name: str,
    forward: Callable[..., jax.Array],
    primals: Sequence[Any],
    *,
    diff_idx: Sequence[int],
    names: Sequence[str],
    ct: Any,
    tangents: Sequence[Any],
    vjp: Callable[[tuple, jax.Array], tuple] | None = None,
    jvp: Callable[[tuple, tuple], jax.Array] | None = None,
    chain: Callable[[tuple], tuple[Callable, Callable]] | None = None,
    mode: str = "full",
    dtype: Any = "float64",
) -> Report:
    """Run every applicable check of DESIGN §4 on ``forward`` at ``primals`` and return a Report.

    ``vjp(primals, ct)`` is the handwritten pullback (one cotangent per differentiable input);
    without it autodiff stands in and only the autodiff-vs-FD checks are informative.
    ``mode='fast'`` skips the full per-element Jacobian and Hessian (directional checks only).
    """
    if mode not in ("full", "fast"):
        raise ValueError(f"mode must be 'full' or 'fast', not {mode!r}")
    dtype = np.dtype(dtype)
    with reference_mode(dtype):
        # Host arrays: the witnesses take them as jit arguments, and nothing here runs eagerly
        # on the device (each eager op would compile on its own).
        prim = tuple(
            np.asarray(p, dtype) if np.issubdtype(np.asarray(p).dtype, np.floating) else np.asarray(p)
            for p in primals
        )
        ctx = Context(
            name,
            forward,
            prim,
            tuple(diff_idx),
            tuple(names),
            np.asarray(ct, dtype),
            tuple(np.asarray(t, dtype) for t in tangents),
            dtype,
        )
        return Report(tuple(_checks(ctx, vjp, jvp, chain, mode)))


def _checks(ctx: Context, vjp, jvp, chain, mode: str):
    w = witnesses(ctx, vjp, jvp, chain, mode)
    ad_vjp, hw_vjp = w["ad_vjp"], w.get("hw_vjp")
    dnames = tuple(f"d{n}" for n in ctx.names)
    n_in = sum(d.size for d in ctx.diff)
    out_shape = tuple(np.shape(w["ad_jvp"]))

    if hw_vjp is not None:
        if len(hw_vjp) != len(ad_vjp):
            n, m = len(hw_vjp), len(ad_vjp)
            raise ValueError(f"{ctx.name}: handwritten VJP returned {n} arrays, expected {m}")
        yield _result(ctx, "vjp", "handwritten", "autodiff", _compare_named(hw_vjp, ad_vjp, dnames), "exact")
    if "hw_jvp" in w:
        worst = _compare_named([w["hw_jvp"]], [w["ad_jvp"]], ["Jt"])
        yield _result(ctx, "jvp", "handwritten", "autodiff", worst, "exact")

    worst = _compare_named([w["ad_jvp"]], [w["fd_jvp"]], ["Jt"])
    res = _result(ctx, "fd_jvp", "autodiff", "finite-diff", worst, "fd")
    if res.status == "FAIL" and _kink(ctx, ctx.tangents):
        res = res._replace(status="kink")
    yield res

    if "jfd" in w:
        jnames = [f"J_{n}" for n in ctx.names]
        rev_b = _split_columns(w["jrev"], ctx, out_shape)
        fd_b = _split_columns(w["jfd"], ctx, out_shape)
        res = _result(ctx, "jacobian_fd", "finite-diff", "jacrev", _compare_named(fd_b, rev_b, jnames), "fd")
        if res.status == "FAIL":
            # Probe the worst column alone: a kink there explains the disagreement.
            diff = np.abs(w["jfd"] - w["jrev"]).reshape(-1, n_in)
            e = np.zeros(n_in, ctx.dtype)
            e[int(np.argmax(diff.max(axis=0)))] = 1.0
            if _kink(ctx, _split_columns(e, ctx)):
                res = res._replace(status="kink")
        yield res
        if "jfwd" in w:
            fwd_b = _split_columns(w["jfwd"], ctx, out_shape)
            worst = _compare_named(fwd_b, rev_b, jnames)
            yield _result(ctx, "jacobian_modes", "jacfwd", "jacrev", worst, "exact")
        if hw_vjp is not None:
            fd_vjp = _split_columns(np.tensordot(ctx.ct, w["jfd"], axes=ctx.ct.ndim), ctx)
            worst = _compare_named(hw_vjp, fd_vjp, dnames)
            res_vjp = _result(ctx, "vjp_fd", "handwritten", "finite-diff", worst, "fd")
            if res_vjp.status == "FAIL" and res.status == "kink":
                res_vjp = res_vjp._replace(status="kink")  # the FD Jacobian itself straddles a kink
            yield res_vjp

    pull = hw_vjp if hw_vjp is not None else ad_vjp
    lhs = float(np.vdot(ctx.ct, w["ad_jvp"]))
    rhs = float(sum(np.vdot(g, t) for g, t in zip(pull, ctx.tangents, strict=True)))
    # Round-off in a dot product scales with the sum of |terms|, not with the (possibly small) sum.
    scale = max(float(np.sum(np.abs(ctx.ct * w["ad_jvp"]))), 1e-300)
    side = "handwritten" if hw_vjp is not None else "autodiff"
    yield _result(
        ctx,
        "dot_identity",
        f"<J^T c, t> ({side})",
        "<c, J t> (autodiff)",
        (abs(lhs - rhs) / scale, "[]", rhs, lhs),
        "exact",
    )

    if "chain_value" in w:
        value = _compare_named([w["chain_value"]], [w["value"]], ["F"])
        if value[0] > tolerance(ctx.dtype, "exact"):
            yield _result(ctx, "chain_forward", "outer(inner(x))", "F(x)", value, "exact")
        else:
            for m in ("forward", "reverse"):
                product, composite = w[f"chain_{m}"]
                worst = _compare_named([product], [composite], ["J"])
                yield _result(ctx, f"chain_{m}", "J_f(g(x))·J_g(x)", "J_(f∘g)(x)", worst, "exact")

    if "hvp" in w:
        res = _result(
            ctx,
            "hvp",
            "forward-over-reverse",
            "finite-diff",
            _compare_named([w["hvp"]], [w["hvp_fd"]], ["Ht"]),
            "fd",
        )
        yield res
        if "hessian" in w:
            h = w["hessian"]
            yield _result(ctx, "hessian_symmetry", "H", "H^T", _compare_named([h], [h.T], ["H"]), "exact")
        else:
            a, b, sc = (float(x) for x in w["sym"])
            yield _result(
                ctx,
                "hessian_symmetry",
                "<u, H t>",
                "<t, H u>",
                (abs(a - b) / max(sc, 1e-300), "[]", a, b),
                "exact",
            )


# ----------------------------------------------------------------------------- front doors


def check_case(case, dtype: Any = "float64", mode: str = "full") -> Report:
    """Run every check on a catalogue case at its seeded inputs and probes, in ``dtype``."""
    inputs = case.sample(dtype)
    ct, tangents = case.probes(dtype)
    return run_checks(
        case.name,
        case.forward,
        tuple(inputs.values()),
        diff_idx=case.diff_index,
        names=case.diff_names,
        ct=ct,
        tangents=tuple(tangents.values()),
        vjp=case.vjp,
        jvp=case.jvp,
        chain=case.chain,
        mode=mode,
        dtype=dtype,
    )


def check_cases(
    cases: Sequence[Any], dtype: Any = "float64", mode: str = "full", workers: int | None = None
) -> Iterator[tuple[Any, Report]]:
    """Check several cases, yielding (case, Report) in order as each finishes.

    XLA compiles outside the GIL, so ``workers`` threads (default: the CPU count, at most 4)
    overlap one case's compilation with the next case's tracing.
    """
    workers = workers or min(4, os.cpu_count() or 1)
    if workers <= 1 or len(cases) <= 1:
        for case in cases:
            yield case, check_case(case, dtype=dtype, mode=mode)
        return
    with ThreadPoolExecutor(max_workers=workers) as pool:
        futures = [pool.submit(check_case, c, dtype, mode) for c in cases]
        for case, fut in zip(cases, futures, strict=True):
            yield case, fut.result()


class _GradVJP(NamedTuple):
    """The VJP ``ct * grad(*args)`` of a handwritten gradient; hashable by the gradient, so a
    repeated check of the same function reuses its compiled program."""

    grad_fn: Callable[..., Any]

    def __call__(self, primals: tuple, ct: jax.Array) -> tuple:
        g = self.grad_fn(*primals)
        g = g if isinstance(g, (tuple, list)) else (g,)
        return tuple(ct * gi for gi in g)


def check_function(
    f: Callable[..., jax.Array],
    args: Sequence[Any],
    *,
    grad_fn: Callable[..., Any] | None = None,
    vjp_fn: Callable[[tuple, jax.Array], tuple] | None = None,
    jvp_fn: Callable[[tuple, tuple], jax.Array] | None = None,
    mode: str = "full",
    dtype: Any | None = None,
    name: str | None = None,
    seed: int = 0,
) -> Report:
    """Check a user's function ``f(*args)`` with every check of DESIGN §4.

    Floating-point args are differentiable, integer args are not. Give the handwritten
    derivative as ``grad_fn(*args)`` (scalar ``f``: the gradient w.r.t. the float args, a
    tuple when there are several) or as ``vjp_fn(args, ct)``; ``jvp_fn(args, tangents)`` is
    optional. Probes are drawn from ``jax.random.key(seed)``. ``dtype`` defaults to the
    dtype of the first float arg.
    """
    arrays = [np.asarray(a) for a in args]
    diff_idx = tuple(i for i, a in enumerate(arrays) if np.issubdtype(a.dtype, np.floating))
    if not diff_idx:
        raise ValueError("check_function needs at least one floating-point argument")
    dtype = np.dtype(dtype or arrays[diff_idx[0]].dtype)
    name = name or getattr(f, "__name__", "function")
    if grad_fn is not None and vjp_fn is not None:
        raise ValueError("give grad_fn or vjp_fn, not both")
    if grad_fn is not None:
        vjp_fn = _GradVJP(grad_fn)

    with reference_mode(dtype):
        out_shape = jax.eval_shape(
            f, *[jnp.asarray(a, dtype) if i in diff_idx else jnp.asarray(a) for i, a in enumerate(arrays)]
        ).shape
        keys = jax.random.split(jax.random.key(seed), len(diff_idx) + 1)
        ct = jax.random.normal(keys[0], out_shape, dtype)
        tangents = tuple(
            jax.random.normal(k, arrays[i].shape, dtype) for k, i in zip(keys[1:], diff_idx, strict=True)
        )
    names = tuple(f"arg{i}" for i in diff_idx)
    return run_checks(
        name,
        f,
        arrays,
        diff_idx=diff_idx,
        names=names,
        ct=ct,
        tangents=tangents,
        vjp=vjp_fn,
        jvp=jvp_fn,
        mode=mode,
        dtype=dtype,
    )
