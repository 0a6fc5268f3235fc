"""A case is a spec; what gets checked and exported is an instance (DESIGN §3a).

A :class:`Case` declares its inputs with symbolic dimensions ('T', 'd') and kinds (float, int,
bool mask), its fixed settings, the named dims of each size (``golden`` is the DESIGN §3 table;
``tiles`` straddles the tile boundaries kernels use; ``large`` is realistic and opt-in) and the
input regimes that apply to it (``typical``, ``large``, ``offset``, ``masked``, ``tiny``).
:func:`instance` turns (case, size or a user's dims, regime) into an :class:`Instance`: named
inputs, probes, F as a function of the differentiable inputs, and a stable id such as
``softmax@tiles~large``.

Conventions every case follows:

* ``forward(*primals) -> Array``: primals in the order of ``inputs``.
* ``vjp(primals, ct)``: the handwritten pullback, one cotangent per *differentiable* input,
  as a tuple in order or a dict keyed by name (:meth:`Case.named_vjp` keys either by name).
* ``jvp(primals, tangents) -> Array`` (optional): the handwritten pushforward,
  ``tangents`` aligned with the differentiable inputs.
* ``chain(primals) -> (outer, inner)`` (optional, composite cases): two
  functions of the first differentiable input's intermediate such that
  ``forward`` with that input set to ``x`` equals ``outer(inner(x))``.

Keys follow from names: the case key is ``jax.random.key(crc32(case name))``; an input's key
folds in crc32 of the input's name (then of the regime's name where the regime replaces its
sampler); probes fold in "probes", the regime, then "cotangent" or "tangent:<name>". Draws are
float64 standard normals or uniforms taken in fixed blocks of 1024 values (block b from
``fold_in(k, b)``), so one compiled random kernel serves every case; samplers shape and scale
them on the host, then values are cast. Every run gives the same bits. Weight scales follow
from the dimensions (:func:`fan_in`).
"""

from __future__ import annotations

import difflib
import functools
import math
import zlib
from collections.abc import Callable, Mapping, Sequence
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
    "fan_in",
    "large_rows",
    "large_magnitude",
    "large_scores",
    "tiny_magnitude",
    "offset_rows",
    "with_neg_inf",
    "ids_with_repeats",
    "Instance",
    "instance",
    "instances",
    "instance_id",
    "parse_instance_id",
    "of_diff",
    "StageInstance",
    "stage_instances",
    "SpecError",
    "SIZES",
    "REGIMES",
    "DEFAULT_SIZES",
    "MAX_INSTANCE_ELEMENTS",
]


# ----------------------------------------------------------------------------- samplers
# A sampler maps (key, shape, dims) to host values (float64, int64 for integer inputs, bool for
# masks); ``dims`` is the instance's named dimensions, for samplers whose range follows from
# them (ids in [0, V)). They build values from std_normal / std_uniform, which draw fixed-size
# blocks with jax.random.

Sampler = Callable[[jax.Array, tuple[int, ...], Mapping[str, int]], np.ndarray]

_BLOCK = 1024


@functools.partial(jax.jit, static_argnums=1)
def _block(key: jax.Array, kind: str) -> jax.Array:
    if kind == "normal":
        return jax.random.normal(key, (_BLOCK,), jnp.float64)
    return jax.random.uniform(key, (_BLOCK,), jnp.float64)


