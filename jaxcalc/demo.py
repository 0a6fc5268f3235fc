"""The seed end to end, every value handwritten / autodiff / finite difference (``jaxcalc demo``).

Concepts in the seed's order: the derivative of x**2, the partials and gradient of
3x**2 + 2y, the chain rule on (2x + 3)**2 and on vector functions (Jacobians, forward and
reverse mode), one gradient-descent step, the descent loop, and backprop on a small MLP.
Each row shows the three witnesses side by side (and the seed's own number where it gives
one), the largest relative disagreement and a verdict. Exit status 1 if any row disagrees.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np

__all__ = ["Row", "demo_rows"]

# Points and seeds used by the demo (fixed, so every run is reproducible bit for bit).
X_DERIV = 3.0  # f(x) = x**2 at x = 3: f'(3) = 2x = 6
X_POLY, Y_POLY = 1.5, -2.0  # f(x, y) = 3x**2 + 2y: (6x, 2) = (9, 2)
X_CHAIN = 0.5  # (2x + 3)**2: 4(2x + 3) = 16
W_STEP, LR_STEP = 0.25, 0.1  # f(w) = w**2 at w = 0.25 has gradient 0.5; the seed's worked step
X0, LR, STEPS = 10.0, 0.1, 20  # the seed's loop
MLP_SIZES, MLP_BATCH, MLP_LR = (4, 6, 5, 3), 8, 0.5
ACT = "tanh"  # smooth, so finite differences see no relu kinks
KEY = 0  # jax.random.key(KEY) for the vector chain rule and the MLP


class Row(NamedTuple):
    """One demo line: a quantity three ways, with each pairwise check (pair, error, tolerance)."""

    concept: str
    quantity: str
    seed: np.ndarray | None
    handwritten: np.ndarray
    autodiff: np.ndarray
    fd: np.ndarray
    checks: tuple[tuple[str, float, float], ...]

    @property
    def error(self) -> float:
        return max(err for _, err, _ in self.checks)

    @property
    def passed(self) -> bool:
        return all(err <= tol for _, err, tol in self.checks)


def _row(concept: str, quantity: str, hand, auto, fd, seed=None, extra=()) -> Row:
    """Compare handwritten and FD against autodiff, and handwritten against the seed's value if given."""
    from jaxcalc.numerics import compare, tolerance

    hand, auto, fd = (np.asarray(v, np.float64) for v in (hand, auto, fd))
    checks = [
        ("handwritten vs autodiff", compare(hand, auto).error, tolerance("float64", "exact")),
        ("finite diff vs autodiff", compare(fd, auto).error, tolerance("float64", "fd")),
    ]
    if seed is not None:
        seed = np.broadcast_to(np.asarray(seed, np.float64), hand.shape)
        checks.append(("handwritten vs seed", compare(hand, seed).error, tolerance("float64", "exact")))
    return Row(concept, quantity, seed, hand, auto, fd, tuple(checks) + tuple(extra))


def _vector_chain(key) -> dict[str, tuple]:
    """J_(f o g)(x) vs J_f(g(x)) J_g(x) with g = tanh(Ax + b): R^3 -> R^4 and f: R^4 -> R^3."""
    import jax
    import jax.numpy as jnp

    from jaxcalc import fd
    from jaxcalc.chain import chain_rule_product

    ka, kb, kx = jax.random.split(key, 3)
    A = jax.random.normal(ka, (4, 3), jnp.float64)
    b = jax.random.normal(kb, (4,), jnp.float64)
    x = jax.random.normal(kx, (3,), jnp.float64)

    def g(x):
        return jnp.tanh(A @ x + b)

    def jac_g(x):  # d tanh(Ax + b)/dx = diag(1 - tanh(Ax + b)**2) A
        return (1 - g(x) ** 2)[:, None] * A

    def f(u):
        return jnp.stack([jnp.sum(u**2), u[0] * u[1], jnp.sin(u[2]) + u[3]])

    def jac_f(u):  # rows: 2u; (u1, u0, 0, 0); (0, 0, cos u2, 1)
        z, one = jnp.zeros_like(u[0]), jnp.ones_like(u[0])
        return jnp.stack([2 * u, jnp.stack([u[1], u[0], z, z]), jnp.stack([z, z, jnp.cos(u[2]), one])])

    fd_jac = fd.jacobian(lambda v: f(g(v)), (x,))
    out = {}
    for mode in ("forward", "reverse"):
        hand, auto = chain_rule_product(f, g, x, mode=mode, jac_f=jac_f, jac_g=jac_g)
        auto_product, _ = chain_rule_product(f, g, x, mode=mode)  # autodiff factors, multiplied
        out[mode] = (hand, auto, fd_jac, auto_product)
    return out


