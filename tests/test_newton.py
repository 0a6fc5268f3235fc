"""Newton's method (dense and Hessian-free) beside gradient descent on the quadratic and Rosenbrock."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxcalc.cases.functions import quadratic_form_grad, quadratic_form_hessian, rosenbrock_hessian
from jaxcalc.descent import descent
from jaxcalc.newton import (
    hvp,
    minimize,
    newton_direction,
    newton_hvp_direction,
    quadratic_problem,
    rosenbrock_problem,
)
from jaxcalc.numerics import compare, tolerance

EXACT = tolerance("float64", "exact")


@pytest.fixture(autouse=True)
def x64():
    with jax.enable_x64(True):
        yield


@pytest.mark.parametrize(
    "method, solver", [("newton", "gmres"), ("newton_hvp", "gmres"), ("newton_hvp", "cg")]
)
def test_newton_solves_the_quadratic_in_one_step(method, solver):
    from jaxcalc.cases import get_case

    f, x0, _ = quadratic_problem()
    inputs = get_case("quadratic_form").sample()
    A, b = inputs["A"], inputs["b"]
    assert not np.allclose(A, A.T)  # only the symmetric part is the Hessian
    r = minimize(f, x0, method, solver=solver, tol=1e-10)
    assert int(r.iterations) == 1 and bool(r.converged)
    g = quadratic_form_grad(A, b, r.x)  # the handwritten gradient, not the one Newton used
    assert float(jnp.max(jnp.abs(g))) <= 1e-12 * float(jnp.max(jnp.abs(quadratic_form_grad(A, b, x0))))
    # The closed form x* = -(1/2 (A + A^T))^{-1} b, solved here with numpy.
    x_star = np.linalg.solve(0.5 * (A + A.T), -b)
    assert compare(r.x, x_star).error <= EXACT


def test_newton_direction_uses_the_symmetric_part():
    from jaxcalc.cases import get_case

    inputs = get_case("quadratic_form").sample()
    A, b, x = inputs["A"], inputs["b"], inputs["x"]
    f, _, _ = quadratic_problem()
    expected = -np.linalg.solve(quadratic_form_hessian(A, b, x), quadratic_form_grad(A, b, x))
    dense, free = jax.jit(lambda x: (newton_direction(f, x), newton_hvp_direction(f, x, "cg")))(x)
    assert compare(dense, expected).error <= EXACT
    assert compare(free, expected).error <= 1e-9


@pytest.mark.parametrize("n", [2, 6])
def test_hvp_matches_the_handwritten_hessian(n):
    f, x0, _ = rosenbrock_problem(n)
    x = x0 + 0.1 * jnp.arange(n)
    v = jnp.cos(jnp.arange(n) + 1.0)
    Hv, H_autodiff, H = jax.jit(lambda x, v: (hvp(f, x, v), jax.hessian(f)(x), rosenbrock_hessian(x)))(x, v)
    assert compare(Hv, H @ v).error <= EXACT
    assert compare(H_autodiff, H).error <= EXACT


@pytest.mark.parametrize("n, max_steps", [(2, 10), (6, 30)])
def test_newton_converges_on_rosenbrock(n, max_steps):
    f, x0, x_star = rosenbrock_problem(n)
    dense = minimize(f, x0, "newton", tol=1e-8, record=40)
    free = minimize(f, x0, "newton_hvp", tol=1e-8, record=40)
    for r in (dense, free):
        assert bool(r.converged) and int(r.iterations) <= max_steps
        assert float(jnp.max(jnp.abs(r.x - x_star))) <= 1e-7
    assert int(dense.iterations) == int(free.iterations)
    assert compare(free.path, dense.path).error <= 1e-8  # the same iterates, by two solves
    # Quadratic convergence at the end: e_{k+1} <= C e_k**2, far faster than linear.
    k = int(dense.iterations)
    err = np.max(np.abs(np.asarray(dense.path[: k + 1]) - np.asarray(x_star)), axis=1)
    assert err[k] <= 1e3 * err[k - 1] ** 2 and err[k - 1] <= 1e3 * err[k - 2] ** 2
    assert err[k] <= 1e-3 * err[k - 1] and err[k - 1] <= 1e-2 * err[k - 2]


def test_gradient_descent_needs_thousands_of_steps_on_rosenbrock():
    f, x0, x_star = rosenbrock_problem(2)
    newton = minimize(f, x0, "newton", tol=1e-6)
    gd = minimize(f, x0, "gd", lr=1e-3, tol=1e-6, max_iter=2_000)
    assert bool(newton.converged) and int(newton.iterations) < 10
    assert not bool(gd.converged) and int(gd.iterations) == 2_000
    assert float(jnp.max(jnp.abs(gd.x - x_star))) > 1e-3
    assert float(f(gd.x)) < float(f(x0))  # it is moving, slowly, down the valley


def test_gd_path_is_the_seed_update():
    f, x0, _ = quadratic_problem()
    r = minimize(f, x0, "gd", lr=0.1, tol=0.0, max_iter=20, record=20)
    traj = descent(f, x0, 0.1, 20)
    assert int(r.iterations) == 20
    assert compare(r.path[0], x0).error == 0
    assert compare(r.path[1:], traj.params).error <= EXACT


def test_bad_method_and_solver():
    f, x0, _ = quadratic_problem()
    with pytest.raises(ValueError, match="unknown method"):
        minimize(f, x0, "bfgs")
    with pytest.raises(ValueError, match="unknown solver"):
        newton_hvp_direction(f, x0, "lu")
