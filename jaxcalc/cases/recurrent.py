"""Recurrent cells as torch.nn.LSTMCell and GRUCell compute them, with handwritten backward passes.

lstm_cell, x (N, I), h and c (N, H), W_ih (4H, I), W_hh (4H, H), b_ih and b_hh (4H,), gates in
torch's order (input, forget, cell, output):

  [i, f, g, o] = split(x W_ih^T + b_ih + h W_hh^T + b_hh);  i, f, o = sigmoid, g = tanh
  c' = f c + i g,  h' = o tanh(c');  output concat([h', c'], axis=-1) (N, 2H)

gru_cell, W_ih (3H, I), W_hh (3H, H), gates in torch's order (reset, update, new):

  gi = x W_ih^T + b_ih, gh = h W_hh^T + b_hh, each split into (r, z, n) parts
  r = sigmoid(gi_r + gh_r), z = sigmoid(gi_z + gh_z), n = tanh(gi_n + r gh_n)
  h' = (1 - z) n + z h   (N, H)
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from jaxcalc.cases._base import Case, Input, normal, register, uniform
from jaxcalc.cases.activations import sigmoid

__all__ = ["lstm_cell", "lstm_cell_vjp", "gru_cell", "gru_cell_vjp"]


def _lstm_gates(x, h, W_ih, W_hh, b_ih, b_hh) -> tuple[jax.Array, ...]:
    pre = x @ W_ih.T + b_ih + h @ W_hh.T + b_hh
    pi, pf, pg, po = jnp.split(pre, 4, axis=-1)
    return sigmoid(pi), sigmoid(pf), jnp.tanh(pg), sigmoid(po)


def lstm_cell(x, h, c, W_ih, W_hh, b_ih, b_hh) -> jax.Array:
    """concat([h', c']) of one LSTM step (module docstring): (N, 2H)."""
    x, h, c, W_ih, W_hh, b_ih, b_hh = (jnp.asarray(a) for a in (x, h, c, W_ih, W_hh, b_ih, b_hh))
    i, f, g, o = _lstm_gates(x, h, W_ih, W_hh, b_ih, b_hh)
    c1 = f * c + i * g
    return jnp.concatenate([o * jnp.tanh(c1), c1], axis=-1)


def _join_gates(di: jax.Array, df: jax.Array, dg: jax.Array, do: jax.Array) -> jax.Array:
    """The pre-activation cotangents back in torch's gate order (i, f, g, o): (N, 4H)."""
    return jnp.concatenate([di, df, dg, do], axis=-1)


def lstm_cell_vjp(primals: tuple, ct: ArrayLike) -> tuple[jax.Array, ...]:
    """(dx, dh, dc, dW_ih, dW_hh, db_ih, db_hh) for ct = [dh', dc'] (N, 2H).

    dc'_total = dc' + dh' o tanh'(c'); do = dh' tanh(c'); df = dc'_total c; di = dc'_total g;
    dg = dc'_total i; each through its activation's derivative; dc = dc'_total f.
    """
    x, h, c, W_ih, W_hh, b_ih, b_hh = (jnp.asarray(a) for a in primals)
    dh1, dc1 = jnp.split(jnp.asarray(ct), 2, axis=-1)
    i, f, g, o = _lstm_gates(x, h, W_ih, W_hh, b_ih, b_hh)
    c1 = f * c + i * g
    t1 = jnp.tanh(c1)
    dct = dc1 + dh1 * o * (1.0 - t1 * t1)  # c' reaches the output directly and through h'
    dpre = _join_gates(
        dct * g * i * (1.0 - i),  # sigmoid' = s (1 - s)
        dct * c * f * (1.0 - f),
        dct * i * (1.0 - g * g),  # tanh' = 1 - tanh^2
        dh1 * t1 * o * (1.0 - o),
    )
    db = jnp.sum(dpre, axis=0)
    return dpre @ W_ih, dpre @ W_hh, dct * f, dpre.T @ x, dpre.T @ h, db, db


def _gru_parts(x, h, W_ih, W_hh, b_ih, b_hh):
    gi = jnp.split(x @ W_ih.T + b_ih, 3, axis=-1)
    gh = jnp.split(h @ W_hh.T + b_hh, 3, axis=-1)
    r = sigmoid(gi[0] + gh[0])
    z = sigmoid(gi[1] + gh[1])
    n = jnp.tanh(gi[2] + r * gh[2])
    return r, z, n, gh[2]


