"""The primitive cases of the jaxcalc catalogue in NumPy, every gradient written by hand.

Same convention as numpy_impl.py (which re-exports these): ``case(inputs, cotangent) ->
(value, {name: vjp})``; everything computes in the dtype of the float inputs it is given.
"""

from __future__ import annotations

import numpy as np

Array = np.ndarray
Inputs = dict[str, np.ndarray]
Result = tuple[np.ndarray, dict[str, np.ndarray]]

__all__ = [
    "add", "sub", "mul", "div", "pow", "maximum", "minimum", "where",
    "abs", "sqrt", "rsqrt", "exp", "log", "log1p", "expm1", "sin", "cos", "reciprocal", "clip",
    "sum_axis", "mean_axis", "prod_axis", "max_axis", "min_axis", "var_axis", "cumsum",
    "transpose", "reshape", "strided_slice", "concatenate", "stack", "pad", "broadcast_to", "gather",
    "scatter_add", "batched_matmul", "einsum", "topk_values",
    "logaddexp", "atan2", "hypot", "flip", "roll", "norm_axis", "logsumexp_axis", "index_select",
    "masked_fill", "triu",
]  # fmt: skip


def _a(x: object, like: Array) -> Array:
    return np.asarray(x, dtype=like.dtype)


def unbroadcast(g: Array, shape: tuple[int, ...]) -> Array:
    """Sum g over the leading axes ``shape`` lacks and over its size-1 axes (keeping them)."""
    g = np.asarray(g)
    g = g.sum(axis=tuple(range(g.ndim - len(shape)))) if g.ndim > len(shape) else g
    axes = tuple(i for i, n in enumerate(shape) if n == 1 and g.shape[i] != 1)
    return g.sum(axis=axes, keepdims=True) if axes else g


def _binary(name: str, op, partials):
    """F = op(op(x, y), s); partials(a, b) = (d op/da, d op/db) at the broadcast shape."""

    def case(inputs: Inputs, cotangent: Array) -> Result:
        x, y, s = inputs["x"], inputs["y"], inputs["s"]
        u = op(x, y)
        out = op(u, s)
        du, ds = partials(u, s)
        dx, dy = partials(x, y)
        gu = cotangent * du
        vjp = {
            "x": unbroadcast(gu * dx, x.shape),
            "y": unbroadcast(gu * dy, y.shape),
            "s": unbroadcast(cotangent * ds, s.shape),
        }
        return _a(out, x), {k: _a(v, x) for k, v in vjp.items()}

    case.__name__ = case.__qualname__ = name
    case.__doc__ = f"{name}({name}(x, y), s), broadcasting x (B,1,N), y (M,1), s () to (B,M,N)."
    return case


def _one(a: Array, b: Array) -> Array:
    return np.ones(np.broadcast_shapes(np.shape(a), np.shape(b)), np.result_type(a, b))


add = _binary("add", np.add, lambda a, b: (_one(a, b), _one(a, b)))
sub = _binary("sub", np.subtract, lambda a, b: (_one(a, b), -_one(a, b)))
mul = _binary("mul", np.multiply, lambda a, b: (b * _one(a, b), a * _one(a, b)))
div = _binary("div", np.divide, lambda a, b: (_one(a, b) / b, -a / (b * b)))
pow = _binary("pow", np.power, lambda a, b: (b * a ** (b - 1), np.log(a) * a**b))  # noqa: A001
maximum = _binary("maximum", np.maximum, lambda a, b: ((a > b) * _one(a, b), (a <= b) * _one(a, b)))
minimum = _binary("minimum", np.minimum, lambda a, b: ((a < b) * _one(a, b), (a >= b) * _one(a, b)))


def where(inputs: Inputs, cotangent: Array) -> Result:
    """where(cond, x, y); dx, dy: ct on their side of the condition, unbroadcast."""
    c, x, y = inputs["cond"], inputs["x"], inputs["y"]
    out = np.where(c, x, y)
    zero = np.zeros_like(cotangent)
    return _a(out, x), {
        "x": _a(unbroadcast(np.where(c, cotangent, zero), x.shape), x),
        "y": _a(unbroadcast(np.where(c, zero, cotangent), y.shape), x),
    }


def _unary(name: str, f, df):
    def case(inputs: Inputs, cotangent: Array) -> Result:
        x = inputs["x"]
        return _a(f(x), x), {"x": _a(cotangent * df(x), x)}

    case.__name__ = case.__qualname__ = name
    case.__doc__ = f"{name}(x) elementwise; VJP ct f'(x)."
    return case


