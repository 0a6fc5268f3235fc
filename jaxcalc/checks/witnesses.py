"""Every derivative the checks compare, computed in one program per function.

The program is traced once per function and argument signature. A small one (a few thousand
equations over small arrays) runs on the host with NumPy (:mod:`jaxcalc.checks.host`), which
compiles nothing; a larger one, or one using a primitive or dtype the host evaluator lacks, is
compiled by XLA. A program run on the host again and again is compiled once the host time it
has taken would have paid for compiling it. ``JAXCALC_WITNESS=host`` or ``=xla`` forces one of
the two (``auto`` is the default); :data:`EXECUTOR` is the same setting in Python.
"""

from __future__ import annotations

import functools
import os
import time
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.extend
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from jaxcalc import fd
from jaxcalc.checks import host
from jaxcalc.checks.branches import crossed, inlined, paused_gc, traced, uses, with_branches
from jaxcalc.numerics import fd_base_step

__all__ = [
    "Context",
    "witnesses",
    "columns",
    "MAX_JACOBIAN",
    "MAX_FD_WORK",
    "MAX_HESSIAN",
    "MAX_JACFWD",
    "COLUMN_BATCH",
    "JACOBIAN_ORDER",
    "EXECUTOR",
]

# Where witness programs run: "auto" (the host for small programs, XLA otherwise), "host" (the
# host wherever it can) or "xla" (always compiled).
EXECUTOR = os.environ.get("JAXCALC_WITNESS", "auto")
# The estimate behind "auto", in seconds: host time per equation run, per element produced and
# per multiply-add; XLA compile time per program and per equation (measured on a 2-core CPU).
HOST_SECONDS = (6e-6, 2e-9, 1e-9)
COMPILE_SECONDS = (0.05, 4e-4)

_FAST_COMPILE = {"xla_backend_optimization_level": 0}

# Largest Jacobian (output size x total input size) computed in full, per element.
MAX_JACOBIAN = 4_000_000
# Most elements f's program may produce over the per-element Jacobian's 2 n evaluations (f's
# host cost x 2 n). Beyond it full mode leaves the per-element checks out, and the report says
# so, rather than running for hours: the Jacobian of sum(tanh(x)**2) took 1.1 s at 20,000
# inputs and 70 s at 100,000, and would take about two hours at 1,000,000.
MAX_FD_WORK = 10_000_000_000
# Largest flattened input for which the full Hessian is formed.
MAX_HESSIAN = 2_000
# Largest input (flattened) for which jacfwd is formed column by column.
MAX_JACFWD = 2_000
# Largest (input size, Jacobian size) whose checking program is compiled without LLVM's heavy
# optimizations: the catalogue's cases, where compiling costs far more than running.
QUICK_COMPILE = (1_000, 20_000)
# The directional differences are taken at their step and at this fraction of it (see compute).
FINE_STEP = 0.25
# Largest number of elements (points x inputs) of finite-difference points held at once; beyond
# it each point is built from its index inside a chunked map.
MAX_POINTS = 4_000_000
# Most differentiable inputs whose directional points a compiled (not quick) program evaluates
# one input at a time, the others held fixed (see _along_inputs); f is traced once per input.
SPLIT_INPUTS = 8
# Primitives that JAX batches badly when both operands are batched: a convolution whose input
# and kernel both vary per point becomes a grouped convolution, one group per point, which
# XLA:CPU compiles and runs for minutes (1,000 points of a 2x3x8x8 input, a 4x3x3x3 kernel).
# Where f uses one, every batch of points moves one input at a time (a batch of inputs is
# one convolution, a batch of kernels another) and no primal is batched with its tangent.
ONE_AT_A_TIME = ("conv_general_dilated",)
# Primitives JAX differentiates in reverse mode only (a jax.custom_vjp): where f binds one,
# J t comes from the gradient (or the Jacobian's rows), H t from reverse over the gradient,
# and there is no jacfwd to compare with jacrev.
REVERSE_ONLY = ("custom_vjp_call", "custom_vjp_call_jaxpr")
# Primitives that may leave JAX no reverse mode: a lax.while_loop carrying a tangent cannot be
# transposed. Where f's pullback cannot be built (see _has_reverse), every derivative comes
# from forward mode: the gradient, VJP and Jacobian from jacfwd's columns (so there is no
# jacrev to compare jacfwd with), H t from forward over that gradient.
FORWARD_ONLY = ("while",)
# Jacobian columns evaluated together (vmapped) before moving to the next chunk.
COLUMN_BATCH = 512
# Truncation order of the per-element FD Jacobian: the 2-evaluation central difference. At its
# step eps**(1/3) it is accurate to ~eps**(2/3) (4e-11 in float64, 3e-5 in float32), well
# inside the FD tolerances, at half the cost of the 5-point stencil the directional checks use.
JACOBIAN_ORDER = 2
# Each value of f (or of the gradient, in the Hessian checks) at a finite difference's point is
# taken to carry a rounding error of up to FD_ROUNDING x eps x its magnitude. Differenced at
# step h, that is a noise of about FD_ROUNDING eps |f| / h in the result: the part of a
# disagreement with autodiff within it is the witness's own uncertainty and does not count.
# It matters where the step is small next to f's scale (a bias of 1e-4 under a large loss)
# or the derivative small next to |f| / h (float32 gradients of a loss at a small init).
FD_ROUNDING = 4.0


