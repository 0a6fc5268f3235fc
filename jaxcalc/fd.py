"""Finite differences: the third witness, independent of autodiff.

Differences are central stencils: by default the 5-point
``f'(x) ~ (f(x - 2h) - 8 f(x - h) + 8 f(x + h) - f(x + 2h)) / 12h`` with truncation error
O(h**4); ``order=2`` gives the 2-evaluation ``(f(x + h) - f(x - h)) / 2h`` (O(h**2)), half the
cost, which the checker's per-element Jacobian uses. Steps are scaled to the dtype and to each
input's own magnitude: ``h = eps**(1/(order + 1)) * typ`` with ``typ = max(|x_i|, rms(x))``
per element (1 for an all-zero input), so an input that lives at 1e-3 (an Adam second
moment, say) gets a step 1e-3 times smaller than one that lives at 1. A directional
difference sums one stencil per input, each with that input's step. The per-element Jacobian
evaluates every basis direction at once with ``vmap`` inside one ``jit``, never in a Python
loop.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

from jaxcalc.numerics import fd_base_step

__all__ = [
    "base_step",
    "derivative",
    "directional",
    "directional_combine",
    "directional_moves",
    "directional_points",
    "directional_steps",
    "jacobian",
    "stencil",
    "typical_scale",
]


def _xp(*arrays: ArrayLike):
    """NumPy for host arrays (the checker builds its points there, outside any trace), else
    jax.numpy: the step and point helpers below run in either."""
    return np if all(isinstance(a, np.ndarray | np.generic) for a in arrays) else jnp


_OFFSETS = (-2.0, -1.0, 1.0, 2.0)
_WEIGHTS = (1.0, -8.0, 8.0, -1.0)  # f'(0) ~ (f(-2h) - 8 f(-h) + 8 f(h) - f(2h)) / 12h
# order -> (offsets, weights, denominator in units of h)
_STENCILS = {4: (_OFFSETS, _WEIGHTS, 12.0), 2: ((-1.0, 1.0), (-1.0, 1.0), 2.0)}


def base_step(dtype, order: int = 4) -> float:
    """Relative step eps**(1/(order + 1)): it balances O(h**order) truncation against eps/h."""
    return fd_base_step(dtype) if order == 4 else float(jnp.finfo(dtype).eps ** (1.0 / (order + 1)))


def stencil(f: Callable[[jax.Array], jax.Array], h: jax.Array, *, order: int = 4, has_aux: bool = False):
    """Central difference of f(s) at s = 0 with step h (f maps a scalar step to an array).

    ``order`` 4 is the 5-point stencil, 2 the 2-evaluation one. The evaluations are one ``vmap``
    of f, so f appears once in the compiled program. With ``has_aux`` f returns (value, aux) and
    the result is (derivative, aux of every evaluation stacked on a leading axis).
    """
    offs, wts, denom = _STENCILS[order]
    h = jnp.asarray(h)
    offsets = jnp.asarray(offs, h.dtype).reshape((len(offs),) + (1,) * h.ndim) * h  # h may be per element
    vals = jax.vmap(f)(offsets)
    vals, aux = vals if has_aux else (vals, None)
    w = jnp.asarray(wts, vals.dtype)
    d = jnp.tensordot(w, vals, axes=1) / (denom * h).astype(vals.dtype)
    return (d, aux) if has_aux else d


def _rms(x: jax.Array) -> jax.Array:
    """Root-mean-square magnitude of x, or 1 for an empty or all-zero array."""
    xp = _xp(x)
    r = xp.sqrt(xp.mean(xp.square(x))) if x.size else xp.asarray(0.0, x.dtype)
    return xp.where(r > 0, r, xp.ones_like(r))


def typical_scale(x: ArrayLike) -> jax.Array:
    """Per-element magnitude that sets the step: max(|x_i|, rms(x)), shaped like x (a NumPy
    array for a NumPy input)."""
    xp = _xp(x)
    x = xp.asarray(x)
    return xp.maximum(xp.abs(x), _rms(x))


def derivative(f: Callable[[jax.Array], jax.Array], x: ArrayLike) -> jax.Array:
    """d f / dx at scalar or array x, elementwise (f must act elementwise or be scalar-to-scalar)."""
    x = jnp.asarray(x)
    h = fd_base_step(x.dtype) * jnp.maximum(1.0, jnp.abs(x))
    return stencil(lambda s: f(x + s), h)


def _input_step(x: jax.Array, t: jax.Array) -> jax.Array:
    """Step along tangent t for input x: eps**(1/5) * max(|x|inf, rms(x)) / |t|inf."""
    xp = _xp(x, t)
    # max(typical_scale(x)) without forming it: max(|x|, rms) elementwise, then the max
    typ = xp.maximum(xp.max(xp.abs(x)), _rms(x)) if x.size else xp.asarray(1.0, t.dtype)
    tmax = xp.max(xp.abs(t)) if t.size else xp.asarray(0.0, t.dtype)
    return fd_base_step(t.dtype) * typ / xp.maximum(tmax, xp.finfo(t.dtype).tiny)


def directional_points(primals: Sequence, tangents: Sequence, scale: float = 1.0) -> tuple[tuple, jax.Array]:
    """The evaluation points of :func:`directional`, and the step of each input's stencil.

    Returns ``(points, steps)``: ``points`` holds one array per primal, its 4 x len(primals)
    points stacked on a leading axis (input k moves along its tangent in the 4 evaluations of
    its own stencil and stays put in the others); :func:`directional_combine` turns f's values
    there, stacked the same way, and ``steps`` into J t. Each input is differenced at its own
    step, so inputs of very different magnitudes each get a step that suits them; ``scale``
    multiplies every step. NumPy inputs give NumPy points (nothing is traced or compiled).
    """
    xp = _xp(*primals, *tangents)
    primals = tuple(xp.asarray(p) for p in primals)
    tangents = tuple(xp.asarray(t, p.dtype) for p, t in zip(primals, tangents, strict=True))
    n = len(primals)
    dtype = tangents[0].dtype
    steps = directional_steps(primals, tangents)
    steps = steps * xp.asarray(scale, dtype) if scale != 1.0 else steps
    # coef[k * 4 + o, j]: how far input j moves in evaluation o of input k's stencil (0 unless j == k).
    offsets = xp.asarray(_OFFSETS, dtype)
    coef = (xp.eye(n, dtype=dtype)[:, None, :] * offsets[None, :, None] * steps[:, None, None]).reshape(
        4 * n, n
    )
    points = tuple(
        p + coef[:, j].reshape((4 * n,) + (1,) * p.ndim) * t
        for j, (p, t) in enumerate(zip(primals, tangents, strict=True))
    )
    return points, steps


def directional_steps(primals: Sequence, tangents: Sequence) -> jax.Array:
    """Each input's step along its tangent in :func:`directional_points` (at ``scale`` 1)."""
    xp = _xp(*primals, *tangents)
    dtype = xp.asarray(tangents[0]).dtype
    pairs = zip(primals, tangents, strict=True)
    return xp.stack([xp.asarray(_input_step(p, t)).astype(dtype) for p, t in pairs])


