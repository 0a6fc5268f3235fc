"""Kink detection: which branch every piecewise primitive of a function takes at a point.

A finite difference is only a witness where the function is smooth between its stencil
points. A function built from JAX primitives is smooth there unless one of its piecewise
primitives (a comparison, ``max``/``min``, ``abs``, ``sign``, rounding, ``clamp``, an arg- or
reduce-max, a ``cond`` index) switches branch between two of the points. :func:`with_branches`
evaluates a function's jaxpr equation by equation and returns, next to its value, the branch
each such primitive took; two points whose branch records differ lie on two sides of a kink.
This finds the crossing exactly, however small its effect on the value (one ReLU unit among
thousands), where comparing one-sided slopes would not.
"""

from __future__ import annotations

import contextlib
import functools
import gc
import threading
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.extend import core

__all__ = ["with_branches", "crossed", "inlined", "traced"]


def _outputs(invals, outs, params):
    return [outs[0]]


def _greater(invals, outs, params):
    return [invals[0] > invals[1]]


def _nonneg(invals, outs, params):
    return [invals[0] >= 0]


def _clamp(invals, outs, params):
    lo, x, hi = invals
    return [x < lo, x > hi]


def _reduce_extreme(invals, outs, params):
    return [invals[0] == lax.expand_dims(outs[0], params["axes"])]


def _to_integer(invals, outs, params):
    # a float (or complex) rounded to an integer or bool is piecewise constant; float to float,
    # and integer to anything, are smooth or exact
    rounds = jnp.issubdtype(invals[0].dtype, jnp.inexact) and not jnp.issubdtype(outs[0].dtype, jnp.inexact)
    return [outs[0]] if rounds else []


def _sort_order(invals, outs, params):
    # which element lands where: a sort's derivative routes each tangent along this
    # permutation, which changes where two keys cross (a near-tie)
    dim, keys = params["dimension"], params["num_keys"]
    iota = lax.broadcasted_iota(np.int32, np.shape(invals[0]), dim)
    return [lax.sort((*invals[:keys], iota), dimension=dim, num_keys=keys, is_stable=True)[-1]]


def _top_k(invals, outs, params):
    return [outs[1]]  # the indices of the k largest


def _running_extreme(invals, outs, params):
    return [outs[0] == invals[0]]  # where the running max (min) is the element itself


def _remainder(invals, outs, params):
    # x rem y jumps by y where x / y crosses an integer: the quotient's integer part
    x, y = invals
    return [lax.round((x - outs[0]) / y)] if jnp.issubdtype(outs[0].dtype, jnp.inexact) else []


# Primitive name -> the branch decisions it takes (bool or integer arrays).
_BRANCHES: dict[str, Callable[..., list]] = {
    **{p: _outputs for p in ("gt", "lt", "ge", "le", "eq", "ne", "sign", "floor", "ceil", "round")},
    **{p: _outputs for p in ("argmax", "argmin", "is_finite")},
    "max": _greater,
    "min": _greater,
    "abs": _nonneg,
    "clamp": _clamp,
    "reduce_max": _reduce_extreme,
    "reduce_min": _reduce_extreme,
    "convert_element_type": _to_integer,
    "sort": _sort_order,
    "top_k": _top_k,
    "cummax": _running_extreme,
    "cummin": _running_extreme,
    "rem": _remainder,
}


# Call-like primitives evaluate their inner jaxpr once, so it is inlined and recorded too.
# Loops (scan, while) and cond branches are bound as they are: their inner kinks go unrecorded.
_CALLS = (
    "jit",
    "pjit",
    "closed_call",
    "core_call",
    "custom_jvp_call",
    "custom_vjp_call",
    "checkpoint",
    "remat",
    "remat2",
)
# The calls that change nothing but compilation: inlined where a function is to be
# differentiated (custom derivative rules and checkpoints are kept).
_PLAIN_CALLS = ("jit", "pjit", "closed_call", "core_call")


def sub_jaxprs(eqn) -> list[core.Jaxpr]:
    """Every jaxpr an equation's parameters hold (call bodies, cond branches, loop bodies)."""
    out = []
    for v in eqn.params.values():
        for x in v if isinstance(v, (tuple, list)) else (v,):
            if isinstance(x, core.ClosedJaxpr):
                out.append(x.jaxpr)
            elif isinstance(x, core.Jaxpr):
                out.append(x)
    return out


def _sub_jaxpr(eqn, calls: tuple[str, ...] = _CALLS) -> Any:
    """The closed jaxpr a call-like equation (jit, custom_jvp/vjp call, closed call) evaluates."""
    if eqn.primitive.name not in calls:
        return None
    for key in ("jaxpr", "call_jaxpr"):
        sub = eqn.params.get(key)
        if isinstance(sub, core.ClosedJaxpr):
            return sub
        if isinstance(sub, core.Jaxpr):
            return core.ClosedJaxpr(sub, ())
    return None


