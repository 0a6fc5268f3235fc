"""Cases built from + * ** and relu, on micrograd's scalar engine (``micrograd.engine.Value``).

micrograd knows one number at a time and only the operations +, *, ** (a constant power) and
relu, so it covers the seed's scalar cases and the few others made of those alone. Every input
element becomes a ``Value``; the VJP is the gradient of the scalar sum_i c_i F_i(x), which is
exactly J^T c, found by one ``backward()``. Arithmetic is Python floats (float64).

    pip install micrograd
    jaxcalc export golden
    jaxcalc verify golden --impl examples/micrograd_impl.py     # the other cases report as skipped
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from micrograd.engine import Value

__all__ = [
    "square", "poly_xy", "chain_affine_square", "descent_square", "rosenbrock", "quadratic_form",
    "least_squares", "mse", "linear", "relu",
]  # fmt: skip

Inputs = dict[str, np.ndarray]
Result = tuple[np.ndarray, dict[str, np.ndarray]]
V = Any  # a micrograd Value, or a nested list of them shaped like an input


def _values(a: np.ndarray) -> V:
    """An array as a nested list of fresh Values (a 0-d array as one Value)."""
    return np.vectorize(lambda x: Value(float(x)), otypes=[object])(np.asarray(a)).tolist()


def _flat(tree: V) -> list:
    return [leaf for t in tree for leaf in _flat(t)] if isinstance(tree, list) else [tree]


def _case(forward: Callable[..., V]) -> Callable[[Inputs, np.ndarray], Result]:
    """Wrap ``forward(**values) -> Value or nested list`` as a case: one backward of sum_i c_i F_i."""

    def case(inputs: Inputs, cotangent: np.ndarray) -> Result:
        values = {k: _values(a) for k, a in inputs.items()}
        out = _flat(forward(**values))
        dot = sum((o * float(c) for o, c in zip(out, np.ravel(cotangent), strict=True)), Value(0.0))
        dot.backward()  # every Value's .grad is now d<c, F>/d(that Value): one entry of J^T c
        shape = np.shape(cotangent)
        value = np.array([o.data for o in out], dtype=np.float64).reshape(shape)
        vjp = {
            k: np.array([float(v.grad) for v in _flat(tree)], dtype=np.float64).reshape(np.shape(inputs[k]))
            for k, tree in values.items()
        }
        return value, vjp

    case.__name__ = case.__qualname__ = forward.__name__
    case.__doc__ = forward.__doc__
    return case


def _dot(u: list, w: list) -> V:
    return sum((a * b for a, b in zip(u, w, strict=True)), Value(0.0))


@_case
def square(x: V) -> V:
    """x**2."""
    return x**2


@_case
def poly_xy(x: V, y: V) -> V:
    """3x**2 + 2y."""
    return 3 * x**2 + 2 * y


@_case
def chain_affine_square(x: V) -> V:
    """(2x + 3)**2."""
    return (2 * x + 3) ** 2


@_case
def descent_square(x0: V) -> V:
    """The 20 iterates of x <- x - 0.1 * 2x."""
    xs, x = [], x0
    for _ in range(20):
        x = x - 0.1 * (2 * x)
        xs.append(x)
    return xs


@_case
def rosenbrock(x: V) -> V:
    """sum_i 100 (x_{i+1} - x_i**2)**2 + (1 - x_i)**2."""
    return sum((100 * (b - a**2) ** 2 + (1 - a) ** 2 for a, b in zip(x[:-1], x[1:], strict=True)), Value(0.0))


@_case
def quadratic_form(A: V, b: V, x: V) -> V:
    """x^T A x / 2 + b^T x."""
    return 0.5 * _dot(x, [_dot(row, x) for row in A]) + _dot(b, x)


@_case
def least_squares(X: V, w: V, b: V, y: V) -> V:
    """mean((Xw + b - y)**2)."""
    return sum(((_dot(row, w) + b - t) ** 2 for row, t in zip(X, y, strict=True)), Value(0.0)) * (1 / len(y))


@_case
def mse(pred: V, target: V) -> V:
    """mean((pred - target)**2)."""
    pairs = list(zip(_flat(pred), _flat(target), strict=True))
    return sum(((p - t) ** 2 for p, t in pairs), Value(0.0)) * (1 / len(pairs))


@_case
def linear(x: V, W: V, b: V) -> V:
    """xW + b, one row of x at a time."""
    cols = list(zip(*W, strict=True))
    return [[_dot(row, list(col)) + bj for col, bj in zip(cols, b, strict=True)] for row in x]


@_case
def relu(x: V) -> V:
    """max(x, 0), elementwise."""
    return [[v.relu() for v in row] for row in x]
