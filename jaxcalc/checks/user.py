"""The checker on users' own code: pytree arguments, ``argnums`` as in ``jax.grad``, named elements.

:func:`check_function` flattens every argument to its leaves, names each leaf by parameter
name and pytree path (``params['W1']``), differentiates the float leaves of the arguments
``argnums`` selects (integer leaves never), adapts the user's ``grad_fn`` / ``vjp_fn`` /
``jvp_fn`` (structured like ``jax.grad(f, argnums)``) to those leaves, and hands everything to
:func:`jaxcalc.checks.core.run_checks`. A gradient of the wrong structure or shape is reported
as a failed ``vjp`` row before anything is computed. bfloat16 and float16 arguments go to
:mod:`jaxcalc.checks.lowprec` instead, where finite differences are meaningless.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.tree_util import keystr, tree_flatten_with_path, tree_unflatten

from jaxcalc.checks.branches import has_loops, inlined, traced
from jaxcalc.checks.core import run_checks
from jaxcalc.checks.report import CheckResult, Report
from jaxcalc.numerics import column, reference_mode

__all__ = ["check_function"]

# The second word of the probes' seed (see check_function): "jc" in ASCII.
PROBE_STREAM = 0x6A63


@functools.lru_cache(maxsize=64)
def _float_dtype(dtype: np.dtype) -> bool:
    return bool(jnp.issubdtype(dtype, jnp.floating))  # bfloat16 too, which NumPy calls no float


def _is_float(x: Any) -> bool:
    return _float_dtype(np.asarray(x).dtype)


class _Flat(NamedTuple):
    """f as a function of all argument leaves, flattened in order; hashable, so the compiled
    witness program of a function is reused when it is checked again."""

    f: Callable[..., Any]
    treedefs: tuple[Any, ...]

    def args(self, leaves: Sequence[Any]) -> list[Any]:
        out, start = [], 0
        for t in self.treedefs:
            out.append(tree_unflatten(t, list(leaves[start : start + t.num_leaves])))
            start += t.num_leaves
        return out

    def __call__(self, *leaves: Any) -> Any:
        return self.f(*self.args(leaves))


class _Raw(NamedTuple):
    """The user's grad_fn / vjp_fn called on argument leaves, its output as the user gives it."""

    fn: Callable[..., Any]
    flat: _Flat
    kind: str  # "grad" (grad_fn(*args)) or "vjp" (vjp_fn(args, ct))

    def __call__(self, leaves: tuple, ct: jax.Array) -> Any:
        args = self.flat.args(leaves)
        return self.fn(*args) if self.kind == "grad" else self.fn(tuple(args), ct)


class _Derivative(NamedTuple):
    """The user's grad_fn / vjp_fn as a pullback over the differentiable leaves.

    ``picks[j]`` is the position, among the leaves of the user's output, of differentiable
    leaf j's derivative. The user's function is traced once (``branches.traced``), for its
    structure and for every witness.
    """

    raw: _Raw
    picks: tuple[int, ...]
    binds_a_kept_trace = True  # the witnesses use it as it is, without tracing it again
    traceable = True  # JAX can differentiate it: the Hessian checks differentiate it

    def __call__(self, leaves: tuple, ct: jax.Array) -> tuple:
        got = jax.tree_util.tree_leaves(inlined(self.raw, tuple(leaves), ct)(tuple(leaves), ct))
        grad = self.raw.kind == "grad"
        return tuple((ct * got[p]) if grad else got[p] for p in self.picks)


# What JAX raises where a function needs concrete values: NumPy on a tracer, float(), a Python
# branch on an array. Such a derivative is called on the host instead (_HostDerivative).
_NEEDS_VALUES = (
    jax.errors.TracerArrayConversionError,
    jax.errors.ConcretizationTypeError,
    jax.errors.TracerIntegerConversionError,
    jax.errors.TracerBoolConversionError,
)


