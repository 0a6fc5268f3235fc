"""Diagnosis of a failed comparison: what kind of wrong an array is, and where.

When ``got`` fails against its reference ``expected``, :func:`diagnose` tests a fixed list of
hypotheses on the host (NumPy only, nothing compiled) and returns the first that holds, as one
short line plus structured fields for JSON; or "no simple pattern". A result within tolerance
never gets a diagnosis.

The hypotheses (:data:`HYPOTHESES`), the named scale factors (:data:`FACTORS`) and the tile
sizes (:data:`TILES`) are data: each entry carries its thresholds and the reason it is there,
and the order of :data:`HYPOTHESES` is the order of strength. A new hypothesis is one entry.

Context makes the diagnosis specific: ``dims`` (the instance's named dims, e.g. ``{"d": 64}``)
name factors such as sqrt(d); ``inputs`` (boolean or -inf masks, integer ids) explain errors
only where an input is masked or only at repeated ids; ``intermediates`` (the forward's values)
explain an error as a missing multiple of one of them.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from jaxcalc import _locate
from jaxcalc.numerics import COLUMNS, compare

__all__ = ["Diagnosis", "Hypothesis", "Factor", "HYPOTHESES", "FACTORS", "TILES", "diagnose"]

TILES = _locate.TILES


@dataclass(frozen=True)
class Diagnosis:
    """The strongest hypothesis that holds: ``kind`` (a hypothesis name), one ``line``, ``fields``."""

    kind: str
    line: str
    fields: dict[str, Any] = field(default_factory=dict)

    def __str__(self) -> str:
        return self.line

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: ``{"kind": ..., "line": ..., **fields}``."""
        return {"kind": self.kind, "line": self.line, **self.fields}


@dataclass(frozen=True)
class Factor:
    """A named scale factor; ``{n}`` in ``name`` is a dim's name when ``per_dim``."""

    name: str
    value: Callable[[int], float]
    per_dim: bool
    reason: str


FACTORS: tuple[Factor, ...] = (
    Factor("2", lambda n: 2.0, False, "a term counted twice, or the 2 of d(x^2) = 2x applied twice"),
    Factor("1/2", lambda n: 0.5, False, "the 2 of d(x^2) = 2x dropped"),
    Factor("{n}", lambda n: float(n), True, "a sum where a mean was meant (the 1/{n} dropped)"),
    Factor("1/{n}", lambda n: 1.0 / n, True, "a mean where a sum was meant, or the 1/{n} applied twice"),
    Factor("√{n}", lambda n: math.sqrt(n), True, "the 1/√{n} of scaled attention dropped"),
    Factor("1/√{n}", lambda n: 1.0 / math.sqrt(n), True, "the 1/√{n} of scaled attention applied twice"),
    Factor("{n}/({n}-1)", lambda n: n / (n - 1), True, "an unbiased variance where the biased one is meant"),
    Factor("({n}-1)/{n}", lambda n: (n - 1) / n, True, "a biased variance where the unbiased one is meant"),
)


@dataclass
class _Ctx:
    """One failed comparison and its context; ``wrong`` marks the elements out of tolerance."""

    got: np.ndarray
    expected: np.ndarray
    tol: float
    atol: float
    dims: dict[str, int]
    inputs: dict[str, np.ndarray]
    intermediates: dict[str, np.ndarray]

    def __post_init__(self) -> None:
        self.same_shape = self.got.shape == self.expected.shape
        fin_e = np.isfinite(self.expected)
        self.e0 = np.where(fin_e, self.expected, 0.0)  # finite parts, for fits
        self.scale = max(float(np.max(np.abs(self.e0), initial=0.0)), self.atol, 1e-30)
        if self.same_shape:
            g, e = self.got, self.expected
            self.g0 = np.where(fin_e & np.isfinite(g), g, 0.0)
            same_inf = (g == e) & ~fin_e
            self.nonfinite = ~same_inf & ~(fin_e & np.isfinite(g))
            self.wrong = self.nonfinite | (np.abs(self.g0 - self.e0) > self.tol * self.scale)
            self.err = float(np.max(np.abs(self.g0 - self.e0), initial=0.0)) / self.scale