def directional_moves(primals: Sequence[np.ndarray], tangents: Sequence[np.ndarray], scales: Sequence[float]):
    """The moving input at each point of :func:`directional_points`, at each of ``scales``:
    NumPy only, no tracing.

    At the 4 points of input k's stencil only input k moves; every other input stays at its
    primal. Returns ``(moves, steps)``: ``moves[k]`` of shape (len(scales) * 4, *shape_k),
    input k at its own stencil's points, the scales one after another (each point's other
    inputs are the primals); ``steps`` of shape (len(scales), n_inputs), as
    :func:`directional_combine` takes them. The values are those of
    :func:`directional_points`, bit for bit, in n_inputs times less memory than its points.
    """
    base = directional_steps(primals, tangents)
    dtype = base.dtype
    offsets = np.asarray(_OFFSETS, dtype)
    steps = np.stack([base * np.asarray(scale, dtype) if scale != 1.0 else base for scale in scales])
    moves = []
    for k, (p, t) in enumerate(zip(primals, tangents, strict=True)):
        p, t = np.asarray(p, dtype), np.asarray(t, dtype)
        coef = (offsets[None, :] * steps[:, k : k + 1]).reshape(-1)  # as in directional_points
        moves.append(p[None] + coef.reshape((-1,) + (1,) * p.ndim) * t[None])
    return tuple(moves), steps


def _per_stencil(vals, steps) -> tuple:
    """(steps' shape, one value's shape, vals as (*steps' shape, 4 offsets, flat value))."""
    lead, out = tuple(steps.shape), tuple(vals.shape[1:])
    return lead, out, _xp(vals, steps).reshape(vals, lead + (4, int(np.prod(out, dtype=int))))


