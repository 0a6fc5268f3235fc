"""The Jacobian chain rule J_(f o g)(x) = J_f(g(x)) . J_g(x): holds in both modes, catches wrong Jacobians."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxcalc import fd
from jaxcalc.chain import ChainRuleResult, chain_rule_check, chain_rule_product
from jaxcalc.numerics import tolerance


@pytest.fixture(autouse=True)
def x64():
    with jax.enable_x64(True):
        yield


def normal(seed: int, shape: tuple[int, ...]) -> jax.Array:
    return jax.random.normal(jax.random.key(seed), shape, jnp.float64)


PAIRS = (
    "tanh_affine_to_poly",
    "matrix_to_matrix",
    "softmax_of_linear",
    "scalar_to_vector",
    "seed_affine_square",
)


def pair(name: str):
    """(f, g, x) composites with vector, matrix and scalar shapes (built under x64)."""
    A = normal(1, (4, 3))
    B = normal(2, (2, 5))
    return {
        "tanh_affine_to_poly": (lambda u: jnp.stack([jnp.sum(u**2), u[0] * u[1], jnp.sin(u[2])]),
                                lambda x: jnp.tanh(A @ x), normal(3, (3,))),
        "matrix_to_matrix": (lambda u: u.T @ u, lambda x: jnp.sin(x) * 2.0, normal(4, (2, 3))),
        "softmax_of_linear": (jax.nn.softmax, lambda x: (B @ x).ravel(), normal(5, (5, 2))),
        "scalar_to_vector": (lambda u: jnp.stack([u**2, jnp.exp(u)]), jnp.cos, normal(6, ())),
        "seed_affine_square": (lambda u: u**2, lambda x: 2 * x + 3, normal(7, ())),
    }[name]  # fmt: skip


@pytest.mark.parametrize("mode", ["both", "forward", "reverse"])
@pytest.mark.parametrize("name", PAIRS)
def test_chain_rule_holds(mode, name):
    f, g, x = pair(name)
    result = chain_rule_check(f, g, x, mode=mode)
    assert isinstance(result, ChainRuleResult)
    assert result.passed, result.describe()
    assert result.error <= tolerance("float64", "exact")
    assert result.mode in (("forward", "reverse") if mode == "both" else (mode,))


@pytest.mark.parametrize("mode", ["forward", "reverse"])
def test_composite_jacobian_matches_finite_differences(mode):
    # an independent witness for both sides, with the shape out.shape + in.shape
    f, g, x = pair("matrix_to_matrix")
    product, composite = chain_rule_product(f, g, x, mode=mode)
    assert composite.shape == (3, 3, 2, 3)
    ref = fd.jacobian(lambda v: f(g(v)), (x,))
    np.testing.assert_allclose(composite, ref, rtol=0, atol=1e-6 * float(jnp.max(jnp.abs(ref))))
    np.testing.assert_allclose(product, ref, rtol=0, atol=1e-6 * float(jnp.max(jnp.abs(ref))))


def test_seed_example_value():
    # d/dx (2x + 3)**2 = f'(g(x)) g'(x) = 2(2x + 3) * 2
    x = jnp.asarray(0.5)
    product, composite = chain_rule_product(lambda u: u**2, lambda v: 2 * v + 3, x)
    assert float(product) == float(composite) == 4 * (2 * 0.5 + 3)


def handwritten_pair():
    A = normal(1, (4, 3))

    def g(x):
        return jnp.tanh(A @ x)

    def jac_g(x):  # diag(1 - tanh(Ax)**2) A
        return (1 - jnp.tanh(A @ x) ** 2)[:, None] * A

    def f(u):
        return jnp.stack([jnp.sum(u**2), u[0] * u[1]])

    def jac_f(u):  # rows 2u and (u1, u0, 0, 0)
        z = jnp.zeros_like(u[0])
        return jnp.stack([2 * u, jnp.stack([u[1], u[0], z, z])])

    return f, g, jac_f, jac_g, normal(3, (3,))


@pytest.mark.parametrize("mode", ["both", "forward", "reverse"])
def test_correct_handwritten_jacobians_pass(mode):
    f, g, jac_f, jac_g, x = handwritten_pair()
    assert chain_rule_check(f, g, x, mode=mode, jac_f=jac_f, jac_g=jac_g).passed


@pytest.mark.parametrize("mode", ["both", "forward", "reverse"])
def test_wrong_inner_jacobian_fails(mode):
    f, g, jac_f, _, x = handwritten_pair()
    A = normal(1, (4, 3))

    def forgot_tanh(x):  # drops the diag(1 - tanh**2) factor: a classic backprop slip
        return A

    result = chain_rule_check(f, g, x, mode=mode, jac_f=jac_f, jac_g=forgot_tanh)
    assert not result.passed
    assert result.error > 1e-3
    assert "FAILED" in result.describe()
    # the reported values are the two sides at the worst element
    assert result.product != result.composite
    assert len(result.index) == 2  # f(g(x)).shape + x.shape = (2,) + (3,)


def test_wrong_outer_jacobian_fails_at_the_wrong_entry():
    f, g, jac_f, jac_g, x = handwritten_pair()

    def off_by_sign(u):  # the second row's u0 term has the wrong sign
        return jac_f(u).at[1, 1].multiply(-1.0)

    result = chain_rule_check(f, g, x, mode="reverse", jac_f=off_by_sign, jac_g=jac_g)
    assert not result.passed
    assert result.index[0] == 1  # only the second output's row is wrong


def test_transposed_jacobian_is_rejected():
    # a square Jacobian given transposed has the right size but the wrong values
    M = normal(9, (3, 3))
    result = chain_rule_check(jnp.sin, lambda x: M @ x, normal(10, (3,)), jac_g=lambda x: M.T)
    assert not result.passed


def test_float32_uses_float32_tolerance():
    x = jnp.asarray([0.1, 0.2, 0.3], jnp.float32)
    result = chain_rule_check(jnp.exp, jnp.sin, x)
    assert result.passed
    assert result.tolerance == tolerance("float32", "exact")


def test_bad_arguments():
    with pytest.raises(ValueError, match="mode"):
        chain_rule_check(jnp.sin, jnp.cos, jnp.ones(2), mode="sideways")
    with pytest.raises(ValueError, match="float"):
        chain_rule_check(jnp.sin, jnp.cos, jnp.arange(2))
    with pytest.raises(ValueError, match="J_g"):
        chain_rule_check(jnp.sin, jnp.cos, jnp.ones(2), jac_g=lambda x: jnp.ones((3, 3)))