@dataclass(frozen=True)
class Hypothesis:
    """One kind of wrong: ``test(ctx, thresholds)`` returns a Diagnosis when it holds, else None."""

    name: str
    test: Callable[[_Ctx, Mapping[str, float]], Diagnosis | None]
    thresholds: Mapping[str, float]
    reason: str


# ----------------------------------------------------------------------------- helpers


def _fit(g: np.ndarray, e: np.ndarray) -> tuple[float, float]:
    """Least-squares s in g = s e, and the residual max|g - s e| / max|s e| (inf when e = 0)."""
    ee = float(np.vdot(e, e))
    if ee == 0.0:
        return 0.0, math.inf
    s = float(np.vdot(g, e)) / ee
    denom = abs(s) * float(np.max(np.abs(e)))
    return s, (float(np.max(np.abs(g - s * e))) / denom if denom > 0 else math.inf)


def _names(value: float, dims: Mapping[str, int], rel: float) -> list[tuple[str, str]]:
    """Every (name, reason) in FACTORS within relative ``rel`` of ``value`` (value > 0)."""
    out = []
    for f in FACTORS:
        for dname, n in dims.items() if f.per_dim else [("", 0)]:
            if f.per_dim and n < 2:
                continue
            v = f.value(n)
            if abs(value / v - 1.0) <= rel:
                label = f.name.format(n=dname) + (f" ({dname}={n})" if f.per_dim else "")
                out.append((label, f.reason.format(n=dname)))
    return out


def _num(x: float) -> str:
    return f"{x:.6g}"


def _explain_scale(s: float, resid: float, dims: Mapping[str, int], th: Mapping[str, float]) -> tuple:
    """(kind, phrase, names) for a fitted factor s: 'sign flipped', a named factor, or None."""
    rel = min(max(th["name_rel"], 2 * resid), th["name_rel_max"])
    mag = abs(s)
    named = [] if abs(mag - 1.0) <= rel else _names(mag, dims, rel)
    if s < 0 and not named and abs(mag - 1.0) <= rel:
        return "sign_flip", "sign flipped", []
    if named:
        what = " = ".join(n for n, _ in named)
        phrase = f"{'sign flipped and ' if s < 0 else ''}×{what}? {named[0][1]}"
        return ("sign_flip" if s < 0 else "scale"), phrase, [n for n, _ in named]
    return None, None, []


# ----------------------------------------------------------------------------- hypotheses


def _nonfinite(ctx: _Ctx, th: Mapping[str, float]) -> Diagnosis | None:
    if not ctx.same_shape or not ctx.nonfinite.any():
        return None
    bad, g = ctx.nonfinite, ctx.got
    kinds = [
        (np.isnan(g) & bad, "NaN"),
        (np.isposinf(g) & bad, "+inf"),
        (np.isneginf(g) & bad, "-inf"),
        (np.isfinite(g) & bad, "finite values where expected is infinite"),
    ]
    what = ", ".join(f"{int(m.sum())} {label}" for m, label in kinds if m.any())
    loc = _locate.describe(bad)
    masked = [n for n, m in _masks(ctx) if (bad <= m).all()]
    if bad.all():
        line = f"non-finite: {what}, every element"
    else:
        others_wrong = (ctx.wrong & ~bad).any()
        rest = "other elements are wrong too" if others_wrong else "the other elements are right"
        line = f"non-finite: {what} at {loc.where}; {rest}"
    both_nan = bad & np.isnan(g) & np.isnan(ctx.expected)
    if both_nan.any():
        line += "; expected is NaN there too: is f itself finite at these arguments?"
    if masked:
        line += f"; all where input '{masked[0]}' is masked: a fully masked row or exp(-inf - -inf)?"
    return Diagnosis(
        "nonfinite",
        line,
        {
            "positions": loc.positions,
            "count": int(bad.sum()),
            "masked_input": masked[0] if masked else None,
            **loc.fields,
        },
    )