def directional_combine(vals: jax.Array, steps: jax.Array) -> jax.Array:
    """J t from f's values at :func:`directional_points` (stacked on a leading axis) and its steps.

    ``steps`` of shape (s, n_inputs) combines s stencils' points stacked one after another
    (the same point set at s step scales) and returns their s results stacked. NumPy
    values give a NumPy result (the checker combines its points on the host).
    """
    xp = _xp(vals, steps)
    lead, out, vals = _per_stencil(vals, steps)
    # f(-2h) - 8 f(-h) + 8 f(h) - f(2h) as 8 (f(h) - f(-h)) - (f(2h) - f(-2h)): the differences
    # first, so values equal at the mirrored points cancel exactly. A piecewise-constant
    # gradient (ReLU, abs, hinge) then gives an H t of exactly 0, not the rounding of
    # c - 8c + 8c - c, which compared with an exact 0 is a relative error of 1.
    near = vals[..., 2, :] - vals[..., 1, :]
    far = vals[..., 3, :] - vals[..., 0, :]
    per_input = 8 * near - far  # (*lead, out size)
    scale = (12 * xp.asarray(steps)).astype(vals.dtype)[..., None]
    return xp.reshape(xp.sum(per_input / scale, axis=len(lead) - 1), lead[:-1] + out)


def directional_noise(
    vals: np.ndarray, steps: np.ndarray, rounding: float, eps: float | None = None
) -> np.ndarray:
    """The rounding noise of :func:`directional_combine`'s result, per element (NumPy).

    Each value of f is taken to be off by up to ``rounding`` x eps x its magnitude; the
    stencil adds those errors with its weights' magnitudes and divides by 12 h, so an input
    differenced at a small step (a small input's) carries a large noise. ``eps`` defaults to
    that of ``vals``' dtype (a function computing in a narrower dtype inside passes its own).
    """
    lead, out, blocks = _per_stencil(vals, steps)
    mag = np.abs(blocks).astype(np.float64)
    per_input = mag[..., 0, :] + 8 * (mag[..., 1, :] + mag[..., 2, :]) + mag[..., 3, :]
    scale = 12 * np.asarray(steps, np.float64)[..., None]
    eps = float(np.finfo(vals.dtype).eps) if eps is None else eps
    return np.reshape(rounding * eps * np.sum(per_input / scale, axis=len(lead) - 1), lead[:-1] + out)


def directional(f: Callable[..., jax.Array], primals: Sequence, tangents: Sequence, *, has_aux: bool = False):
    """J t = sum_k J_k t_k: the derivative of f(*primals) along ``tangents`` (one per primal).

    Each input contributes its own 5-point central difference with its own step
    (:func:`directional_points`); all 4 x n_inputs evaluations are one ``vmap`` of f. With
    ``has_aux`` f returns (value, aux) and the result is (J t, aux of every evaluation stacked
    on a leading axis).
    """
    primals = tuple(jnp.asarray(p) for p in primals)
    points, steps = directional_points(primals, tangents)
    vals = jax.vmap(f)(*points)
    vals, aux = vals if has_aux else (vals, None)
    d = directional_combine(vals, steps)
    return (d, aux) if has_aux else d


def _jacobian_flat(f: Callable[[jax.Array], jax.Array], x: jax.Array, typ: jax.Array) -> jax.Array:
    """(out_size, n) Jacobian of f at flat x: all n stencils vmapped in one jitted call."""

    @jax.jit
    def run(x: jax.Array, typ: jax.Array) -> jax.Array:
        h = fd_base_step(x.dtype) * typ

        def column(i):
            e = jax.nn.one_hot(i, x.size, dtype=x.dtype)
            return stencil(lambda s: f(x + s * e), h[i])

        cols = jax.vmap(column)(jnp.arange(x.size))
        return cols.reshape((x.size, -1)).T

    return run(x, typ)


def jacobian(
    f: Callable[..., jax.Array], primals: Sequence, argnum: int = 0, scale: ArrayLike | None = None
) -> jax.Array:
    """Full Jacobian d f / d primals[argnum], one column per input element: out.shape + in.shape.

    ``scale`` (shaped like the input) overrides the per-element magnitude that sets each step;
    by default it is :func:`typical_scale` of the input. Every column is computed at once
    (``vmap`` over basis directions) inside one ``jit``.
    """
    primals = tuple(jnp.asarray(p) for p in primals)
    x = primals[argnum]
    shape = x.shape
    typ = typical_scale(x) if scale is None else jnp.asarray(scale, x.dtype).reshape(shape)

    def flat_f(v: jax.Array) -> jax.Array:
        args = list(primals)
        args[argnum] = v.reshape(shape)
        return jnp.asarray(f(*args))

    out_shape = jax.eval_shape(flat_f, x.reshape(-1)).shape
    jac = _jacobian_flat(flat_f, x.reshape(-1), typ.reshape(-1))
    return jac.reshape(out_shape + shape)
