"""A case is data: forward, handwritten derivatives, seeded inputs and probes.

Conventions every case follows:

* ``forward(*primals) -> Array``: primals in the order of ``inputs``.
* ``vjp(primals, ct) -> tuple``: the handwritten pullback, one cotangent per
  *differentiable* input, in order (integer inputs get none).
* ``jvp(primals, tangents) -> Array`` (optional): the handwritten pushforward,
  ``tangents`` aligned with the differentiable inputs.
* ``chain(primals) -> (outer, inner)`` (optional, composite cases): two
  functions of the first differentiable input's intermediate such that
  ``forward`` with that input set to ``x`` equals ``outer(inner(x))``.

Inputs are drawn from ``jax.random.key(seed)`` with ``seed = crc32(name)``, in
float64, then cast; so every run gives the same bits on the same backend.
"""

from __future__ import annotations

import difflib
import functools
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

__all__ = [
    "Input",
    "Case",
    "REGISTRY",
    "register",
    "get_case",
    "case_names",
    "UnknownCaseError",
    "normal",
    "uniform",
    "away_from_zero",
    "integers",
    "binary",
]

Sampler = Callable[[jax.Array, tuple[int, ...]], jax.Array]


# ----------------------------------------------------------------------------- samplers
# Each sampler takes (key, shape) and returns float64 (or int64) values; they run with
# x64 enabled inside Case.sample.


def normal(scale: float = 1.0, loc: float = 0.0) -> Sampler:
    """Gaussian values loc + scale * N(0, 1)."""
    return lambda key, shape: loc + scale * jax.random.normal(key, shape, jnp.float64)


def uniform(lo: float, hi: float) -> Sampler:
    """Uniform values in [lo, hi)."""
    return lambda key, shape: jax.random.uniform(key, shape, jnp.float64, lo, hi)


def away_from_zero(lo: float = 0.1, hi: float = 2.0) -> Sampler:
    """Random sign times uniform [lo, hi): keeps every element at least ``lo`` from a kink at 0."""

    def sample(key: jax.Array, shape: tuple[int, ...]) -> jax.Array:
        k1, k2 = jax.random.split(key)
        mag = jax.random.uniform(k1, shape, jnp.float64, lo, hi)
        return jnp.where(jax.random.bernoulli(k2, 0.5, shape), mag, -mag)

    return sample


def integers(n: int) -> Sampler:
    """Integers in [0, n) (labels, ids); not differentiable."""
    return lambda key, shape: jax.random.randint(key, shape, 0, n, jnp.int64)


def binary() -> Sampler:
    """Float targets in {0, 1} with both values present when there are at least two."""

    def sample(key: jax.Array, shape: tuple[int, ...]) -> jax.Array:
        y = jax.random.bernoulli(key, 0.5, shape).astype(jnp.float64)
        flat = y.reshape(-1)
        if flat.size >= 2:
            flat = flat.at[0].set(0.0).at[1].set(1.0)
        return flat.reshape(shape)

    return sample


# ----------------------------------------------------------------------------- records


@dataclass(frozen=True)
class Input:
    """One named input of a case: golden-set shape, kind and sampler."""

    name: str
    shape: tuple[int, ...]
    sampler: Sampler = field(default_factory=normal)
    integer: bool = False

    @property
    def differentiable(self) -> bool:
        return not self.integer


