"""The seed's formulas three ways: handwritten, jax.grad (argnums), central finite differences.

Also the seed's own hard-coded results: f'(x) = 2x, df/dx = 6x, df/dy = 2, grad = [6x, 2],
d/dx (2x + 3)**2 = 4(2x + 3), and the worked update step w - 0.1 * 0.5 = w - 0.05.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jaxcalc import fd, seed
from jaxcalc.numerics import compare, tolerance

EXACT = tolerance("float64", "exact")
FD = tolerance("float64", "fd")

reals = st.floats(min_value=-1e3, max_value=1e3, allow_nan=False, allow_infinity=False)
few = settings(max_examples=40, deadline=None)


@pytest.fixture(autouse=True)
def x64():
    with jax.enable_x64(True):
        yield


def f64(v: float) -> jax.Array:
    return jnp.asarray(v, jnp.float64)


def agree(a, b, tol: float) -> None:
    c = compare(a, b)
    assert c.error <= tol, f"rel err {c.error:.3e} > {tol:g} at {c.where()}: {c.a_value!r} vs {c.b_value!r}"


def agree_fd(a, b) -> None:
    """A finite difference against an exact derivative. Its round-off is absolute (about
    eps**0.8 times the function's scale), so where the derivative is near 0 the error is
    measured against a floor of 1 instead of the tiny reference."""
    err = float(np.max(np.abs(np.asarray(a) - np.asarray(b)))) / max(float(np.max(np.abs(b))), 1.0)
    assert err <= FD, f"finite difference {a} vs exact {b}: error {err:.3e} > {FD:g}"


# ----------------------------------------------------------------------------- the seed's numbers


@pytest.mark.parametrize("x", [-2.5, 0.0, 1.0, 3.0, 10.0])
def test_square_derivative_is_2x(x):
    assert float(seed.square_grad(f64(x))) == 2 * x
    assert float(jax.grad(seed.square)(f64(x))) == 2 * x


@pytest.mark.parametrize(("x", "y"), [(1.5, -2.0), (0.0, 7.0), (-3.0, 0.25)])
def test_poly_partials_are_6x_and_2(x, y):
    dx, dy = seed.poly_xy_partials(f64(x), f64(y))
    assert (float(dx), float(dy)) == (6 * x, 2.0)
    ax, ay = jax.grad(seed.poly_xy, argnums=(0, 1))(f64(x), f64(y))
    assert (float(ax), float(ay)) == (6 * x, 2.0)
    assert seed.poly_xy_gradient(f64(x), f64(y)).tolist() == [6 * x, 2.0]


@pytest.mark.parametrize("x", [-1.5, 0.5, 2.0, 4.0])
def test_chain_rule_is_4_times_2x_plus_3(x):
    assert float(seed.chain_affine_square_grad(f64(x))) == 4 * (2 * x + 3)
    assert float(jax.grad(seed.chain_affine_square)(f64(x))) == 4 * (2 * x + 3)


def test_chain_rule_factors_are_the_seeds():
    # f'(g(x)) = 2 g(x), g'(x) = 2
    x = f64(0.75)
    assert float(seed.affine(x)) == 2 * 0.75 + 3
    assert float(seed.affine_grad(x)) == 2.0
    assert float(seed.square_grad(seed.affine(x))) == 2 * (2 * 0.75 + 3)


def test_worked_update_step_moves_by_minus_0_05():
    # the seed: gradient 0.5, learning rate 0.1 -> w_new = w_old - 0.05
    for w in (0.0, 1.0, -3.0, 0.25):
        assert float(seed.update(f64(w), f64(0.5), 0.1)) == pytest.approx(w - 0.05, abs=1e-15)
    # the same step through f(w) = w**2 at w = 0.25, where the gradient is 0.5
    w = f64(0.25)
    assert float(seed.square_grad(w)) == 0.5
    assert float(seed.update(w, seed.square_grad(w), 0.1)) == pytest.approx(0.2, abs=1e-15)


def test_update_works_on_pytrees():
    params = {"w": jnp.arange(3.0), "b": f64(1.0)}
    grads = {"w": jnp.ones(3), "b": f64(-2.0)}
    new = seed.update(params, grads, 0.5)
    assert new["w"].tolist() == [-0.5, 0.5, 1.5]
    assert float(new["b"]) == 2.0


# ----------------------------------------------------------------------------- three witnesses, random inputs


@few
@given(reals)
def test_square_three_ways(x):
    x = f64(x)
    hand, auto = seed.square_grad(x), jax.grad(seed.square)(x)
    agree(hand, auto, EXACT)
    agree_fd(fd.derivative(seed.square, x), auto)


@few
@given(reals, reals)
def test_poly_xy_three_ways(x, y):
    x, y = f64(x), f64(y)
    hx, hy = seed.poly_xy_partials(x, y)
    ax, ay = jax.grad(seed.poly_xy, argnums=(0, 1))(x, y)
    agree(hx, ax, EXACT)
    agree(hy, ay, EXACT)
    agree_fd(fd.derivative(lambda s: seed.poly_xy(s, y), x), ax)
    agree_fd(fd.derivative(lambda s: seed.poly_xy(x, s), y), ay)
    agree(seed.poly_xy_gradient(x, y), jnp.stack([ax, ay]), EXACT)


@few
@given(reals)
def test_chain_affine_square_three_ways(x):
    x = f64(x)
    auto = jax.grad(seed.chain_affine_square)(x)
    agree(seed.chain_affine_square_grad(x), auto, EXACT)
    agree_fd(fd.derivative(seed.chain_affine_square, x), auto)
    # the chain rule itself: f'(g(x)) * g'(x) with each factor by autodiff
    agree(jax.grad(seed.square)(seed.affine(x)) * jax.grad(seed.affine)(x), auto, EXACT)


@few
@given(st.lists(reals, min_size=1, max_size=6))
def test_elementwise_derivatives_on_arrays(xs):
    x = jnp.asarray(xs, jnp.float64)
    # for an elementwise f, grad of sum(f(x)) is f'(x) elementwise
    agree(seed.square_grad(x), jax.grad(lambda v: jnp.sum(seed.square(v)))(x), EXACT)
    agree_fd(fd.derivative(seed.square, x), seed.square_grad(x))
    agree(
        seed.chain_affine_square_grad(x),
        jax.grad(lambda v: jnp.sum(seed.chain_affine_square(v)))(x),
        EXACT,
    )


def test_finite_differences_catch_a_wrong_derivative():
    # the classic chain-rule slip, forgetting g'(x) = 2: the witnesses must notice
    x = f64(0.5)
    wrong = 2 * seed.affine(x)
    assert compare(wrong, fd.derivative(seed.chain_affine_square, x)).error > 0.1
    assert np.isclose(float(fd.derivative(seed.chain_affine_square, x)), 16.0, rtol=FD)
