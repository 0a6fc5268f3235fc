"""The primitive cases (DESIGN §3b): handwritten VJPs against jax.vjp at the golden and tiles
sizes, a planted bug of each case's own kind caught, and the PyTorch and NumPy examples against
the same references.

Every check of ``jaxcalc check`` (finite differences included) runs on these cases in
tests/test_checks.py, which iterates the whole registry at the golden size.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib.util
from pathlib import Path
from types import ModuleType

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxcalc.cases import REGISTRY, instance
from jaxcalc.cases import elementwise as ew
from jaxcalc.cases import reductions as red
from jaxcalc.cases import shapes as sh
from jaxcalc.numerics import compare, reference_mode

EXACT = 1e-10
EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
PRIMITIVES = tuple(n for n, c in REGISTRY.items() if "primitive" in c.tags)
SIZES = ("golden", "tiles")


@functools.cache
def _reference(name: str, size: str) -> tuple:
    """(inputs, cotangent, value, autodiff VJP, handwritten VJP) in float64, one jitted call."""
    case = REGISTRY[name]
    inst = instance(case, size)
    with jax.disable_jit():
        inputs = inst.sample("float64")
        ct, _ = inst.probes("float64")

    def both(primals: list, ct: jax.Array) -> tuple:
        f, diff = inst.f_diff(dict(zip(case.input_names, primals, strict=True)))
        value, pullback = jax.vjp(f, *diff)
        return value, pullback(ct), case.positional_vjp(tuple(primals), ct)

    with reference_mode("float64"):
        out = jax.jit(both)([jnp.asarray(inputs[n]) for n in case.input_names], jnp.asarray(ct))
        value, ad, hw = jax.tree_util.tree_map(np.asarray, out)
    return (
        inputs,
        ct,
        value,
        dict(zip(case.diff_names, ad, strict=True)),
        dict(zip(case.diff_names, hw, strict=True)),
    )


def _worst(got: dict, ref: dict) -> float:
    """The largest normwise error over the named arrays (inf for a wrong shape)."""
    worst = 0.0
    for name, r in ref.items():
        g = np.asarray(got[name])
        if g.shape != r.shape:
            return float("inf")
        worst = max(worst, compare(g, r).error)
    return worst


def test_catalogue_holds_the_primitive_names():
    names = [
        "add",
        "sub",
        "mul",
        "div",
        "pow",
        "maximum",
        "minimum",
        "where",
        "abs",
        "sqrt",
        "rsqrt",
        "exp",
        "log",
        "log1p",
        "expm1",
        "sin",
        "cos",
        "reciprocal",
        "square",
        "clip",
        "sum_axis",
        "mean_axis",
        "prod_axis",
        "max_axis",
        "min_axis",
        "var_axis",
        "cumsum",
        "transpose",
        "reshape",
        "strided_slice",
        "concatenate",
        "stack",
        "pad",
        "broadcast_to",
        "gather",
        "scatter_add",
        "batched_matmul",
        "einsum",
        "topk_values",
    ]
    assert set(names) <= set(REGISTRY)
    assert len(PRIMITIVES) >= 46


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("name", PRIMITIVES)
def test_handwritten_vjp_matches_autodiff(name: str, size: str):
    _, _, value, ad, hw = _reference(name, size)
    assert np.all(np.isfinite(value))
    for n in ad:
        assert hw[n].shape == ad[n].shape, f"{name}@{size} d{n}: {hw[n].shape} != {ad[n].shape}"
        err = compare(hw[n], ad[n])
        assert err.error <= EXACT, f"{name}@{size} d{n}: {err.error:.3g} at {err.where()}"


def test_broadcast_inputs_are_distinct_and_broadcast_every_way():
    """x (B, 1, N), y (M, 1), s (): the result is (B, M, N) with B, M, N distinct, so only a
    gradient summed over exactly the broadcast axes has the input's shape and values."""
    shapes = instance(REGISTRY["mul"], "golden").shapes
    assert shapes == {"x": (2, 1, 4), "y": (3, 1), "s": ()}
    assert instance(REGISTRY["mul"], "golden").output_shape == (2, 3, 4)