abs = _unary("abs", np.abs, np.sign)  # noqa: A001
sqrt = _unary("sqrt", np.sqrt, lambda x: 0.5 / np.sqrt(x))
rsqrt = _unary("rsqrt", lambda x: 1 / np.sqrt(x), lambda x: -0.5 / (x * np.sqrt(x)))
exp = _unary("exp", np.exp, np.exp)
log = _unary("log", np.log, lambda x: 1 / x)
log1p = _unary("log1p", np.log1p, lambda x: 1 / (1 + x))
expm1 = _unary("expm1", np.expm1, np.exp)
sin = _unary("sin", np.sin, np.cos)
cos = _unary("cos", np.cos, lambda x: -np.sin(x))
reciprocal = _unary("reciprocal", lambda x: 1 / x, lambda x: -1 / (x * x))
clip = _unary("clip", lambda x: np.clip(x, -0.5, 0.75), lambda x: ((x > -0.5) & (x < 0.75)).astype(x.dtype))


# ----------------------------------------------------------------------------- reductions (axis 1)


def _red(name: str, f, back):
    def case(inputs: Inputs, cotangent: Array) -> Result:
        x = inputs["x"]
        out = f(x)
        return _a(out, x), {"x": _a(back(x, out, cotangent), x)}

    case.__name__ = case.__qualname__ = name
    return case


sum_axis = _red("sum_axis", lambda x: x.sum(1, keepdims=True), lambda x, o, c: np.broadcast_to(c, x.shape))
mean_axis = _red(
    "mean_axis", lambda x: x.mean(1, keepdims=True), lambda x, o, c: np.broadcast_to(c / x.shape[1], x.shape)
)
prod_axis = _red("prod_axis", lambda x: x.prod(1, keepdims=True), lambda x, o, c: c * o / x)
max_axis = _red("max_axis", lambda x: x.max(1, keepdims=True), lambda x, o, c: c * (x == o))
min_axis = _red("min_axis", lambda x: x.min(1, keepdims=True), lambda x, o, c: c * (x == o))
var_axis = _red(
    "var_axis",
    lambda x: x.var(1, keepdims=True, ddof=1),
    lambda x, o, c: c * 2 * (x - x.mean(1, keepdims=True)) / (x.shape[1] - 1),
)
cumsum = _red("cumsum", lambda x: np.cumsum(x, 1), lambda x, o, c: np.flip(np.cumsum(np.flip(c, 1), 1), 1))
flip = _red("flip", lambda x: np.flip(x, 1), lambda x, o, c: np.flip(c, 1))
roll = _red("roll", lambda x: np.roll(x, 2, 1), lambda x, o, c: np.roll(c, -2, 1))
norm_axis = _red("norm_axis", lambda x: np.sqrt((x * x).sum(1, keepdims=True)), lambda x, o, c: c * x / o)


def _lse(x: Array) -> Array:
    m = x.max(1, keepdims=True)
    return m + np.log(np.exp(x - m).sum(1, keepdims=True))


logsumexp_axis = _red("logsumexp_axis", _lse, lambda x, o, c: c * np.exp(x - o))
transpose = _red(
    "transpose", lambda x: np.transpose(x, (2, 0, 1)), lambda x, o, c: np.transpose(c, (1, 2, 0))
)
reshape = _red("reshape", lambda x: x.reshape(x.shape[2], -1), lambda x, o, c: c.reshape(x.shape))
triu = _red("triu", np.triu, lambda x, o, c: np.triu(c))


def _strided_back(x: Array, o: Array, c: Array) -> Array:
    g = np.zeros_like(x)
    g[1::2, ::3] = c
    return g


strided_slice = _red("strided_slice", lambda x: x[1::2, ::3], _strided_back)
pad = _red("pad", lambda x: np.pad(x, ((1, 2), (3, 0))), lambda x, o, c: c[1:-2, 3:])
broadcast_to = _red(
    "broadcast_to",
    lambda x: np.broadcast_to(x, (3, x.shape[0], 2, x.shape[2])),
    lambda x, o, c: unbroadcast(c, x.shape),
)


def topk_values(inputs: Inputs, cotangent: Array) -> Result:
    """The 3 largest of each row, descending; VJP: ct placed at their positions."""
    x = inputs["x"]
    idx = np.argsort(-x, axis=1, kind="stable")[:, :3]
    g = np.zeros_like(x)
    np.put_along_axis(g, idx, cotangent, axis=1)
    return _a(np.take_along_axis(x, idx, 1), x), {"x": g}


def concatenate(inputs: Inputs, cotangent: Array) -> Result:
    """concat along axis 1; VJP splits ct."""
    a, b = inputs["a"], inputs["b"]
    m = a.shape[1]
    return np.concatenate([a, b], 1), {"a": cotangent[:, :m].copy(), "b": cotangent[:, m:].copy()}