def _draw(key: jax.Array, shape: tuple[int, ...], kind: str) -> np.ndarray:
    n = int(np.prod(shape, dtype=np.int64))
    with jax.enable_x64(True):
        nb = -(-n // _BLOCK)
        if nb > 8:  # one vmapped call instead of a Python loop over many blocks
            keys = jax.vmap(lambda b: jax.random.fold_in(key, b))(jnp.arange(nb))
            flat = np.asarray(jax.vmap(lambda k: _block(k, kind))(keys)).reshape(-1)
        else:
            blocks = [np.asarray(_block(jax.random.fold_in(key, b), kind)) for b in range(nb)]
            flat = np.concatenate(blocks) if blocks else np.zeros(0)
    return flat[:n].reshape(shape)


def std_normal(key: jax.Array, shape: tuple[int, ...]) -> np.ndarray:
    """Float64 N(0, 1) values of ``shape`` from ``key``."""
    return _draw(key, shape, "normal")


def std_uniform(key: jax.Array, shape: tuple[int, ...]) -> np.ndarray:
    """Float64 U[0, 1) values of ``shape`` from ``key``."""
    return _draw(key, shape, "uniform")


def subkey(key: jax.Array, i: int | str) -> jax.Array:
    """An independent key derived from ``key`` and ``i`` (an int, or a name hashed with crc32)."""
    if isinstance(i, str):
        i = zlib.crc32(i.encode()) & 0x7FFFFFFF
    return jax.random.fold_in(key, i)


def normal(scale: float = 1.0, loc: float = 0.0) -> Sampler:
    """Gaussian values loc + scale * N(0, 1)."""
    return lambda key, shape, dims=None: loc + scale * std_normal(key, shape)


def fan_in(gain: float = 1.0) -> Sampler:
    """Weights ~ N(0, gain**2 / fan_in), fan_in = shape[0] (the input axis of ``x @ W``).

    The scale follows from the dimensions, so activations keep unit scale at every size.
    """
    return lambda key, shape, dims=None: gain * std_normal(key, shape) / math.sqrt(max(shape[0], 1))


def uniform(lo: float, hi: float) -> Sampler:
    """Uniform values in [lo, hi)."""
    return lambda key, shape, dims=None: lo + (hi - lo) * std_uniform(key, shape)


def away_from_zero(lo: float = 0.1, hi: float = 2.0) -> Sampler:
    """Random sign times uniform [lo, hi): keeps every element at least ``lo`` from a kink at 0."""

    def sample(key: jax.Array, shape: tuple[int, ...], dims: Mapping[str, int] | None = None) -> np.ndarray:
        mag = lo + (hi - lo) * std_uniform(subkey(key, 0), shape)
        return np.where(std_uniform(subkey(key, 1), shape) < 0.5, mag, -mag)

    return sample


def _resolve(n: int | str, dims: Mapping[str, int] | None) -> int:
    return int(dims[n]) if isinstance(n, str) else int(n)


def integers(n: int | str) -> Sampler:
    """Integers in [0, n) (labels, ids); ``n`` may name a dimension (e.g. 'V'). Not differentiable."""

    def sample(key: jax.Array, shape: tuple[int, ...], dims: Mapping[str, int] | None = None) -> np.ndarray:
        m = _resolve(n, dims)
        return np.minimum(np.floor(m * std_uniform(key, shape)), m - 1).astype(np.int64)

    return sample


def binary() -> Sampler:
    """Float targets in {0, 1} with both values present when there are at least two."""

    def sample(key: jax.Array, shape: tuple[int, ...], dims: Mapping[str, int] | None = None) -> np.ndarray:
        flat = (std_uniform(key, shape) < 0.5).astype(np.float64).reshape(-1)
        if flat.size >= 2:
            flat[0], flat[1] = 0.0, 1.0
        return flat.reshape(shape)

    return sample


# ---- regime samplers: the magnitudes of DESIGN §3a


def large_rows(scale: float = 2.0) -> Sampler:
    """Softmax-family rows past where exp overflows and underflows: even rows shifted to about
    +1000 (exp(x) overflows in float64 and float32), odd rows spread over more than 1000
    (exp of the difference to the row max underflows), rows alternating in sign of the shift."""

    def sample(key: jax.Array, shape: tuple[int, ...], dims: Mapping[str, int] | None = None) -> np.ndarray:
        x = scale * std_normal(subkey(key, 0), shape)
        if x.ndim == 0:
            return x + 1000.0
        rows = np.arange(x.shape[0]).reshape((-1,) + (1,) * (x.ndim - 1))
        sign = np.where((rows // 2) % 2 == 0, 1.0, -1.0)
        spread = 600.0 * std_normal(subkey(key, 1), shape)  # entries over more than +-1000
        return np.where(rows % 2 == 0, x + sign * 1000.0, spread + sign * 100.0)

    return sample


def _log_uniform(key: jax.Array, shape: tuple[int, ...], lo: float, hi: float) -> np.ndarray:
    return np.exp(np.log(lo) + (np.log(hi) - np.log(lo)) * std_uniform(key, shape))


def large_magnitude(lo: float = 3.0, hi: float = 1000.0) -> Sampler:
    """Arguments of both signs, half with magnitudes log-uniform in [lo, 16], half in [40, hi]: past
    where exp(x) overflows (float32 at 89, float64 at 710) and where 1 + exp(-x) rounds to 1.

    The band 16-40 is left out: there exp(-x) is between 1e-7 and 4e-18, and libraries switch to an
    asymptotic form (PyTorch's softplus returns x above 20) that differs from the exact value by up
    to 2e-9, which a float64 tolerance would flag while the band tests nothing the others miss.
    """

    def sample(key: jax.Array, shape: tuple[int, ...], dims: Mapping[str, int] | None = None) -> np.ndarray:
        small = _log_uniform(subkey(key, 0), shape, lo, 16.0)
        big = _log_uniform(subkey(key, 2), shape, 40.0, hi)
        mag = np.where(std_uniform(subkey(key, 3), shape) < 0.5, small, big)
        x = np.where(std_uniform(subkey(key, 1), shape) < 0.5, mag, -mag).reshape(-1)
        if x.size >= 2:  # always one argument past float64's exp overflow (710) of each sign
            x[0], x[1] = 0.9 * hi, -0.9 * hi
        return x.reshape(shape)

    return sample


def large_scores() -> tuple[Sampler, Sampler]:
    """Samplers (X, w) for x @ w scores of both signs with magnitudes in [40, 1000] (see
    :func:`large_magnitude` for why not 16-40): the first feature carries the score, w[0] = 1,
    the other features and weights are small."""

    def x_sample(key: jax.Array, shape: tuple[int, ...], dims: Mapping[str, int] | None = None) -> np.ndarray:
        x = 0.1 * std_normal(subkey(key, 0), shape)
        mag = _log_uniform(subkey(key, 1), shape[:-1], 40.0, 1000.0)
        x[..., 0] = np.where(std_uniform(subkey(key, 2), shape[:-1]) < 0.5, mag, -mag)
        return x

    def w_sample(key: jax.Array, shape: tuple[int, ...], dims: Mapping[str, int] | None = None) -> np.ndarray:
        w = 0.1 * std_normal(key, shape)
        w[..., 0] = 1.0
        return w

    return x_sample, w_sample


def tiny_magnitude(scale: float = 1e-5) -> Sampler:
    """Arguments of both signs near ``scale`` (1e-5): exp-based formulas like (e^2x - 1)/(e^2x + 1) cancel."""

    def sample(key: jax.Array, shape: tuple[int, ...], dims: Mapping[str, int] | None = None) -> np.ndarray:
        return away_from_zero(0.2, 2.0)(key, shape, dims) * scale

    return sample


def offset_rows(offsets: tuple[float, ...] = (1e4, -1e4, 30.0, -30.0), spread: float = 1.0) -> Sampler:
    """Norm rows whose mean (``offsets``, in turn per row) is far larger than their spread (1): a
    one-pass variance E[x^2] - E[x]^2 cancels catastrophically here. Rows at +-1e4 catch it in
    float64 and float32; rows at +-30 keep their spread in bfloat16 and float16 and catch it there."""

    def sample(key: jax.Array, shape: tuple[int, ...], dims: Mapping[str, int] | None = None) -> np.ndarray:
        x = spread * std_normal(key, shape)
        if x.ndim < 2:
            return x + offsets[0]
        rows = np.arange(x.shape[-2]).reshape(-1, 1) % len(offsets)
        return x + np.asarray(offsets)[rows]

    return sample


def with_neg_inf(base: Sampler, fraction: float = 0.25) -> Sampler:
    """``base`` values with about ``fraction`` of each row set to -inf (a mask), never a whole row."""

    def sample(key: jax.Array, shape: tuple[int, ...], dims: Mapping[str, int] | None = None) -> np.ndarray:
        x = np.array(base(subkey(key, 0), shape, dims))
        masked = std_uniform(subkey(key, 1), shape) < fraction
        if x.ndim >= 1 and x.shape[-1] >= 1:
            masked[..., 0] = False  # every row keeps at least one finite entry
            if x.shape[-1] >= 2:
                masked[..., -1] = True  # and every row of two or more has one -inf
        return np.where(masked, -np.inf, x)

    return sample


def ids_with_repeats(n: int | str, repeats: int = 2, high: bool = False) -> Sampler:
    """Integer ids in [0, n) in which the first id occurs ``repeats`` times (so a backward pass
    must accumulate); with ``high``, the largest id n - 1 occurs too (past 32,767 it no longer
    fits an int16)."""

    def sample(key: jax.Array, shape: tuple[int, ...], dims: Mapping[str, int] | None = None) -> np.ndarray:
        m = _resolve(n, dims)
        flat = np.array(integers(m)(key, shape, dims)).reshape(-1)
        if flat.size >= repeats + 1:
            flat[-(repeats - 1) :] = flat[0]
            if high:
                flat[1] = m - 1
                flat[2] = m - 2
        return flat.reshape(shape)

    return sample


# ----------------------------------------------------------------------------- records

KINDS = ("float", "int", "mask")
SIZES = ("golden", "tiles", "large")  # named sizes; a user's own come from --dims
REGIMES = ("typical", "large", "offset", "masked", "tiny")
DEFAULT_SIZES = ("golden", "tiles")  # what the default export and 'check --sizes' hold
MAX_INSTANCE_ELEMENTS = 2**25  # 32 M elements over all inputs and the output (256 MiB in float64)


class SpecError(ValueError):
    """An instance that cannot be made: unknown size, regime or dim, or too large; one line."""


@dataclass(frozen=True)
class Input:
    """One named input of a case: symbolic shape, sampler and kind.

    ``shape`` holds ints and dimension names ('T', 'd'), resolved by the instance's dims.
    ``kind`` is 'float' (differentiable), 'int' (labels, ids) or 'mask' (bool).
    """

    name: str
    shape: tuple[int | str, ...]
    sampler: Sampler = field(default_factory=normal)
    kind: str = "float"

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"input {self.name!r}: kind must be one of {KINDS}")

    @property
    def integer(self) -> bool:
        return self.kind == "int"

    @property
    def differentiable(self) -> bool:
        return self.kind == "float"

    @property
    def dtype(self) -> str:
        """The dtype of this input in a golden set: float64, int64 or bool."""
        return {"float": "float64", "int": "int64", "mask": "bool"}[self.kind]

    def resolve(self, dims: Mapping[str, int]) -> tuple[int, ...]:
        """The concrete shape at ``dims``."""
        return tuple(int(dims[d]) if isinstance(d, str) else int(d) for d in self.shape)


@dataclass(frozen=True)
class Case:
    """A spec: a differentiable map F from named inputs to one array, with everything to check it.

    * ``forward(*primals) -> Array``: primals in the order of ``inputs``.
    * ``vjp(primals, ct)``: the handwritten pullback, a tuple with one cotangent per
      differentiable input in order, or a dict keyed by input name.
    * ``jvp(primals, tangents) -> Array`` (optional): tangents aligned with the differentiable inputs.
    * ``chain(primals) -> (outer, inner)`` (optional, composite cases): forward with the first
      differentiable input set to ``x`` equals ``outer(inner(x))``.
    * ``sizes``: named dims per size; ``golden`` is the DESIGN §3 table and the default.
    * ``regimes``: per regime (besides 'typical'), the samplers that replace an input's.
    * ``settings``: the fixed parameters of the math (n_heads, eps, slopes), the same at every size.
    * ``stages(inputs, ct)`` (optional, composite cases): the composite's sub-ops as instances of
      existing cases, a list of ``(stage, case_name, stage_inputs, stage_cotangent)`` where the
      inputs are the composite's real intermediate values (float64 host arrays, keyed by the
      stage case's input names) and the cotangent is the real cotangent flowing into that
      sub-op's output during the composite's backward pass. Exported as ``<composite>.<stage>``.
    """

    name: str
    description: str
    inputs: tuple[Input, ...]
    forward: Callable[..., jax.Array]
    vjp: Callable[[tuple, jax.Array], tuple | dict]
    jvp: Callable[[tuple, tuple], jax.Array] | None = None
    chain: Callable[[tuple], tuple[Callable, Callable]] | None = None
    tags: tuple[str, ...] = ()
    sizes: Mapping[str, Mapping[str, int]] = field(default_factory=dict)
    regimes: Mapping[str, Mapping[str, Sampler]] = field(default_factory=dict)
    settings: Mapping[str, Any] = field(default_factory=dict)
    stages: Callable[[Mapping[str, Any], Any], list[tuple[str, str, dict, Any]]] | None = None

    def __post_init__(self) -> None:
        sizes = {"golden": {}, **{k: dict(v) for k, v in self.sizes.items()}}
        object.__setattr__(self, "sizes", sizes)
        for size, dims in sizes.items():
            if size not in SIZES:
                raise ValueError(f"case {self.name}: unknown size {size!r}")
            missing = set(self.dim_names) - set(dims) - (set() if size == "golden" else set(sizes["golden"]))
            if missing:
                raise ValueError(f"case {self.name}: size {size!r} does not give {sorted(missing)}")
        for regime, override in self.regimes.items():
            if regime not in REGIMES or regime == "typical":
                raise ValueError(f"case {self.name}: unknown regime {regime!r}")
            unknown = set(override) - set(self.input_names)
            if unknown:
                raise ValueError(f"case {self.name}: regime {regime!r} names no input {sorted(unknown)}")

    def __hash__(self) -> int:
        return hash(self.name)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Case) and other.name == self.name

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

    @property
    def dim_names(self) -> tuple[str, ...]:
        """The symbolic dimensions of the inputs, in order of first appearance."""
        seen: dict[str, None] = {}
        for spec in self.inputs:
            for d in spec.shape:
                if isinstance(d, str):
                    seen[d] = None
        return tuple(seen)

    @property
    def regime_names(self) -> tuple[str, ...]:
        """'typical' and the regimes this case declares, in the order of REGIMES."""
        return tuple(r for r in REGIMES if r == "typical" or r in self.regimes)

    @property
    def size_names(self) -> tuple[str, ...]:
        return tuple(s for s in SIZES if s in self.sizes)

    def dims(self, size: str = "golden") -> dict[str, int]:
        """The named dims of ``size`` (sizes other than golden inherit golden's unnamed ones)."""
        return {**self.sizes["golden"], **self.sizes[size]}

    def named_vjp(self, primals: Sequence[Any], ct: Any) -> dict[str, Any]:
        """The handwritten VJP keyed by differentiable input name."""
        out = self.vjp(tuple(primals), ct)
        if isinstance(out, Mapping):
            if set(out) != set(self.diff_names):
                raise ValueError(
                    f"case {self.name}: handwritten VJP gives {sorted(out)}, not {self.diff_names}"
                )
            return {n: out[n] for n in self.diff_names}
        out = tuple(out)
        if len(out) != len(self.diff_names):
            raise ValueError(
                f"case {self.name}: handwritten VJP returned {len(out)} arrays, expected "
                f"{len(self.diff_names)}"
            )
        return dict(zip(self.diff_names, out, strict=True))

    def positional_vjp(self, primals: tuple, ct: Any) -> tuple:
        """The handwritten VJP as a tuple over the differentiable inputs, in order."""
        return tuple(self.named_vjp(primals, ct).values())

    # Golden-instance shortcuts, so code that needs one shape keeps reading well.
    def sample(self, dtype: Any = "float64") -> dict[str, np.ndarray]:
        """The seeded inputs of the golden instance (see :meth:`Instance.sample`)."""
        return instance(self).sample(dtype)

    def probes(self, dtype: Any = "float64") -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """The probes of the golden instance (see :meth:`Instance.probes`)."""
        return instance(self).probes(dtype)

    def output_shape(self) -> tuple[int, ...]:
        """Shape of F's output at the golden-set input shapes."""
        return instance(self).output_shape


@dataclass(frozen=True)
class Instance:
    """A case at one size (or a user's dims) and one input regime: what gets checked and exported.

    ``id`` is stable and readable: ``softmax`` (golden, typical), ``softmax@tiles``,
    ``softmax@tiles~large``, ``attention@Tq=113,Tk=203``.
    """

    case: Case
    size: str
    regime: str
    dims: tuple[tuple[str, int], ...]  # every named dim, resolved
    given: tuple[tuple[str, int], ...] = ()  # the user's own dims (size 'dims'), for the id

    @property
    def id(self) -> str:
        return instance_id(self.case.name, self.size, self.regime, dict(self.given))

    @property
    def name(self) -> str:
        return self.case.name

    @property
    def dim_map(self) -> dict[str, int]:
        return dict(self.dims)

    @property
    def shapes(self) -> dict[str, tuple[int, ...]]:
        """The concrete shape of every input."""
        dims = self.dim_map
        return {spec.name: spec.resolve(dims) for spec in self.case.inputs}

    @functools.cached_property
    def output_shape(self) -> tuple[int, ...]:
        with jax.enable_x64(True):
            structs = [
                jax.ShapeDtypeStruct(
                    self.shapes[s.name], {"float": jnp.float64, "int": jnp.int64, "mask": jnp.bool_}[s.kind]
                )
                for s in self.case.inputs
            ]
            return tuple(jax.eval_shape(self.case.forward, *structs).shape)

    def describe_shapes(self) -> str:
        """'x (3, 7) -> (3,)': the input shapes and the output shape, for report rows."""
        ins = ", ".join(f"{n} {tuple(s)}" for n, s in self.shapes.items())
        return f"{ins} -> {tuple(self.output_shape)}"

    def sample(self, dtype: Any = "float64") -> dict[str, np.ndarray]:
        """The seeded inputs as host arrays: floats cast to ``dtype``, integers int64, masks bool."""
        dtype = np.dtype(dtype) if not isinstance(dtype, str) or dtype != "bfloat16" else _bf16()
        raw = _draw_inputs(self)
        return {
            spec.name: raw[spec.name].astype(dtype if spec.kind == "float" else spec.dtype)
            for spec in self.case.inputs
        }

    def probes(self, dtype: Any = "float64") -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """Random probes (never all-ones): a cotangent like the output, a tangent per diff input."""
        dtype = np.dtype(dtype) if not isinstance(dtype, str) or dtype != "bfloat16" else _bf16()
        ct, tangents = _draw_probes(self)
        return ct.astype(dtype), {k: v.astype(dtype) for k, v in tangents.items()}

    def primals(self, inputs: Mapping[str, Any]) -> tuple:
        """``inputs`` (a name -> array mapping) as the positional primals of ``forward``."""
        return tuple(inputs[n] for n in self.case.input_names)

    def f_diff(self, inputs: Mapping[str, Any]) -> tuple[Callable[..., jax.Array], tuple]:
        """F as a function of the differentiable inputs only (the others held at ``inputs``),
        and those inputs: the one place where differentiable inputs are spliced back."""
        return of_diff(self.case, self.primals(inputs))


@dataclass(frozen=True, eq=False)
class StageInstance(Instance):
    """A stage of a composite instance (DESIGN §3b): an existing case at the composite's real
    intermediate inputs and cotangent, with the id ``<composite>.<stage>``."""

    composite: str = ""  # the composite instance's id
    stage: str = ""
    given_inputs: Mapping[str, Any] = field(default_factory=dict)
    given_ct: Any = None

    @property
    def id(self) -> str:
        return f"{self.composite}.{self.stage}"

    @property
    def shapes(self) -> dict[str, tuple[int, ...]]:
        return {n: tuple(np.shape(a)) for n, a in self.given_inputs.items()}

    @functools.cached_property
    def output_shape(self) -> tuple[int, ...]:
        return tuple(np.shape(self.given_ct))

    def sample(self, dtype: Any = "float64") -> dict[str, np.ndarray]:
        dt = np.dtype(dtype) if not isinstance(dtype, str) or dtype != "bfloat16" else _bf16()
        return {
            s.name: np.asarray(self.given_inputs[s.name]).astype(dt if s.kind == "float" else s.dtype)
            for s in self.case.inputs
        }

    def probes(self, dtype: Any = "float64") -> tuple[np.ndarray, dict[str, np.ndarray]]:
        dt = np.dtype(dtype) if not isinstance(dtype, str) or dtype != "bfloat16" else _bf16()
        key = subkey(jax.random.key(self.case.seed), f"stage:{self.id}")
        tangents = {
            s.name: std_normal(subkey(key, f"tangent:{s.name}"), self.shapes[s.name]).astype(dt)
            for s in self.case.inputs
            if s.differentiable
        }
        return np.asarray(self.given_ct).astype(dt), tangents


def stage_instances(inst: Instance) -> list[StageInstance]:
    """The stages of a composite instance (none for a case without ``stages``), as instances."""
    case = inst.case
    if case.stages is None:
        return []
    inputs = inst.sample("float64")
    ct, _ = inst.probes("float64")
    out = []
    for stage, name, stage_inputs, stage_ct in case.stages(inputs, ct):
        sub = get_case(name)
        host = {k: np.asarray(v) for k, v in stage_inputs.items()}
        dims = ()
        out.append(StageInstance(sub, inst.size, inst.regime, dims, (), inst.id, stage, host, np.asarray(stage_ct)))
    return out


def of_diff(case: Case, primals: Sequence[Any]) -> tuple[Callable[..., jax.Array], tuple]:
    """``case.forward`` as a function of its differentiable inputs, the others held at ``primals``."""
    idx = case.diff_index
    primals = tuple(primals)

    def f(*diff: Any) -> jax.Array:
        full = list(primals)
        for k, d in zip(idx, diff, strict=True):
            full[k] = d
        return case.forward(*full)

    return f, tuple(primals[k] for k in idx)


def _bf16() -> np.dtype:
    import ml_dtypes

    return np.dtype(ml_dtypes.bfloat16)


def instance_id(name: str, size: str, regime: str, dims: Mapping[str, int] | None = None) -> str:
    """The readable id of an instance; golden + typical keeps the bare case name."""
    out = name
    if size == "dims":
        out += "@" + ",".join(f"{k}={v}" for k, v in sorted((dims or {}).items()))
    elif size != "golden":
        out += f"@{size}"
    if regime != "typical":
        out += f"~{regime}"
    return out


def instance(
    case: Case | str,
    size: str = "golden",
    regime: str = "typical",
    dims: Mapping[str, int] | None = None,
) -> Instance:
    """The one entry point from (case, size or dims, regime) to an instance.

    ``dims`` overrides named dims of ``size`` (a user's own size; the id then lists every dim
    given). Raises SpecError, naming the valid choices, for an unknown size, regime or dim, and
    for an instance over MAX_INSTANCE_ELEMENTS elements, before any work is done.
    """
    case = get_case(case) if isinstance(case, str) else case
    if size not in case.sizes:
        valid = ", ".join(case.size_names)
        raise SpecError(f"case {case.name} has no size {size!r}; its sizes: {valid}")
    if regime not in case.regime_names:
        raise SpecError(
            f"case {case.name} has no regime {regime!r}; its regimes: {', '.join(case.regime_names)}"
        )
    resolved = case.dims(size)
    label = size
    if dims:
        unknown = sorted(set(dims) - set(case.dim_names))
        if unknown:
            valid = ", ".join(case.dim_names) or "none (its shapes are fixed)"
            raise SpecError(f"case {case.name} has no dim {', '.join(unknown)}; its dims: {valid}")
        for k, v in dims.items():
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise SpecError(f"{case.name}.{k}={v!r}: a dim must be a positive integer")
        resolved = {**resolved, **dims}
        label = "dims"
    total = 0
    for spec in case.inputs:
        total += math.prod(spec.resolve(resolved))
    if total > MAX_INSTANCE_ELEMENTS:
        raise SpecError(
            f"{instance_id(case.name, label, regime, dims)}: its inputs hold {total:,} elements, over the "
            f"limit of {MAX_INSTANCE_ELEMENTS:,} (MAX_INSTANCE_ELEMENTS); choose smaller dims"
        )
    given = tuple(sorted(dims.items())) if dims else ()
    inst = Instance(case, label, regime, tuple(resolved.items()), given)
    if label == "dims":  # named sizes are known to fit; a user's dims are traced (no compute)
        peak = _largest_intermediate(inst)
        if peak > MAX_INSTANCE_ELEMENTS:
            raise SpecError(
                f"{inst.id}: an intermediate of its forward pass holds {peak:,} elements, over the limit "
                f"of {MAX_INSTANCE_ELEMENTS:,} (MAX_INSTANCE_ELEMENTS); choose smaller dims"
            )
    return inst


def _largest_intermediate(inst: Instance) -> int:
    """The element count of the largest array the forward pass makes, from its traced program."""
    kinds = {"float": jnp.float64, "int": jnp.int64, "mask": jnp.bool_}
    with jax.enable_x64(True):
        structs = [jax.ShapeDtypeStruct(inst.shapes[s.name], kinds[s.kind]) for s in inst.case.inputs]
        jaxpr = jax.make_jaxpr(inst.case.forward)(*structs).jaxpr
    return max([1] + [math.prod(getattr(v.aval, "shape", ())) for eqn in jaxpr.eqns for v in eqn.outvars])


def instances(
    cases: Sequence[Case] | None = None,
    sizes: Sequence[str] = ("golden",),
    regimes: Sequence[str] | None = None,
) -> list[Instance]:
    """Every instance of ``cases`` (default: all) at ``sizes`` in ``regimes`` (default: every
    regime each case declares); sizes or regimes a case lacks are skipped for that case."""
    cases = list(REGISTRY.values()) if cases is None else list(cases)
    out = []
    for case in cases:
        for size in sizes:
            if size not in case.sizes:
                continue
            for regime in case.regime_names:
                if regimes is None or regime in regimes:
                    out.append(instance(case, size, regime))
    return out


def parse_instance_id(text: str) -> tuple[str, str, str, dict[str, int] | None]:
    """Split 'name@size~regime' (or 'name@T=5,d=3~regime') into (name, size, regime, dims)."""
    rest, _, regime = text.partition("~")
    name, _, size = rest.partition("@")
    dims = None
    if "=" in size:
        dims = {}
        for part in size.split(","):
            k, _, v = part.partition("=")
            if not k or not v.isdigit():
                raise SpecError(f"{text!r}: dims must read DIM=N,DIM=N")
            dims[k] = int(v)
        size = "golden"
    return name, size or "golden", regime or "typical", dims


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
        close = difflib.get_close_matches(name, REGISTRY, n=3, cutoff=0.6)
        hint = f"; did you mean {', '.join(close)}?" if close else "; see 'jaxcalc cases'"
        raise UnknownCaseError(f"unknown case {name!r}{hint}") from None


# ----------------------------------------------------------------------------- drawing
# Keys follow from names: the case key is key(crc32(case name)); an input's key folds in
# crc32 of its name (and of the regime, when the regime replaces its sampler); the cotangent
# folds in "cotangent" and each tangent "tangent:<name>". Cached per instance.


@functools.cache
def _draw_inputs(inst: Instance) -> dict[str, np.ndarray]:
    case, dims = inst.case, inst.dim_map
    key = jax.random.key(case.seed)
    override = case.regimes.get(inst.regime, {})
    out = {}
    for spec in case.inputs:
        shape = spec.resolve(dims)
        k = subkey(key, spec.name)
        if spec.name in override:
            out[spec.name] = np.asarray(override[spec.name](subkey(k, inst.regime), shape, dims))
        else:
            out[spec.name] = np.asarray(spec.sampler(k, shape, dims))
        if out[spec.name].shape != shape:
            raise ValueError(
                f"{inst.id}: sampler for {spec.name} gave shape {out[spec.name].shape}, not {shape}"
            )
    return out


@functools.cache
def _draw_probes(inst: Instance) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    key = subkey(jax.random.key(inst.case.seed), "probes")
    if inst.regime != "typical":
        key = subkey(key, inst.regime)
    ct = std_normal(subkey(key, "cotangent"), inst.output_shape)
    shapes = inst.shapes
    tangents = {
        spec.name: std_normal(subkey(key, f"tangent:{spec.name}"), shapes[spec.name])
        for spec in inst.case.inputs
        if spec.differentiable
    }
    return ct, tangents
