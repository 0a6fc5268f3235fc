"""The host executor of witness programs (jaxcalc.checks.host) against XLA, its independent witness.

Each NumPy rule is compared with the primitive XLA compiles, on inputs chosen for the rule's
corners (out-of-bounds indices, negative padding, integer division, reversed scans, ...); every
catalogue case's whole witness program is run both ways and every witness compared.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from jaxcalc.cases import REGISTRY
from jaxcalc.checks import check_case, check_function, host, witnesses
from jaxcalc.checks.branches import sub_jaxprs
from jaxcalc.numerics import reference_mode

RNG = np.random.default_rng(0)


def _x(*shape, dtype=np.float64):
    return RNG.standard_normal(shape).astype(dtype)


def _relu(x):
    return jnp.sum(jax.nn.relu(x) ** 2)


@jax.custom_vjp
def _cube(x):
    return x**3


_cube.defvjp(lambda x: (x**3, x), lambda x, g: (3 * x**2 * g,))

def _nhwc_grouped(x, kg):
    nhwc = jnp.transpose(x, (0, 2, 3, 1))
    dims = ("NHWC", "HWIO", "NHWC")
    return lax.conv_general_dilated(nhwc, kg, (1, 1), "SAME", dimension_numbers=dims, feature_group_count=2)


def _grouped_conv_loss(x, kg):
    k = jnp.transpose(kg, (3, 2, 0, 1))
    y = lax.conv_general_dilated(x, k, (2, 1), ((1, 1), (0, 2)), rhs_dilation=(1, 2), feature_group_count=2)
    return jnp.sum(jnp.sin(y))


def _solve_loss(a, b):
    batched = jnp.linalg.solve(jnp.stack([a, a.T]), b[:, None])
    return jnp.sum(jnp.linalg.solve(a, b) ** 2) + jnp.sum(batched**2)


def _pool(x, op, window, strides, padding, **dilations):
    init, fn = {"max": (-jnp.inf, lax.max), "min": (jnp.inf, lax.min), "add": (0.0, lax.add)}[op]
    return lax.reduce_window(x, init, fn, window, strides, padding, **dilations)


ints = np.array([-7, -3, 0, 4, 9], np.int32)
idx_oob = np.array([[0], [3], [5], [-1]], np.int32)

# (name, function, arguments): every rule, at its corners.
PROGRAMS = [
    (
        "elementwise",
        lambda x: jnp.stack(
            [
                jnp.exp(x),
                jnp.log1p(x**2),
                jnp.tanh(x),
                jnp.expm1(x),
                jnp.sin(x),
                jnp.arctan2(x, 1 + x),
                jnp.cbrt(x),
                lax.rsqrt(x**2 + 1),
                jnp.exp2(x),
                jnp.sign(x),
                jnp.floor(x),
                jnp.ceil(x),
            ]
        ),
        (_x(4, 3),),
    ),
    ("logistic at the extremes", jax.nn.sigmoid, (np.array([-800.0, -40.0, -1e-8, 0.0, 3.0, 800.0]),)),
    (
        "special functions",
        lambda x: jnp.stack(
            [
                jax.scipy.special.erf(x),
                jax.scipy.special.gammaln(x + 3),
                jax.scipy.special.digamma(x + 3),
                jax.scipy.special.erfinv(x / 4),
            ]
        ),
        (_x(5),),
    ),
    (
        "rounding both ways",
        lambda x: jnp.stack([jnp.round(x), lax.round(x, lax.RoundingMethod.AWAY_FROM_ZERO)]),
        (np.array([-2.5, -1.5, -0.5, 0.5, 1.5, 2.5, 0.49]),),
    ),
    (
        "integer division and remainder",
        lambda a, b: (lax.div(a, b), lax.rem(a, b), a // b, a % b),
        (ints, np.array([2, -2, 3, -4, 4], np.int32)),
    ),
    (
        "float remainder",
        lambda a, b: lax.rem(a, b),
        (np.array([-7.5, 7.5, -1.0]), np.array([2.0, -2.0, 3.0])),
    ),
    (
        "integer_pow",
        lambda x: (lax.integer_pow(x, 3), lax.integer_pow(x, -2), lax.integer_pow(x, 0)),
        (_x(4) + 3,),
    ),
    (
        "pow, max, min, nextafter",
        lambda x, y: (jnp.abs(x) ** y, jnp.maximum(x, y), jnp.minimum(x, y), jnp.nextafter(x, y)),
        (_x(6), _x(6)),
    ),
    (
        "select_n with an integer case index",
        lambda i, a, b, c: lax.select_n(i, a, b, c),
        (np.array([0, 2, 1, 2], np.int32), _x(4), _x(4), _x(4)),
    ),
    (
        "where, clamp, comparisons",
        lambda x: (
            jnp.where(x > 0, x, -x),
            lax.clamp(-0.5, x, 0.5),
            x == 0,
            (x > 0) & (x < 1),
            ~(x > 0),
            jnp.isfinite(x / 0),
        ),
        (np.array([-1.0, 0.0, 0.3, 2.0]),),
    ),
    (
        "casts",
        lambda x: (x.astype(jnp.int32), x.astype(bool), (x > 0).astype(jnp.float32), x.astype(jnp.float32)),
        (np.array([-2.7, -0.2, 0.0, 0.9, 3.5]),),
    ),
    (
        "iota and broadcasting",
        lambda x: (
            lax.broadcasted_iota(jnp.int32, (3, 4), 1) + x[:, None] * 0 + jnp.broadcast_to(x[:, None], (3, 4))
        ),
        (_x(3),),
    ),
    ("reshape with dimensions", lambda x: lax.reshape(x, (4, 6), dimensions=(2, 0, 1)), (_x(2, 3, 4),)),
    ("squeeze, transpose, rev", lambda x: (jnp.squeeze(x[:, :1], 1), x.T, jnp.flip(x, (0, 1))), (_x(3, 4),)),
    (
        "concatenate, stack, split, unstack",
        lambda x: (
            jnp.concatenate([x, 2 * x], 1),
            jnp.stack([x, x], -1),
            *jnp.split(x, [1, 3], axis=1),
            *list(x),
        ),
        (_x(2, 4),),
    ),
    (
        "pad with negative and interior padding",
        lambda x: (lax.pad(x, 0.5, [(1, -1, 2), (-1, 2, 0)]), jnp.pad(x, ((0, 1), (2, 0)))),
        (_x(3, 4),),
    ),
    ("slices", lambda x: (x[1:, ::2], lax.slice(x, (0, 1), (3, 4), (2, 2))), (_x(3, 5),)),
    (
        "dynamic slices, starts clamped",
        lambda x, i: (
            lax.dynamic_slice(x, (i, np.int32(2)), (2, 3)),
            lax.dynamic_update_slice(x, jnp.ones((2, 2)), (i, np.int32(-5))),
        ),
        (_x(4, 5), np.int32(3)),
    ),
    (
        "reductions",
        lambda x: (
            x.sum(0),
            x.prod(1),
            x.max((0, 1)),
            x.min(0),
            jnp.argmax(x, 1),
            jnp.argmin(x, 0),
            (x > 0).all(1),
            (x > 0).any(0),
        ),
        (_x(3, 4),),
    ),
    (
        "reductions over empty axes",
        lambda x: (x.sum(0), jnp.max(x, 0, initial=-jnp.inf), x.prod(0)),
        (np.zeros((0, 3)),),
    ),
    (
        "cumulative, both directions",
        lambda x: (
            jnp.cumsum(x, 1),
            lax.cumsum(x, 0, reverse=True),
            lax.cumprod(x, 1, reverse=True),
            lax.cummax(x, 1),
            lax.cummin(x, 0, reverse=True),
            lax.cumlogsumexp(x, 1),
        ),
        (_x(3, 4),),
    ),
    (
        "dot_general with batch dimensions",
        lambda a, b: (
            a @ b,
            jnp.einsum("bij,bjk->bik", a, b),
            jnp.einsum("bij,bkj->ikb", a, b.transpose(0, 2, 1)),
            jnp.tensordot(a, b, ((1, 2), (2, 1))),
        ),
        (_x(2, 3, 4), _x(2, 4, 3)),
    ),
    (
        "dot_general of integers and a preferred type",
        lambda a, b: (a @ b, lax.dot(a, b, preferred_element_type=jnp.float32)),
        (np.arange(6, dtype=np.int32).reshape(2, 3), np.arange(12, dtype=np.int32).reshape(3, 4)),
    ),
    (
        "gather: integer indexing, clipped and filled",
        lambda x: (
            x[idx_oob[:, 0] % 5],
            x.at[idx_oob[:, 0]].get(mode="clip"),
            x.at[idx_oob[:, 0]].get(mode="fill", fill_value=-9.0),
            jnp.take_along_axis(x, jnp.argsort(x, 1), 1),
        ),
        (_x(5, 3),),
    ),
    (
        "gather: vmapped (batching dimensions)",
        jax.vmap(lambda x, i: x[i]),
        (_x(4, 5, 3), np.array([0, 4, 2, 1], np.int32)),
    ),
    (
        "scatter: add, set, mul, min, max, dropped out of bounds",
        lambda x: (
            x.at[ints % 4].add(1.0),
            x.at[np.array([1, 1, 3])].set(7.0),
            x.at[np.array([0, 0])].mul(3.0),
            x.at[np.array([2, 2])].min(-5.0),
            x.at[np.array([2])].max(9.0),
            x.at[np.array([9, -9])].add(100.0, mode="drop"),
        ),
        (_x(4, 2),),
    ),
    (
        "scatter: clipped, and vmapped",
        lambda x: (
            x.at[np.array([9])].set(5.0, mode="clip"),
            jax.vmap(lambda r, i: r.at[i].add(1.0))(x, np.array([0, 1, 0, 1], np.int32)),
        ),
        (_x(4, 2),),
    ),
    (
        "sort, multi-operand sort, top_k",
        lambda x, y: (
            jnp.sort(x, 1),
            lax.sort((x, y), dimension=0, num_keys=1),
            lax.sort((jnp.round(x), y), dimension=1, num_keys=2),
            lax.top_k(x, 2),
        ),
        (_x(3, 4), _x(3, 4)),
    ),
    (
        "control flow: cond, while, scan both ways",
        lambda x: (
            lax.cond(x[0] > 0, jnp.sin, jnp.cos, x),
            lax.while_loop(lambda c: c[0] < 5, lambda c: (c[0] + 1, c[1] * 1.5), (0, x))[1],
            lax.scan(lambda c, y: (c + y, c * y), 0.0, x),
            lax.scan(lambda c, y: (c * 2 + y, c), 1.0, x, reverse=True),
        ),
        (_x(6),),
    ),
    ("an empty scan", lambda x: lax.scan(lambda c, y: (c + y, 2 * y), 0.0, x), (np.zeros((0,)),)),
    (
        "custom_jvp, custom_vjp, checkpoint and their derivatives",
        lambda x: (
            jax.grad(_relu)(x),
            jax.grad(lambda z: jnp.sum(_cube(z)))(x),
            jax.grad(jax.checkpoint(lambda z: jnp.sum(jnp.sin(z) ** 2)))(x),
            jax.jacfwd(jax.grad(lambda z: jnp.sum(jax.nn.softplus(z) ** 2)))(x),
        ),
        (_x(4),),
    ),
    (
        "convolutions: groups, dilations, strides, negative padding, and their derivatives",
        lambda x, k, kg: (
            lax.conv_general_dilated(
                x, k, (2, 1), ((1, 0), (2, -1)), lhs_dilation=(1, 2), rhs_dilation=(2, 1)
            ),
            _nhwc_grouped(x, kg),
            jax.grad(_grouped_conv_loss, argnums=(0, 1))(x, kg),
            jax.vmap(lambda kk: lax.conv_general_dilated(x, kk, (1, 1), "VALID"))(jnp.stack([k, 2 * k])),
        ),
        (_x(2, 4, 5, 6), _x(3, 4, 3, 3), _x(3, 3, 2, 6)),
    ),
    (
        "pooling: max, min and sum windows with padding and dilations, and their derivatives",
        lambda x: (
            _pool(x, "max", (1, 2, 2), (1, 2, 2), "VALID"),
            _pool(x, "min", (1, 3, 2), (1, 1, 2), "SAME", window_dilation=(1, 1, 2)),
            _pool(x, "add", (1, 2, 2), (1, 1, 1), ((0, 0), (1, 0), (0, 1)), base_dilation=(1, 2, 1)),
            jax.grad(lambda z: jnp.sum(jnp.sin(_pool(z, "max", (1, 2, 2), (1, 2, 1), "SAME"))))(x),
            jax.jvp(lambda z: _pool(z, "min", (1, 2, 3), (1, 1, 2), "VALID"), (x,), (x * x,))[1],
            jax.grad(lambda z: jnp.sum(_pool(z, "add", (1, 3, 3), (1, 2, 2), "SAME") ** 2))(x),
            lax.reduce_window(ints.reshape(1, 5), np.int32(-(2**31)), lax.max, (1, 2), (1, 1), "VALID"),
        ),
        (_x(2, 5, 6),),
    ),
    (
        "linear algebra: solve, inverse, determinant, Cholesky, triangular solves, LU, and derivatives",
        lambda a, b: (
            jax.grad(_solve_loss, argnums=(0, 1))(a, b),
            jax.jvp(jax.grad(lambda m: jnp.linalg.det(m)), (a,), (a * 0.3,)),
            jax.vmap(jnp.linalg.inv)(jnp.stack([a, a.T + jnp.eye(4)])),
            jax.grad(lambda m: jnp.sum(jnp.linalg.cholesky(m @ m.T + jnp.eye(4)) @ b))(a),
            jax.scipy.linalg.solve_triangular(a, b, lower=True),
            jax.scipy.linalg.solve_triangular(a, jnp.outer(b, b), trans=1, unit_diagonal=True),
            lax.linalg.triangular_solve(
                a, jnp.outer(b, b)[:2], left_side=False, lower=False, transpose_a=True
            ),
            lax.linalg.lu(jnp.concatenate([a, 2 * a[:1]])),
            jnp.linalg.cholesky(-jnp.eye(2)),  # not positive definite: NaN, as XLA gives
        ),
        (_x(4, 4) + 0.5 * np.eye(4), _x(4)),
    ),
    (
        "float32 stays float32",
        lambda x, w: (jnp.tanh(x @ w), jax.nn.softmax(x, -1), jnp.cumsum(x, 0)),
        (_x(3, 4, dtype=np.float32), _x(4, 2, dtype=np.float32)),
    ),
]


def _close(got, want, tol):
    got, want = np.asarray(got), np.asarray(want)
    assert got.shape == want.shape and got.dtype == want.dtype, (got.shape, got.dtype, want.shape, want.dtype)
    if got.dtype.kind in "biu":
        np.testing.assert_array_equal(got, want)
        return
    same_nan = np.isnan(got) == np.isnan(want)
    assert same_nan.all(), (got, want)
    g, w = np.where(np.isnan(got), 0, got), np.where(np.isnan(want), 0, want)
    assert (
        (g == w)
        | np.isclose(g, w, rtol=tol, atol=tol * max(np.max(np.abs(w[np.isfinite(w)]), initial=0), 1e-300))
    ).all(), (got, want)


@pytest.mark.parametrize("name,fn,args", PROGRAMS, ids=[p[0] for p in PROGRAMS])
def test_each_rule_matches_xla(name, fn, args):
    with jax.enable_x64(True):
        closed = jax.make_jaxpr(fn)(*args)
        assert host.unsupported(closed) is None, host.unsupported(closed)
        got = host.evaluate(closed, jax.tree_util.tree_leaves(args))
        want = jax.device_get(jax.jit(jax.extend.core.jaxpr_as_fun(closed))(*jax.tree_util.tree_leaves(args)))
    assert len(got) == len(want)
    for g, w in zip(got, want, strict=True):
        _close(g, w, 1e-5 if np.asarray(w).dtype == np.float32 else 1e-12)


def test_unsupported_programs_are_named_and_left_to_xla():
    bf16 = jax.make_jaxpr(lambda x: x * 2)(jnp.ones(3, jnp.bfloat16))
    assert host.unsupported(bf16) == "dtype bfloat16"
    svd = jax.make_jaxpr(lambda a: jnp.linalg.svd(a, compute_uv=False))(np.eye(3, dtype=np.float32))
    assert "svd" in host.unsupported(svd)
    effect = jax.make_jaxpr(lambda x: jax.debug.print("{}", x) or x)(np.ones(2, np.float32))
    assert host.unsupported(effect).startswith("effects")
    assert not witnesses.use_host(svd) and witnesses.use_host(jax.make_jaxpr(jnp.sin)(1.0))


def test_auto_sends_only_cheap_programs_to_the_host():
    small = jax.make_jaxpr(lambda x: jnp.sum(x**2))(np.ones(10, np.float32))
    big = jax.make_jaxpr(lambda a: jnp.sum(a @ a @ a))(jax.ShapeDtypeStruct((2000, 2000), np.float32))
    assert host.cost(big).flops == 2 * 2000**3
    assert witnesses.use_host(small, "auto") and not witnesses.use_host(big, "auto")
    assert witnesses.use_host(big, "host") and not witnesses.use_host(small, "xla")
    with pytest.raises(ValueError, match="auto, host or xla"):
        witnesses.use_host(small, "gpu")


def _exact(key: str) -> bool:
    return "fd" not in key and key not in ("sym",)


def _compare_witnesses(host_w, xla_w, dtype):
    exact, fd = (1e-11, 1e-7) if dtype == "float64" else (1e-4, 1e-2)
    flat_h, tree_h = jax.tree_util.tree_flatten_with_path(host_w)
    flat_x, tree_x = jax.tree_util.tree_flatten_with_path(xla_w)
    assert tree_h == tree_x
    for (path, a), (_, b) in zip(flat_h, flat_x, strict=True):
        key = jax.tree_util.keystr(path)
        a, b = np.asarray(a), np.asarray(b)
        assert a.shape == b.shape and a.dtype == b.dtype, key
        if a.dtype == bool:
            assert (a == b).all(), f"{key}: kink flags differ"
            continue
        scale = max(float(np.max(np.abs(b), initial=0.0)), 1e-300)
        err = float(np.max(np.abs(a - b), initial=0.0)) / scale
        assert err <= (exact if _exact(key) else fd), f"{key}: host vs XLA differ by {err:.2e}"


def _both_executors(monkeypatch, run):
    """Run ``run()`` with every witness program on the host, and evaluate each one with XLA too."""
    pairs = []
    prepare = witnesses._Program._prepare

    def both(self, args, n_leaves):
        on_host = prepare(self, args, n_leaves)
        traced = self.trace(args)
        compiled = traced.lower().compile()

        def run_both(a):
            got = on_host(a)
            pairs.append((got, jax.device_get(compiled(*a))))
            return got

        return run_both

    monkeypatch.setattr(witnesses, "EXECUTOR", "host")
    monkeypatch.setattr(witnesses._Program, "_prepare", both)
    witnesses._program.cache_clear()  # programs prepared by earlier tests would not be seen
    result = run()
    return result, pairs


# Cases whose witness programs together use all 64 primitives that the catalogue's host-run
# programs use (a greedy cover, recomputed by test_the_cover_spans_the_catalogue), plus the scan,
# gather and scatter cases. Every other case runs on the host in the rest of the suite, where
# its verdicts and planted bugs are checked.
HOSTED = [
    "gpt_lm_loss",
    "gan_losses",
    "rope",
    "transformer_block",
    "clip",
    "cumsum",
    "gelu_erf",
    "logsumexp",
    "padded_attention",
    "ddpm_loss",
    "moe_top2",
    "abs",
    "expm1",
    "prod_axis",
    "min_axis",
    "strided_slice",
    "atan2",
    "selective_scan",
    "lstm_cell",
    "gather",
    "scatter_add",
    "conv2d",
    "max_pool2d",
    "avg_pool2d",
]


class _Traced(Exception):
    """Raised in place of running a witness program."""


def _primitives(jaxpr, into: set) -> set:
    for eqn in jaxpr.eqns:
        into.add(eqn.primitive.name)
        for sub in sub_jaxprs(eqn):
            _primitives(sub, into)
    return into


def test_the_cover_spans_the_catalogue(monkeypatch):
    """The primitives of HOSTED's programs include those of every catalogue case run on the host."""
    used: dict[str, set] = {}

    def record(self, args, n_leaves):
        closed = self.trace(args).jaxpr
        if host.supported(closed):
            _primitives(closed.jaxpr, used.setdefault(current[0], set()))
        raise _Traced

    current = [""]
    monkeypatch.setattr(witnesses._Program, "_prepare", record)
    for case in REGISTRY.values():
        current[0] = case.name
        witnesses._program.cache_clear()
        with pytest.raises(_Traced):  # only the traces matter here
            check_case(case, dtype="float64")
    everything = set().union(*used.values())
    covered = set().union(*(used[name] for name in HOSTED))
    assert everything - covered == set()


