"""Run a jaxpr on the host with NumPy: the witness program of a small function, never compiled.

Checking a function of a few dozen inputs, XLA spends seconds compiling the witness program and
microseconds running it. :func:`evaluate` runs the same jaxpr, the program JAX traced (its
``jax.vjp``, ``jax.jvp``, ``vmap`` and finite differences already in it), equation by equation
with NumPy. The derivatives are JAX's own; only the arithmetic moves to NumPy.

* Every result is cast to the dtype its equation declares, so a float32 program stays float32
  and integer and boolean values keep their widths.
* Only float32 / float64 programs run here. A program holding bfloat16 or float16 values, an
  effect (callbacks, I/O), or a primitive without a rule below is not :func:`supported`, and
  the caller compiles it with XLA instead, so a missing rule costs time, never a wrong answer.
* :func:`cost` measures the work (elements produced, multiply-adds, equations run), so the
  caller can choose XLA where compiling is cheaper than running on the host.

Rounding differs from XLA's by a few units in the last place (another summation order, another
``exp``), far inside every tolerance the checks use; ``tests/test_host.py`` compares both
executors on every catalogue case's witness program and on each rule.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import numpy as np
from jax import lax
from jax.extend import core

from jaxcalc.checks.branches import _CALLS as _BRANCH_CALLS
from jaxcalc.checks.branches import _sub_jaxpr, sub_jaxprs

__all__ = ["Cost", "cost", "evaluate", "supported", "unsupported"]

_MODE = lax.GatherScatterMode
_FLOATS = (np.dtype(np.float32), np.dtype(np.float64))


# ----------------------------------------------------------------------------- rules


def _special(name: str) -> Callable[..., Any]:
    def rule(x, **_):
        import scipy.special  # imported on first use: most programs never need it

        return getattr(scipy.special, name)(x)

    return rule


def _logistic(x, **_):
    e = np.exp(-np.abs(x))
    return np.where(x >= 0, 1 / (1 + e), e / (1 + e))


def _round(x, rounding_method, **_):
    if int(rounding_method) == 1:  # to nearest even
        return np.round(x)
    return np.sign(x) * np.floor(np.abs(x) + 0.5)  # away from zero


def _div(x, y, **_):
    if np.issubdtype(x.dtype, np.integer):  # C division: the quotient rounds toward zero
        q = np.floor_divide(x, y)
        return q + ((np.remainder(x, y) != 0) & ((x < 0) != (y < 0)))
    return np.divide(x, y)


def _integer_pow(x, y, **_):
    return np.power(x, y) if y >= 0 else 1 / np.power(x, -y)


def _select_n(pred, *cases, **_):
    if len(cases) == 1:
        return cases[0]
    if pred.dtype == np.bool_:
        return np.where(pred, cases[1], cases[0])
    return np.choose(pred, np.broadcast_arrays(*cases))


def _iota(*, dtype, shape, dimension, **_):
    n = len(shape)
    ar = np.arange(shape[dimension], dtype=dtype).reshape([-1 if d == dimension else 1 for d in range(n)])
    return np.broadcast_to(ar, shape)


def _broadcast_in_dim(x, *dyn, shape, broadcast_dimensions, **_):
    new = [1] * len(shape)
    for i, d in enumerate(broadcast_dimensions):
        new[d] = x.shape[i]
    return np.broadcast_to(np.reshape(x, new), shape)


def _identity_value(name: str, dtype: np.dtype):
    if name == "reduce_sum":
        return 0
    if name == "reduce_prod":
        return 1
    if dtype == np.bool_:
        return name == "reduce_min"
    info = np.finfo(dtype) if np.issubdtype(dtype, np.floating) else np.iinfo(dtype)
    big = np.inf if np.issubdtype(dtype, np.floating) else info.max
    return -big if name == "reduce_max" else big


def _reduce(fn: Callable[..., Any], name: str) -> Callable[..., Any]:
    def rule(x, *, axes, **_):
        axes = tuple(int(a) for a in axes)
        if x.size == 0 and name in ("reduce_max", "reduce_min"):
            shape = tuple(n for d, n in enumerate(x.shape) if d not in axes)
            return np.full(shape, _identity_value(name, x.dtype), x.dtype)
        return fn(x, axis=axes)

    return rule


def _arg(fn: Callable[..., Any]) -> Callable[..., Any]:
    def rule(x, *, axes, **_):
        return fn(x, axis=int(axes[0]))

    return rule


def _cumulative(fn: Callable[..., Any]) -> Callable[..., Any]:
    def rule(x, *, axis, reverse, **_):
        if reverse:
            return np.flip(fn(np.flip(x, axis), axis=axis), axis)
        return fn(x, axis=axis)

    return rule


def _dot_general(lhs, rhs, *, dimension_numbers, preferred_element_type=None, **_):
    (lc, rc), (lb, rb) = dimension_numbers
    lc, rc, lb, rb = (tuple(int(d) for d in ds) for ds in (lc, rc, lb, rb))
    lf = [d for d in range(lhs.ndim) if d not in lc and d not in lb]
    rf = [d for d in range(rhs.ndim) if d not in rc and d not in rb]
    batch = [lhs.shape[d] for d in lb]
    m = [lhs.shape[d] for d in lf]
    n = [rhs.shape[d] for d in rf]
    k = math.prod(lhs.shape[d] for d in lc)
    dtype = np.result_type(lhs.dtype, rhs.dtype) if preferred_element_type is None else preferred_element_type
    a = np.transpose(lhs, (*lb, *lf, *lc)).astype(dtype, copy=False)
    b = np.transpose(rhs, (*rb, *rc, *rf)).astype(dtype, copy=False)
    a = a.reshape(math.prod(batch), math.prod(m), k)
    b = b.reshape(math.prod(batch), k, math.prod(n))
    return np.matmul(a, b).reshape((*batch, *m, *n))


def _conv(lhs, rhs, *, window_strides, padding, lhs_dilation, rhs_dilation, dimension_numbers,
          feature_group_count, batch_group_count, preferred_element_type=None, **_):
    """XLA's ConvGeneralDilated: lhs dilated then padded, the dilated kernel slid with strides,
    features split into ``feature_group_count`` groups and the batch into ``batch_group_count``
    (group-major), as JAX's transposes of a grouped convolution use it."""
    from numpy.lib.stride_tricks import sliding_window_view

    lspec, rspec, ospec = (tuple(int(d) for d in spec) for spec in dimension_numbers)
    dtype = np.result_type(lhs.dtype, rhs.dtype) if preferred_element_type is None else preferred_element_type
    x = np.transpose(lhs, lspec).astype(dtype, copy=False)  # (N, C, *spatial)
    w = np.transpose(rhs, rspec).astype(dtype, copy=False)  # (O, I, *kernel)
    nsp = x.ndim - 2
    zero = np.zeros((), dtype)
    grow = [(int(lo), int(hi), int(d) - 1) for (lo, hi), d in zip(padding, lhs_dilation, strict=True)]
    x = _pad(x, zero, padding_config=[(0, 0, 0), (0, 0, 0), *grow])
    if any(int(d) > 1 for d in rhs_dilation):
        w = _pad(w, zero, padding_config=[(0, 0, 0), (0, 0, 0), *((0, 0, int(d) - 1) for d in rhs_dilation)])
    spatial = tuple(range(2, 2 + nsp))
    win = sliding_window_view(x, w.shape[2:], axis=spatial)  # (N, C, *positions, *kernel)
    win = win[(slice(None), slice(None), *(slice(None, None, int(st)) for st in window_strides))]
    n, c = win.shape[:2]
    pos = win.shape[2 : 2 + nsp]
    o, i = w.shape[:2]
    g, b = int(feature_group_count), int(batch_group_count)
    win = win.reshape(b, n // b, g, c // g, math.prod(pos), -1)  # (B, Nb, G, Cg, P, K)
    w = w.reshape(b * g, o // (b * g), i, -1)
    w = w.reshape(b, g, o // (b * g), i, -1)  # (B, G, Og, Cg, K)
    out = np.einsum("bngcpk,bgock->nbgop", win, w)  # (Nb, B, G, Og, P): features (b, g, o) major first
    out = out.reshape(n // b, o, *pos)
    return np.transpose(out, np.argsort(ospec))


def _window_view(x, fill, dims, strides, padding, base_dilation=None, window_dilation=None):
    """Every window of x (padded with ``fill``, holes of a base dilation filled with it too) as
    a view of shape (*windows, *window): XLA's ReduceWindow operand, window by window."""
    from numpy.lib.stride_tricks import sliding_window_view

    nd = x.ndim
    base = [int(b) for b in base_dilation] if base_dilation is not None else [1] * nd
    wdil = [int(d) for d in window_dilation] if window_dilation is not None else [1] * nd
    cfg = [(int(lo), int(hi), b - 1) for (lo, hi), b in zip(padding, base, strict=True)]
    xp = _pad(x, np.asarray(fill, x.dtype), padding_config=cfg)
    span = [(int(w) - 1) * d + 1 for w, d in zip(dims, wdil, strict=True)]
    if any(n < k for n, k in zip(xp.shape, span, strict=True)):  # no whole window fits
        shape = [max((n - k) // int(st) + 1, 0) for n, k, st in zip(xp.shape, span, strides, strict=True)]
        return np.full((*shape, *(int(w) for w in dims)), fill, x.dtype), xp
    view = sliding_window_view(xp, span)
    return view[(*(slice(None, None, int(st)) for st in strides), *(slice(None, None, d) for d in wdil))], xp


def _extreme_fill(dtype, largest: bool):
    if np.issubdtype(dtype, np.floating):
        return -np.inf if largest else np.inf
    info = np.iinfo(dtype) if dtype != np.bool_ else None
    return (info.min if largest else info.max) if info else (not largest)


def _reduce_window(fn: Callable[..., Any], fill: Callable[[np.dtype], Any]) -> Callable[..., Any]:
    def rule(x, *, window_dimensions, window_strides, padding, base_dilation, window_dilation, **_):
        view, _ = _window_view(
            x, fill(x.dtype), window_dimensions, window_strides, padding, base_dilation, window_dilation
        )
        return fn(view, axis=tuple(range(x.ndim, 2 * x.ndim)))

    return rule


def _selects_largest(select_prim) -> bool:
    name = getattr(select_prim, "name", str(select_prim))
    if name not in ("ge", "gt", "le", "lt"):
        raise KeyError(f"select_prim {name}")
    return name in ("ge", "gt")


def _select_and_gather_add(tangents, operand, *, select_prim, window_dimensions, window_strides, padding,
                           base_dilation, window_dilation, **_):
    """Per window of ``operand``, the tangent where the operand is largest (smallest for le):
    the JVP of a max (min) pool; the first such element where several tie."""
    largest = _selects_largest(select_prim)
    args = (window_dimensions, window_strides, padding, base_dilation, window_dilation)
    ops, _ = _window_view(operand, _extreme_fill(operand.dtype, largest), *args)
    tans, _ = _window_view(tangents, 0, *args)
    out = ops.shape[: operand.ndim]
    pick = (np.argmax if largest else np.argmin)(ops.reshape(*out, -1), axis=-1)
    return np.take_along_axis(tans.reshape(*out, -1), pick[..., None], axis=-1)[..., 0]


def _select_and_scatter_add(source, operand, *, select_prim, window_dimensions, window_strides, padding, **_):
    """Each window's ``source`` value added where its operand is largest (smallest): the
    transpose of :func:`_select_and_gather_add`, a max pool's VJP."""
    largest = _selects_largest(select_prim)
    fill = _extreme_fill(operand.dtype, largest)
    ops, xp = _window_view(operand, fill, window_dimensions, window_strides, padding)
    where, _ = _window_view(np.arange(xp.size).reshape(xp.shape), 0, window_dimensions, window_strides,
                            [(0, 0)] * xp.ndim)
    out = ops.shape[: operand.ndim]
    pick = (np.argmax if largest else np.argmin)(ops.reshape(*out, -1), axis=-1)
    at = np.take_along_axis(where.reshape(*out, -1), pick[..., None], axis=-1)[..., 0]
    acc = np.zeros(xp.size, source.dtype)
    np.add.at(acc, at.reshape(-1), np.reshape(source, -1))
    crop = tuple(slice(int(lo), int(lo) + n) for (lo, _), n in zip(padding, operand.shape, strict=True))
    return acc.reshape(xp.shape)[crop]


def _batched(fn: Callable[..., Any], *mats, core_dims: int = 2):
    """fn over the trailing ``core_dims`` axes of each of ``mats`` (shared leading batch axes)."""
    batch = mats[0].shape[: mats[0].ndim - core_dims]
    outs = [fn(*(m[i] for m in mats)) for i in np.ndindex(*batch)]
    if not isinstance(outs[0], tuple):
        return np.stack(outs).reshape(*batch, *outs[0].shape)
    return tuple(np.stack(parts).reshape(*batch, *parts[0].shape) for parts in zip(*outs, strict=True))


def _lu(x, **_):
    """LAPACK's getrf, as XLA:CPU calls it: the packed LU, its row swaps, their permutation."""
    import scipy.linalg

    def one(a):
        m, n = a.shape
        k = min(m, n)
        if a.size == 0:
            return np.array(a, copy=True), np.zeros(k, np.int32), np.arange(m, dtype=np.int32)
        lu, piv = scipy.linalg.lu_factor(a, check_finite=False)
        perm = np.arange(m, dtype=np.int32)
        for i, p in enumerate(piv[:k]):
            perm[[i, p]] = perm[[p, i]]
        return lu, piv[:k].astype(np.int32), perm

    return list(_batched(one, x))


def _triangular_solve(a, b, *, left_side, lower, transpose_a, conjugate_a, unit_diagonal, **_):
    """op(a) x = b (left_side) or x op(a) = b, a triangular."""
    import scipy.linalg

    def one(am, bm):
        if left_side:
            trans = 1 if transpose_a else 0
            return scipy.linalg.solve_triangular(
                am, bm, trans=trans, lower=lower, unit_diagonal=unit_diagonal, check_finite=False
            )
        # x op(a) = b  <=>  op(a)^T x^T = b^T
        trans = 0 if transpose_a else 1
        xt = scipy.linalg.solve_triangular(
            am, bm.T, trans=trans, lower=lower, unit_diagonal=unit_diagonal, check_finite=False
        )
        return xt.T

    return _batched(one, a, b)


def _cholesky(x, **_):
    """The lower Cholesky factor; NaN where the matrix is not positive definite, as XLA gives."""

    def one(a):
        try:
            return np.linalg.cholesky(a)
        except np.linalg.LinAlgError:
            return np.full(a.shape, np.nan, a.dtype)

    return _batched(one, x)


def _platform_index(*_args, platforms, **_):
    """The branch of a platform-dependent cond the CPU takes: the entry naming cpu, else the
    default (None) one."""
    default = None
    for i, names in enumerate(platforms):
        if names is None:
            default = i
        elif "cpu" in names:
            return np.int32(i)
    if default is None:
        raise KeyError("platform_index without a cpu or default branch")
    return np.int32(default)


def _pad(x, value, *, padding_config, **_):
    lows, highs, interiors = zip(*padding_config, strict=True) if padding_config else ((), (), ())
    dilated = [n + (n - 1) * i if n else 0 for n, i in zip(x.shape, interiors, strict=True)]
    full = [max(lo, 0) + d + max(hi, 0) for lo, d, hi in zip(lows, dilated, highs, strict=True)]
    out = np.full(full, value, dtype=x.dtype)
    out[
        tuple(
            slice(max(lo, 0), max(lo, 0) + d, i + 1)
            for lo, d, i in zip(lows, dilated, interiors, strict=True)
        )
    ] = x
    crop = tuple(slice(-min(lo, 0), f + min(hi, 0)) for lo, hi, f in zip(lows, highs, full, strict=True))
    return out[crop]


def _slice(x, *, start_indices, limit_indices, strides, **_):
    strides = strides or (1,) * x.ndim
    return x[tuple(slice(s, e, st) for s, e, st in zip(start_indices, limit_indices, strides, strict=True))]


def _clamped_starts(shape, starts, sizes) -> list[int]:
    return [min(max(int(s), 0), n - z) for s, n, z in zip(starts, shape, sizes, strict=True)]


def _dynamic_slice(x, *starts, slice_sizes, **_):
    st = _clamped_starts(x.shape, starts[: x.ndim], slice_sizes)
    return x[tuple(slice(s, s + z) for s, z in zip(st, slice_sizes, strict=True))]


def _dynamic_update_slice(x, update, *starts, **_):
    st = _clamped_starts(x.shape, starts, update.shape)
    out = np.array(x, copy=True)
    out[tuple(slice(s, s + z) for s, z in zip(st, update.shape, strict=True))] = update
    return out


def _split(x, *, sizes, axis, **_):
    return np.split(x, np.cumsum([int(s) for s in sizes])[:-1], axis=axis)


def _unstack(x, *, axis, **_):
    return [np.take(x, i, axis=axis) for i in range(x.shape[axis])]


def _fill_value(dtype: np.dtype, fill_value):
    if fill_value is not None:
        return fill_value
    if np.issubdtype(dtype, np.inexact):
        return np.nan
    if dtype == np.bool_:
        return True
    info = np.iinfo(dtype)
    return info.min if np.issubdtype(dtype, np.signedinteger) else info.max


def _starts(indices, nd: int, index_map, operand_batching, indices_batching) -> np.ndarray:
    """(count, nd) operand start of every index vector of a gather or scatter (the index vector
    on the last axis): index k on operand dim ``index_map[k]``, batching dims at the vector's
    own position along the matching index batch dim, 0 elsewhere."""
    batch_shape = indices.shape[:-1]
    idx = indices.reshape(-1, indices.shape[-1]).astype(np.int64)
    starts = np.zeros((idx.shape[0], nd), np.int64)
    for k, d in enumerate(index_map):
        starts[:, int(d)] = idx[:, k]
    if operand_batching:
        pos = np.indices(batch_shape).reshape(len(batch_shape), math.prod(batch_shape))
        for od, idim in zip(operand_batching, indices_batching, strict=True):
            starts[:, int(od)] = pos[int(idim)]
    return starts


def _gather(operand, indices, *, dimension_numbers, slice_sizes, mode, fill_value=None, **_):
    dn = dimension_numbers
    mode = _MODE.from_any(mode) if not isinstance(mode, _MODE) else mode
    batch_shape = indices.shape[:-1]
    nb, nd = len(batch_shape), operand.ndim
    starts = _starts(
        indices, nd, dn.start_index_map, dn.operand_batching_dims, dn.start_indices_batching_dims
    )
    sizes = np.asarray(slice_sizes, np.int64)
    limit = np.asarray(operand.shape, np.int64) - sizes
    oob = np.any((starts < 0) | (starts > limit), axis=1)
    starts = np.clip(starts, 0, np.maximum(limit, 0))
    grid = np.indices(tuple(int(s) for s in slice_sizes)).reshape(nd, math.prod(slice_sizes))
    where = starts[:, :, None] + grid[None]
    vals = (
        operand[tuple(where[:, d, :] for d in range(nd))]
        if operand.size
        else np.zeros(where.shape[::2], operand.dtype)
    )
    if mode == _MODE.FILL_OR_DROP and oob.any():
        vals = np.array(vals, copy=True)
        vals[oob] = _fill_value(operand.dtype, fill_value)
    drop = {int(d) for d in dn.collapsed_slice_dims} | {int(d) for d in dn.operand_batching_dims}
    offset_shape = tuple(int(s) for d, s in enumerate(slice_sizes) if d not in drop)
    vals = vals.reshape(batch_shape + offset_shape)
    out_nd = nb + len(offset_shape)
    offset_dims = [int(d) for d in dn.offset_dims]
    batch_pos = [d for d in range(out_nd) if d not in offset_dims]
    src = [0] * out_nd
    for i, d in enumerate(batch_pos):
        src[d] = i
    for i, d in enumerate(offset_dims):
        src[d] = nb + i
    return np.transpose(vals, src)


def _scatter(combine: str) -> Callable[..., Any]:
    def rule(operand, indices, updates, *, dimension_numbers, mode, **_):
        dn = dimension_numbers
        mode = _MODE.from_any(mode) if not isinstance(mode, _MODE) else mode
        nd = operand.ndim
        window = [int(d) for d in dn.update_window_dims]
        scatter_dims = [d for d in range(updates.ndim) if d not in window]
        upd = np.transpose(updates, scatter_dims + window)
        window_shape = tuple(updates.shape[d] for d in window)
        starts = _starts(
            indices,
            nd,
            dn.scatter_dims_to_operand_dims,
            dn.operand_batching_dims,
            dn.scatter_indices_batching_dims,
        )
        count = starts.shape[0]
        skip = {int(d) for d in dn.inserted_window_dims} | {int(d) for d in dn.operand_batching_dims}
        win_dims = [d for d in range(nd) if d not in skip]
        wsize = np.ones(nd, np.int64)
        wsize[win_dims] = window_shape
        limit = np.asarray(operand.shape, np.int64) - wsize
        if mode == _MODE.CLIP:
            starts = np.clip(starts, 0, np.maximum(limit, 0))
            keep = np.ones(count, bool)
        else:  # XLA's semantics: an update whose window leaves the operand is skipped
            keep = np.all((starts >= 0) & (starts <= limit), axis=1)
        grid = np.indices(window_shape).reshape(len(window_shape), math.prod(window_shape))
        where = np.repeat(starts[:, :, None], grid.shape[1], axis=2)
        for i, d in enumerate(win_dims):
            where[:, d, :] += grid[i]
        vals = upd.reshape(count, -1)[keep]
        where = where[keep]
        out = np.array(operand, copy=True)
        at = tuple(where[:, d, :] for d in range(nd))
        if combine == "set":
            out[at] = vals
        else:
            getattr(np, combine).at(out, at, vals)
        return out

    return rule


def _sort(*operands, dimension, num_keys, **_):
    if num_keys == 1:
        order = np.argsort(operands[0], axis=dimension, kind="stable")
    else:  # lexsort takes its primary key last
        keys = [np.moveaxis(k, dimension, -1) for k in operands[:num_keys]]
        order = np.moveaxis(np.lexsort(keys[::-1], axis=-1), -1, dimension)
    return [np.take_along_axis(x, order, axis=dimension) for x in operands]


def _top_k(x, *, k, **_):
    order = np.argsort(-x, axis=-1, kind="stable")[..., :k]
    return [np.take_along_axis(x, order, axis=-1), order]


def _clamp(lo, x, hi, **_):
    return np.minimum(np.maximum(x, lo), hi)


def _unary(fn: Callable[..., Any]) -> Callable[..., Any]:
    return lambda x, **_: fn(x)


def _binary(fn: Callable[..., Any]) -> Callable[..., Any]:
    return lambda x, y, **_: fn(x, y)


def _passthrough(*xs, **_):
    return list(xs)


_RULES: dict[str, Callable[..., Any]] = {
    # elementwise
    **{
        name: _unary(fn)
        for name, fn in {
            "neg": np.negative,
            "sign": np.sign,
            "floor": np.floor,
            "ceil": np.ceil,
            "is_finite": np.isfinite,
            "exp": np.exp,
            "exp2": np.exp2,
            "log": np.log,
            "log1p": np.log1p,
            "expm1": np.expm1,
            "tanh": np.tanh,
            "sin": np.sin,
            "cos": np.cos,
            "tan": np.tan,
            "asin": np.arcsin,
            "acos": np.arccos,
            "atan": np.arctan,
            "sinh": np.sinh,
            "cosh": np.cosh,
            "asinh": np.arcsinh,
            "acosh": np.arccosh,
            "atanh": np.arctanh,
            "sqrt": np.sqrt,
            "rsqrt": lambda x: 1 / np.sqrt(x),
            "cbrt": np.cbrt,
            "abs": np.abs,
            "not": np.invert,
            "square": np.square,
            "stop_gradient": lambda x: x,
            "copy": lambda x: x,
            "copy_p": lambda x: x,
            "real": np.real,
        }.items()
    },
    "logistic": _logistic,
    "round": _round,
    "integer_pow": _integer_pow,
    "erf": _special("erf"),
    "erfc": _special("erfc"),
    "erf_inv": _special("erfinv"),
    "lgamma": _special("gammaln"),
    "digamma": _special("digamma"),
    **{
        name: _binary(fn)
        for name, fn in {
            "add": np.add,
            "add_any": np.add,
            "sub": np.subtract,
            "mul": np.multiply,
            "rem": np.fmod,
            "pow": np.power,
            "max": np.maximum,
            "min": np.minimum,
            "atan2": np.arctan2,
            "nextafter": np.nextafter,
            "and": np.bitwise_and,
            "or": np.bitwise_or,
            "xor": np.bitwise_xor,
            "eq": np.equal,
            "ne": np.not_equal,
            "lt": np.less,
            "le": np.less_equal,
            "gt": np.greater,
            "ge": np.greater_equal,
        }.items()
    },
    "div": _div,
    "select_n": _select_n,
    "clamp": _clamp,
    "convert_element_type": lambda x, *, new_dtype, **_: x.astype(new_dtype),
    # shapes
    "iota": _iota,
    "broadcast_in_dim": _broadcast_in_dim,
    "reshape": lambda x, *dyn, new_sizes, dimensions=None, **_: np.reshape(
        x if dimensions is None else np.transpose(x, dimensions), new_sizes
    ),
    "squeeze": lambda x, *, dimensions, **_: np.squeeze(x, axis=tuple(int(d) for d in dimensions)),
    "transpose": lambda x, *, permutation, **_: np.transpose(x, permutation),
    "rev": lambda x, *, dimensions, **_: np.flip(x, axis=tuple(int(d) for d in dimensions)),
    "concatenate": lambda *xs, dimension, **_: np.concatenate(xs, axis=dimension),
    "stack": lambda *xs, axis, **_: np.stack(xs, axis=axis),
    "unstack": _unstack,
    "split": _split,
    "pad": _pad,
    "slice": _slice,
    "dynamic_slice": _dynamic_slice,
    "dynamic_update_slice": _dynamic_update_slice,
    "gather": _gather,
    "scatter": _scatter("set"),
    "scatter-add": _scatter("add"),
    "scatter-mul": _scatter("multiply"),
    "scatter-min": _scatter("minimum"),
    "scatter-max": _scatter("maximum"),
    # reductions and contractions
    "reduce_sum": _reduce(np.sum, "reduce_sum"),
    "reduce_prod": _reduce(np.prod, "reduce_prod"),
    "reduce_max": _reduce(np.max, "reduce_max"),
    "reduce_min": _reduce(np.min, "reduce_min"),
    "reduce_and": _reduce(np.all, "reduce_and"),
    "reduce_or": _reduce(np.any, "reduce_or"),
    "argmax": _arg(np.argmax),
    "argmin": _arg(np.argmin),
    "cumsum": _cumulative(np.cumsum),
    "cumprod": _cumulative(np.cumprod),
    "cummax": _cumulative(np.maximum.accumulate),
    "cummin": _cumulative(np.minimum.accumulate),
    "cumlogsumexp": _cumulative(np.logaddexp.accumulate),
    "dot_general": _dot_general,
    "conv_general_dilated": _conv,
    "lu": _lu,
    "triangular_solve": _triangular_solve,
    "cholesky": _cholesky,
    "platform_index": _platform_index,
    "tile": lambda x, *, reps, **_: np.tile(x, tuple(int(r) for r in reps)),
    "reduce_window_sum": _reduce_window(np.sum, lambda dtype: 0),
    "reduce_window_max": _reduce_window(np.max, lambda dtype: _extreme_fill(dtype, True)),
    "reduce_window_min": _reduce_window(np.min, lambda dtype: _extreme_fill(dtype, False)),
    "select_and_gather_add": _select_and_gather_add,
    "select_and_scatter_add": _select_and_scatter_add,
    "sort": _sort,
    "top_k": _top_k,
    "optimization_barrier": _passthrough,
}

# Primitives that evaluate an inner jaxpr once, in place: the calls the kink recorder inlines.
_CALLS = _BRANCH_CALLS
_CONTROL = ("cond", "while", "scan", "custom_linear_solve")


# ----------------------------------------------------------------------------- checking


def unsupported(jaxpr: core.ClosedJaxpr | core.Jaxpr) -> str | None:
    """Why :func:`evaluate` cannot run this jaxpr (a primitive, a dtype, an effect), or None."""
    jx = jaxpr.jaxpr if isinstance(jaxpr, core.ClosedJaxpr) else jaxpr
    if jx.effects:
        return f"effects {jx.effects}"
    for v in (*jx.invars, *jx.constvars, *jx.outvars):
        why = _bad_aval(getattr(v, "aval", None))
        if why:
            return why
    for eqn in jx.eqns:
        name = eqn.primitive.name
        if name not in _RULES and name not in _CALLS and name not in _CONTROL:
            return f"primitive {name}"
        for v in eqn.outvars:
            why = _bad_aval(v.aval)
            if why:
                return why
        for sub in sub_jaxprs(eqn) if name in _CALLS or name in _CONTROL else ():
            why = unsupported(sub)
            if why:
                return why
    return None


def supported(jaxpr: core.ClosedJaxpr | core.Jaxpr) -> bool:
    """True when :func:`evaluate` can run this jaxpr."""
    return unsupported(jaxpr) is None


def _bad_aval(aval) -> str | None:
    dtype = getattr(aval, "dtype", None)
    if dtype is None:
        return None if aval is None else f"value {aval}"
    dtype = np.dtype(dtype)
    if dtype.kind == "f" and dtype not in _FLOATS:
        return f"dtype {dtype}"
    if dtype.kind not in "fiub":
        return f"dtype {dtype}"
    return None


class Cost(NamedTuple):
    """The host work of a jaxpr: array elements produced, multiply-adds, equations run."""

    elements: int
    flops: int
    equations: int


def cost(jaxpr: core.ClosedJaxpr | core.Jaxpr, times: int = 1) -> Cost:
    """What :func:`evaluate` would do; a ``while`` loop counts its body once per trip of an
    unknown count, so it is counted as ``times`` = 1000 trips."""
    jx = jaxpr.jaxpr if isinstance(jaxpr, core.ClosedJaxpr) else jaxpr
    elements = flops = equations = 0
    for eqn in jx.eqns:
        name = eqn.primitive.name
        if name in _CALLS or name in _CONTROL:
            trips = {"scan": int(eqn.params.get("length", 1)), "while": 1000}.get(name, 1)
            for sub in sub_jaxprs(eqn):
                c = cost(sub, trips)
                elements, flops, equations = elements + c.elements, flops + c.flops, equations + c.equations
            continue
        equations += 1
        size = sum(math.prod(v.aval.shape) for v in eqn.outvars if hasattr(v.aval, "shape"))
        elements += size
        if name == "dot_general":
            (lc, _), _ = eqn.params["dimension_numbers"]
            flops += size * math.prod(eqn.invars[0].aval.shape[d] for d in lc)
        elif "window_dimensions" in eqn.params:  # a pooling: each output reads its whole window
            flops += size * math.prod(int(w) for w in eqn.params["window_dimensions"])
        elif name in ("lu", "cholesky"):  # an m x n factorization: m n min(m, n) multiply-adds
            *_, m, n = eqn.invars[0].aval.shape
            flops += math.prod(eqn.invars[0].aval.shape) * min(m, n)
        elif name == "triangular_solve":  # each solution element: a row of the triangle
            flops += size * eqn.invars[0].aval.shape[-1]
        elif name == "conv_general_dilated":  # each output: in features per group x kernel taps
            rspec = eqn.params["dimension_numbers"].rhs_spec
            kernel = eqn.invars[1].aval.shape
            flops += size * math.prod(kernel[d] for d in rspec[1:])
    return Cost(elements * times, flops * times, equations * times)


# ----------------------------------------------------------------------------- evaluation


def evaluate(jaxpr: core.ClosedJaxpr, args: Sequence[Any]) -> list[np.ndarray]:
    """The outputs of ``jaxpr`` at ``args`` (host arrays), computed with NumPy.

    Call :func:`supported` first; an equation without a rule raises KeyError.
    """
    with np.errstate(all="ignore"):
        return _eval(jaxpr.jaxpr, list(jaxpr.consts), [np.asarray(a) for a in args])


def _eval(jx: core.Jaxpr, consts: list, args: list) -> list:
    env: dict = {}
    for v, x in zip(jx.constvars, consts, strict=True):
        env[v] = np.asarray(x)
    for v, x in zip(jx.invars, args, strict=True):
        env[v] = x
    literal = core.Literal
    for eqn in jx.eqns:
        invals = [np.asarray(v.val, v.aval.dtype) if isinstance(v, literal) else env[v] for v in eqn.invars]
        name = eqn.primitive.name
        if name in _CALLS:
            sub = _sub_jaxpr(eqn, _CALLS)
            outs = _eval(sub.jaxpr, list(sub.consts), invals)
        elif name in _CONTROL:
            outs = _control(name, eqn.params, invals)
        else:
            res = _RULES[name](*invals, **eqn.params)
            outs = res if eqn.primitive.multiple_results else [res]
        for v, x in zip(eqn.outvars, outs, strict=True):
            aval = v.aval
            env[v] = np.asarray(x, dtype=aval.dtype) if np.shape(x) == aval.shape else _fix(x, aval)
    return [np.asarray(v.val, v.aval.dtype) if isinstance(v, literal) else env[v] for v in jx.outvars]


def _fix(x, aval) -> np.ndarray:
    """Broadcast a result NumPy returned as a scalar (a 0-d reduction, a scalar operand)."""
    return np.broadcast_to(np.asarray(x, dtype=aval.dtype), aval.shape)


def _run(closed: core.ClosedJaxpr, args: list) -> list:
    return _eval(closed.jaxpr, list(closed.consts), args)


def _control(name: str, params: dict, invals: list) -> list:
    if name == "cond":
        branches = params["branches"]
        i = min(max(int(invals[0]), 0), len(branches) - 1)
        return _run(branches[i], invals[1:])
    if name == "custom_linear_solve":  # x = solve(b), from the solve jaxpr and its constants
        lengths, jaxprs = params["const_lengths"], params["jaxprs"]
        start = lengths.matvec + lengths.vecmat
        consts, b = invals[start : start + lengths.solve], invals[sum(lengths) :]
        return _run(jaxprs.solve, consts + b)
    if name == "while":
        cn, bn = params["cond_nconsts"], params["body_nconsts"]
        cconsts, bconsts, carry = invals[:cn], invals[cn : cn + bn], invals[cn + bn :]
        while bool(_run(params["cond_jaxpr"], cconsts + carry)[0]):
            carry = _run(params["body_jaxpr"], bconsts + carry)
        return carry
    # scan
    jaxpr, nc, ncarry, length = params["jaxpr"], params["num_consts"], params["num_carry"], params["length"]
    consts, carry, xs = invals[:nc], invals[nc : nc + ncarry], invals[nc + ncarry :]
    ys: list[list] = []
    steps = range(length - 1, -1, -1) if params["reverse"] else range(length)
    for i in steps:
        out = _run(jaxpr, consts + carry + [x[i] for x in xs])
        carry, y = out[:ncarry], out[ncarry:]
        ys.append(y)
    if params["reverse"]:
        ys.reverse()
    y_avals = [v.aval for v in jaxpr.jaxpr.outvars[ncarry:]]
    stacked = [
        np.stack([y[k] for y in ys]) if ys else np.zeros((0, *a.shape), a.dtype)
        for k, a in enumerate(y_avals)
    ]
    return carry + stacked
