"""The gradient checker: every derivative against two independent witnesses (DESIGN §4).

For a case of the catalogue (:func:`check_case`) or any user function
(:func:`jaxcalc.checks.user.check_function`) it compares

* ``vjp``            handwritten VJP vs ``jax.vjp``;
* ``jvp``            handwritten JVP vs ``jax.jvp`` (where a handwritten JVP is given);
* ``fd_jvp``         ``jax.jvp`` along the tangent vs a 5-point central difference;
* ``jacobian_fd``    the full per-element FD Jacobian (2-evaluation central differences,
                     vmapped, jitted) vs ``jax.jacrev``;
* ``jacobian_modes`` ``jax.jacfwd`` vs ``jax.jacrev``;
* ``vjp_fd``         handwritten VJP vs cᵀJ from the FD Jacobian (handwritten vs FD, directly);
* ``dot_identity``   ⟨c, J t⟩ (autodiff JVP) vs ⟨Jᵀc, t⟩ (handwritten VJP);
* ``chain_forward`` / ``chain_reverse``  J_(f∘g) = J_f(g(x))·J_g(x) for composite cases;
* ``hvp``            for scalar losses, the directional derivative of the gradient (the
                     handwritten one where given, else autodiff's) vs its finite difference;
* ``hessian_symmetry``  H = Hᵀ, H the Jacobian of that same gradient.

Errors are normwise relative, ``||a - b||inf / max(||b||inf, tiny)``; every result names the
case, the check, which side is which, the worst element (by name and index) and both values
there. Every finite difference records whether its stencil crossed a kink (a piecewise
primitive switching branch, :mod:`jaxcalc.checks.branches`); a failing comparison explained by
the crossed entries alone is reported as ``kink``, not as a wrong gradient.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, NamedTuple

import jax
import numpy as np

from jaxcalc.checks.branches import float_dtypes, traced, uses
from jaxcalc.checks.report import CheckResult, Report
from jaxcalc.checks.witnesses import Context, witnesses
from jaxcalc.diagnose import diagnose
from jaxcalc.numerics import column, compare, np_dtype, reference_mode

__all__ = ["CHECKS", "check_case", "check_cases", "run_checks", "select_checks"]

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


def select_checks(checks: str | Sequence[str] | None) -> frozenset[str]:
    """The checks to run: None for all, names to select (``("vjp", "fd_jvp")`` or
    ``"vjp,fd_jvp"``), or names each prefixed with ``-`` to exclude from all
    (``("-hvp", "-hessian_symmetry")`` or ``"-hvp,-hessian_symmetry"``)."""
    if checks is None:
        return frozenset(CHECKS)
    if isinstance(checks, str):
        checks = checks.replace(",", " ").split() or [checks]
    names = tuple(checks)
    if not all(isinstance(n, str) for n in names):
        raise ValueError(f"checks= takes check names, not {checks!r}")
    bare = [n.removeprefix("-") for n in names]
    unknown = [n for n in bare if n not in CHECKS]
    if unknown:
        raise ValueError(f"unknown check {unknown[0]!r}; choose from {', '.join(CHECKS)}")
    excluded = [n.startswith("-") for n in names]
    if any(excluded) and not all(excluded):
        raise ValueError("checks= either selects names or excludes '-names', not both")
    return frozenset(CHECKS) - frozenset(bare) if all(excluded) and names else frozenset(bare)


class Worst(NamedTuple):
    """The worst element of a comparison: error, its name, both values, and a note."""

    error: float
    where: str
    a_value: float
    b_value: float
    note: str = ""
    pair: tuple | None = None  # (a block, b block, name) of the worst block, for diagnose()


def _idx(index: tuple[int, ...]) -> str:
    return f"[{', '.join(str(i) for i in index)}]" if index else ""


def _compare_blocks(
    a: Sequence[Any],
    b: Sequence[Any],
    label: Callable[[int, tuple[int, ...]], str],
    skip: Sequence[Any] = (),
    allow: Sequence[Any] = (),
) -> Worst:
    """Worst normwise error over matching blocks (one per input); ``label(k, index)`` names an
    element of block k. ``skip[k]`` (a bool mask) leaves elements out: kinked FD entries.
    ``allow[k]``: block k's per-element uncertainty (a finite difference's rounding noise),
    see :func:`jaxcalc.numerics.compare`."""
    worst = Worst(-1.0, "", 0.0, 0.0)
    for k, (ak, bk) in enumerate(zip(a, b, strict=True)):
        sa, sb = np.shape(ak), np.shape(bk)
        if sa != sb:
            # A misshapen gradient is a failure to report, not a crash or a 'nan vs nan'.
            hint = ": transposed?" if sa == sb[::-1] and len(sa) > 1 else ""
            note = f"shape {sa}, expected {sb}{hint}"
            return Worst(float("inf"), label(k, ()), float("nan"), float("nan"), note)
        ak = np.asarray(ak, np.float64)
        bk = np.asarray(bk, np.float64)
        if skip:
            ak = np.where(skip[k], bk, ak)
        c = compare(ak, bk, allow=allow[k] if allow else None)
        if c.error > worst.error:
            worst = Worst(c.error, label(k, c.index), c.a_value, c.b_value, pair=(ak, bk, label(k, ())))
    return worst


def _result(
    ctx: Context, check: str, a_label: str, b_label: str, worst: Worst, kind: str, tols
) -> CheckResult:
    tol = tols[kind]
    status = "pass" if worst.error <= tol else "FAIL"
    why = ""
    if status == "FAIL" and worst.pair is not None:
        d = diagnose(np.asarray(worst.pair[0]), np.asarray(worst.pair[1]), tol=tol)
        why = f"{worst.pair[2]}: {d.line}" if d is not None else ""
    return CheckResult(
        ctx.name,
        check,
        a_label,
        b_label,
        float(worst.error),
        tol,
        worst.where,
        worst.a_value,
        worst.b_value,
        status,
        worst.note,
        why,
    )


def _closer(compare: Callable[[Any], Worst], estimates: tuple) -> Worst:
    """The comparison with the closer of a directional difference's two estimates (its step and
    a quarter of it): truncation error shrinks at the finer step, a wrong derivative does not."""
    coarse, fine = (compare(e) for e in estimates)
    return coarse if coarse.error <= fine.error else fine._replace(note=fine.note or "at a quarter step")


def _kink(res: CheckResult, crossed: bool, note: str = "the finite difference crosses a kink") -> CheckResult:
    return res._replace(status="kink", note=note, diagnosis="") if res.status == "FAIL" and crossed else res


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
    checks: str | Sequence[str] | None = None,
    tolerances: Mapping[str, float] | None = None,
    label: str | None = None,
    grad_names: Sequence[str] | None = None,
    notes: Sequence[CheckResult] = (),
) -> Report:
    """Run every applicable check of DESIGN §4 on ``forward`` at ``primals`` and return a Report.

    ``forward(*primals)`` maps arrays to one array; ``diff_idx`` are the differentiable
    positions, ``names`` their element names (``x``, ``params['W1']``). ``vjp(primals, ct)`` is
    the handwritten pullback (one cotangent per differentiable input); without it autodiff
    stands in and only the autodiff-vs-FD checks are informative. ``mode='fast'`` skips the
    full per-element Jacobian and Hessian (directional checks only); ``checks`` selects or
    excludes checks (:func:`select_checks`); in bfloat16 / float16 the finite-difference checks
    are left out. ``tolerances`` overrides the dtype's 'exact'
    and/or 'fd' tolerance; ``label`` replaces ``name`` in the rows (an instance's id).
    ``grad_names`` name gradient elements (default ``d<name>``); ``notes`` are rows to report
    first (e.g. a misshapen gradient found before any derivative was computed).
    """
    if mode not in ("full", "fast"):
        raise ValueError(f"mode must be 'full' or 'fast', not {mode!r}")
    wanted = select_checks(checks)
    dtype = np_dtype(dtype)
    with reference_mode(dtype):
        # Host arrays: the witnesses take them as jit arguments, and nothing here runs eagerly
        # on the device (each eager op would compile on its own).
        prim = tuple(
            np.asarray(p, dtype) if np.issubdtype(np.asarray(p).dtype, np.floating) else np.asarray(p)
            for p in primals
        )
        # f's precision is the narrowest float it computes in: its steps and tolerances
        precision = working_precision(forward, prim, dtype)
        col = column(precision)
        if col.fd is None:
            # bfloat16 / float16: a finite difference's step falls below eps, so only the exact
            # comparisons run (check_function compares against float64 autodiff instead).
            wanted = wanted - {"fd_jvp", "jacobian_fd", "vjp_fd", "hvp"}
        tols = {k: (tolerances or {}).get(k) or getattr(col, k) or float("inf") for k in ("exact", "fd")}
        ctx = Context(
            label or name,
            forward,
            prim,
            tuple(diff_idx),
            tuple(names),
            np.asarray(ct, dtype),
            tuple(np.asarray(t, dtype) for t in tangents),
            dtype,
            precision if precision != dtype else None,
        )
        gnames = tuple(grad_names) if grad_names is not None else tuple(f"d{n}" for n in names)
        rows = _checks(ctx, vjp, jvp, chain, mode, wanted, tols, gnames)
        if precision != dtype:
            inside = f"f computes in {precision.name} inside: {precision.name} tolerances"
            inside += ", no finite differences" if col.fd is None else " and steps"
            rows = (_noted(r, inside) for r in rows)
        return Report(tuple(notes) + tuple(r for r in rows if r.check in wanted))


def working_precision(forward: Callable[..., Any], primals: Sequence[Any], dtype: np.dtype) -> np.dtype:
    """The narrowest floating-point dtype ``forward`` computes in at ``primals``: ``dtype``
    itself, or a narrower one its program rounds to inside (a float64 function whose softmax
    runs in float32, a float32 one that casts to bfloat16). Its rounding bounds the agreement
    any derivative of f can reach, so its steps and tolerances are the ones that apply."""
    jaxpr = traced(forward, *primals)[0].jaxpr
    eps = float(np.finfo(dtype).eps)
    narrower = [d for d in float_dtypes(jaxpr) if float(np.finfo(d).eps) > eps]
    return max(narrower, key=lambda d: float(np.finfo(d).eps), default=dtype)


# The rows that compare a derivative with a finite difference of f (or of its gradient)
FD_ROWS = ("fd_jvp", "jacobian_fd", "vjp_fd", "hvp")
STOP_NOTE = (
    "f uses stop_gradient: where that is meant (a straight-through estimator), autodiff is not "
    "f's derivative and no finite difference agrees with it"
)
FORWARD_NOTE = "f's while_loop has no reverse mode: gradient, VJP, Jacobian from jacfwd"
# The rows whose autodiff side comes from forward mode alone where f's while_loop has no transpose
FORWARD_ROWS = ("vjp", "jacobian_fd", "dot_identity", "hvp", "hessian_symmetry")
REVERSE_NOTE = "f uses a jax.custom_vjp, which has no forward mode: J t, H t from reverse mode"
# The rows whose autodiff side comes from reverse mode alone where f uses a jax.custom_vjp
REVERSE_ROWS = ("fd_jvp", "hvp", "hessian_symmetry", "dot_identity")


def _checks(ctx: Context, vjp, jvp, chain, mode: str, wanted, tols, gnames):
    """Every row, from one witness program. Rows computed in one mode only (reverse through a
    jax.custom_vjp, forward through a while_loop) say so where they have no note of their own;
    a failed finite difference of an f that stops a gradient says that too."""
    w = witnesses(ctx, vjp, jvp, chain, mode, wanted)
    reverse, forward_only = w.pop("reverse_only", False), w.pop("forward_only", False)
    left_out = w.pop("full_left_out", "")
    if left_out:  # too much work for the per-element Jacobian: one row says so
        nan = float("nan")
        sides = ("finite-diff", "jacrev", nan, 0.0, "", nan, nan)
        yield CheckResult(ctx.name, "jacobian_fd", *sides, "n/a", left_out)
    # the rows whose autodiff side came from one mode of differentiation only, and their note
    one_mode = [(REVERSE_ROWS, REVERSE_NOTE)] * reverse + [(FORWARD_ROWS, FORWARD_NOTE)] * forward_only
    stops = None  # whether f stops a gradient: asked only once a finite difference disagrees
    for r in _rows(ctx, w, tols, gnames, getattr(vjp, "traceable", True)):
        if forward_only and r.check == "jacobian_fd":  # its autodiff Jacobian is jacfwd's
            r = r._replace(b_label="jacfwd")
        for rows, note in one_mode:
            if r.check in rows and r.status != "kink":
                r = r._replace(note=r.note or note)
        if r.status == "FAIL" and r.check in FD_ROWS:
            if stops is None:
                stops = uses(traced(ctx.forward, *ctx.primals)[0].jaxpr, ("stop_gradient",))
            if stops:
                r = _noted(r, STOP_NOTE)
        yield r


def _noted(r: CheckResult, note: str) -> CheckResult:
    """``r`` with ``note`` after its own note, if it has one."""
    return r._replace(note=f"{r.note}; {note}" if r.note else note)


def _rows(ctx: Context, w: dict, tols, gnames, traceable: bool = True):
    ad_vjp, hw_vjp = w["ad_vjp"], w.get("hw_vjp")
    n_in = sum(d.size for d in ctx.diff)
    out_shape = tuple(np.shape(w["ad_jvp"]))
    scalar = out_shape == ()

    def grad_el(k, index):
        return f"{gnames[k]}{_idx(index)}"

    def in_el(k, index):
        return f"{ctx.names[k]}{_idx(index)}"

    def jac_el(k, index):  # index = (*out, *in)
        o = len(out_shape)
        return in_el(k, index[o:]) if scalar else f"out{_idx(index[:o])} wrt {in_el(k, index[o:])}"

    def out_el(_k, index):
        return f"(J t){_idx(index)}"

    if hw_vjp is not None:
        yield _result(
            ctx, "vjp", "handwritten", "autodiff", _compare_blocks(hw_vjp, ad_vjp, grad_el), "exact", tols
        )
    if "hw_jvp" in w:
        worst = _compare_blocks([w["hw_jvp"]], [w["ad_jvp"]], out_el)
        yield _result(ctx, "jvp", "handwritten", "autodiff", worst, "exact", tols)

    if "fd_jvp" in w:
        worst = _closer(
            lambda e: _compare_blocks([w["ad_jvp"]], [e[0]], out_el, allow=[e[1]]),
            tuple(zip(w["fd_jvp"], w["fd_jvp_noise"], strict=True)),
        )
        yield _kink(
            _result(ctx, "fd_jvp", "autodiff", "finite-diff", worst, "fd", tols), bool(w["fd_jvp_kink"])
        )

    if "jfd" in w:
        rev_b = _split_columns(w["jrev"], ctx, out_shape)
        fd_b = _split_columns(w["jfd"], ctx, out_shape)
        noise_b = _split_columns(w["jfd_noise"], ctx, out_shape)
        kinks = np.asarray(w["jfd_kink"])
        col_mask = _split_columns(np.broadcast_to(kinks, out_shape + kinks.shape), ctx, out_shape)
        res = _result(
            ctx,
            "jacobian_fd",
            "finite-diff",
            "jacrev",
            _compare_blocks(fd_b, rev_b, jac_el, allow=noise_b),
            "fd",
            tols,
        )
        if res.status == "FAIL" and kinks.any():
            # Leave out the columns whose stencil crossed a kink: if the rest agree, it was the kink.
            smooth = _result(
                ctx,
                "jacobian_fd",
                "finite-diff",
                "jacrev",
                _compare_blocks(fd_b, rev_b, jac_el, col_mask, allow=noise_b),
                "fd",
                tols,
            )
            res = (
                _kink(res, smooth.passed, f"{int(kinks.sum())} of {n_in} columns cross a kink")
                if smooth.passed
                else smooth
            )
        yield res
        if "jfwd" in w:
            fwd_b = _split_columns(w["jfwd"], ctx, out_shape)
            worst = _compare_blocks(fwd_b, rev_b, jac_el)
            yield _result(ctx, "jacobian_modes", "jacfwd", "jacrev", worst, "exact", tols)
        if hw_vjp is not None:
            fd_vjp = _split_columns(np.tensordot(ctx.ct, w["jfd"], axes=ctx.ct.ndim), ctx)
            ct_abs = np.abs(np.asarray(ctx.ct, np.float64))
            noise_vjp = _split_columns(np.tensordot(ct_abs, w["jfd_noise"], axes=ctx.ct.ndim), ctx)
            shaped = all(np.shape(h) == np.shape(g) for h, g in zip(hw_vjp, fd_vjp, strict=True))
            mask = _split_columns(kinks, ctx) if shaped else ()
            worst = _compare_blocks(hw_vjp, fd_vjp, grad_el, allow=noise_vjp if shaped else ())
            res = _result(ctx, "vjp_fd", "handwritten", "finite-diff", worst, "fd", tols)
            if res.status == "FAIL" and kinks.any() and shaped:
                smooth = _result(
                    ctx,
                    "vjp_fd",
                    "handwritten",
                    "finite-diff",
                    _compare_blocks(hw_vjp, fd_vjp, grad_el, mask, allow=noise_vjp),
                    "fd",
                    tols,
                )
                res = (
                    _kink(res, True, f"{int(kinks.sum())} of {n_in} columns cross a kink")
                    if smooth.passed
                    else smooth
                )
            yield res

    pull = hw_vjp if hw_vjp is not None else ad_vjp
    side = "handwritten" if hw_vjp is not None else "autodiff"
    if all(np.shape(g) == np.shape(t) for g, t in zip(pull, ctx.tangents, strict=True)):
        lhs = float(np.vdot(ctx.ct, w["ad_jvp"]))
        rhs = float(sum(np.vdot(g, t) for g, t in zip(pull, ctx.tangents, strict=True)))
        # Round-off in a dot product scales with the sum of |terms|, not with the (possibly
        # small) sum: the terms of both sides, so a J t that cancels (t nearly orthogonal to a
        # scalar's gradient, as for a layer norm's) compares its rounding with its terms.
        # (autodiff's terms: a wrong handwritten pullback must not widen its own scale)
        pairs = zip(ad_vjp, ctx.tangents, strict=True)
        terms = sum(float(np.sum(np.abs(np.asarray(g) * t))) for g, t in pairs)
        scale = max(float(np.sum(np.abs(ctx.ct * w["ad_jvp"]))), terms, 1e-300)
        worst = Worst(abs(lhs - rhs) / scale, "<c, J t>", rhs, lhs)
        yield _result(
            ctx, "dot_identity", f"<J^T c, t> ({side})", "<c, J t> (autodiff)", worst, "exact", tols
        )

    if "chain_value" in w:
        value = _compare_blocks([w["chain_value"]], [w["value"]], lambda k, i: f"F{_idx(i)}")
        if value.error > tols["exact"]:
            yield _result(ctx, "chain_forward", "outer(inner(x))", "F(x)", value, "exact", tols)
        else:
            for m in ("forward", "reverse"):
                product, composite = w[f"chain_{m}"]
                worst = _compare_blocks([product], [composite], lambda k, i: f"J{_idx(i)}")
                yield _result(ctx, f"chain_{m}", "J_f(g(x))·J_g(x)", "J_(f∘g)(x)", worst, "exact", tols)

    if "hvp" in w:
        if hw_vjp is None:
            note = "autodiff only: no handwritten gradient given"
        elif not traceable:
            note = (
                "autodiff only: the handwritten gradient runs outside JAX (NumPy), which cannot "
                "differentiate it"
            )
        else:
            note = ""
        yield from _hessian_checks(ctx, w, note, tols, in_el)


def _hessian_checks(ctx: Context, w, note: str, tols, in_el):
    """HVP vs FD, and symmetry. With a handwritten derivative JAX can trace, both differentiate
    the handwritten gradient (labelled so); otherwise they are autodiff's own consistency
    checks, and ``note`` says why."""
    g = "autodiff grad" if note else "handwritten grad"
    hvp_b = _split_columns(w["hvp"], ctx)
    def against(e):
        fd_b, noise_b = _split_columns(e[0], ctx), _split_columns(e[1], ctx)
        return _compare_blocks(hvp_b, fd_b, lambda k, i: f"(H t)[{in_el(k, i)}]", allow=noise_b)

    worst = _closer(against, tuple(zip(w["hvp_fd"], w["hvp_fd_noise"], strict=True)))
    res = _result(ctx, "hvp", f"jvp({g})", f"finite-diff({g})", worst, "fd", tols)
    res = _kink(res, bool(w["hvp_kink"]), "the finite difference of the gradient crosses a kink")
    yield _noted(res, note) if note and res.passed else res
    offsets = np.cumsum([0] + [d.size for d in ctx.diff])

    def h_el(flat: int) -> str:
        k = int(np.searchsorted(offsets, flat, side="right") - 1)
        return in_el(k, tuple(int(i) for i in np.unravel_index(flat - offsets[k], ctx.diff[k].shape)))

    if "hessian" in w:
        h = np.asarray(w["hessian"])
        worst = _compare_blocks([h], [h.T], lambda k, i: f"H[{h_el(i[0])}, {h_el(i[1])}]" if i else "H")
        a_label, b_label = f"H = jacfwd({g})", "H^T"
    else:
        a, b, sc = (float(x) for x in w["sym"])
        worst = Worst(abs(a - b) / max(sc, 1e-300), "<u, H t>", a, b)
        a_label, b_label = f"<u, H t> ({g})", "<t, H u>"
    res = _result(ctx, "hessian_symmetry", a_label, b_label, worst, "exact", tols)
    if res.status == "FAIL" and np.isfinite(res.error):  # H vs H^T: "transposed" says nothing
        whose = "the handwritten gradient's" if not note else "autodiff's"
        res = res._replace(
            diagnosis=f"{whose} Jacobian is not symmetric: no function has it as its gradient "
            f"(a term left out of, or doubled in, some entries?)"
        )
    yield res._replace(note=note) if note and res.passed else res


# ----------------------------------------------------------------------------- front doors


def check_case(case, dtype: Any = "float64", mode: str = "full") -> Report:
    """Run every check on a catalogue case (its golden instance) or on an instance, in ``dtype``;
    see :func:`jaxcalc.checks.instances.check_instance`."""
    from jaxcalc.cases import Instance, instance
    from jaxcalc.checks.instances import check_instance

    return check_instance(case if isinstance(case, Instance) else instance(case), dtype=dtype, mode=mode)


def check_cases(
    cases: Sequence[Any], dtype: Any = "float64", mode: str = "full", workers: int | None = None
) -> Iterator[tuple[Any, Report]]:
    """Check several cases (their golden instances) or instances, yielding (item, Report) in order;
    see :func:`jaxcalc.checks.instances.check_instances`."""
    from jaxcalc.cases import Instance, instance
    from jaxcalc.checks.instances import check_instances

    insts = [c if isinstance(c, Instance) else instance(c) for c in cases]
    for item, (_, report) in zip(cases, check_instances(insts, dtype, mode, workers), strict=True):
        yield item, report