@pytest.mark.parametrize("case", HOSTED)
def test_case_witness_programs_agree_with_xla(case, monkeypatch):
    report, pairs = _both_executors(monkeypatch, lambda: check_case(case, dtype="float64"))
    assert pairs, "no witness program ran on the host"
    assert report.passed, report.format()
    for host_w, xla_w in pairs:
        _compare_witnesses(host_w, xla_w, "float64")


@pytest.mark.parametrize(
    "name", ["softmax", "layernorm", "attention", "mlp", "gather", "scatter_add", "cumsum", "lstm_cell"]
)
def test_float32_witness_programs_agree_with_xla(name, monkeypatch):
    report, pairs = _both_executors(monkeypatch, lambda: check_case(name, dtype="float32"))
    assert pairs and report.passed, report.format()
    for host_w, xla_w in pairs:
        _compare_witnesses(host_w, xla_w, "float32")


def test_user_checks_agree_between_executors(monkeypatch):
    """The same user check, its witnesses on the host or compiled, gives the same verdicts,
    including a caught bug and a kink."""
    rng = np.random.default_rng(3)
    params = {"W1": rng.standard_normal((4, 6)), "W2": rng.standard_normal((6, 2))}
    x, y = rng.standard_normal((5, 4)), rng.standard_normal((5, 2))

    def loss(p, x, y):
        return jnp.mean((jax.nn.relu(x @ p["W1"]) @ p["W2"] - y) ** 2)

    def wrong(p, x, y):
        g = jax.grad(loss)(p, x, y)
        return {"W1": g["W1"] * 1.001, "W2": g["W2"]}

    verdicts, hosted = {}, []
    evaluate = host.evaluate
    monkeypatch.setattr(host, "evaluate", lambda *a: hosted.append(1) or evaluate(*a))
    for executor in ("host", "xla"):
        monkeypatch.setattr(witnesses, "EXECUTOR", executor)
        witnesses._program.cache_clear()
        for name, g in (("right", jax.grad(loss)), ("wrong", wrong)):
            r = check_function(loss, (params, x, y), g, argnums=0, name=f"{name}_{executor}")
            verdicts[executor, name] = [(row.check, row.status) for row in r.results]
    assert len(hosted) == 2  # the two host runs; the XLA runs compiled
    assert verdicts["host", "right"] == verdicts["xla", "right"]
    assert verdicts["host", "wrong"] == verdicts["xla", "wrong"]
    assert all(s in ("pass", "kink") for _, s in verdicts["host", "right"])
    assert ("vjp", "FAIL") in verdicts["host", "wrong"]