def _zeros(ctx: _Ctx, th: Mapping[str, float]) -> Diagnosis | None:
    if not ctx.same_shape or np.max(np.abs(ctx.g0), initial=0.0) > th["zero"] * ctx.tol * ctx.scale:
        return None
    return Diagnosis(
        "zeros",
        f"all zeros where expected is not (max |expected| {ctx.scale:.3g}): "
        "a term dropped, or a stop-gradient where none belongs?",
        {},
    )


def _scale(ctx: _Ctx, th: Mapping[str, float]) -> Diagnosis | None:
    if not ctx.same_shape:
        return None
    s, resid = _fit(ctx.g0, ctx.e0)
    if not (resid <= max(ctx.tol, th["floor"]) and resid <= th["explained"] * ctx.err):
        return None
    kind, phrase, names = _explain_scale(s, resid, ctx.dims, th)
    fields = {"factor": s, "residual": resid, "names": names}
    if kind == "sign_flip" and not names:
        return Diagnosis("sign_flip", "sign flipped: got = −1 × expected everywhere", fields)
    if kind:
        return Diagnosis(kind, f"got = {_num(s)} × expected everywhere: {phrase}", fields)
    if ctx.got.size < th["min_size_odd"]:
        return None  # any nonzero scalar is a multiple of another: an odd factor says nothing
    line = (
        f"got = {_num(s)} × expected everywhere (residual {resid:.1e}): not a named factor; a wrong constant?"
    )
    return Diagnosis("scale", line, fields)


def _permuted(ctx: _Ctx, th: Mapping[str, float]) -> Diagnosis | None:
    g, e = ctx.got, ctx.expected
    if (
        g.size != e.size
        or g.ndim != e.ndim
        or g.ndim < 2
        or g.ndim > th["max_ndim"]
        or not np.isfinite(g).all()
    ):
        return None
    for perm in itertools.permutations(range(g.ndim)):
        gp = np.transpose(g, perm)
        if perm == tuple(range(g.ndim)) or gp.shape != e.shape:
            continue
        what = "transposed" if g.ndim == 2 else f"axes permuted (got.transpose{perm} matches)"
        s, resid = _fit(gp, ctx.e0)
        if compare(gp, e, atol=ctx.atol).error <= ctx.tol:
            return Diagnosis(
                "transposed",
                f"{what}: got {g.shape} is expected {e.shape} with its axes swapped",
                {"perm": list(perm)},
            )
        if resid <= ctx.tol:
            kind, phrase, names = _explain_scale(s, resid, ctx.dims, th)
            if kind:
                return Diagnosis("transposed", f"{what} and {phrase}", {"perm": list(perm), "factor": s})
    if g.shape != e.shape and compare(g.reshape(e.shape), e, atol=ctx.atol).error <= ctx.tol:
        return Diagnosis(
            "reshaped",
            f"the right values in row-major order, but shape {g.shape} for "
            f"{e.shape}: reshaped where no reshape belongs?",
            {},
        )
    return None


def _masks(ctx: _Ctx) -> list[tuple[str, np.ndarray]]:
    """Each mask-like input (bool: False is masked; float: -inf is masked) as a mask of got's shape."""
    out = []
    for name, a in ctx.inputs.items():
        a = np.asarray(a)
        if a.dtype == bool:
            m = ~a
        elif a.dtype.kind == "f" and np.isneginf(a).any():
            m = np.isneginf(a)
        else:
            continue
        try:
            out.append((name, np.broadcast_to(m, ctx.got.shape)))
        except ValueError:
            if m.ndim >= 2 and m.shape[:-1] == ctx.got.shape[:-1]:  # a (T, T) mask: fully masked rows
                out.append(
                    (f"{name} (fully masked rows)", np.broadcast_to(m.all(-1, keepdims=True), ctx.got.shape))
                )
    return [(n, m) for n, m in out if m.any() and not m.all()]