class Context(NamedTuple):
    """Everything the individual checks need, prepared once per function."""

    name: str
    forward: Callable[..., jax.Array]
    primals: tuple[jax.Array, ...]
    diff_idx: tuple[int, ...]
    names: tuple[str, ...]
    ct: jax.Array
    tangents: tuple[jax.Array, ...]
    dtype: np.dtype
    # the narrowest float dtype f computes in (its inputs' dtype, or float32 for a float64 f
    # that rounds to float32 inside): the finite differences' steps and noise are its
    precision: np.dtype | None = None

    def with_diff(self, diff: Sequence[jax.Array]) -> tuple[jax.Array, ...]:
        args = list(self.primals)
        for i, a in zip(self.diff_idx, diff, strict=True):
            args[i] = a
        return tuple(args)

    def f_diff(self, *diff: jax.Array) -> jax.Array:
        """F as a function of the differentiable inputs only."""
        return self.forward(*self.with_diff(diff))

    @property
    def diff(self) -> tuple[jax.Array, ...]:
        return tuple(self.primals[i] for i in self.diff_idx)


def columns(fn: Callable[[jax.Array], Any], n: int) -> Any:
    """Stack fn(i) for i in range(n): one vmap when small, else lax.map in chunks of COLUMN_BATCH.

    Chunking bounds memory for functions of many thousands of parameters, where one vmap over
    every column would hold every column's intermediates at once.
    """
    idx = jnp.arange(n)
    if n <= COLUMN_BATCH:
        return jax.vmap(fn)(idx)
    return jax.lax.map(fn, idx, batch_size=COLUMN_BATCH)


def basis_columns(fn: Callable[[jax.Array], Any], n: int, dtype: Any) -> Any:
    """Stack fn(e_i) for the basis vectors e_i of R^n, batched as :func:`columns` batches.

    When one vmap suffices it maps over the rows of the identity, built once outside the
    vmap, rather than building each e_i from its index inside it (cheaper to trace).
    """
    if n <= COLUMN_BATCH:
        return jax.vmap(fn)(_eye(n, dtype))
    return columns(lambda i: fn(jax.nn.one_hot(i, n, dtype=dtype)), n)


def _eye(n: int, dtype: Any) -> jax.Array:
    """The n x n identity in three primitives (``jnp.eye`` traces several times as many)."""
    rows = jax.lax.broadcasted_iota(np.int32, (n, n), 0)
    return jax.lax.convert_element_type(rows == jax.lax.broadcasted_iota(np.int32, (n, n), 1), dtype)


