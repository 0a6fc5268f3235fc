"""The traces every witness transforms: dead code left out, effects and values kept, kinks recorded."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxcalc.checks.branches import crossed, live, traced, with_branches


def _softmax_ce(z, y):
    return -jnp.mean(jax.nn.log_softmax(z)[jnp.arange(z.shape[0]), y])


def _count(jaxpr):
    from jaxcalc.checks.branches import sub_jaxprs

    return sum(1 + sum(_count(s) for s in sub_jaxprs(e)) for e in jaxpr.eqns)


@pytest.mark.parametrize("inline", [True, False])
def test_dead_code_of_a_gradient_is_dropped_and_its_value_kept(inline):
    rng = np.random.default_rng(0)
    z, y = rng.standard_normal((5, 4)), np.array([0, 3, 1, 2, 1])
    g = jax.grad(_softmax_ce)
    with jax.disable_jit(inline):
        raw = jax.make_jaxpr(g)(z, y)
    kept = live(raw.jaxpr)
    assert _count(kept) < _count(raw.jaxpr)  # the loss value and unused residuals are gone
    got = jax.core.eval_jaxpr(kept, raw.consts, z, y)[0]
    np.testing.assert_array_equal(got, jax.core.eval_jaxpr(raw.jaxpr, raw.consts, z, y)[0])
    np.testing.assert_allclose(got, g(z, y), rtol=1e-6)
    # traced() hands out the cleaned trace
    jx, _ = traced(g, z, y, inline_jit=inline)
    assert _count(jx.jaxpr) == _count(kept)


def test_a_live_jaxpr_is_returned_unchanged_and_effects_survive():
    def f(x):
        jax.debug.callback(lambda v: None, x)  # no output depends on it, but it has an effect
        return jnp.sum(jnp.sin(x))

    raw = jax.make_jaxpr(f)(np.ones(3))
    kept = live(raw.jaxpr)
    assert "debug_callback" in {e.primitive.name for e in kept.eqns}
    clean = jax.make_jaxpr(lambda x: jnp.sum(jnp.sin(x)))(np.ones(3)).jaxpr
    assert live(clean) is clean


def test_a_dead_comparison_records_no_branch_and_a_live_one_does():
    x = np.array([-0.5, 0.25, 1.0])

    def dead(x):
        _ = jnp.where(x > 0, 1.0, 0.0)  # computed, never used
        return jnp.sum(x**2)

    def alive(x):
        return jnp.sum(jnp.where(x > 0, x, 0.0) ** 2)

    assert with_branches(dead, x)(x)[1] == ()
    value, record = with_branches(alive, x)(x)
    assert len(record) == 1 and value == pytest.approx(1.0625)
    # moving x[0] across 0 changes the live record; crossed compares batched rows to a center
    rows = jax.vmap(lambda u: with_branches(alive, x)(u)[1])(np.stack([x, x + [1.0, 0, 0], x + [0, 0.1, 0]]))
    np.testing.assert_array_equal(crossed(rows, record), [False, True, False])


def test_only_a_float_rounded_to_an_integer_is_a_branch():
    """float -> float conversions are smooth: recording them would call every FD step a kink
    and excuse any wrong gradient behind one."""
    with jax.enable_x64(True):
        x = np.array([0.3, -1.7, 2.2])
        smooth = with_branches(lambda x: jnp.sum(x.astype(jnp.float32) ** 2), x)
        assert smooth(x)[1] == ()
        rounded = with_branches(lambda x: jnp.sum(x * x.astype(jnp.int32)), x)
        (rec,) = rounded(x)[1]
        np.testing.assert_array_equal(rec, [0, -1, 2])
        assert with_branches(lambda x: jnp.sum(x.astype(jnp.int32).astype(jnp.float64)), x)(x)[1] != ()


def test_the_garbage_collector_is_paused_while_tracing_and_left_as_it_was():
    """Tracing runs with Python's cyclic GC paused (branches.paused_gc); after the check the
    collector is as the caller left it, enabled or not, and nested pauses restore it once."""
    import gc

    from jaxcalc.checks import check_function
    from jaxcalc.checks.branches import paused_gc

    seen = []

    def f(x):
        seen.append(gc.isenabled())  # runs while f is traced
        return jnp.sum(jnp.sin(x) ** 2)

    assert gc.isenabled()
    report = check_function(f, (np.linspace(-1.0, 1.0, 5),), jax.grad(f))
    assert report.passed and seen and not any(seen)
    assert gc.isenabled()
    with paused_gc():
        with paused_gc():
            assert not gc.isenabled()
        assert not gc.isenabled()  # the inner pause does not end the outer one
    assert gc.isenabled()
    gc.disable()
    try:
        with paused_gc():
            pass
        assert not gc.isenabled()  # a caller's own disable is kept
    finally:
        gc.enable()
    try:
        with paused_gc():
            raise RuntimeError("inside")
    except RuntimeError:
        pass
    assert gc.isenabled()