def _where_masked(ctx: _Ctx, th: Mapping[str, float]) -> Diagnosis | None:
    if not ctx.same_shape:
        return None
    for name, m in _masks(ctx):
        if ctx.wrong.any() and (ctx.wrong <= m).all():
            k, total = int(ctx.wrong.sum()), int(m.sum())
            line = (
                f"wrong only where input '{name}' is masked ({k} of {total} masked positions wrong; "
                "every unmasked one right): a masked entry should get no gradient"
            )
            return Diagnosis("masked", line, {"input": name, "wrong": k, "masked": total})
    return None


def _repeated_ids(ctx: _Ctx, th: Mapping[str, float]) -> Diagnosis | None:
    if not ctx.same_shape or ctx.got.ndim < 1:
        return None
    v = ctx.got.shape[0]
    for name, ids in ctx.inputs.items():
        ids = np.asarray(ids)
        if ids.dtype.kind not in "iu" or ids.size == 0 or ids.min() < 0 or ids.max() >= v:
            continue
        counts = np.bincount(ids.ravel(), minlength=v)
        rep = counts >= 2
        if not (counts == 1).any():
            continue  # no id seen once: nothing shows that single ids are right and repeats are not
        wrong_rows = ctx.wrong.reshape(v, -1).any(axis=1)
        if not (wrong_rows.any() and (wrong_rows <= rep).all()):
            continue
        rows = np.flatnonzero(wrong_rows)
        e_rows = ctx.e0[rows] / counts[rows].reshape(-1, *([1] * (ctx.got.ndim - 1)))
        averaged = compare(ctx.g0[rows], e_rows, atol=ctx.atol).error <= ctx.tol
        how = "averaged over repeats, not summed" if averaged else "repeats not summed (the last write wins?)"
        eg = ", ".join(f"id {int(r)} ×{int(counts[r])}" for r in rows[:3])
        line = (
            f"wrong only at ids repeated in '{name}' ({len(rows)} of {int(rep.sum())} repeated ids wrong: "
            f"{eg}; ids seen once right): {how}"
        )
        return Diagnosis(
            "repeated_ids", line, {"input": name, "ids": [int(r) for r in rows[:16]], "averaged": averaged}
        )
    return None


def _partial_zeros(ctx: _Ctx, th: Mapping[str, float]) -> Diagnosis | None:
    if not ctx.same_shape or not ctx.wrong.any():
        return None
    if np.max(np.abs(ctx.g0[ctx.wrong])) > th["zero"] * ctx.tol * ctx.scale:
        return None
    loc = _locate.describe(ctx.wrong)
    note = f": {loc.note}" if loc.note else ": a term dropped there?"
    line = f"zero where expected is not, at {loc.where}; {loc.rest}{note}"
    return Diagnosis("partial_zeros", line, {"count": int(ctx.wrong.sum()), **loc.fields})


def _large_rows(ctx: _Ctx, th: Mapping[str, float]) -> Diagnosis | None:
    """The wrong rows are rows where a float input sits far from zero (offset rows, large logits)."""
    if not ctx.same_shape or ctx.got.ndim < 2 or not ctx.wrong.any():
        return None
    wrong = ctx.wrong.reshape(-1, ctx.got.shape[-1]).any(-1)
    for name, a in ctx.inputs.items():
        if a.dtype.kind != "f" or a.ndim < 2 or a.shape[:-1] != ctx.got.shape[:-1]:
            continue
        rows = a.reshape(-1, a.shape[-1])
        fin = np.where(np.isfinite(rows), rows, 0.0)
        offset = np.abs(fin.mean(-1))
        spread = fin.std(-1)
        if wrong.all():
            continue
        typical = float(np.median(np.maximum(offset, spread)[~wrong]))  # the rows that are right
        if not (offset[wrong] >= th["ratio"] * max(typical, 1e-30)).all():
            continue
        k = int(np.flatnonzero(wrong)[0])
        bad = np.flatnonzero(wrong)
        listed = ", ".join(map(str, bad[:6])) + (", ..." if bad.size > 6 else "")
        where = f"row{'s' if bad.size > 1 else ''} {listed} of {wrong.size}"
        line = (
            f"{where} wrong, each a row where input '{name}' sits far from zero (row mean "
            f"{_num(float(fin[k].mean()))}, spread {_num(float(spread[k]))}; "
            f"the right rows ~{_num(typical)}): "
            "cancellation at a large offset (a one-pass variance, a softmax without the max shift?)"
        )
        return Diagnosis("large_rows", line, {"input": name, "rows": np.flatnonzero(wrong).tolist()})
    return None