def witnesses(ctx: Context, vjp, jvp, chain, mode: str, wanted: frozenset[str]) -> dict[str, Any]:
    """Every derivative the checks in ``wanted`` compare, computed in ONE jitted call.

    Eager evaluation would compile each primitive separately; fusing all witnesses into one
    program keeps checking the whole catalogue to seconds. The compiled program is cached per
    (function, derivatives, mode, checks) and input shapes, so checking the same function
    again, at new values, costs no compilation. Every finite difference comes with a flag
    (``*_kink``) saying whether its stencil crossed a kink (:mod:`jaxcalc.checks.branches`).
    """
    f_jaxpr, out = traced(ctx.forward, *ctx.primals)
    n_in = sum(int(np.size(d)) for d in ctx.diff)
    per_element = mode == "full" and bool(wanted & {"jacobian_fd", "jacobian_modes", "vjp_fd"})
    full = per_element and n_in * max(out.size, 1) <= MAX_JACOBIAN
    work = 2 * n_in * _elements(f_jaxpr.jaxpr) if full else 0
    left_out = ""
    if full and work > MAX_FD_WORK:
        full = False
        left_out = (
            f"per-element Jacobian left out: its 2 x {n_in:,} evaluations of f would produce {work:,} "
            f"elements, over MAX_FD_WORK ({MAX_FD_WORK:,}); the directional checks stand in"
        )
    scalar = out.ndim == 0 and bool(wanted & {"hvp", "hessian_symmetry"})
    hessian = mode == "full" and n_in <= MAX_HESSIAN
    # jacfwd costs one JVP per input element: beyond MAX_JACFWD columns it is left out, and the
    # FD Jacobian is compared with jacrev alone.
    jacfwd = full and n_in <= MAX_JACFWD and "jacobian_modes" in wanted
    # Small programs are dominated by compiling, large ones by running: only the former skip
    # LLVM's heavy optimizations.
    quick = n_in <= QUICK_COMPILE[0] and n_in * max(out.size, 1) <= QUICK_COMPILE[1]
    directional = "fd_jvp" in wanted or scalar
    # A compiled program evaluates each input's directional points on their own (cheaper to
    # run, see _along_inputs); a quick one, mostly tracing and compiling, maps f over them as
    # flat rows in one vmap, as does the Hessian's joint vmap of small inputs.
    # Points batched one input at a time, and primals never batched with tangents, where f
    # uses a primitive that batches badly with both operands batched (ONE_AT_A_TIME).
    per_input = len(ctx.diff) > 1 and uses(f_jaxpr.jaxpr, ONE_AT_A_TIME)
    # JAX has no forward mode through a custom_vjp: every derivative then comes from reverse mode
    reverse = uses(f_jaxpr.jaxpr, REVERSE_ONLY)
    forward_only = not reverse and uses(f_jaxpr.jaxpr, FORWARD_ONLY) and not _has_reverse(ctx)
    jacfwd = jacfwd and not reverse and not forward_only
    joint = scalar and hessian and n_in <= COLUMN_BATCH and not per_input
    split = directional and not joint and (per_input or (not quick and len(ctx.diff) <= SPLIT_INPUTS))
    flags = (
        full,
        jacfwd,
        scalar,
        hessian,
        quick,
        "fd_jvp" in wanted,
        chain is not None and "chain_forward" in wanted,
        split,
        per_input,
        reverse,
        forward_only,
    )
    fn = _program(ctx.forward, ctx.diff_idx, vjp, jvp, chain, flags)
    probes = _probes(ctx, directional, full, scalar, split)
    eps = float(np.finfo(ctx.precision).eps) if ctx.precision is not None else None
    w = _finish(fn(ctx.primals, ctx.ct, ctx.tangents, probes), probes, flags, eps)
    w["reverse_only"], w["forward_only"] = reverse, forward_only
    if left_out:
        w["full_left_out"] = left_out
    return w


@functools.lru_cache(maxsize=256)
def _elements(jaxpr: Any) -> int:
    """The array elements f's program produces once (:func:`host.cost`), cached per trace."""
    return host.cost(jaxpr).elements


def _has_reverse(ctx: Context) -> bool:
    """Whether JAX can pull back through f at ctx's inputs (shapes only: nothing is run)."""
    f = inlined(ctx.forward, *ctx.primals)

    def pullback(diff):
        out, pull = jax.vjp(lambda *d: f(*ctx.with_diff(d)), *diff)
        return pull(out)

    try:
        jax.eval_shape(pullback, ctx.diff)
    except ValueError as e:  # a while loop carrying a tangent: JAX says reverse mode is out
        if "Reverse-mode differentiation does not work" not in str(e):
            raise
        return False
    return True