def test_no_ties_where_the_math_has_kinks():
    """maximum/minimum operands differ by >= 0.125; max/min/top-k entries by >= 0.1; abs, clip away."""
    x = REGISTRY["maximum"].sample()
    b = np.broadcast_arrays(x["x"], x["y"], x["s"])
    for i, j in ((0, 1), (0, 2), (1, 2)):
        assert np.min(np.abs(b[i] - b[j])) >= 0.125 - 1e-12
    for name in ("max_axis", "topk_values"):
        v = np.sort(instance(REGISTRY[name], "tiles").sample()["x"].reshape(-1))
        assert np.min(np.diff(v)) >= 0.1 - 1e-9
    assert np.min(np.abs(REGISTRY["abs"].sample()["x"])) >= 0.1
    c = instance(REGISTRY["clip"], "tiles").sample()["x"]
    assert min(np.min(np.abs(c + 0.5)), np.min(np.abs(c - 0.75))) >= 0.1 - 1e-12


def test_index_inputs_repeat():
    """gather / scatter_add columns hold a repeated row index; index_select repeats an id 3 times."""
    idx = REGISTRY["gather"].sample()["index"]
    assert all(len(set(col)) < len(col) for col in idx.T)
    ids = REGISTRY["index_select"].sample()["ids"]
    assert np.max(np.bincount(ids)) >= 3


# ----------------------------------------------------------------------------- planted bugs
# Each plant is a VJP (p, ct) -> tuple with one bug of the case's own kind, or ("forward", f) for a
# forward with the bug; the handwritten VJP (or forward) with it must disagree with autodiff.


def _r(a):
    return jnp.asarray(a)


def _bin(name):
    return REGISTRY[name].vjp


def _mul_not_summed(p, ct):
    x, y, s = map(_r, p)
    dx, dy, ds = _bin("mul")(p, ct)
    return (ct * y * s)[:, :1, :], dy, ds  # the M axis taken at its first row, not summed


def _max_routed_wrong(p, ct):
    x, y, s = map(_r, p)
    u = jnp.maximum(x, y)
    gu = jnp.where(u > s, ct, 0.0)
    return (
        ew.unbroadcast(jnp.where(x > y, 0.0, gu), x.shape),
        ew.unbroadcast(jnp.where(x > y, gu, 0.0), y.shape),
        ew.unbroadcast(jnp.where(u > s, 0.0, ct), ()),
    )


def _min_routed_wrong(p, ct):
    x, y, s = map(_r, p)
    u = jnp.minimum(x, y)
    gu = jnp.where(u < s, ct, 0.0)
    return (
        ew.unbroadcast(jnp.where(x > y, gu, 0.0), x.shape),
        ew.unbroadcast(jnp.where(x > y, 0.0, gu), y.shape),
        ew.unbroadcast(jnp.where(u < s, 0.0, ct), ()),
    )


def _pow_no_log(p, ct):
    x, y, s = map(_r, p)
    u = x**y
    gu = ct * s * u ** (s - 1.0)
    return (
        ew.unbroadcast(gu * y * x ** (y - 1.0), x.shape),
        ew.unbroadcast(gu * u, y.shape),
        ew.unbroadcast(ct * u**s * jnp.log(u), ()),
    )


def _unary(df):
    return lambda p, ct: (ct * df(_r(p[0])),)


def _topk_reversed(p, ct):
    return (jnp.einsum("mk,mkn->mn", ct[:, ::-1], sh._topk_onehot(_r(p[0]))),)


def _einsum_reshaped(p, ct):
    a, w = map(_r, p)
    b, n, m = ct.shape
    ctr = ct.reshape(b, m, n)  # a reshape where a transpose belongs
    return jnp.einsum("bmn,kn->bmk", ctr, w), jnp.einsum("bmk,bmn->kn", a, ctr)


def _scatter_overwrites(x, index, src):
    cols = jnp.broadcast_to(jnp.arange(index.shape[1]), index.shape)
    return jnp.asarray(x).at[index, cols].set(src)


def _gather_overwrites(p, ct):
    x, index = map(_r, p)
    cols = jnp.broadcast_to(jnp.arange(index.shape[1]), index.shape)
    return (jnp.zeros_like(x).at[index, cols].set(ct),)


