"""One optimizer step as a differentiable map: the third step of Adam, exactly as optax.adam takes it.

With lr = 1e-3, b1 = 0.9, b2 = 0.999, eps = 1e-8 and step count k = 3:

  m' = b1 m + (1 - b1) g
  v' = b2 v + (1 - b2) g**2
  p' = p - lr * (m' / c1) / (sqrt(v' / c2) + eps),   c1 = 1 - b1**k, c2 = 1 - b2**k

The case output is the stack [p', m', v'] of shape (3, ...). Differentiating an optimizer step
is what meta-learning and learned-optimizer work need; here it also checks the bias-corrected
update against optax itself (tests/test_composite_math.py).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from jaxcalc.cases._base import Case, Input, normal, register, uniform

__all__ = [
    "ADAM_LR",
    "ADAM_B1",
    "ADAM_B2",
    "ADAM_EPS",
    "ADAM_STEP",
    "adam_step",
    "adam_step_vjp",
    "adam_step_jvp",
]

ADAM_LR = 1e-3  # learning rate, optax.adam(1e-3)
ADAM_B1 = 0.9  # first-moment decay
ADAM_B2 = 0.999  # second-moment decay
ADAM_EPS = 1e-8  # added to sqrt(v_hat), outside the root (optax's eps; eps_root = 0)
ADAM_STEP = 3  # the step count k used in the bias corrections


def _moments(g: jax.Array, m: jax.Array, v: jax.Array) -> tuple[jax.Array, jax.Array]:
    """New moments m' = b1 m + (1 - b1) g and v' = b2 v + (1 - b2) g**2 (optax's order of terms)."""
    return (1 - ADAM_B1) * g + ADAM_B1 * m, (1 - ADAM_B2) * g**2 + ADAM_B2 * v


def _corrections(dtype: jnp.dtype) -> tuple[jax.Array, jax.Array]:
    """Bias corrections c1 = 1 - b1**k and c2 = 1 - b2**k, in ``dtype``."""
    return (
        jnp.asarray(1 - ADAM_B1**ADAM_STEP, dtype),
        jnp.asarray(1 - ADAM_B2**ADAM_STEP, dtype),
    )


def adam_step(p: ArrayLike, g: ArrayLike, m: ArrayLike, v: ArrayLike) -> jax.Array:
    """Adam's third step: returns stack([p', m', v']), shape (3, *p.shape); see the module docstring.

    p, g, m, v share one shape; v must be positive (a second moment after two steps).
    """
    p, g, m, v = (jnp.asarray(a) for a in (p, g, m, v))
    m1, v1 = _moments(g, m, v)
    c1, c2 = _corrections(m1.dtype)
    p1 = p - ADAM_LR * ((m1 / c1) / (jnp.sqrt(v1 / c2) + ADAM_EPS))
    return jnp.stack([p1, m1, v1])


def _partials(g: jax.Array, m: jax.Array, v: jax.Array) -> tuple[jax.Array, jax.Array]:
    """dp'/dm' = -lr / (c1 (s + eps)) and dp'/dv' = lr (m'/c1) / ((s + eps)**2 2 s c2), s = sqrt(v'/c2)."""
    m1, v1 = _moments(g, m, v)
    c1, c2 = _corrections(m1.dtype)
    s = jnp.sqrt(v1 / c2)
    dp_dm1 = -ADAM_LR / (c1 * (s + ADAM_EPS))
    dp_dv1 = ADAM_LR * (m1 / c1) / ((s + ADAM_EPS) ** 2 * (2 * s * c2))
    return dp_dm1, dp_dv1


def adam_step_vjp(
    p: ArrayLike, g: ArrayLike, m: ArrayLike, v: ArrayLike, ct: ArrayLike
) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
    """Pull back ct = [cp, cm, cv] (shape (3, ...)) to (dp, dg, dm, dv).

    With total cotangents on the new moments cm* = cm + cp dp'/dm' and cv* = cv + cp dp'/dv':
    dp = cp, dg = (1 - b1) cm* + 2 (1 - b2) g cv*, dm = b1 cm*, dv = b2 cv*.
    """
    g, m, v, ct = (jnp.asarray(a) for a in (g, m, v, ct))
    cp, cm, cv = ct[0], ct[1], ct[2]
    dp_dm1, dp_dv1 = _partials(g, m, v)
    cm_total = cm + cp * dp_dm1
    cv_total = cv + cp * dp_dv1
    dg = (1 - ADAM_B1) * cm_total + 2 * (1 - ADAM_B2) * g * cv_total
    return cp, dg, ADAM_B1 * cm_total, ADAM_B2 * cv_total


def adam_step_jvp(p: ArrayLike, g: ArrayLike, m: ArrayLike, v: ArrayLike, tangents: tuple) -> jax.Array:
    """Push (tp, tg, tm, tv) forward: dm' = b1 tm + (1 - b1) tg, dv' = b2 tv + 2 (1 - b2) g tg,
    dp' = tp + dp'/dm' dm' + dp'/dv' dv'; returns stack([dp', dm', dv']).
    """
    g, m, v = (jnp.asarray(a) for a in (g, m, v))
    tp, tg, tm, tv = (jnp.asarray(t) for t in tangents)
    dp_dm1, dp_dv1 = _partials(g, m, v)
    dm1 = ADAM_B1 * tm + (1 - ADAM_B1) * tg
    dv1 = ADAM_B2 * tv + 2 * (1 - ADAM_B2) * g * tg
    return jnp.stack([tp + dp_dm1 * dm1 + dp_dv1 * dv1, dm1, dv1])


# ----------------------------------------------------------------------------- case

# After two Adam steps on O(1) gradients the state is small: m ~ 0.19 g, v ~ 0.002 g**2.
register(
    Case(
        name="adam_step",
        description=(
            "3rd Adam step (optax.adam: lr 1e-3, b1 0.9, b2 0.999, eps 1e-8): m' = b1 m + (1-b1) g, "
            "v' = b2 v + (1-b2) g**2, p' = p - lr (m'/(1-b1**3)) / (sqrt(v'/(1-b2**3)) + eps); "
            "-> stack [p', m', v'] (3, 5)"
        ),
        inputs=(
            Input("p", ("n",), normal(1.0)),
            Input("g", ("n",), normal(1.0)),
            Input("m", ("n",), normal(0.2)),
            Input("v", ("n",), uniform(1e-3, 4e-3)),
        ),
        settings={"lr": ADAM_LR, "b1": ADAM_B1, "b2": ADAM_B2, "eps": ADAM_EPS, "step": ADAM_STEP},
        sizes={"golden": {"n": 5}, "tiles": {"n": 67}, "large": {"n": 1 << 20}},
        # tiny: gradients of 1e-9 and second moments of 1e-19, where sqrt(v_hat) meets eps = 1e-8
        regimes={"tiny": {"g": normal(1e-9), "m": normal(2e-10), "v": uniform(1e-19, 4e-19)}},
        forward=adam_step,
        vjp=lambda prim, ct: adam_step_vjp(*prim, ct),
        jvp=lambda prim, t: adam_step_jvp(*prim, t),
        tags=("optimizer",),
    )
)