def stack(inputs: Inputs, cotangent: Array) -> Result:
    """stack along axis 1; VJP ct[:, i]."""
    a, b, c = inputs["a"], inputs["b"], inputs["c"]
    return np.stack([a, b, c], 1), {"a": cotangent[:, 0], "b": cotangent[:, 1], "c": cotangent[:, 2]}


def gather(inputs: Inputs, cotangent: Array) -> Result:
    """out[i, j] = x[index[i, j], j]; VJP adds ct[i, j] into (index[i, j], j), repeats accumulating."""
    x, idx = inputs["x"], inputs["index"]
    g = np.zeros_like(x)
    np.add.at(g, (idx, np.broadcast_to(np.arange(idx.shape[1]), idx.shape)), cotangent)
    return np.take_along_axis(x, idx, 0), {"x": g}


def scatter_add(inputs: Inputs, cotangent: Array) -> Result:
    """out = x; out[index[i, j], j] += src[i, j]; VJP dx = ct, dsrc = ct[index[i, j], j]."""
    x, idx, src = inputs["x"], inputs["index"], inputs["src"]
    out = x.copy()
    np.add.at(out, (idx, np.broadcast_to(np.arange(idx.shape[1]), idx.shape)), src)
    return out, {"x": cotangent.copy(), "src": np.take_along_axis(cotangent, idx, 0)}


def batched_matmul(inputs: Inputs, cotangent: Array) -> Result:
    """a (B,1,M,K) @ b (H,K,N); da = ct b^T summed over H, db = a^T ct summed over B."""
    a, b = inputs["a"], inputs["b"]
    da = unbroadcast(cotangent @ np.swapaxes(b, -1, -2), a.shape)
    db = unbroadcast(np.swapaxes(a, -1, -2) @ cotangent, b.shape)
    return a @ b, {"a": da, "b": db}


def einsum(inputs: Inputs, cotangent: Array) -> Result:
    """out[b, n, m] = sum_k a[b, m, k] w[k, n]; da = ct^T w^T per batch, dw = sum_b a^T ct^T."""
    a, w = inputs["a"], inputs["w"]
    ctt = np.swapaxes(cotangent, 1, 2)  # (B, M, N)
    return np.swapaxes(a @ w, 1, 2), {"a": ctt @ w.T, "w": np.tensordot(a, ctt, axes=([0, 1], [0, 1]))}


def _sigmoid(z: Array) -> Array:
    e = np.exp(-np.abs(z))
    return np.where(z >= 0, 1 / (1 + e), e / (1 + e))


def logaddexp(inputs: Inputs, cotangent: Array) -> Result:
    """log(e^x + e^y); dx = ct sigmoid(x - y), dy = ct sigmoid(y - x), unbroadcast."""
    x, y = inputs["x"], inputs["y"]
    w = _sigmoid(x - y)
    return np.logaddexp(x, y), {
        "x": unbroadcast(cotangent * w, x.shape),
        "y": unbroadcast(cotangent * (1 - w), y.shape),
    }


def atan2(inputs: Inputs, cotangent: Array) -> Result:
    """atan2(y, x); dy = ct x / r^2, dx = -ct y / r^2, unbroadcast."""
    y, x = inputs["y"], inputs["x"]
    r2 = x * x + y * y
    return np.arctan2(y, x), {
        "y": unbroadcast(cotangent * x / r2, y.shape),
        "x": unbroadcast(-cotangent * y / r2, x.shape),
    }


def hypot(inputs: Inputs, cotangent: Array) -> Result:
    """sqrt(x^2 + y^2); dx = ct x / h, dy = ct y / h, unbroadcast."""
    x, y = inputs["x"], inputs["y"]
    h = np.hypot(x, y)
    return h, {"x": unbroadcast(cotangent * x / h, x.shape), "y": unbroadcast(cotangent * y / h, y.shape)}


def index_select(inputs: Inputs, cotangent: Array) -> Result:
    """columns ids of x; VJP adds ct's columns into dx at ids, repeats accumulating."""
    x, ids = inputs["x"], inputs["ids"]
    g = np.zeros_like(x)
    np.add.at(g, (slice(None), ids), cotangent)
    return x[:, ids], {"x": g}


def masked_fill(inputs: Inputs, cotangent: Array) -> Result:
    """x with -1.5 where the mask is set; VJP ct where it is not."""
    x, mask = inputs["x"], inputs["mask"]
    return _a(np.where(mask, -1.5, x), x), {"x": _a(np.where(mask, 0, cotangent), x)}