PLANTS = {
    "add": lambda p, ct: (
        ew.unbroadcast(ct, p[0].shape),
        jnp.sum(ct, axis=0)[:, :1],  # first column of N, not summed
        jnp.sum(ct),
    ),
    "sub": lambda p, ct: tuple(ew.unbroadcast(ct, np.shape(a)) for a in p),  # y and s without the minus sign
    "mul": _mul_not_summed,
    "div": lambda p, ct: (lambda d: (d[0], -d[1], d[2]))(_bin("div")(p, ct)),  # dy with the wrong sign
    "pow": _pow_no_log,
    "maximum": _max_routed_wrong,
    "minimum": _min_routed_wrong,
    "where": lambda p, ct: (
        ew.unbroadcast(jnp.where(p[0], 0.0, ct), p[1].shape),  # condition inverted
        ew.unbroadcast(jnp.where(p[0], ct, 0.0), ()),
    ),
    "abs": lambda p, ct: (ct,),  # the sign dropped
    "sqrt": _unary(lambda x: 1.0 / jnp.sqrt(x)),  # missing 1/2
    "rsqrt": _unary(lambda x: 0.5 * jax.lax.rsqrt(x) / x),  # missing the minus sign
    "exp": _unary(lambda x: x),
    "log": _unary(lambda x: x),
    "log1p": _unary(lambda x: 1.0 / x),  # the derivative of log, not of log1p
    "expm1": _unary(jnp.expm1),  # the value, not the derivative exp(x)
    "sin": _unary(lambda x: -jnp.cos(x)),
    "cos": _unary(jnp.sin),  # the sign of -sin dropped
    "reciprocal": _unary(lambda x: 1.0 / (x * x)),
    "clip": lambda p, ct: (ct,),  # straight through: the gradient outside the bounds not zeroed
    "sum_axis": ("forward", lambda x: jnp.sum(x, axis=-1, keepdims=True)),  # the wrong (last) axis
    "mean_axis": lambda p, ct: (jnp.broadcast_to(ct / p[0].shape[2], p[0].shape),),  # divided by C, not R
    "prod_axis": lambda p, ct: (ct * jnp.prod(p[0], axis=2, keepdims=True) / p[0],),  # product over axis 2
    "max_axis": lambda p, ct: (ct * (p[0] == jnp.max(p[0], axis=2, keepdims=True)),),  # argmax over axis 2
    "min_axis": lambda p, ct: (ct * red._argext_mask(p[0], True),),  # routed to the argmax
    "var_axis": lambda p, ct: (
        ct * 2.0 * (p[0] - jnp.mean(p[0], axis=1, keepdims=True)) / p[0].shape[1],
    ),  # biased
    "cumsum": lambda p, ct: (jnp.cumsum(ct, axis=1),),  # backward not reversed
    "transpose": lambda p, ct: (jnp.transpose(ct, sh.PERM).reshape(np.shape(p[0])),),  # perm, not its inverse
    "reshape": lambda p, ct: (ct.T.reshape(np.shape(p[0])),),  # transposed before reshaping back
    "strided_slice": lambda p, ct: (jnp.zeros_like(p[0]).at[2::2, ::3].set(ct),),  # rows start one late
    "concatenate": lambda p, ct: (
        ct[:, 1 : p[0].shape[1] + 1],
        jnp.concatenate([ct[:, :1], ct[:, p[0].shape[1] + 1 :]], 1),
    ),
    "stack": lambda p, ct: (ct[:, 1], ct[:, 0], ct[:, 2]),  # components swapped
    "pad": lambda p, ct: (ct[2:-1, 3:],),  # cropped one row off
    "broadcast_to": lambda p, ct: (jnp.sum(ct, axis=0)[:, :1],),  # the size-1 axis not summed
    "gather": _gather_overwrites,  # repeats overwrite instead of accumulating
    "scatter_add": ("forward", _scatter_overwrites),  # repeats overwrite instead of accumulating
    "batched_matmul": lambda p, ct: (
        jnp.matmul(ct, jnp.swapaxes(p[1], -1, -2))[:, :1],  # H not summed
        sh.batched_matmul_vjp(p, ct)[1],
    ),
    "einsum": _einsum_reshaped,
    "topk_values": _topk_reversed,
    "logaddexp": lambda p, ct: (
        ew.unbroadcast(ct * jax.nn.sigmoid(p[1] - p[0]), p[0].shape),  # weights swapped
        ew.unbroadcast(ct * jax.nn.sigmoid(p[0] - p[1]), p[1].shape),
    ),
    "atan2": lambda p, ct: (lambda d: (d[0], -d[1]))(REGISTRY["atan2"].vjp(p, ct)),  # dx sign flipped
    "hypot": lambda p, ct: (ct * p[0] / jnp.hypot(p[0], p[1]), (ct * p[1] / jnp.hypot(p[0], p[1]))[:, :1]),
    "flip": lambda p, ct: (ct,),  # not flipped back
    "roll": lambda p, ct: (jnp.roll(ct, 2, axis=1),),  # rolled forward again
    "norm_axis": lambda p, ct: (ct * p[0] / jnp.sum(p[0] ** 2, axis=1, keepdims=True),),  # by norm**2
    "logsumexp_axis": lambda p, ct: (ct * jax.nn.softmax(p[0], axis=-1),),  # softmax over the last axis
    "index_select": lambda p, ct: (jnp.zeros_like(p[0]).at[:, p[1]].set(ct),),  # repeats overwrite
    "masked_fill": lambda p, ct: (ct,),  # gradient leaking into filled entries
    "triu": lambda p, ct: (jnp.tril(ct),),
}