def _finish(
    raw: dict[str, Any], probes: dict[str, Any], flags: tuple, eps: float | None = None
) -> dict[str, Any]:
    """The witnesses from what the program returns, with NumPy on the host (nothing traced):
    the finite differences from f's values at their points, their kink flags, H t, the
    symmetry sums; columns stacked on the leading axis are moved to the last. ``eps`` is the
    rounding unit of f's values (default: their dtype's)."""
    full, _, scalar, hessian, _, fd_jvp, *_ = flags
    w = {k: x for k, x in raw.items() if k not in ("fd_vals", "fd_cross", "grad_at")}
    m_dir = _n_points(probes["moves"]) if "moves" in probes else len(probes.get("rows", ()))
    with np.errstate(all="ignore"):
        if "fd_vals" in raw:
            vals, cross = np.asarray(raw["fd_vals"]), np.asarray(raw["fd_cross"])
        if fd_jvp:
            w["fd_jvp"] = fd.directional_combine(vals[:m_dir], probes["steps"])
            w["fd_jvp_noise"] = fd.directional_noise(vals[:m_dir], probes["steps"], FD_ROUNDING, eps)
            w["fd_jvp_kink"] = bool(cross[:m_dir].any())
        if full:
            h = probes["h"]
            n = h.size
            lo, hi = vals[m_dir : m_dir + n], vals[m_dir + n :]
            w["jfd"] = (hi - lo) / (2 * h).astype(vals.dtype).reshape((n,) + (1,) * (vals.ndim - 1))
            eps = float(np.finfo(vals.dtype).eps) if eps is None else eps
            mag = np.abs(lo).astype(np.float64) + np.abs(hi)
            step2 = (2 * h.astype(np.float64)).reshape((n,) + (1,) * (vals.ndim - 1))
            w["jfd_noise"] = FD_ROUNDING * eps * mag / step2
            w["jfd_kink"] = cross[m_dir : m_dir + n] | cross[m_dir + n :]
        if scalar:
            grads = np.asarray(raw["grad_at"])[-m_dir:]  # the gradient at the directional points
            w["hvp_fd"] = fd.directional_combine(grads, probes["steps"])
            w["hvp_fd_noise"] = fd.directional_noise(grads, probes["steps"], FD_ROUNDING, eps)
            w["hvp_kink"] = bool(cross[:m_dir].any())
            t = probes["t"]
            if hessian:  # row j of the program's H is H e_j; H t = sum_j t_j H e_j
                w["hessian"] = np.asarray(raw["hessian"])[: t.size]
                w["hvp"] = t @ w["hessian"]
            else:
                u, hvp = probes["u"], np.asarray(raw["hvp"])
                w["sym"] = (np.vdot(u, hvp), np.vdot(t, np.asarray(raw["hu"])), np.sum(np.abs(u * hvp)))
    # the program stacks columns on the leading axis; the checks index them last
    moved = ("jfwd", "jfd", "jfd_noise", "hessian")
    w.update({k: np.moveaxis(np.asarray(w[k]), 0, -1) for k in moved if k in w})
    return w


def _probes(ctx: Context, directional: bool, full: bool, hessian: bool, split: bool) -> dict[str, Any]:
    """The finite differences' points and steps, built with NumPy on the host (no tracing):

    * ``moves`` (``split``) or ``rows``: the directional stencil's points at two steps, the
      usual one and FINE_STEP of it, as each input's values at its own stencil's points
      (:func:`jaxcalc.fd.directional_moves`), or as flat rows of all inputs, one per point.
      Truncation error (a curvy f, an input near a singularity) shrinks 256-fold at the
      finer step, while a wrong derivative disagrees with both.
    * ``steps``: each stencil's per-input steps, one row per step scale;
    * ``t``, ``u`` (for the Hessian checks only): H t's direction and the symmetry's second one;
    * ``h``: the per-element steps of the FD Jacobian's columns, flattened in ravel order.
    """
    diff = tuple(np.asarray(d) for d in ctx.diff)
    dtype = np.result_type(*diff) if diff else np.dtype(np.float64)
    # a function computing in a narrower dtype inside is differenced at that dtype's steps
    precision = ctx.precision if ctx.precision is not None else dtype
    wider = fd_base_step(precision) / fd_base_step(dtype)
    out: dict[str, Any] = {}
    with np.errstate(all="ignore"):  # as in a traced program: an inf input gives inf points, silently
        if directional:
            tangents = tuple(np.asarray(t, d.dtype) for d, t in zip(diff, ctx.tangents, strict=True))
            moves, steps = fd.directional_moves(diff, tangents, (wider, wider * FINE_STEP))
            moves = tuple(m.astype(dtype, copy=False) for m in moves)
            if split:
                out["moves"] = moves
            else:
                out["rows"] = _point_rows(diff, moves, dtype)
            out["steps"] = steps.astype(dtype, copy=False)  # steps: (2, n_inputs)
        if directional and hessian:
            # H t's direction, and a second one for the symmetry u.(H t) = t.(H u)
            t = np.concatenate([x.reshape(-1) for x in tangents]).astype(dtype)
            out["t"], out["u"] = t, (np.roll(t, 1) * np.linspace(0.5, 1.5, t.size)).astype(dtype)
        if full:
            typ = np.concatenate([fd.typical_scale(d).reshape(-1) for d in diff]).astype(dtype)
            out["h"] = (fd.base_step(precision, JACOBIAN_ORDER) * typ).astype(dtype)
    return out