def _block(ctx: _Ctx, th: Mapping[str, float]) -> Diagnosis | None:
    if not ctx.same_shape or not ctx.wrong.any():
        return None
    loc = _locate.describe(ctx.wrong)
    if not loc.block:
        return None
    w = loc.block_mask
    s, resid = _fit(ctx.g0[w], ctx.e0[w])
    inner = f" (there got = {_num(s)} × expected)" if resid <= ctx.tol and abs(s - 1) > ctx.tol else ""
    line = f"{loc.where} wrong{inner}; {loc.rest}" + (f": {loc.note}" if loc.note else "")
    return Diagnosis("block", line, dict(loc.fields))


def _terms(ctx: _Ctx) -> list[tuple[str, np.ndarray]]:
    pool = [(f"intermediate '{n}'", a) for n, a in ctx.intermediates.items()]
    pool += [(f"input '{n}'", a) for n, a in ctx.inputs.items() if np.asarray(a).dtype.kind == "f"]
    out = []
    for name, a in pool:
        a = np.asarray(a, dtype=np.float64)
        if a.shape == ctx.got.shape and np.isfinite(a).all() and np.any(a):
            out.append((name, a))
    return out


def _missing_term(ctx: _Ctx, th: Mapping[str, float]) -> Diagnosis | None:
    if not ctx.same_shape:
        return None
    r = ctx.e0 - ctx.g0
    for name, a in _terms(ctx):
        c = float(np.vdot(r, a) / np.vdot(a, a))
        if c != 0 and np.max(np.abs(r - c * a)) <= ctx.tol * ctx.scale:
            line = f"missing a term: expected − got = {_num(c)} × {name} (within tolerance)"
            return Diagnosis("missing_term", line, {"term": name, "coefficient": c})
    return None


def _correlated_term(ctx: _Ctx, th: Mapping[str, float]) -> Diagnosis | None:
    if not ctx.same_shape or ctx.got.size < th["min_size"]:
        return None
    r = (ctx.e0 - ctx.g0).ravel()
    best = max(
        ((abs(float(np.corrcoef(r, a.ravel())[0, 1])), n) for n, a in _terms(ctx) if np.std(a) > 0),
        default=(0.0, ""),
    )
    if not np.isfinite(best[0]) or best[0] < th["corr"]:
        return None
    line = f"the error correlates with {best[1]} (|ρ| = {best[0]:.3f}): a missing or mis-scaled term in it?"
    return Diagnosis("correlated_term", line, {"term": best[1], "correlation": best[0]})