def test_the_environment_variable_selects_the_executor(tmp_path):
    import subprocess
    import sys

    code = (
        "import jax.numpy as jnp, numpy as np\n"
        "from jaxcalc.checks import check_function, witnesses, host\n"
        "calls = []\n"
        "ev = host.evaluate\n"
        "host.evaluate = lambda *a: calls.append(1) or ev(*a)\n"
        "r = check_function(lambda x: jnp.sum(jnp.sin(x)), (np.ones(3),))\n"
        "print(witnesses.EXECUTOR, len(calls), r.passed)\n"
    )
    for value, on_host in (("xla", 0), ("host", 1), ("auto", 1)):
        out = subprocess.run(
            [sys.executable, "-c", code],
            env={**__import__("os").environ, "JAXCALC_WITNESS": value},
            capture_output=True,
            text=True,
            check=True,
        )
        assert out.stdout.split() == [value, str(on_host), "True"], out.stdout + out.stderr


def test_reference_mode_keeps_host_results_in_the_declared_dtype():
    with reference_mode("float32"):
        closed = jax.make_jaxpr(lambda x: jnp.sum(jnp.exp(x) * 0.1))(np.ones(3, np.float32))
    (out,) = host.evaluate(closed, [np.ones(3, np.float32)])
    assert out.dtype == np.float32 and out.shape == ()