class _Program:
    """The witness program of one function: traced once per argument signature, then run on
    the host or compiled (see the module docstring)."""

    def __init__(self, compute: Callable[..., Any], options: dict | None, inline: bool):
        self.compute, self.options, self.inline = compute, options, inline
        self.runs: dict[Any, Callable[[Any], Any]] = {}

    def __call__(self, *args: Any) -> Any:
        leaves, tree = jax.tree_util.tree_flatten(args)
        # per executor too: a program forced onto XLA (EXECUTOR) is not the host-run one
        key = (tree, tuple((np.shape(x), np.result_type(x)) for x in leaves), EXECUTOR)
        run = self.runs.get(key)
        if run is None:
            run = self.runs[key] = self._prepare(args, len(leaves))
        return run(args)

    def trace(self, args: tuple) -> Any:
        """The program traced at ``args`` (a ``jax.stages.Traced``: ``.jaxpr``, ``.lower()``)."""
        # For a small program the witnesses' own jax.numpy calls are traced inline rather than
        # as nested jits, each of which would be traced anew for every new shape. The user's
        # function is traced apart, with jit on (branches.traced), so its loops stay loops.
        with paused_gc(), jax.disable_jit(self.inline):
            return jax.jit(self.compute, compiler_options=self.options).trace(*args)

    def _prepare(self, args: tuple, n_leaves: int) -> Callable[[Any], Any]:
        traced = self.trace(args)
        if len(traced.jaxpr.jaxpr.invars) == n_leaves:
            on_host, estimate = _placement(traced.jaxpr, EXECUTOR)
            if on_host:
                return _Tiered(traced, estimate[1] if EXECUTOR == "auto" else None, self.options)
        return _compile(traced, self.options, n_leaves)


def _compile(traced: Any, options: dict | None, n_leaves: int) -> Callable[[tuple], Any]:
    """The traced program compiled by XLA, its outputs packed into one array per dtype.

    A check reads a dozen small outputs; fetching each from the device costs more than
    computing it, so the compiled program concatenates them and the host splits them again.
    """
    closed = traced.jaxpr
    out_tree = jax.tree_util.tree_structure(traced.out_info)
    if len(closed.jaxpr.invars) != n_leaves:  # jit dropped an argument: run it as traced
        plain = traced.lower().compile()
        return lambda a: jax.device_get(plain(*a))
    avals = [v.aval for v in closed.jaxpr.outvars]
    groups: dict[Any, list[int]] = {}
    for i, aval in enumerate(avals):
        groups.setdefault(np.dtype(aval.dtype), []).append(i)
    run_jaxpr = jax.extend.core.jaxpr_as_fun(closed)

    def packed(*leaves):
        outs = run_jaxpr(*leaves)
        return [jnp.concatenate([jnp.ravel(outs[i]) for i in idx]) for idx in groups.values()]

    # called through jit (compiled on the first call) rather than ahead of time: jit's own call
    # path checks the arguments in C++, several times faster than a Compiled object's
    compiled = jax.jit(packed, compiler_options=options)
    sizes = {dt: np.cumsum([int(np.prod(avals[i].shape)) for i in idx])[:-1] for dt, idx in groups.items()}

    def run(a: tuple) -> Any:
        outs: list[Any] = [None] * len(avals)
        bufs = jax.device_get(compiled(*jax.tree_util.tree_leaves(a)))
        for (dt, idx), buf in zip(groups.items(), bufs, strict=True):
            for i, part in zip(idx, np.split(buf, sizes[dt]), strict=True):
                outs[i] = part.reshape(avals[i].shape)
        return jax.tree_util.tree_unflatten(out_tree, outs)

    return run


class _Tiered:
    """A program run on the host until the time spent there would have paid for compiling it
    (``budget`` seconds, the estimate of :func:`_estimate`), then compiled: a function checked
    once costs no compilation, one checked many times runs at compiled speed."""

    def __init__(self, traced: Any, budget: float | None, options: dict | None):
        self.traced, self.budget, self.options = traced, budget, options
        self.spent, self.compiled = 0.0, None
        self.out_tree = jax.tree_util.tree_structure(traced.out_info)

    def __call__(self, a: tuple) -> Any:
        if self.compiled is not None:
            return self.compiled(a)
        start = time.perf_counter()
        leaves = jax.tree_util.tree_leaves(a)
        outs = host.evaluate(self.traced.jaxpr, leaves)
        self.spent += time.perf_counter() - start
        if self.budget is not None and self.spent >= self.budget:
            self.compiled = _compile(self.traced, self.options, len(leaves))
        return jax.tree_util.tree_unflatten(self.out_tree, outs)


