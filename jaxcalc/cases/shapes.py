"""Shape and indexing primitives: views, joins, padding, broadcasting, gather / scatter, batched
matmul, einsum and top-k, each with a handwritten VJP (and JVP: all but top-k are linear maps,
so their JVP is the forward applied to the tangent; top-k's is the tangent at the chosen slots).

Dims are distinct and non-square, so a gradient transposed or permuted the wrong way round
has the wrong shape. Index inputs repeat indices, so a backward that assigns where it must
accumulate gets the wrong values.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

from jaxcalc.cases._base import Case, Input, fan_in, ids_with_repeats, register
from jaxcalc.cases.elementwise import unbroadcast
from jaxcalc.cases.reductions import distinct

__all__ = ["PERM", "SLICE", "PAD", "EINSUM", "TOPK", "GATHER_DIM"]

PERM = (2, 0, 1)
SLICE = ((1, None, 2), (None, None, 3))  # x[1::2, ::3]
PAD = ((1, 2), (3, 0))  # (before, after) per axis, zeros
EINSUM = "bmk,kn->bnm"
TOPK = 3
GATHER_DIM = 0


def _reg(
    name: str,
    description: str,
    inputs: tuple,
    forward,
    vjp,
    sizes: dict,
    settings: dict,
    jvp=None,
    tags: tuple = (),
) -> Case:
    return register(
        Case(
            name=name,
            description=description,
            inputs=inputs,
            forward=forward,
            vjp=vjp,
            jvp=jvp,
            sizes=sizes,
            settings=settings,
            tags=("primitive", "shape", *tags),
        )
    )


_ABC = {
    "golden": {"A": 2, "B": 3, "C": 4},
    "tiles": {"A": 3, "B": 33, "C": 65},
    "large": {"A": 64, "B": 256, "C": 512},
}

# transpose: a non-involutory permutation, so the backward must apply the inverse permutation
_INV = tuple(int(i) for i in np.argsort(PERM))
_reg(
    "transpose",
    "x (A, B, C) permuted to (C, A, B) (torch.permute(x, (2, 0, 1))); VJP: the inverse permutation",
    (Input("x", ("A", "B", "C")),),
    lambda x: jnp.transpose(x, PERM),
    lambda p, ct: (jnp.transpose(ct, _INV),),
    _ABC,
    {"perm": PERM},
    jvp=lambda p, t: jnp.transpose(t[0], PERM),
)

_reg(
    "reshape",
    "x (A, B, C) reshaped row-major to (C, A*B); VJP: ct reshaped back",
    (Input("x", ("A", "B", "C")),),
    lambda x: jnp.reshape(x, (x.shape[2], -1)),
    lambda p, ct: (jnp.reshape(ct, jnp.shape(p[0])),),
    _ABC,
    {"shape": "(C, A*B)", "order": "C"},
    jvp=lambda p, t: jnp.reshape(t[0], (t[0].shape[2], -1)),
)

_S = tuple(slice(*s) for s in SLICE)
_reg(
    "strided_slice",
    "x[1::2, ::3] of x (M, N); VJP: ct scattered into zeros at those positions",
    (Input("x", ("M", "N")),),
    lambda x: x[_S],
    lambda p, ct: (jnp.zeros(jnp.shape(p[0]), ct.dtype).at[_S].set(ct),),
    {"golden": {"M": 7, "N": 10}, "tiles": {"M": 67, "N": 131}, "large": {"M": 1024, "N": 1024}},
    {"slices": "x[1::2, ::3]"},
    jvp=lambda p, t: t[0][_S],
)


def _concat_vjp(p: tuple, ct: jax.Array) -> tuple:
    """Split ct along axis 1 at the sizes of a and b."""
    m1 = jnp.shape(p[0])[1]
    return ct[:, :m1], ct[:, m1:]


_reg(
    "concatenate",
    "concatenate([a (B, M1, N), b (B, M2, N)], axis=1) -> (B, M1+M2, N); VJP splits ct",
    (Input("a", ("B", "M1", "N")), Input("b", ("B", "M2", "N"))),
    lambda a, b: jnp.concatenate([a, b], axis=1),
    _concat_vjp,
    {
        "golden": {"B": 2, "M1": 3, "M2": 4, "N": 5},
        "tiles": {"B": 3, "M1": 33, "M2": 17, "N": 65},
        "large": {"B": 16, "M1": 512, "M2": 256, "N": 256},
    },
    {"axis": 1},
    jvp=lambda p, t: jnp.concatenate([t[0], t[1]], axis=1),
)

_reg(
    "stack",
    "stack([a, b, c] each (M, N), axis=1) -> (M, 3, N); VJP: ct[:, i] for input i",
    (Input("a", ("M", "N")), Input("b", ("M", "N")), Input("c", ("M", "N"))),
    lambda a, b, c: jnp.stack([a, b, c], axis=1),
    lambda p, ct: (ct[:, 0], ct[:, 1], ct[:, 2]),
    {"golden": {"M": 3, "N": 4}, "tiles": {"M": 33, "N": 65}, "large": {"M": 1024, "N": 1024}},
    {"axis": 1},
    jvp=lambda p, t: jnp.stack(list(t), axis=1),
)

_PS = tuple(slice(lo, -hi if hi else None) for lo, hi in PAD)
_reg(
    "pad",
    "zero padding of x (M, N) by (1, 2) rows and (3, 0) columns -> (M+3, N+3); VJP crops ct",
    (Input("x", ("M", "N")),),
    lambda x: jnp.pad(x, PAD),
    lambda p, ct: (ct[_PS],),
    {"golden": {"M": 3, "N": 5}, "tiles": {"M": 65, "N": 33}, "large": {"M": 1024, "N": 1024}},
    {"pad": PAD, "value": 0.0},
    jvp=lambda p, t: jnp.pad(t[0], PAD),
)


_BB, _BN = 3, 2  # the broadcast sizes of the new leading axis and of the size-1 axis: fixed settings


def _broadcast_to(x: ArrayLike) -> jax.Array:
    """x (M, 1, K) broadcast to (3, M, 2, K)."""
    x = jnp.asarray(x)
    return jnp.broadcast_to(x, (_BB, x.shape[0], _BN, x.shape[2]))


_reg(
    "broadcast_to",
    "x (M, 1, K) broadcast to (3, M, 2, K); VJP sums ct over the leading and size-1 axes",
    (Input("x", ("M", 1, "K")),),
    _broadcast_to,
    lambda p, ct: (unbroadcast(ct, jnp.shape(p[0])),),
    {"golden": {"M": 4, "K": 5}, "tiles": {"M": 33, "K": 65}, "large": {"M": 512, "K": 1024}},
    {"shape": (_BB, "M", _BN, "K")},
    jvp=lambda p, t: _broadcast_to(t[0]),
    tags=("broadcast",),
)


# ----------------------------------------------------------------------------- gather / scatter


def gather(x: ArrayLike, index: ArrayLike) -> jax.Array:
    """torch.gather(x, 0, index): out[i, j] = x[index[i, j], j]; x (M, N), index (K, N) -> (K, N)."""
    return jnp.take_along_axis(jnp.asarray(x), jnp.asarray(index), axis=GATHER_DIM)


def _scatter_add(base: jax.Array, index: jax.Array, src: jax.Array) -> jax.Array:
    """base[index[i, j], j] += src[i, j], repeats accumulating."""
    cols = jnp.broadcast_to(jnp.arange(index.shape[1]), index.shape)
    return base.at[index, cols].add(src)


def gather_vjp(p: tuple, ct: jax.Array) -> tuple:
    """dx = zeros with ct[i, j] added at (index[i, j], j): repeated rows accumulate."""
    x, index = jnp.asarray(p[0]), jnp.asarray(p[1])
    return (_scatter_add(jnp.zeros_like(x), index, ct),)


_GSIZES = {
    "golden": {"M": 5, "N": 3, "K": 6},
    "tiles": {"M": 67, "N": 33, "K": 130},
    "large": {"M": 4096, "N": 256, "K": 4096},
}
_reg(
    "gather",
    "torch.gather(x, 0, index): out[i, j] = x[index[i, j], j]; index (K, N) with repeats; "
    "the VJP scatter-adds",
    (Input("x", ("M", "N")), Input("index", ("K", "N"), ids_with_repeats("M", 3), kind="int")),
    gather,
    gather_vjp,
    _GSIZES,
    {"dim": GATHER_DIM},
    jvp=lambda p, t: gather(t[0], p[1]),
    tags=("gather",),
)


def scatter_add(x: ArrayLike, index: ArrayLike, src: ArrayLike) -> jax.Array:
    """torch.scatter_add(x, 0, index, src): x with src[i, j] added at (index[i, j], j), repeats
    accumulating; x (M, N), index and src (K, N) -> (M, N)."""
    return _scatter_add(jnp.asarray(x), jnp.asarray(index), jnp.asarray(src))


_reg(
    "scatter_add",
    "torch.scatter_add(x, 0, index, src): out = x; out[index[i, j], j] += src[i, j], "
    "repeats accumulating; VJP: dx = ct, dsrc = gather(ct, index)",
    (
        Input("x", ("M", "N")),
        Input("index", ("K", "N"), ids_with_repeats("M", 3), kind="int"),
        Input("src", ("K", "N")),
    ),
    scatter_add,
    lambda p, ct: (ct, gather(ct, p[1])),
    _GSIZES,
    {"dim": GATHER_DIM},
    jvp=lambda p, t: scatter_add(t[0], p[1], t[1]),
    tags=("scatter",),
)


# ----------------------------------------------------------------------------- matmuls


def batched_matmul(a: ArrayLike, b: ArrayLike) -> jax.Array:
    """a (B, 1, M, K) @ b (H, K, N) -> (B, H, M, N), batch axes broadcast (torch.matmul)."""
    return jnp.matmul(jnp.asarray(a), jnp.asarray(b))


def batched_matmul_vjp(p: tuple, ct: jax.Array) -> tuple:
    """da = ct b^T summed over the broadcast H axis (kept as size 1); db = a^T ct summed over B."""
    a, b = jnp.asarray(p[0]), jnp.asarray(p[1])
    da = unbroadcast(jnp.matmul(ct, jnp.swapaxes(b, -1, -2)), a.shape)
    db = unbroadcast(jnp.matmul(jnp.swapaxes(a, -1, -2), ct), b.shape)
    return da, db


_reg(
    "batched_matmul",
    "a (B, 1, M, K) @ b (H, K, N) -> (B, H, M, N) with broadcast batch axes",
    (Input("a", ("B", 1, "M", "K")), Input("b", ("H", "K", "N"), fan_in(1.0))),
    batched_matmul,
    batched_matmul_vjp,
    {
        "golden": {"B": 2, "H": 3, "M": 4, "K": 5, "N": 6},
        "tiles": {"B": 2, "H": 3, "M": 17, "K": 33, "N": 65},
        "large": {"B": 8, "H": 16, "M": 256, "K": 128, "N": 256},
    },
    {"batch": "(B, 1) with (H,) broadcast to (B, H)"},
    jvp=lambda p, t: batched_matmul(t[0], p[1]) + batched_matmul(p[0], t[1]),
    tags=("matmul", "broadcast"),
)

_reg(
    "einsum",
    "einsum('bmk,kn->bnm', a (B, M, K), w (K, N)) -> (B, N, M), a transposed output",
    (Input("a", ("B", "M", "K")), Input("w", ("K", "N"), fan_in(1.0))),
    lambda a, w: jnp.einsum(EINSUM, a, w),
    lambda p, ct: (jnp.einsum("bnm,kn->bmk", ct, p[1]), jnp.einsum("bmk,bnm->kn", p[0], ct)),
    {
        "golden": {"B": 2, "M": 3, "K": 4, "N": 5},
        "tiles": {"B": 3, "M": 17, "K": 33, "N": 65},
        "large": {"B": 16, "M": 256, "K": 256, "N": 512},
    },
    {"equation": EINSUM},
    jvp=lambda p, t: jnp.einsum(EINSUM, t[0], p[1]) + jnp.einsum(EINSUM, p[0], t[1]),
    tags=("matmul",),
)


# ----------------------------------------------------------------------------- top-k


def topk_values(x: ArrayLike) -> jax.Array:
    """torch.topk(x, 3).values: the 3 largest entries of each row, descending; x (M, N) -> (M, 3)."""
    return jax.lax.top_k(jnp.asarray(x), TOPK)[0]


def _topk_onehot(x: jax.Array) -> jax.Array:
    """(M, k, N): one-hot of the position of the j-th largest entry of each row."""
    idx = jax.lax.top_k(jnp.asarray(x), TOPK)[1]
    return (idx[..., None] == jnp.arange(x.shape[-1])).astype(x.dtype)


_reg(
    "topk_values",
    "the 3 largest entries of each row of x (M, N), descending (torch.topk values); "
    "distinct entries 0.1 apart; VJP routes ct to the chosen positions",
    (Input("x", ("M", "N"), distinct(0.1)),),
    topk_values,
    lambda p, ct: (jnp.einsum("mk,mkn->mn", ct, _topk_onehot(p[0])),),
    {"golden": {"M": 3, "N": 7}, "tiles": {"M": 3, "N": 2051}, "large": {"M": 512, "N": 4096}},
    {"k": TOPK, "dim": -1, "largest": True, "sorted": True},
    jvp=lambda p, t: jnp.einsum("mkn,mn->mk", _topk_onehot(p[0]), t[0]),
    tags=("kink",),
)