def test_a_program_checked_again_and_again_is_compiled_once_the_host_time_pays_for_it(monkeypatch):
    hosted = []
    evaluate = host.evaluate
    monkeypatch.setattr(host, "evaluate", lambda *a: hosted.append(1) or evaluate(*a))
    monkeypatch.setattr(witnesses, "_estimate", lambda closed: (0.0, 0.0))  # compiling "costs" nothing

    def f(x):
        return jnp.sum(jnp.tanh(x) ** 2)

    x, g = np.linspace(-1, 1, 6), jax.grad(f)
    for executor, expected in (("auto", 1), ("host", 4)):
        monkeypatch.setattr(witnesses, "EXECUTOR", executor)
        witnesses._program.cache_clear()
        hosted.clear()
        reports = [check_function(f, (x * (1 + k),), g) for k in range(4)]
        assert len(hosted) == expected, executor  # auto: the first run on the host, then compiled
        assert all(r.passed for r in reports)
        assert [row.error for row in reports[0].results] != [row.error for row in reports[1].results]


def test_compiled_programs_pack_their_outputs_and_unpack_them_intact():
    """A compiled witness program returns one array per dtype; the host splits it back into
    every output, each with its own shape: the same values as the host evaluator gives."""

    def program(x, k):
        return {
            "scalar": jnp.sum(x),
            "matrix": jnp.outer(x, x),
            "empty": x[:0] * 2,
            "flags": x > 0,
            "count": jnp.sum(x > 0) + k,
            "flag": jnp.any(x > 10),
        }

    args = (np.array([1.5, -2.0, 3.0]), np.int32(4))
    traced = jax.jit(program).trace(*args)
    run = witnesses._compile(traced, None, 2)
    got = run(args)
    want = jax.tree_util.tree_unflatten(
        jax.tree_util.tree_structure(traced.out_info), host.evaluate(traced.jaxpr, list(args))
    )
    assert set(got) == set(want)
    for key in want:
        assert got[key].shape == np.shape(want[key]) and got[key].dtype == np.asarray(want[key]).dtype, key
        np.testing.assert_array_equal(got[key], want[key])