def test_every_primitive_has_a_plant():
    assert set(PRIMITIVES) - {"square"} <= set(PLANTS)


@pytest.mark.parametrize("name", sorted(PLANTS))
def test_planted_bug_is_caught(name: str):
    case = REGISTRY[name]
    inputs, ct, value, ad, hw = _reference(name, "golden")
    assert _worst(hw, ad) <= EXACT  # the real VJP passes
    plant = PLANTS[name]
    with reference_mode("float64"):
        primals = tuple(jnp.asarray(inputs[n]) for n in case.input_names)
        if isinstance(plant, tuple):
            bad = np.asarray(plant[1](*primals))
            assert bad.shape != value.shape or compare(bad, value).error > 1e-6
            return
        bad_case = dataclasses.replace(case, vjp=plant)
        got = {k: np.asarray(v) for k, v in bad_case.named_vjp(primals, jnp.asarray(ct)).items()}
    assert _worst(got, ad) > 1e-6, f"{name}: the planted bug went unnoticed"


# ----------------------------------------------------------------------------- examples


def _load(file: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"jaxcalc_test_{file[:-3]}", EXAMPLES / file)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def torch_primitives() -> ModuleType:
    pytest.importorskip("torch", reason="torch is not installed; the PyTorch example needs it")
    return _load("torch_primitives.py")


@pytest.fixture(scope="module")
def numpy_primitives() -> ModuleType:
    return _load("numpy_primitives.py")


def _check_example(module: ModuleType, name: str, size: str) -> None:
    inputs, ct, value, ad, _ = _reference(name, size)
    fn = getattr(module, name, None)
    assert callable(fn), f"{module.__name__} lacks {name}"
    got_value, got_vjp = fn({k: np.array(v) for k, v in inputs.items()}, np.array(ct))
    got_value = np.asarray(got_value)
    assert got_value.shape == value.shape and got_value.dtype == np.float64
    assert compare(got_value, value).error <= EXACT, f"{name}@{size} value"
    assert set(got_vjp) == set(ad)
    for n in ad:
        g = np.asarray(got_vjp[n])
        assert g.shape == ad[n].shape, f"{name}@{size} vjp[{n}] shape {g.shape} != {ad[n].shape}"
        err = compare(g, ad[n])
        assert err.error <= EXACT, f"{name}@{size} vjp[{n}]: {err.error:.3g} at {err.where()}"


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("name", PRIMITIVES)
def test_torch_example(torch_primitives: ModuleType, name: str, size: str):
    _check_example(torch_primitives, name, size)


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("name", PRIMITIVES)
def test_numpy_example(numpy_primitives: ModuleType, name: str, size: str):
    _check_example(numpy_primitives, name, size)


def test_examples_reexport_the_primitives():
    """torch_impl and numpy_impl (what verify loads) carry every primitive case."""
    pytest.importorskip("torch")
    for file in ("torch_impl.py", "numpy_impl.py"):
        module = _load(file)
        missing = [n for n in PRIMITIVES if n not in module.__all__ or not callable(getattr(module, n, None))]
        assert not missing, f"{file} lacks {missing}"