def _estimate(closed: Any) -> tuple[float, float]:
    """Estimated seconds to run a program on the host, and to compile it with XLA."""
    c = host.cost(closed)
    on_host = c.equations * HOST_SECONDS[0] + c.elements * HOST_SECONDS[1] + c.flops * HOST_SECONDS[2]
    return on_host, COMPILE_SECONDS[0] + c.equations * COMPILE_SECONDS[1]


def _moved_leaf(f: Callable[..., Any], diff: tuple, k: int, h: jax.Array) -> tuple[Any, Any]:
    """f (value, records) at diff with input k moved by -h_i e_i, and by +h_i e_i, per element i.

    The points are built from their index inside :func:`columns`' chunks; the other inputs
    are held fixed, so they stay unbatched.
    """
    d, size = diff[k], diff[k].size
    steps = h.reshape(-1).astype(d.dtype)

    def at(j):
        col = j % size
        step = jnp.where(j < size, -steps[col], steps[col])
        args = list(diff)
        args[k] = d + (step * jax.nn.one_hot(col, size, dtype=d.dtype)).reshape(d.shape)
        return f(*args)

    both = columns(at, 2 * size)
    return jax.tree.map(lambda a: a[:size], both), jax.tree.map(lambda a: a[size:], both)


def _n_points(moves: Sequence[Any]) -> int:
    """How many directional points the moves of :func:`jaxcalc.fd.directional_moves` make."""
    return len(moves) * int(np.shape(moves[0])[0])


def _interleave(blocks: Sequence[jax.Array]) -> jax.Array:
    """One block per input, (scales * 4, ...) each, stacked in the points' order: scale, then
    input, then the input's 4 offsets."""
    tail = blocks[0].shape[1:]
    scales = blocks[0].shape[0] // 4
    stacked = jnp.stack([b.reshape((scales, 4) + tail) for b in blocks], axis=1)
    return stacked.reshape((scales * len(blocks) * 4,) + tail)


def _point_rows(diff: Sequence[np.ndarray], moves: Sequence[np.ndarray], dtype: Any) -> np.ndarray:
    """The directional points as flat rows (NumPy): at input k's points, every input at its
    primal but k, which takes its moves. Rows ordered by scale, then input, then offset."""
    per = moves[0].shape[0]  # 4 points per scale
    scales = per // 4
    v = np.concatenate([np.reshape(d, -1) for d in diff]).astype(dtype, copy=False)
    rows = np.empty((scales, len(diff), 4, v.size), dtype)  # filled in place: one array alive
    rows[...] = v
    start = 0
    for k, mk in enumerate(moves):
        end = start + int(np.size(diff[k]))
        rows[:, k, :, start:end] = mk.reshape(scales, 4, end - start)
        start = end
    return rows.reshape(scales * len(diff) * 4, v.size)


def _along_inputs(
    g: Callable[..., Any], diff: tuple, moves: Sequence[jax.Array], mapped: bool = False
) -> Any:
    """g at the directional points, each input's points vmapped on their own.

    At input k's points only input k moves, so it alone is batched and the others stay
    unbatched: whatever g computes from them (an MLP's first layer, when a later layer moves)
    is computed once, and a product of a moved input with a fixed one is one matrix product,
    not a batch of small ones. The values are g's at the same points as :func:`_point_rows`',
    stacked in their order. ``mapped`` evaluates the points one after another (``lax.map``),
    not batched: a gradient's products of two moved quantities (the kernel and the output's
    cotangent of a convolution, when the kernel moves) then stay unbatched too.
    """
    parts = []
    for k, mk in enumerate(moves):

        def at(s, k=k):
            args = list(diff)
            args[k] = s
            return g(*args)

        parts.append(jax.lax.map(at, mk) if mapped else jax.vmap(at)(mk))
    return jax.tree.map(lambda *blocks: _interleave(blocks), *parts)


def use_host(closed: Any, executor: str | None = None) -> bool:
    """Whether a traced witness program runs on the host (see :data:`EXECUTOR`)."""
    return _placement(closed, executor or EXECUTOR)[0]