def _backprop(key) -> dict[str, tuple]:
    """Backprop on a small MLP: all gradients three ways, then one update step three ways."""
    import jax
    import jax.numpy as jnp
    from jax.flatten_util import ravel_pytree

    from jaxcalc import fd
    from jaxcalc.backprop import init_mlp, make_train_step, mlp_backward, mlp_loss

    kp, kx, ky = jax.random.split(key, 3)
    params = init_mlp(kp, MLP_SIZES, jnp.float64)
    batch = (
        jax.random.normal(kx, (MLP_BATCH, MLP_SIZES[0]), jnp.float64),
        jax.random.randint(ky, (MLP_BATCH,), 0, MLP_SIZES[-1]),
    )
    flat, unravel = ravel_pytree(params)
    hand = ravel_pytree(mlp_backward(params, batch, activation=ACT)[1])[0]
    auto = ravel_pytree(jax.grad(mlp_loss)(params, batch, activation=ACT))[0]
    fd_grad = fd.jacobian(lambda v: mlp_loss(unravel(v), batch, activation=ACT), (flat,))
    # step 4: w <- w - lr * grad, by the jitted train steps and by finite differences
    hand_step = ravel_pytree(make_train_step(MLP_LR, "handwritten", activation=ACT)(params, batch)[0])[0]
    auto_step = ravel_pytree(make_train_step(MLP_LR, "autodiff", activation=ACT)(params, batch)[0])[0]
    return {"grad": (hand, auto, fd_grad), "step": (hand_step - flat, auto_step - flat, -MLP_LR * fd_grad)}


def _witnesses() -> dict[str, Any]:
    """Every value of the demo three ways; traced once, so the whole demo is one compiled call."""
    import jax
    import jax.numpy as jnp

    from jaxcalc import fd, seed
    from jaxcalc.descent import descent_step, descent_with_grad

    f64 = jnp.float64
    v: dict[str, Any] = {}
    x = jnp.asarray(X_DERIV, f64)
    v["derivative"] = (seed.square_grad(x), jax.grad(seed.square)(x), fd.derivative(seed.square, x))

    px, py = jnp.asarray(X_POLY, f64), jnp.asarray(Y_POLY, f64)
    hx, hy = seed.poly_xy_partials(px, py)
    ax, ay = jax.grad(seed.poly_xy, argnums=(0, 1))(px, py)
    fx = fd.derivative(lambda s: seed.poly_xy(s, py), px)
    fy = fd.derivative(lambda s: seed.poly_xy(px, s), py)
    v["dfdx"], v["dfdy"] = (hx, ax, fx), (hy, ay, fy)
    v["gradient"] = (seed.poly_xy_gradient(px, py), jnp.stack([ax, ay]), jnp.stack([fx, fy]))

    xc = jnp.asarray(X_CHAIN, f64)
    v["chain"] = (
        seed.chain_affine_square_grad(xc),
        jax.grad(seed.chain_affine_square)(xc),
        fd.derivative(seed.chain_affine_square, xc),
    )
    v["vector_chain"] = _vector_chain(jax.random.key(KEY))

    w = jnp.asarray(W_STEP, f64)
    v["step"] = (
        seed.update(w, seed.square_grad(w), LR_STEP) - w,
        descent_step(seed.square, w, LR_STEP) - w,
        seed.update(w, fd.derivative(seed.square, w), LR_STEP) - w,
    )

    x0 = jnp.asarray(X0, f64)
    v["loop"] = tuple(
        descent_with_grad(seed.square, grad, x0, LR, STEPS).params
        for grad in (seed.square_grad, jax.grad(seed.square), lambda s: fd.derivative(seed.square, s))
    )
    v["backprop"] = _backprop(jax.random.key(KEY + 1))
    return v


def demo_rows() -> list[Row]:
    """Every concept of the seed, three ways, in float64 (call with x64 enabled)."""
    import jax

    from jaxcalc.numerics import compare, tolerance

    v = jax.tree.map(np.asarray, jax.jit(_witnesses)())
    at = f"({X_POLY:g}, {Y_POLY:g})"
    rows = [
        _row("derivative", f"f(x) = x^2: f'({X_DERIV:g}) = 2x", *v["derivative"], 2 * X_DERIV),
        _row("partial derivatives", f"3x^2 + 2y: df/dx{at} = 6x", *v["dfdx"], 6 * X_POLY),
        _row("partial derivatives", f"3x^2 + 2y: df/dy{at} = 2", *v["dfdy"], 2.0),
        _row("gradient", f"grad(3x^2 + 2y){at} = [6x, 2]", *v["gradient"], [6 * X_POLY, 2.0]),
        _row("chain rule", f"d/dx (2x+3)^2 at {X_CHAIN:g} = 4(2x+3)", *v["chain"], 4 * (2 * X_CHAIN + 3)),
    ]
    for mode, (hand, auto, fd_jac, auto_product) in v["vector_chain"].items():
        extra = (
            (
                "autodiff J_f.J_g vs J_(f o g)",
                compare(auto_product, auto).error,
                tolerance("float64", "exact"),
            ),
        )
        rows.append(
            _row("chain rule (vector)", f"J_f(g(x)).J_g(x), 3x3, {mode}", hand, auto, fd_jac, None, extra)
        )
    rows.append(
        _row(
            "descent step",
            f"w_new - w_old, grad {2 * W_STEP:g}, lr {LR_STEP:g}",
            *v["step"],
            -LR_STEP * 2 * W_STEP,
        )
    )
    closed = X0 * (1 - 2 * LR) ** np.arange(1, STEPS + 1)  # x_n = x0 (1 - 2 lr)**n: the seed's 8.0 .. 0.1153
    rows.append(
        _row("descent loop", f"x_1..x_{STEPS}, shown x_{STEPS} = {X0:g}*0.8^{STEPS}", *v["loop"], closed)
    )
    n = v["backprop"]["grad"][0].size
    rows.append(
        _row("backprop", f"dL/dtheta, all {n} weights, {ACT} MLP {MLP_SIZES}", *v["backprop"]["grad"])
    )
    rows.append(_row("backprop", f"update step -lr*dL/dtheta, lr {MLP_LR}", *v["backprop"]["step"]))
    return rows
