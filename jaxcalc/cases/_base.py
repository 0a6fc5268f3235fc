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

Inputs are drawn from ``jax.random.key(seed)`` with ``seed = crc32(name)``: input i
uses ``fold_in(key, i)``, probes use ``fold_in(fold_in(key, 1000), i)``. Draws are
float64 standard normals or uniforms taken in fixed blocks of 1024 values (block b from
``fold_in(k, b)``), so one compiled random kernel serves every case; samplers shape and
scale them on the host, then values are cast. Every run gives the same bits.
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
    "Sampler",
    "std_normal",
    "std_uniform",
    "subkey",
    "normal",
    "uniform",
    "away_from_zero",
    "integers",
    "binary",
]


# ----------------------------------------------------------------------------- samplers
# A sampler maps (key, shape) to host values (float64, or int64 for integer inputs). It builds
# them from std_normal / std_uniform, which draw fixed-size blocks with jax.random.

Sampler = Callable[[jax.Array, tuple[int, ...]], np.ndarray]

_BLOCK = 1024


@functools.partial(jax.jit, static_argnums=1)
def _block(key: jax.Array, kind: str) -> jax.Array:
    if kind == "normal":
        return jax.random.normal(key, (_BLOCK,), jnp.float64)
    return jax.random.uniform(key, (_BLOCK,), jnp.float64)


def _draw(key: jax.Array, shape: tuple[int, ...], kind: str) -> np.ndarray:
    n = int(np.prod(shape, dtype=np.int64))
    with jax.enable_x64(True):
        blocks = [np.asarray(_block(jax.random.fold_in(key, b), kind)) for b in range(-(-n // _BLOCK))]
    flat = np.concatenate(blocks)[:n] if blocks else np.zeros(0)
    return flat.reshape(shape)


def std_normal(key: jax.Array, shape: tuple[int, ...]) -> np.ndarray:
    """Float64 N(0, 1) values of ``shape`` from ``key``."""
    return _draw(key, shape, "normal")


def std_uniform(key: jax.Array, shape: tuple[int, ...]) -> np.ndarray:
    """Float64 U[0, 1) values of ``shape`` from ``key``."""
    return _draw(key, shape, "uniform")


def subkey(key: jax.Array, i: int) -> jax.Array:
    """The i-th independent key derived from ``key`` (``fold_in``)."""
    return jax.random.fold_in(key, i)


def normal(scale: float = 1.0, loc: float = 0.0) -> Sampler:
    """Gaussian values loc + scale * N(0, 1)."""
    return lambda key, shape: loc + scale * std_normal(key, shape)


def uniform(lo: float, hi: float) -> Sampler:
    """Uniform values in [lo, hi)."""
    return lambda key, shape: lo + (hi - lo) * std_uniform(key, shape)


def away_from_zero(lo: float = 0.1, hi: float = 2.0) -> Sampler:
    """Random sign times uniform [lo, hi): keeps every element at least ``lo`` from a kink at 0."""

    def sample(key: jax.Array, shape: tuple[int, ...]) -> np.ndarray:
        mag = lo + (hi - lo) * std_uniform(subkey(key, 0), shape)
        return np.where(std_uniform(subkey(key, 1), shape) < 0.5, mag, -mag)

    return sample


def integers(n: int) -> Sampler:
    """Integers in [0, n) (labels, ids); not differentiable."""
    return lambda key, shape: np.minimum(np.floor(n * std_uniform(key, shape)), n - 1).astype(np.int64)


def binary() -> Sampler:
    """Float targets in {0, 1} with both values present when there are at least two."""

    def sample(key: jax.Array, shape: tuple[int, ...]) -> np.ndarray:
        flat = (std_uniform(key, shape) < 0.5).astype(np.float64).reshape(-1)
        if flat.size >= 2:
            flat[0], flat[1] = 0.0, 1.0
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
# Cached: the values depend only on the case.


@functools.cache
def _draw_inputs(case: Case) -> dict[str, np.ndarray]:
    key = jax.random.key(case.seed)
    return {
        spec.name: np.asarray(spec.sampler(subkey(key, i), spec.shape)) for i, spec in enumerate(case.inputs)
    }


@functools.cache
def _draw_probes(case: Case) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    key = subkey(jax.random.key(case.seed), 1000)
    ct = std_normal(subkey(key, 0), case.output_shape())
    tangents = {
        spec.name: std_normal(subkey(key, i + 1), spec.shape)
        for i, spec in enumerate(case.inputs)
        if spec.differentiable
    }
    return ct, tangents