def _eval(jaxpr, consts, args, record: list | None, calls: tuple[str, ...] = _CALLS) -> list:
    """Evaluate a jaxpr by binding its equations, inlining ``calls``; with ``record`` (a list),
    append the branch decisions of its piecewise primitives."""
    env: dict = {}

    def read(v):
        return v.val if isinstance(v, core.Literal) else env[v]

    env.update(zip(jaxpr.constvars, consts, strict=True))
    env.update(zip(jaxpr.invars, args, strict=True))
    for eqn in jaxpr.eqns:
        invals = [read(v) for v in eqn.invars]
        name = eqn.primitive.name
        sub = _sub_jaxpr(eqn, calls)
        if sub is not None:
            outs = _eval(sub.jaxpr, sub.consts, invals, record, calls)
        else:
            bound = eqn.primitive.get_bind_params(eqn.params)  # jax < 0.9: (subfuns, params)
            subfuns, params = bound if isinstance(bound, tuple) else ((), bound)
            outs = eqn.primitive.bind(*subfuns, *invals, **params)
            outs = outs if eqn.primitive.multiple_results else [outs]
            if record is None:
                pass
            elif name == "cond":
                record.append(invals[0])
            elif name in _BRANCHES:
                record.extend(_BRANCHES[name](invals, outs, eqn.params))
        env.update(zip(eqn.outvars, outs, strict=True))
    return [read(v) for v in jaxpr.outvars]


def traced(f: Callable[..., Any], *example: Any, inline_jit: bool = False) -> tuple[core.ClosedJaxpr, Any]:
    """``(jaxpr, out_shape)`` of f at the shapes and dtypes of ``example`` (arrays, tracers or
    ShapeDtypeStructs, any pytree).

    Traces are kept per function, argument signature and x64 setting, so a function checked
    once is traced once: its shape, its value and its derivatives all come from one trace (the
    first one made is kept). A function that cannot be hashed is traced every time.
    ``inline_jit`` traces f's nested jits inline (``jax.disable_jit``): cheaper for a function
    without loops, but it unrolls ``lax.scan`` and ``fori_loop``, so it is off by default.
    """
    leaves, tree = jax.tree_util.tree_flatten(example)
    # the key from each leaf's own shape and dtype (cheap; canonicalized only on a miss)
    kinds = tuple((np.shape(x), x.dtype) if hasattr(x, "dtype") else (np.shape(x), type(x)) for x in leaves)
    key = (f, tree, kinds, bool(jax.config.jax_enable_x64))

    def sig():
        return tuple(jax.ShapeDtypeStruct(jnp.shape(x), jnp.result_type(x)) for x in leaves)

    try:
        with _LOCK:
            hit = _TRACES.get(key)
    except TypeError:  # f is unhashable
        return _trace(f, tree, sig(), inline_jit)
    if hit is None:
        hit = _trace(f, tree, sig(), inline_jit)
        with _LOCK:  # cases are checked on worker threads
            hit = _TRACES.setdefault(key, hit)
            while len(_TRACES) > 256:
                _TRACES.pop(next(iter(_TRACES)))
    return hit


_TRACES: dict[Any, tuple[core.ClosedJaxpr, Any]] = {}
_LOCK = threading.Lock()


def has_loops(jaxpr: core.Jaxpr) -> bool:
    """Whether a jaxpr holds a loop (scan, while), at any depth."""
    return uses(jaxpr, ("scan", "while"))


@functools.lru_cache(maxsize=256)
def uses(jaxpr: core.Jaxpr, names: tuple[str, ...]) -> bool:
    """Whether a jaxpr binds any of the primitives ``names`` (a tuple), at any depth; cached
    per jaxpr, which every check of a function asks again."""
    return any(
        eqn.primitive.name in names or any(uses(sub, names) for sub in sub_jaxprs(eqn)) for eqn in jaxpr.eqns
    )


@functools.lru_cache(maxsize=256)
def float_dtypes(jaxpr: core.Jaxpr) -> frozenset[np.dtype]:
    """The floating-point dtypes of the values a jaxpr computes from its inputs, at any depth;
    cached per jaxpr. A float64 function whose softmax runs in float32 (as
    ``jax.nn.dot_product_attention``'s does) holds float32 here, so its precision is
    float32's; a float32 constant that only enters float64 arithmetic does not count."""
    return frozenset(_computed_floats(jaxpr, tuple(range(len(jaxpr.invars)))))


def _computed_floats(jaxpr: core.Jaxpr, live_inputs: tuple[int, ...]) -> set[np.dtype]:
    live = {jaxpr.invars[i] for i in live_inputs}
    out: set[np.dtype] = set()
    for eqn in jaxpr.eqns:
        if not any(isinstance(v, core.Var) and v in live for v in eqn.invars):
            continue
        live.update(eqn.outvars)
        for v in eqn.outvars:
            dtype = getattr(v.aval, "dtype", None)
            if dtype is not None and jnp.issubdtype(dtype, jnp.floating):
                out.add(np.dtype(dtype))
        subs = sub_jaxprs(eqn)
        if eqn.primitive.name in _CALLS and len(subs) == 1 and len(subs[0].invars) == len(eqn.invars):
            # a call's inputs are the equation's, one for one
            live_in = tuple(i for i, v in enumerate(eqn.invars) if isinstance(v, core.Var) and v in live)
            out |= _computed_floats(subs[0], live_in)
            continue
        for sub in subs:  # a loop's or a branch's inputs all taken as live (an over-count)
            out |= _computed_floats(sub, tuple(range(len(sub.invars))))
    return out