class _HostDerivative(NamedTuple):
    """A handwritten grad_fn / vjp_fn JAX cannot trace (written in NumPy), called on the host.

    Inside the witness program it is a ``jax.pure_callback`` that receives NumPy arrays, so
    its values are compared like any other; JAX cannot differentiate it, so the Hessian checks
    are autodiff's own (``traceable`` is False and their rows say so).
    """

    raw: _Raw
    picks: tuple[int, ...]
    shapes: tuple[tuple[tuple[int, ...], str], ...]  # (shape, dtype) of each picked leaf
    binds_a_kept_trace = True
    traceable = False

    def _host(self, leaves: tuple, ct: np.ndarray) -> tuple:
        got = jax.tree_util.tree_leaves(self.raw(tuple(np.asarray(x) for x in leaves), np.asarray(ct)))
        return tuple(np.asarray(got[p], dtype) for p, (_, dtype) in zip(self.picks, self.shapes, strict=True))

    def __call__(self, leaves: tuple, ct: jax.Array) -> tuple:
        spec = tuple(jax.ShapeDtypeStruct(shape, dtype) for shape, dtype in self.shapes)
        got = jax.pure_callback(self._host, spec, tuple(leaves), ct, vmap_method="sequential")
        return tuple(ct * g for g in got) if self.raw.kind == "grad" else tuple(got)


class _Tangent(NamedTuple):
    """The user's jvp_fn over leaves: tangents rebuilt into the structure of the argnums args."""

    fn: Callable[..., Any]
    flat: _Flat
    argnums: tuple[int, ...]
    single: bool
    diff_idx: tuple[int, ...]

    def __call__(self, leaves: tuple, tangents: tuple) -> jax.Array:
        full = [np.zeros_like(x) if isinstance(x, np.ndarray) else jnp.zeros_like(x) for x in leaves]
        for i, t in zip(self.diff_idx, tangents, strict=True):
            full[i] = t
        targs = self.flat.args(full)
        tree = tuple(targs[a] for a in self.argnums)
        return self.fn(tuple(self.flat.args(leaves)), tree[0] if self.single else tree)


class _HostTangent(NamedTuple):
    """A handwritten jvp_fn JAX cannot trace (written in NumPy), as a ``jax.pure_callback``."""

    tangent: _Tangent
    shape: tuple[int, ...]
    dtype: str

    def _host(self, leaves: tuple, tangents: tuple) -> np.ndarray:
        as_np = tuple(np.asarray(x) for x in leaves)
        return np.asarray(self.tangent(as_np, tuple(np.asarray(t) for t in tangents)), self.dtype)

    def __call__(self, leaves: tuple, tangents: tuple) -> jax.Array:
        spec = jax.ShapeDtypeStruct(self.shape, self.dtype)
        return jax.pure_callback(self._host, spec, tuple(leaves), tuple(tangents), vmap_method="sequential")


def _param_names(f: Callable[..., Any], n: int) -> list[str]:
    """Names of f's first n positional parameters (``arg{i}`` where there is none)."""
    try:
        names = _positional_names(f)
    except TypeError:  # an unhashable callable: not cached
        names = _positional_names.__wrapped__(f)
    return [names[i] if i < len(names) else f"arg{i}" for i in range(n)]


@functools.lru_cache(maxsize=128)
def _positional_names(f: Callable[..., Any]) -> tuple[str, ...]:
    try:
        params = list(inspect.signature(f).parameters.values())
    except (TypeError, ValueError):
        params = []
    return tuple(p.name for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD))


def _picks(
    out_tree: Any, expected: list[tuple[int, str]], allowed: list[tuple[int, str]], single: bool
) -> tuple[tuple[int, ...] | None, str]:
    """Map each differentiable leaf (argnums position k, path) to the user output's leaf.

    Returns (picks, '') or (None, what is wrong). ``allowed`` are all the leaves of the
    differentiated arguments: entries for their integer leaves (zeros, float0) may be present
    or absent, and an entry for anything else is an error, not silently left unchecked.
    """
    flat, _ = tree_flatten_with_path(out_tree)
    where = {keystr(p): i for i, (p, _) in enumerate(flat)}
    forms = [True, False] if single else [False, True]  # argnums=None with one arg: both accepted
    for bare in forms:
        keys = [path if bare else f"[{k}]{path}" for k, path in expected]
        if all(key in where for key in keys):
            known = {path if bare else f"[{k}]{path}" for k, path in allowed}
            extra = [key for key in where if key not in known]
            if extra:
                where_ = extra[0] or "the top"
                return None, f"has an entry at {where_} that is not a differentiated argument's leaf"
            return tuple(where[key] for key in keys), ""
    keys = [path if single else f"[{k}]{path}" for k, path in expected]
    missing = next(key for key in keys if key not in where)
    return None, f"has no entry at {missing or 'the top'}; it holds {', '.join(where) or 'nothing'}"


