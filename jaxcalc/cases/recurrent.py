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
from jaxcalc.cases.activations import sigmoid, softplus

__all__ = ["lstm_cell", "lstm_cell_vjp", "gru_cell", "gru_cell_vjp", "selective_scan", "selective_scan_vjp"]


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
            "tiles": {"N": 17, "I": 33, "H": 34, "G4": 136},
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
            "tiles": {"N": 17, "I": 33, "H": 34, "G3": 102},
            "large": {"N": 256, "I": 1024, "H": 1024, "G3": 3072},
        },
        forward=gru_cell,
        vjp=gru_cell_vjp,
        tags=("recurrent", "block"),
    )
)


# ----------------------------------------------------------------------------- selective scan
# A Mamba-style diagonal linear recurrence over time, for x and dt (T, D), A_log (D, S), B and C (T, S):
#   delta = softplus(dt),  A = -exp(A_log),  abar_t = exp(delta_t A)            (D, S) per step
#   h_t = abar_t * h_{t-1} + (delta_t x_t) B_t  (h_0 = 0),  y_t = h_t C_t        (D,) per step
# Backward: g_t = dL/dh_t runs in reverse, g_t = ct_t C_t^T + abar_{t+1} g_{t+1}; then
#   dC_t = h_t^T ct_t, dB_t = (delta_t x_t)^T g_t, d(delta_t x_t) = g_t B_t,
#   d abar_t = g_t h_{t-1}, through abar = exp(delta A) into delta and A.


def _scan_states(x, dt, A_log, B) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
    """(delta (T, D), A (D, S), abar (T, D, S), h (T, D, S)) of the forward recurrence."""
    delta = softplus(dt)
    A = -jnp.exp(A_log)
    abar = jnp.exp(delta[:, :, None] * A)
    drive = (delta * x)[:, :, None] * B[:, None, :]

    def step(h, inp):
        a, u = inp
        h = a * h + u
        return h, h

    _, h = jax.lax.scan(step, jnp.zeros(A.shape, x.dtype), (abar, drive))
    return delta, A, abar, h


def selective_scan(x: ArrayLike, dt: ArrayLike, A_log: ArrayLike, B: ArrayLike, C: ArrayLike) -> jax.Array:
    """y_t = h_t C_t with h_t = exp(softplus(dt_t) A) h_{t-1} + softplus(dt_t) x_t B_t: (T, D)."""
    x, dt, A_log, B, C = (jnp.asarray(a) for a in (x, dt, A_log, B, C))
    h = _scan_states(x, dt, A_log, B)[3]
    return jnp.einsum("tds,ts->td", h, C)


def _carry(abar_next: jax.Array, g_next: jax.Array) -> jax.Array:
    """What h_{t+1}'s cotangent gives h_t: abar_{t+1} g_{t+1} (the state decays into the next step)."""
    return abar_next * g_next


def selective_scan_vjp(primals: tuple, ct: ArrayLike) -> tuple[jax.Array, ...]:
    """(dx, ddt, dA_log, dB, dC) of :func:`selective_scan`, by a reverse scan over time."""
    x, dt, A_log, B, C = (jnp.asarray(a) for a in primals)
    ct = jnp.asarray(ct)
    delta, A, abar, h = _scan_states(x, dt, A_log, B)
    local = ct[:, :, None] * C[:, None, :]  # y_t = h_t C_t

    # scanned in reverse: step t receives abar_{t+1} g_{t+1} and hands abar_t g_t to step t - 1
    def back(carry, inp):
        loc, a = inp
        g = loc + carry
        return _carry(a, g), g

    _, g = jax.lax.scan(back, jnp.zeros(A.shape, x.dtype), (local, abar), reverse=True)
    h_prev = jnp.concatenate([jnp.zeros_like(h[:1]), h[:-1]])
    dabar = g * h_prev
    u = delta * x
    du = jnp.einsum("tds,ts->td", g, B)
    dB = jnp.einsum("tds,td->ts", g, u)
    dC = jnp.einsum("tds,td->ts", h, ct)
    dexp = dabar * abar  # d exp(delta A) = abar (A d delta + delta dA)
    ddelta = du * x + jnp.sum(dexp * A, axis=-1)
    dA = jnp.sum(dexp * delta[:, :, None], axis=0)
    return du * delta, ddelta * sigmoid(dt), dA * A, dB, dC


register(
    Case(
        name="selective_scan",
        description=(
            "Mamba-style diagonal recurrence: h_t = exp(softplus(dt_t) A) h_{t-1} + softplus(dt_t) x_t B_t, "
            "A = -exp(A_log), y_t = h_t C_t: x, dt (6,3), A_log (3,4), B, C (6,4) -> (6,3)"
        ),
        inputs=(
            Input("x", ("T", "D"), normal(1.0)),
            Input("dt", ("T", "D"), normal(0.5, -1.0)),
            Input("A_log", ("D", "S"), normal(0.5)),
            Input("B", ("T", "S"), normal(1.0)),
            Input("C", ("T", "S"), normal(1.0)),
        ),
        settings={"delta": "softplus(dt)", "A": "-exp(A_log)", "h0": 0},
        # tiles: a sequence past two 64-tiles, state and channel sizes off the 32-tiles
        sizes={
            "golden": {"T": 6, "D": 3, "S": 4},
            "tiles": {"T": 65, "D": 17, "S": 9},
            "large": {"T": 2048, "D": 256, "S": 16},
        },
        forward=selective_scan,
        vjp=selective_scan_vjp,
        tags=("recurrent", "block", "scan"),
    )
)
