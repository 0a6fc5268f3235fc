"""Where the wrong elements of an array sit: a contiguous block of rows or columns, or a list.

Used by :mod:`jaxcalc.diagnose` to turn a boolean mask of wrong elements into words such as
"rows 64–128 of 129" / "rows 0–63 right" / "a tile boundary at 64?".
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = ["TILES", "Location", "describe"]

# Tile sizes a kernel commonly uses, largest first: a block edge at a multiple of one is named.
TILES: tuple[int, ...] = (128, 64, 32, 16)


@dataclass(frozen=True)
class Location:
    """``where`` the wrong elements are, which ones are ``rest`` (right), a ``note`` on the edges."""

    where: str
    rest: str
    note: str
    block: bool
    block_mask: np.ndarray | None
    positions: list[list[int]]
    fields: dict[str, Any] = field(default_factory=dict)


def _axis_words(ndim: int, axis: int) -> tuple[str, str]:
    """(plural, singular) name of an axis: rows/columns for a matrix."""
    if ndim == 1:
        return "elements", "element"
    if ndim == 2:
        return ("rows", "row") if axis == 0 else ("columns", "column")
    return f"indices along axis {axis}", f"index along axis {axis}"


def _span(plural: str, singular: str, lo: int, hi: int) -> str:
    return f"{singular} {lo}" if lo == hi else f"{plural} {lo}–{hi}"


def _edge_note(lo: int, hi: int, n: int) -> tuple[str, int | None]:
    """Words for the edges of the block [lo, hi] of n, naming tile boundaries; and the tile.

    Edges at no tile's multiple suggest a mask or padding edge only for a block of more than
    one index: a single wrong element in a short vector is just that."""
    notes, odd, tile = [], [], None
    for b in (lo, hi + 1):
        if not 0 < b < n:
            continue
        t = next((t for t in TILES if b % t == 0), None)
        if t is None:
            odd.append(str(b))
        elif b == lo and hi == n - 1 and n - lo < t:
            notes.append(f"the last partial tile of {t}?")
        else:
            notes.append(f"a tile boundary at {b}?")
        tile = tile or t
    if odd and hi > lo:  # a block; one wrong index is no mask's edge to speak of
        edges = f"an edge at {odd[0]}" if len(odd) == 1 else f"edges at {' and '.join(odd)}"
        notes.append(f"{edges} (no multiple of {TILES[-1]}): a mask or padding edge?")
    return "; ".join(notes), tile


def describe(mask: np.ndarray) -> Location:
    """Describe the True elements of ``mask``: a proper contiguous range of one axis if they fill one."""
    idx = np.argwhere(mask)
    positions = [[int(i) for i in p] for p in idx[:8]]
    k, total = int(mask.sum()), int(mask.size)
    if mask.ndim == 0:
        return Location("the scalar", "", "", False, None, positions)
    spans = []
    for axis in range(mask.ndim):
        proj = mask.any(axis=tuple(a for a in range(mask.ndim) if a != axis))
        hit = np.flatnonzero(proj)
        n = mask.shape[axis]
        if hit.size and hit.size < n and hit[-1] - hit[0] + 1 == hit.size:
            spans.append((hit.size / n, axis, int(hit[0]), int(hit[-1]), n))
    if not spans:
        first = ", ".join(str(p) for p in positions[: min(k, 4)])
        where = (
            f"{k} of {total} elements: {first}"
            if k <= 4
            else f"{k} of {total} elements, first at {positions[0]}"
        )
        return Location(where, "", "", False, None, positions)
    spans.sort()
    _, axis, lo, hi, n = spans[0]
    plural, singular = _axis_words(mask.ndim, axis)
    where = f"{_span(plural, singular, lo, hi)} of {n}"
    right = [(a, b) for a, b in ((0, lo - 1), (hi + 1, n - 1)) if a <= b]
    rest = " and ".join(_span(plural, singular, a, b) for a, b in right) + " right"
    if len(right) == 2 and right[0][0] < right[0][1] and right[1][0] < right[1][1]:
        rest = f"{plural} {right[0][0]}–{right[0][1]} and {right[1][0]}–{right[1][1]} right"
    note, tile = _edge_note(lo, hi, n)
    box = np.zeros(mask.shape, dtype=bool)
    sl = [slice(None)] * mask.ndim
    sl[axis] = slice(lo, hi + 1)
    box[tuple(sl)] = True
    if mask.ndim == 2 and len(spans) == 2:  # a rectangle: name the other axis too
        _, ax2, lo2, hi2, n2 = spans[1]
        p2, s2 = _axis_words(2, ax2)
        where += f", {_span(p2, s2, lo2, hi2)} of {n2}"
    fields = {"axis": axis, "range": [lo, hi], "size": n, "tile": tile}
    return Location(where, rest, note, True, box, positions, fields)