def check_function(
    f: Callable[..., jax.Array],
    args: Sequence[Any],
    grad_fn: Callable[..., Any] | None = None,
    *,
    argnums: int | Sequence[int] | None = None,
    vjp_fn: Callable[[tuple, jax.Array], Any] | None = None,
    jvp_fn: Callable[[tuple, Any], jax.Array] | None = None,
    checks: str | Sequence[str] | None = None,
    mode: str = "full",
    dtype: Any | None = None,
    name: str | None = None,
    seed: int = 0,
) -> Report:
    """Check a user's function ``f(*args)`` and its handwritten derivative (DESIGN §4, §8).

    ``args`` are f's positional arguments, each any pytree (dicts, tuples, lists, NamedTuples,
    nested). ``argnums`` means what it means for ``jax.grad`` (an int or a tuple); ``None``
    differentiates every argument holding floats, gradients then a tuple (a bare gradient is
    accepted when there is one such argument). Integer leaves are never differentiated.

    The handwritten derivative, one of:
    ``grad_fn(*args)`` (scalar f) structured like ``jax.grad(f, argnums=argnums)(*args)``;
    ``vjp_fn(args, ct)`` returning the cotangents in that same structure;
    ``jvp_fn(args, tangents)`` (tangents structured like the gradient) returning J t.
    ``checks`` selects checks by name or excludes them as ``"-name"`` (see
    :data:`jaxcalc.checks.CHECKS`); ``mode="fast"`` skips the per-element Jacobian and the full
    Hessian. ``dtype`` (default: the first differentiable leaf's) rounds the float leaves; in
    bfloat16 / float16 the derivative is compared with float64 autodiff instead of finite
    differences (:mod:`jaxcalc.checks.lowprec`). Probes come from ``numpy.random.default_rng((seed,
    PROBE_STREAM))``: reproducible, and never the stream a user's own ``default_rng(seed)`` draws.
    Elements are named by parameter name and pytree path, e.g. ``params['W1'][2, 10]``.
    """
    if grad_fn is not None and vjp_fn is not None:
        raise ValueError("give grad_fn or vjp_fn, not both")
    if not isinstance(args, (tuple, list)):
        args = (args,)
    name = name or getattr(f, "__name__", "function")
    pnames = _param_names(f, len(args))
    leaves, names, owner, treedefs = [], [], [], []
    for i, a in enumerate(args):
        flat, tdef = tree_flatten_with_path(a)
        treedefs.append(tdef)
        for path, leaf in flat:
            leaves.append(np.asarray(leaf))
            names.append((i, keystr(path)))
            owner.append(i)
    holds_float = sorted({owner[j] for j, x in enumerate(leaves) if _is_float(x)})
    single = isinstance(argnums, int) or (argnums is None and len(holds_float) == 1)
    if argnums is None:
        nums = tuple(holds_float)
    else:
        nums = (argnums,) if isinstance(argnums, int) else tuple(argnums)
        if any(not -len(args) <= a < len(args) for a in nums):
            raise ValueError(f"argnums {argnums} out of range for {len(args)} arguments")
        nums = tuple(a % len(args) for a in nums)
    diff_idx = tuple(j for j, x in enumerate(leaves) if owner[j] in nums and _is_float(x))
    if not diff_idx:
        raise ValueError("check_function needs at least one floating-point leaf to differentiate")
    dtype = np.dtype(dtype) if dtype is not None else leaves[diff_idx[0]].dtype
    col = column(dtype)
    leaves = [x.astype(dtype, copy=False) if _is_float(x) else x for x in leaves]
    flat_f = _Flat(f, tuple(treedefs))
    label = [f"{pnames[i]}{path}" for i, path in names]
    expected = [(nums.index(names[j][0]), names[j][1]) for j in diff_idx]
    allowed = [(nums.index(i), path) for i, path in names if i in nums]

    notes: list[CheckResult] = []
    vjp = None
    user = grad_fn if grad_fn is not None else vjp_fn
    with reference_mode(dtype if not col.low else "float32"):
        sample = [jax.ShapeDtypeStruct(x.shape, x.dtype) for x in leaves]
        f_jaxpr, out = traced(flat_f, *sample)
        if not isinstance(out, jax.ShapeDtypeStruct):
            kind = type(out).__name__
            raise ValueError(
                f"f must return one array, but it returns a {kind}; check each output on its own"
            )
        if not _float_dtype(np.dtype(out.dtype)):
            raise ValueError(f"f must return floats, but it returns {np.dtype(out.dtype).name}")
        if grad_fn is not None and out.shape != ():
            raise ValueError(f"grad_fn needs a scalar f, but f returns shape {out.shape}; give vjp_fn")
        # Probes from NumPy's seeded generator: as reproducible as jax.random, and drawing them
        # compiles nothing (each eager jax.random call would compile its own program).
        # Not default_rng(seed) itself: arguments drawn from that same stream would make the
        # tangent equal the first argument, along which a scale-invariant f (a cosine, a norm
        # layer, a standard deviation) has J t = 0 and H t = 0, pure rounding to compare.
        rng = np.random.default_rng((seed, PROBE_STREAM))
        # A scalar loss is pulled back with ct = 1, so the rows show the gradient's own values.
        ct = rng.standard_normal(out.shape) if out.shape else np.ones(())
        tangents = [rng.standard_normal(leaves[j].shape) for j in diff_idx]
        if user is not None:
            raw = _Raw(user, flat_f, "grad" if grad_fn is not None else "vjp")
            # Where f has no loop, the derivative is traced with its nested jits inline: no
            # per-shape tracing of every jax.numpy function it calls.
            ct_aval = jax.ShapeDtypeStruct(out.shape, dtype)
            try:
                shaped = traced(raw, tuple(sample), ct_aval, inline_jit=not has_loops(f_jaxpr.jaxpr))[1]
                on_host = False
            except _NEEDS_VALUES:  # written in NumPy: its structure from one call on the host
                shaped, on_host = raw(tuple(leaves), np.asarray(ct, dtype)), True
            kind = raw.kind
            picks, problem = _picks(shaped, expected, allowed, single)
            side = "handwritten gradient" if kind == "grad" else "handwritten VJP"
            if picks is None:
                notes.append(_note(name, f"{side} {problem}", "structure"))
            else:
                got = jax.tree_util.tree_leaves(shaped)
                bad = [
                    (j, np.shape(got[p]))
                    for j, p in zip(diff_idx, picks, strict=True)
                    if np.shape(got[p]) != leaves[j].shape
                ]
                for j, shape in bad[:1]:
                    hint = ": transposed?" if shape == leaves[j].shape[::-1] and len(shape) > 1 else ""
                    notes.append(_note(name, f"shape {shape}, expected {leaves[j].shape}{hint}", label[j]))
                if not bad and on_host:
                    vjp = _HostDerivative(raw, picks, tuple((np.shape(got[p]), dtype.name) for p in picks))
                elif not bad:
                    vjp = _Derivative(raw, picks)
        jvp = None
        if jvp_fn is not None:
            jvp = _Tangent(jvp_fn, flat_f, nums, single, diff_idx)
            t_aval = tuple(jax.ShapeDtypeStruct(t.shape, dtype) for t in tangents)
            try:
                traced(jvp, tuple(sample), t_aval)
            except _NEEDS_VALUES:  # written in NumPy: called on the host
                got = np.asarray(jvp(tuple(leaves), tuple(np.asarray(t, dtype) for t in tangents)))
                jvp = _HostTangent(jvp, got.shape, dtype.name)
    if col.low:
        from jaxcalc.checks.lowprec import check_low_precision

        return check_low_precision(
            name, flat_f, leaves, diff_idx, [label[j] for j in diff_idx], ct, tangents, vjp, jvp, dtype, notes
        )
    return run_checks(
        name,
        flat_f,
        leaves,
        diff_idx=diff_idx,
        names=[label[j] for j in diff_idx],
        ct=ct,
        tangents=tangents,
        vjp=vjp,
        jvp=jvp,
        mode=mode,
        dtype=dtype,
        checks=checks,
        grad_names=[label[j] for j in diff_idx],
        notes=notes,
    )


def _note(name: str, what: str, where: str) -> CheckResult:
    """A failed ``vjp`` row for a derivative that cannot be compared at all (structure, shape)."""
    nan = float("nan")
    return CheckResult(
        name, "vjp", "handwritten", "autodiff", float("inf"), 0.0, where, nan, nan, "FAIL", what
    )