@dataclass(frozen=True)
class Case:
    """A differentiable map F from named inputs to one array, with everything to check it."""

    name: str
    description: str
    inputs: tuple[Input, ...]
    forward: Callable[..., jax.Array]
    vjp: Callable[[tuple, jax.Array], tuple]
    jvp: Callable[[tuple, tuple], jax.Array] | None = None
    chain: Callable[[tuple], tuple[Callable, Callable]] | None = None
    tags: tuple[str, ...] = ()

    @property
    def seed(self) -> int:
        """The documented seed of this case: crc32 of its name."""
        return zlib.crc32(self.name.encode())

    @property
    def input_names(self) -> tuple[str, ...]:
        return tuple(i.name for i in self.inputs)

    @property
    def diff_names(self) -> tuple[str, ...]:
        return tuple(i.name for i in self.inputs if i.differentiable)

    @property
    def diff_index(self) -> tuple[int, ...]:
        return tuple(k for k, i in enumerate(self.inputs) if i.differentiable)

    def sample(self, dtype: Any = "float64") -> dict[str, np.ndarray]:
        """The seeded inputs, as host arrays: floats cast to ``dtype``, integers int64."""
        dtype = np.dtype(dtype)
        raw = _draw_inputs(self)
        return {spec.name: raw[spec.name].astype(np.int64 if spec.integer else dtype) for spec in self.inputs}

    def probes(self, dtype: Any = "float64") -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """Random probes (never all-ones): a cotangent like the output, a tangent per diff input."""
        dtype = np.dtype(dtype)
        ct, tangents = _draw_probes(self)
        return ct.astype(dtype), {k: v.astype(dtype) for k, v in tangents.items()}

    def output_shape(self) -> tuple[int, ...]:
        """Shape of F's output at the golden-set input shapes."""
        with jax.enable_x64(True):
            structs = [
                jax.ShapeDtypeStruct(s.shape, jnp.int64 if s.integer else jnp.float64) for s in self.inputs
            ]
            return tuple(jax.eval_shape(self.forward, *structs).shape)


# ----------------------------------------------------------------------------- registry

REGISTRY: dict[str, Case] = {}


class UnknownCaseError(KeyError):
    """Raised for a case name not in the registry; its message suggests close names."""

    def __str__(self) -> str:
        return str(self.args[0])


def register(case: Case) -> Case:
    """Add ``case`` to the registry (names are unique)."""
    if case.name in REGISTRY:
        raise ValueError(f"case {case.name!r} registered twice")
    REGISTRY[case.name] = case
    return case


def case_names() -> tuple[str, ...]:
    """All registered case names, in registration order."""
    return tuple(REGISTRY)


def get_case(name: str) -> Case:
    """Look up a case by name; an unknown name raises UnknownCaseError naming close matches."""
    try:
        return REGISTRY[name]
    except KeyError:
        close = difflib.get_close_matches(name, REGISTRY, n=3, cutoff=0.5)
        hint = f"; did you mean {', '.join(close)}?" if close else "; see 'jaxcalc cases'"
        raise UnknownCaseError(f"unknown case {name!r}{hint}") from None


# ----------------------------------------------------------------------------- drawing
# Each case's draws run as one jitted call in float64 (eager draws would compile every random
# op separately), and are cached: the values depend only on the case.


@functools.cache
def _draw_inputs(case: Case) -> dict[str, np.ndarray]:
    def draw(key):
        keys = jax.random.split(key, len(case.inputs) + 1)
        return {spec.name: spec.sampler(k, spec.shape) for k, spec in zip(keys[1:], case.inputs, strict=True)}

    with jax.enable_x64(True):
        out = jax.device_get(jax.jit(draw)(jax.random.key(case.seed)))
    # jit returns dicts with sorted keys: rebuild them in the case's input order.
    return {spec.name: np.asarray(out[spec.name]) for spec in case.inputs}


@functools.cache
def _draw_probes(case: Case) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    out_shape = case.output_shape()

    def draw(key):
        keys = jax.random.split(jax.random.fold_in(key, 1), len(case.inputs) + 1)
        ct = jax.random.normal(keys[0], out_shape, jnp.float64)
        tangents = {
            spec.name: jax.random.normal(k, spec.shape, jnp.float64)
            for k, spec in zip(keys[1:], case.inputs, strict=True)
            if spec.differentiable
        }
        return ct, tangents

    with jax.enable_x64(True):
        ct, tangents = jax.device_get(jax.jit(draw)(jax.random.key(case.seed)))
    return np.asarray(ct), {n: np.asarray(tangents[n]) for n in case.diff_names}
