"""Choosing instances from the catalogue by case, size, regime and dims (``export``, ``check``).

>>> from jaxcalc.cases import select_instances
>>> [i.id for i in select_instances(cases=["softmax"], sizes=["golden"])][:2]
['softmax', 'softmax~large']
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from jaxcalc.cases._base import (
    REGIMES,
    REGISTRY,
    SIZES,
    Case,
    Instance,
    SpecError,
    UnknownCaseError,
    get_case,
    instance,
    parse_instance_id,
    stage_instances,
)

__all__ = ["select_instances", "parse_dims", "check_names"]


def check_names(kind: str, given: Iterable[str] | None, valid: Sequence[str]) -> None:
    """SpecError naming the valid choices (and the closest one) for the first unknown name."""
    for g in given or ():
        if g not in valid:
            close = difflib.get_close_matches(g, valid, n=1)
            hint = f"; did you mean {close[0]}?" if close else ""
            raise SpecError(f"unknown {kind} {g!r}{hint} (valid: {', '.join(valid)})")


def _case(name: str) -> Case:
    try:
        return get_case(name)
    except UnknownCaseError as exc:
        raise SpecError(str(exc)) from None


def parse_dims(items: Iterable[str]) -> dict[str, dict[str, int]]:
    """``['attention.Tq=113', ...]`` -> ``{'attention': {'Tq': 113}}``; SpecError for a malformed item."""
    out: dict[str, dict[str, int]] = {}
    for item in items:
        lhs, eq, rhs = item.partition("=")
        name, dot, dim = lhs.partition(".")
        if not (eq and dot and name and dim):
            raise SpecError(f"--dims {item!r}: expected CASE.DIM=N, e.g. attention.Tq=113")
        try:
            n = int(rhs)
        except ValueError:
            raise SpecError(f"--dims {item!r}: N must be a positive integer") from None
        if n < 1 or n > 2**31:
            raise SpecError(f"--dims {item!r}: N must be between 1 and 2**31")
        out.setdefault(name, {})[dim] = n
    return out


def select_instances(
    *,
    cases: Sequence[str] | None = None,
    sizes: Sequence[str] | None = None,
    regimes: Sequence[str] | None = None,
    dims: Mapping[str, Mapping[str, int]] | Sequence[str] | None = None,
    default_sizes: Sequence[str] = ("golden",),
    stages: bool = False,
) -> list[Instance]:
    """The instances named by the selectors, in catalogue order.

    ``cases`` holds case names or instance ids (``softmax@tiles~large``); ``None`` means every
    case. ``sizes`` defaults to ``default_sizes`` (to none when ``dims`` are given), ``regimes``
    to every regime a case declares. ``dims`` (``{'attention': {'Tq': 113}}`` or
    ``['attention.Tq=113']``) adds that case at its golden size with those dims overridden. With
    ``stages``, each composite's golden typical instance is followed by its stages.

    Raises SpecError (one line naming the valid choices) for an unknown name, size, regime or
    dim, for dims too large for memory and for an empty selection, before any work starts.
    """
    check_names("size", sizes, SIZES)
    check_names("regime", regimes, REGIMES)
    if dims is None:
        dims = {}
    elif not isinstance(dims, Mapping):
        dims = parse_dims(dims)
    for name in dims:
        _case(name)
    sizes = list(sizes) if sizes else ([] if dims else list(default_sizes))
    out: list[Instance] = []
    seen: set[str] = set()

    def add(inst: Instance) -> None:
        if inst.id not in seen:
            seen.add(inst.id)
            out.append(inst)

    picked: list[Any] = []
    if cases:
        for item in cases:
            if "@" in item or "~" in item:
                name, size, regime, given = parse_instance_id(item)
                add(instance(_case(name), size, regime, given))
            else:
                picked.append(_case(item))
    elif not dims:
        picked = list(REGISTRY.values())
    for case in picked:
        for size in sizes:
            if size in case.sizes:
                for regime in case.regime_names:
                    if regimes is None or regime in regimes:
                        add(instance(case, size, regime))
    for name, given in dims.items():
        case = _case(name)
        for regime in case.regime_names:
            if regimes is None or regime in regimes:
                add(instance(case, "golden", regime, dict(given)))
    if not out:
        raise SpecError(
            "the selection holds no instance (see 'jaxcalc cases' for each case's sizes and regimes)"
        )
    if not stages:
        return out
    with_stages: list[Instance] = []
    for inst in out:
        with_stages.append(inst)
        if inst.size == "golden" and inst.regime == "typical" and not inst.given:
            with_stages.extend(stage_instances(inst))
    return with_stages
