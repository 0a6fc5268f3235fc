"""Numerics policy in one place: tolerances keyed by dtype, error measures, FD steps.

Every comparison in jaxcalc goes through :func:`compare`, which returns the
normwise relative error ``||a - b||_inf / max(||b||_inf, tiny)`` together with
the index of the worst element and both values there.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import NamedTuple

import jax
import numpy as np

__all__ = [
    "TOLERANCES",
    "Comparison",
    "compare",
    "tolerance",
    "fd_base_step",
    "reference_mode",
    "FLOAT_DTYPES",
]


# Normwise relative tolerances, keyed by dtype, never scaled by array size.
#   exact: two exact derivative computations (handwritten vs autodiff, jacfwd vs jacrev,
#          dot-product identity, Hessian symmetry); differ only by round-off.
#   fd:    a derivative vs a 5-point central finite difference (truncation + round-off).
TOLERANCES: dict[str, dict[str, float]] = {
    "float64": {"exact": 1e-10, "fd": 1e-6},
    "float32": {"exact": 2e-4, "fd": 2e-2},
}

FLOAT_DTYPES = tuple(TOLERANCES)

_TINY = 1e-30


def tolerance(dtype: str | np.dtype, kind: str) -> float:
    """Return the tolerance of ``kind`` ('exact' or 'fd') for ``dtype``."""
    name = np.dtype(dtype).name
    if name not in TOLERANCES:
        raise ValueError(f"no tolerances for dtype {name!r}; choose one of {FLOAT_DTYPES}")
    return TOLERANCES[name][kind]


def fd_base_step(dtype: str | np.dtype) -> float:
    """Step for a 5-point central difference: eps**(1/5), balancing h**4 truncation and eps/h."""
    return float(np.finfo(np.dtype(dtype)).eps ** 0.2)


class Comparison(NamedTuple):
    """Normwise relative error of ``a`` against reference ``b`` and where it is worst."""

    error: float
    index: tuple[int, ...]
    a_value: float
    b_value: float
    finite: bool

    def where(self) -> str:
        """The worst element as ``[i, j]`` (``[]`` for a scalar)."""
        return "[" + ", ".join(str(i) for i in self.index) + "]"


def compare(a: jax.typing.ArrayLike, b: jax.typing.ArrayLike) -> Comparison:
    """Compare ``a`` to reference ``b``: returns ||a - b||inf / max(||b||inf, tiny) and the worst element.

    Non-finite values in ``a`` make the error infinite and point at the first bad element.
    Raises ValueError if the shapes differ.
    """
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"shape {a.shape} does not match reference shape {b.shape}")
    if a.size == 0:
        return Comparison(0.0, (), 0.0, 0.0, True)
    bad = ~np.isfinite(a)
    if bad.any():
        flat = int(np.flatnonzero(bad)[0])
        idx = tuple(int(i) for i in np.unravel_index(flat, a.shape))
        return Comparison(float("inf"), idx, float(a[idx]), float(b[idx]), False)
    diff = np.abs(a - b)
    flat = int(np.argmax(diff))
    idx = tuple(int(i) for i in np.unravel_index(flat, a.shape))
    scale = max(float(np.max(np.abs(b))), _TINY)
    return Comparison(float(diff[idx]) / scale, idx, float(a[idx]), float(b[idx]), True)


@contextlib.contextmanager
def reference_mode(dtype: str | np.dtype = "float64") -> Iterator[None]:
    """Scoped settings for reference work: x64 on when ``dtype`` is float64, matmuls at 'highest'.

    Nothing is changed outside the ``with`` block, so importing or calling jaxcalc never
    flips ``jax_enable_x64`` for the caller.
    """
    x64 = np.dtype(dtype) == np.float64 or bool(jax.config.jax_enable_x64)
    with jax.enable_x64(x64), jax.default_matmul_precision("highest"):
        yield