def _placement(closed: Any, executor: str) -> tuple[bool, tuple[float, float] | None]:
    """(runs on the host, the :func:`_estimate` behind "auto" or None), walking the program
    once for support and once for cost."""
    if executor not in ("auto", "host", "xla"):
        raise ValueError(f"JAXCALC_WITNESS must be auto, host or xla, not {executor!r}")
    if executor == "xla" or not host.supported(closed):
        return False, None
    if executor == "host":
        return True, None
    estimate = _estimate(closed)
    return estimate[0] <= estimate[1] / 4, estimate


@functools.lru_cache(maxsize=128)
def _program(forward, diff_idx, vjp, jvp, chain, flags):
    from jaxcalc.chain import chain_rule_product

    full, jacfwd, scalar, hessian, quick, fd_jvp, chained, split, per_input, reverse, forward_only = flags

    def compute(primals, ct, tangents, probes):
        # f and the handwritten derivative are each traced once (and kept: branches.traced);
        # every witness transforms those traces, nested jits inlined, not the user's Python.
        c = Context("", inlined(forward, *primals), primals, diff_idx, (), ct, tangents, None)
        diff = c.diff
        v, unravel = ravel_pytree(diff)
        n = v.size
        w: dict[str, Any] = {}
        recorded = with_branches(forward, *primals)  # f's own trace, kept since it was first traced

        def branchy(*d):
            return recorded(*c.with_diff(d))

        center = branchy(*diff)[1]

        # Autodiff's JVP, VJP and Jacobians all come from one linearization of f: its JVP is the
        # linear map, the VJP that map's transpose (what jax.vjp computes), jacfwd its columns.
        if reverse:
            out, pull = jax.vjp(c.f_diff, *diff)
            lin = None
        else:
            out, lin = jax.linearize(c.f_diff, *diff)
            pull = jax.linear_transpose(lin, *diff)
        if forward_only:  # no transpose: the pullback from jacfwd's columns, J^T c = sum_j c_j J_j
            cols = basis_columns(lambda e: ravel_pytree(lin(*unravel(e)))[0], n, v.dtype)  # (n, out.size)

            def pull(c_out):
                return unravel(cols @ jnp.reshape(c_out, -1).astype(cols.dtype))

        if out.ndim == 0:  # a scalar's pullback is ct times its gradient: one transpose serves both
            grad1 = pull(jnp.ones_like(out))
            w["ad_vjp"] = tuple(ct * g for g in grad1)
        else:
            w["ad_vjp"] = pull(ct)
        # a derivative that already binds a kept trace (the user's, checks.user) is used as is
        hand = vjp if getattr(vjp, "binds_a_kept_trace", False) or vjp is None else inlined(vjp, primals, ct)
        if hand is not None:
            w["hw_vjp"] = tuple(hand(primals, ct))
        rows = None  # jacrev's rows: the pullback of each output basis vector, built once
        if forward_only:
            rows = cols.T
        elif out.ndim and (full or lin is None):
            rows = jax.vmap(lambda e: ravel_pytree(pull(e.reshape(out.shape)))[0])(_eye(out.size, out.dtype))
        if lin is not None:
            w["ad_jvp"] = lin(*tangents)
        elif out.ndim == 0:  # reverse mode only: J t = <grad, t>
            w["ad_jvp"] = sum(jnp.vdot(g, t) for g, t in zip(grad1, tangents, strict=True))
        else:  # reverse mode only: J t from the Jacobian's rows
            w["ad_jvp"] = (rows @ ravel_pytree(tuple(tangents))[0]).reshape(out.shape)
        if jvp is not None:
            w["hw_jvp"] = inlined(jvp, primals, tangents)(primals, tangents)

        # Every finite difference of f is one batched evaluation (one per input where the
        # directional points are split): the directional stencil's 4 points per input (fd_jvp;
        # the Hessian checks difference the gradient at the same points), then each Jacobian
        # column's two (x - h e_i, then x + h e_i). The points and steps come in as arguments
        # (``probes``), built on the host.
        steps = fd_jvp or scalar
        moves = probes["moves"] if split else ()
        p_dir = probes["rows"] if steps and not split else None
        m_dir = (_n_points(moves) if split else p_dir.shape[0]) if steps else 0
        if full:
            h = probes["h"]

        m = m_dir + (2 * n if full else 0)
        if m:
            parts = []  # (values, records) of f at each block of points, in the points' order
            on_rows = jax.vmap(lambda u: branchy(*unravel(u)))
            if steps:
                parts.append(_along_inputs(branchy, diff, moves) if split else on_rows(p_dir))
            if full and m * n <= MAX_POINTS and not per_input:  # the column points at once, a row each
                shift = _eye(n, h.dtype) * h  # diag(h)
                parts.append(on_rows(jnp.concatenate([v - shift, v + shift])))
            elif full:  # too many to hold, or per_input: each input's points from their index, chunked
                # One input at a time, the others held fixed: those stay unbatched, so whatever
                # f computes from them alone (an MLP's first layer, when the last is moved) is
                # computed once, not once per point. The columns keep ravel_pytree's order.
                moved = [_moved_leaf(branchy, diff, k, hk) for k, hk in enumerate(unravel(h)) if hk.size]
                parts += [lo for lo, _ in moved] + [hi for _, hi in moved]
            vals, recs = jax.tree.map(lambda *xs: xs[0] if len(xs) == 1 else jnp.concatenate(xs), *parts)
            # f at every FD point and whether each crossed a kink; the host differences them
            w["fd_vals"] = vals
            w["fd_cross"] = crossed(recs, center) if recs else jnp.zeros(m, bool)
        if full:
            if out.ndim == 0:  # a scalar's Jacobian is its gradient
                w["jrev"] = ravel_pytree(grad1)[0]
            else:
                w["jrev"] = rows.reshape(out.shape + (n,))
            if jacfwd:  # jacfwd: the linear map at each input basis vector
                jfwd = basis_columns(lambda e: lin(*unravel(e)), n, v.dtype)
                w["jfwd"] = jfwd
        if chained:
            k = c.diff_idx[0]
            outer, inner = chain(primals)
            w["chain_value"] = outer(inner(primals[k]))
            w["value"] = c.forward(*primals)
            for mode in ("forward", "reverse"):
                w[f"chain_{mode}"] = chain_rule_product(outer, inner, primals[k], mode=mode)
        if scalar:
            # With a handwritten derivative the Hessian checks differentiate IT: its directional
            # derivative against its own finite difference, and its Jacobian's symmetry.
            if hand is not None and getattr(vjp, "traceable", True):

                def grad_leaves(*d):
                    one = jnp.ones((), v.dtype)
                    return ravel_pytree(tuple(hand(c.with_diff(d), one)))[0]
            elif forward_only:  # the gradient from jacfwd, H t by forward over it

                def grad_leaves(*d):
                    return ravel_pytree(jax.jacfwd(c.f_diff, argnums=tuple(range(len(d))))(*d))[0]
            else:

                def grad_leaves(*d):
                    return ravel_pytree(jax.grad(c.f_diff, argnums=tuple(range(len(d))))(*d))[0]

            def grad(u):
                return grad_leaves(*unravel(u))

            t = probes["t"]

            # Forward over the gradient, u -> H u: one vmapped JVP of the gradient whose primal,
            # unbatched, is computed once (tracing it costs about half of linearizing first).
            # Through a custom_vjp, reverse over the gradient instead: u -> u^T H.
            def tangent(p, u):
                if reverse:
                    return grad(p), jax.grad(lambda y: jnp.vdot(grad(y), u))(p)
                return jax.jvp(grad, (p,), (u,))

            def hess(u):
                return tangent(v, u)[1]

            if hessian and n <= COLUMN_BATCH and not per_input:  # the witnesses' ``joint``
                # One vmapped JVP of the gradient, traced once, gives both: rows (v, e_j) give
                # H e_j, rows (p, 0) the gradient at each FD point. Tracing the gradient once
                # instead of twice costs n extra gradient evaluations, which small inputs afford.
                at = jnp.concatenate([jnp.broadcast_to(v, (n, n)), p_dir])
                along = jnp.concatenate([_eye(n, v.dtype), jnp.zeros(p_dir.shape, v.dtype)])
                # the host takes H from the first n rows, the FD gradients from the rest
                w["grad_at"], w["hessian"] = jax.vmap(tangent)(at, along)
            else:
                if split:
                    w["grad_at"] = _along_inputs(grad_leaves, diff, moves, mapped=per_input)
                else:
                    w["grad_at"] = jax.vmap(grad)(p_dir)
                if hessian:  # H's rows are H e_j (jacfwd of the gradient); the host contracts H t
                    w["hessian"] = basis_columns(hess, n, v.dtype)
                else:
                    w["hvp"], w["hu"] = jax.vmap(hess)(jnp.stack([t, probes["u"]]))
        return w

    # On CPU, skipping LLVM's heavy optimizations cuts compile time by a third to a half and
    # changes no rounding (HLO-level rewrites still run); it slows the compiled code.
    options = _FAST_COMPILE if quick and jax.default_backend() == "cpu" else None
    return _Program(compute, options, quick)