def gru_cell(x, h, W_ih, W_hh, b_ih, b_hh) -> jax.Array:
    """h' = (1 - z) n + z h of one GRU step (module docstring): (N, H)."""
    x, h, W_ih, W_hh, b_ih, b_hh = (jnp.asarray(a) for a in (x, h, W_ih, W_hh, b_ih, b_hh))
    r, z, n, _ = _gru_parts(x, h, W_ih, W_hh, b_ih, b_hh)
    return (1.0 - z) * n + z * h


def _reset_gated(dn_pre: jax.Array, r: jax.Array) -> jax.Array:
    """The hidden path's new-gate cotangent: n's pre-activation holds r gh_n, so d gh_n = dn_pre r."""
    return dn_pre * r


def gru_cell_vjp(primals: tuple, ct: ArrayLike) -> tuple[jax.Array, ...]:
    """(dx, dh, dW_ih, dW_hh, db_ih, db_hh): dn = ct (1 - z), dz = ct (h - n), dh gets ct z directly;
    dr = dn_pre gh_n; the input path gets (dr_pre, dz_pre, dn_pre), the hidden path
    (dr_pre, dz_pre, dn_pre r)."""
    x, h, W_ih, W_hh, b_ih, b_hh = (jnp.asarray(a) for a in primals)
    ct = jnp.asarray(ct)
    r, z, n, ghn = _gru_parts(x, h, W_ih, W_hh, b_ih, b_hh)
    dn_pre = ct * (1.0 - z) * (1.0 - n * n)
    dz_pre = ct * (h - n) * z * (1.0 - z)
    dr_pre = dn_pre * ghn * r * (1.0 - r)
    dgi = jnp.concatenate([dr_pre, dz_pre, dn_pre], axis=-1)
    dgh = jnp.concatenate([dr_pre, dz_pre, _reset_gated(dn_pre, r)], axis=-1)
    dx = dgi @ W_ih
    dh = ct * z + dgh @ W_hh
    return dx, dh, dgi.T @ x, dgh.T @ h, jnp.sum(dgi, axis=0), jnp.sum(dgh, axis=0)


def _torch_init(key, shape, dims=None):
    """U(-1/sqrt(H), 1/sqrt(H)) weights as torch initializes RNN cells, H = dims['H']."""
    bound = 1.0 / float(dims["H"]) ** 0.5
    return uniform(-bound, bound)(key, shape, dims)


register(
    Case(
        name="lstm_cell",
        description=(
            "torch.nn.LSTMCell: gates (i, f, g, o) of x W_ih^T + b_ih + h W_hh^T + b_hh, c' = f c + i g, "
            "h' = o tanh(c'); output concat([h', c']): x (3,4), h, c (3,5) -> (3,10)"
        ),
        inputs=(
            Input("x", ("N", "I"), normal(1.0)),
            Input("h", ("N", "H"), normal(0.5)),
            Input("c", ("N", "H"), normal(0.5)),
            Input("W_ih", ("G4", "I"), _torch_init),
            Input("W_hh", ("G4", "H"), _torch_init),
            Input("b_ih", ("G4",), _torch_init),
            Input("b_hh", ("G4",), _torch_init),
        ),
        settings={"gate_order": "i, f, g, o"},
        # G4 = 4 H at every size
        sizes={
            "golden": {"N": 3, "I": 4, "H": 5, "G4": 20},
            "tiles": {"N": 33, "I": 40, "H": 34, "G4": 136},
            "large": {"N": 256, "I": 1024, "H": 1024, "G4": 4096},
        },
        forward=lstm_cell,
        vjp=lstm_cell_vjp,
        tags=("recurrent", "block"),
    )
)

register(
    Case(
        name="gru_cell",
        description=(
            "torch.nn.GRUCell: r, z = sigmoid(..), n = tanh(gi_n + r gh_n), h' = (1 - z) n + z h; "
            "gates (r, z, n): x (3,4), h (3,5), W_ih (15,4), W_hh (15,5) -> (3,5)"
        ),
        inputs=(
            Input("x", ("N", "I"), normal(1.0)),
            Input("h", ("N", "H"), normal(0.5)),
            Input("W_ih", ("G3", "I"), _torch_init),
            Input("W_hh", ("G3", "H"), _torch_init),
            Input("b_ih", ("G3",), _torch_init),
            Input("b_hh", ("G3",), _torch_init),
        ),
        settings={"gate_order": "r, z, n"},
        # G3 = 3 H at every size
        sizes={
            "golden": {"N": 3, "I": 4, "H": 5, "G3": 15},
            "tiles": {"N": 33, "I": 40, "H": 34, "G3": 102},
            "large": {"N": 256, "I": 1024, "H": 1024, "G3": 3072},
        },
        forward=gru_cell,
        vjp=gru_cell_vjp,
        tags=("recurrent", "block"),
    )
)
