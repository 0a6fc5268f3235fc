"""Numerics policy in one place: tolerances keyed by dtype, error measures, FD steps.

Every comparison in jaxcalc goes through :func:`compare`, which returns the
normwise relative error ``||a - b||_inf / max(||b||_inf, tiny)`` together with
the index of the worst element and both values there.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, NamedTuple

import jax
import ml_dtypes
import numpy as np

__all__ = [
    "TOLERANCES",
    "Comparison",
    "compare",
    "tolerance",
    "fd_base_step",
    "reference_mode",
    "FLOAT_DTYPES",
    "LOW_PRECISION_DTYPES",
    "COLUMNS",
    "Column",
    "column",
    "np_dtype",
]


# The dtype columns, in one table: every dtype list in jaxcalc derives from it (FLOAT_DTYPES).
#   exact:  tolerance between two exact derivative computations in this dtype (handwritten vs
#           autodiff, jacfwd vs jacrev, dot-product identity, Hessian symmetry): round-off only.
#   fd:     a derivative vs a 5-point central finite difference (truncation + round-off); None
#           where finite differences are meaningless (the step falls below eps): low precision
#           compares against float64 instead.
#   low:    a low-precision column: inputs are rounded to the dtype first, the reference is
#           float64 on the rounded inputs, and the tolerance is calibrated per instance and
#           output as ``factor * (error of a straightforward JAX evaluation in the dtype, float32
#           accumulation) + floor * (rounding error of the reference in the dtype)``, the rule of
#           FlashAttention's tests.
#   factor, floor: the calibrated rule's constants. For float32 the export measures the float32
#           error the same way and takes max(factor * error, floor), with no cap: an
#           ill-conditioned instance earns the tolerance its conditioning implies.
@dataclass(frozen=True)
class Column:
    """One precision column: its tolerances and how its calibrated tolerance is derived."""

    name: str
    exact: float
    fd: float | None
    low: bool = False
    factor: float = 1.0
    floor: float = 0.0

    @property
    def dtype(self) -> np.dtype:
        """The NumPy dtype (``ml_dtypes.bfloat16`` for bfloat16)."""
        return np_dtype(self.name)

    @property
    def eps(self) -> float:
        """Machine epsilon of the dtype."""
        return float(ml_dtypes.finfo(self.dtype).eps)


COLUMNS: dict[str, Column] = {
    c.name: c
    for c in (
        Column("float64", exact=1e-10, fd=1e-6),
        # float32: the export's tolerance is max(10 x measured float32 error, 1e-5); at the golden
        # size that stays below 1e-3, so a gradient off by a factor 1.001 fails there.
        Column("float32", exact=2e-4, fd=2e-2, factor=10.0, floor=1e-5),
        # bfloat16 (8 mantissa bits) and float16 (11): 3 x the same-precision JAX error plus twice
        # the reference's own rounding error in the dtype.
        Column("bfloat16", exact=3e-2, fd=None, low=True, factor=3.0, floor=2.0),
        Column("float16", exact=4e-3, fd=None, low=True, factor=3.0, floor=2.0),
    )
}

# Backwards-compatible view: {dtype: {"exact": ..., "fd": ...}}.
TOLERANCES: dict[str, dict[str, float | None]] = {n: {"exact": c.exact, "fd": c.fd} for n, c in COLUMNS.items()}

FLOAT_DTYPES = tuple(COLUMNS)
LOW_PRECISION_DTYPES = tuple(n for n, c in COLUMNS.items() if c.low)

_TINY = 1e-30


def np_dtype(dtype: Any) -> np.dtype:
    """``dtype`` (a name such as 'bfloat16', or a dtype) as a NumPy dtype; bfloat16 via ml_dtypes."""
    if isinstance(dtype, str) and dtype == "bfloat16":
        return np.dtype(ml_dtypes.bfloat16)
    return np.dtype(dtype)


def column(dtype: Any) -> Column:
    """The column of ``dtype``; raises ValueError naming the valid ones."""
    name = np_dtype(dtype).name if not isinstance(dtype, str) or dtype not in COLUMNS else dtype
    if name not in COLUMNS:
        raise ValueError(f"no tolerances for dtype {name!r}; choose one of {', '.join(FLOAT_DTYPES)}")
    return COLUMNS[name]


def tolerance(dtype: Any, kind: str) -> float:
    """Return the tolerance of ``kind`` ('exact' or 'fd') for ``dtype``.

    Raises ValueError for 'fd' in a low-precision column, where finite differences are meaningless.
    """
    col = column(dtype)
    tol = getattr(col, kind)
    if tol is None:
        raise ValueError(f"finite differences are meaningless in {col.name}; compare against float64")
    return tol


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


def compare(
    a: jax.typing.ArrayLike, b: jax.typing.ArrayLike, *, atol: float = 0.0, allow: Any = None
) -> Comparison:
    """Compare ``a`` to reference ``b``: ||a - b||inf / max(||b||inf, atol, tiny) and the worst element.

    Non-finite truths are allowed: an infinity in ``b`` matched by the same infinity in ``a``
    compares equal (error 0 there); any other non-finite value in ``a``, or a finite value where
    ``b`` is infinite, makes the error infinite and points at the first such element. The norm
    of ``b`` is taken over its finite entries. ``atol`` is an absolute floor of the scale, so an
    exactly-zero truth does not turn round-off into an infinite relative error. ``allow``
    (broadcast like ``a``) is each element's known uncertainty, a finite difference's rounding
    noise: only the part of ``|a - b|`` beyond it counts.
    Raises ValueError if the shapes differ.
    """
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"shape {a.shape} does not match reference shape {b.shape}")
    if a.size == 0:
        return Comparison(0.0, (), 0.0, 0.0, True)
    fin_b = np.isfinite(b)
    da, db = a, b  # the values compared: non-finite truths masked out, where there are any
    if not (fin_b.all() and np.isfinite(a).all()):
        same = (a == b) & ~fin_b  # matching infinities
        bad = (~np.isfinite(a) | ~fin_b) & ~same
        if bad.any():
            flat = int(np.flatnonzero(bad)[0])
            idx = tuple(int(i) for i in np.unravel_index(flat, a.shape))
            return Comparison(float("inf"), idx, float(a[idx]), float(b[idx]), False)
        da, db = np.where(fin_b, a, 0.0), np.where(fin_b, b, 0.0)
    diff = np.abs(da - db)
    if allow is not None:
        allow = np.broadcast_to(np.asarray(allow, np.float64), diff.shape)
        diff = np.maximum(diff - np.where(np.isfinite(allow), allow, 0.0), 0.0)
    flat = int(np.argmax(diff))
    idx = tuple(int(i) for i in np.unravel_index(flat, a.shape))
    scale = max(float(np.max(np.abs(db))), float(atol), _TINY)
    return Comparison(float(diff[idx]) / scale, idx, float(a[idx]), float(b[idx]), True)


@contextlib.contextmanager
def reference_mode(dtype: str | np.dtype = "float64") -> Iterator[None]:
    """Scoped settings for reference work: x64 on when ``dtype`` is float64, matmuls at 'highest'.

    Nothing is changed outside the ``with`` block, so importing or calling jaxcalc never
    flips ``jax_enable_x64`` for the caller.
    """
    x64 = np_dtype(dtype) == np.float64 or bool(jax.config.jax_enable_x64)
    with jax.enable_x64(x64), jax.default_matmul_precision("highest"):
        yield