_GC = {"depth": 0, "was_enabled": False}
_GC_LOCK = threading.Lock()


@contextlib.contextmanager
def paused_gc():
    """Python's cyclic garbage collector paused while the block runs (nested and thread-safe;
    it is left as it was found). Tracing allocates hundreds of thousands of small objects, and
    each full collection walks every object JAX's import made: in a fresh process that took a
    seventh of checking 10 small functions. The garbage is collected after, as usual."""
    with _GC_LOCK:
        if _GC["depth"] == 0:
            _GC["was_enabled"] = gc.isenabled()
            gc.disable()
        _GC["depth"] += 1
    try:
        yield
    finally:
        with _GC_LOCK:
            _GC["depth"] -= 1
            if _GC["depth"] == 0 and _GC["was_enabled"]:
                gc.enable()


def _trace(f, tree, sig, inline_jit):
    def flat(*leaves):
        return f(*jax.tree_util.tree_unflatten(tree, leaves))

    with paused_gc(), jax.disable_jit(inline_jit):  # by default loops stay loops, even inside a witness trace
        closed, out_shape = jax.make_jaxpr(flat, return_shape=True)(*sig)
    return closed.replace(jaxpr=live(closed.jaxpr)), out_shape


def live(jaxpr: core.Jaxpr) -> core.Jaxpr:
    """The jaxpr without its dead equations (those no output depends on, and without effects).

    ``jax.grad``'s trace keeps the primal value and the residuals no cotangent uses (a third of
    a softmax loss's gradient); every witness transforms the trace, so each dead equation would
    be differentiated, batched and run again and again. Dead code cannot change the value, so a
    comparison in it is no kink either. Plain calls (nested jits) are cleaned inside too.
    """
    used = {v for v in jaxpr.outvars if not isinstance(v, core.Literal)}
    kept = []
    for eqn in reversed(jaxpr.eqns):
        if not eqn.effects and not any(v in used for v in eqn.outvars):
            continue
        sub = _sub_jaxpr(eqn, _PLAIN_CALLS)
        if sub is not None:
            key = "jaxpr" if "jaxpr" in eqn.params else "call_jaxpr"
            inner = live(sub.jaxpr)
            if len(inner.eqns) < len(sub.jaxpr.eqns):
                new = sub.replace(jaxpr=inner) if isinstance(eqn.params[key], core.ClosedJaxpr) else inner
                eqn = eqn.replace(params={**eqn.params, key: new})
        kept.append(eqn)
        used.update(v for v in eqn.invars if not isinstance(v, core.Literal))
    return jaxpr if len(kept) == len(jaxpr.eqns) else jaxpr.replace(eqns=kept[::-1])


def _run(f: Callable[..., Any], example: tuple, record: bool, calls: tuple[str, ...]) -> Callable[..., Any]:
    jx, out_shape = traced(f, *example)
    tree = jax.tree_util.tree_structure(out_shape)

    def g(*args):
        rec: list | None = [] if record else None
        outs = _eval(jx.jaxpr, jx.consts, jax.tree_util.tree_leaves(args), rec, calls)
        value = jax.tree_util.tree_unflatten(tree, outs)
        return (value, tuple(rec)) if record else value

    return g


def with_branches(f: Callable[..., Any], *example: Any) -> Callable[..., tuple[Any, tuple]]:
    """``g(*args) -> (f(*args), branches)``: f's value and the branch record of its piecewise ops.

    ``example`` fixes the argument shapes (tracers are fine); g may then be vmapped or jitted.
    """
    return _run(f, example, True, _CALLS)


def inlined(f: Callable[..., Any], *example: Any) -> Callable[..., Any]:
    """f traced once at ``example``'s shapes (:func:`traced`), as a function that binds its
    primitives directly.

    Nested ``jit`` calls (every ``jax.numpy`` function is one) are inlined, custom derivative
    rules kept. Transforming the result (``vjp``, ``jvp``, ``vmap``) costs a fraction of
    transforming f itself, which re-runs f's Python and every nested call's tracing machinery.
    """
    return _run(f, example, False, _PLAIN_CALLS)


def crossed(rows: tuple, center: tuple) -> jax.Array:
    """Per point, True when its branch record differs from ``center``'s: the segment between
    them crosses a kink.

    ``rows`` holds the records of many points, stacked on a leading axis (a vmapped
    :func:`with_branches`); ``center`` those of one point. Returns a bool array, one per point.
    """
    out = None
    for x, y in zip(rows, center, strict=True):
        differs = x != y
        any_ = jnp.any(differs, axis=tuple(range(1, differs.ndim))) if differs.ndim > 1 else differs
        out = any_ if out is None else out | any_
    return out