HYPOTHESES: tuple[Hypothesis, ...] = (
    Hypothesis(
        "nonfinite",
        _nonfinite,
        {},
        "NaN or inf where the truth is finite poisons every later fit; say where it sits first",
    ),
    Hypothesis(
        "zeros",
        _zeros,
        {"zero": 1.0},
        "an all-zero gradient: a term dropped or a stop-gradient (|got| within tolerance of 0)",
    ),
    Hypothesis(
        "scale",
        _scale,
        {"floor": 1e-12, "explained": 0.1, "name_rel": 1e-4, "name_rel_max": 1e-2, "min_size_odd": 4},
        "one least-squares factor s with got - s expected within tolerance and under a tenth of the "
        "error; named (2, 1/2, -1, N, 1/N, √d, ...) within max(1e-4, 2 x residual), at most 1e-2",
    ),
    Hypothesis(
        "transposed",
        _permuted,
        {"max_ndim": 4, "name_rel": 1e-4, "name_rel_max": 1e-2},
        "got matches expected after permuting its axes (or only reshaping); up to 4 axes",
    ),
    Hypothesis(
        "masked", _where_masked, {}, "every wrong element sits where an input is masked (bool False or -inf)"
    ),
    Hypothesis(
        "repeated_ids",
        _repeated_ids,
        {},
        "every wrong row of a table gradient is an id that occurs twice or more, and some id occurs once",
    ),
    Hypothesis(
        "partial_zeros",
        _partial_zeros,
        {"zero": 1.0},
        "got is zero exactly where it is wrong: a term dropped on part of the array",
    ),
    Hypothesis(
        "missing_term",
        _missing_term,
        {},
        "expected - got is c times one intermediate (or float input), within tolerance",
    ),
    Hypothesis(
        "large_rows",
        _large_rows,
        {"ratio": 100.0},
        "every wrong row is one where a float input's row mean is over 100x the right rows' scale",
    ),
    Hypothesis(
        "block",
        _block,
        {},
        "the wrong elements fill a contiguous index range of one axis: a tile or mask edge",
    ),
    Hypothesis(
        "correlated_term",
        _correlated_term,
        {"corr": 0.99, "min_size": 8},
        "the error correlates (|ρ| >= 0.99) with one intermediate: a term missing or mis-scaled",
    ),
)


def _dims_from_shapes(got: np.ndarray, inputs: Mapping[str, np.ndarray]) -> dict[str, int]:
    """Axis sizes as stand-in dims when the instance's names are not given: 'x.shape[0]' -> 8."""
    out: dict[str, int] = {}
    for name, a in [("got", got), *inputs.items()]:
        for i, n in enumerate(np.shape(a)):
            if n >= 2 and n not in out.values():
                out[f"{name}.shape[{i}]"] = int(n)
    return out


def diagnose(
    got: Any,
    expected: Any,
    *,
    tol: float | None = None,
    atol: float = 0.0,
    dims: Mapping[str, int] | None = None,
    inputs: Mapping[str, Any] | None = None,
    intermediates: Mapping[str, Any] | None = None,
    hypotheses: tuple[Hypothesis, ...] = HYPOTHESES,
) -> Diagnosis | None:
    """Diagnose ``got`` against reference ``expected``: None when within tolerance, else a Diagnosis.

    ``tol`` is the normwise relative tolerance of the comparison (default: the 'exact' tolerance of
    got's dtype column); ``atol`` its absolute floor, as in :func:`jaxcalc.numerics.compare`.
    Shapes may differ (a transposed result). Returns the first of ``hypotheses`` that holds, or
    kind 'none' ("no simple pattern") with where the error sits.
    """
    dtype = np.asarray(got).dtype
    if tol is None:
        tol = COLUMNS[dtype.name].exact if dtype.name in COLUMNS else COLUMNS["float64"].exact
    got = np.asarray(got, dtype=np.float64)
    expected = np.asarray(expected, dtype=np.float64)
    if got.size == 0 or expected.size == 0:
        return None
    if got.shape == expected.shape and compare(got, expected, atol=atol).error <= tol:
        return None
    inputs = {k: np.asarray(v) for k, v in (inputs or {}).items()}
    ctx = _Ctx(
        got,
        expected,
        float(tol),
        float(atol),
        dict(dims or _dims_from_shapes(got, inputs)),
        inputs,
        {k: np.asarray(v) for k, v in (intermediates or {}).items()},
    )
    for h in hypotheses:
        found = h.test(ctx, h.thresholds)
        if found is not None:
            return found
    if not ctx.same_shape:
        return Diagnosis(
            "none", f"no simple pattern: shape {got.shape} where {expected.shape} is expected", {}
        )
    worst = compare(got, expected, atol=atol)
    k = int(ctx.wrong.sum())
    line = f"no simple pattern: {k} of {got.size} elements wrong, worst at {worst.where()}"
    return Diagnosis("none", line, {"count": k, "worst": list(worst.index)})
