"""Every derivative the checks compare, computed in one jitted call per function."""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from jaxcalc import fd
from jaxcalc.numerics import fd_base_step

__all__ = ["Context", "witnesses", "columns", "MAX_JACOBIAN", "MAX_HESSIAN", "MAX_JACFWD", "COLUMN_BATCH"]

_FAST_COMPILE = {"xla_backend_optimization_level": 0}

# Largest Jacobian (output size x total input size) computed in full, per element.
MAX_JACOBIAN = 4_000_000
# Largest flattened input for which the full Hessian is formed.
MAX_HESSIAN = 2_000
# Largest input (flattened) for which jacfwd is formed column by column.
MAX_JACFWD = 2_000
# Largest (input size, Jacobian size) whose checking program is compiled without LLVM's heavy
# optimizations: the catalogue's cases, where compiling costs far more than running.
QUICK_COMPILE = (1_000, 20_000)
# Jacobian columns evaluated together (vmapped) before moving to the next chunk.
COLUMN_BATCH = 512


class Context(NamedTuple):
    """Everything the individual checks need, prepared once per function."""

    name: str
    forward: Callable[..., jax.Array]
    primals: tuple[jax.Array, ...]
    diff_idx: tuple[int, ...]
    names: tuple[str, ...]
    ct: jax.Array
    tangents: tuple[jax.Array, ...]
    dtype: np.dtype

    def with_diff(self, diff: Sequence[jax.Array]) -> tuple[jax.Array, ...]:
        args = list(self.primals)
        for i, a in zip(self.diff_idx, diff, strict=True):
            args[i] = a
        return tuple(args)

    def f_diff(self, *diff: jax.Array) -> jax.Array:
        """F as a function of the differentiable inputs only."""
        return self.forward(*self.with_diff(diff))

    @property
    def diff(self) -> tuple[jax.Array, ...]:
        return tuple(self.primals[i] for i in self.diff_idx)


def columns(fn: Callable[[jax.Array], jax.Array], n: int, dtype: Any) -> jax.Array:
    """Stack fn(i) for i in range(n): one vmap when small, else lax.map in chunks of COLUMN_BATCH.

    Chunking bounds memory for functions of many thousands of parameters, where one vmap over
    every column would hold every column's intermediates at once.
    """
    idx = jnp.arange(n)
    if n <= COLUMN_BATCH:
        return jax.vmap(fn)(idx)
    return jax.lax.map(fn, idx, batch_size=COLUMN_BATCH)


def witnesses(ctx: Context, vjp, jvp, chain, mode: str) -> dict[str, Any]:
    """Every derivative the checks compare, computed in ONE jitted call.

    Eager evaluation would compile each primitive separately; fusing all witnesses into one
    program keeps checking the whole catalogue to seconds. The compiled program is cached per
    (function, derivatives, mode) and input shapes, so checking the same function again, at
    new values, costs no compilation.
    """
    out = jax.eval_shape(ctx.f_diff, *ctx.diff)
    n_in = sum(int(np.size(d)) for d in ctx.diff)
    full = mode == "full" and n_in * max(out.size, 1) <= MAX_JACOBIAN
    hessian = mode == "full" and n_in <= MAX_HESSIAN
    # jacfwd costs one JVP per input element: beyond MAX_JACFWD columns it is left out, and the
    # FD Jacobian is compared with jacrev alone.
    jacfwd = full and n_in <= MAX_JACFWD
    # Small programs are dominated by compiling, large ones by running: only the former skip
    # LLVM's heavy optimizations.
    quick = n_in <= QUICK_COMPILE[0] and n_in * max(out.size, 1) <= QUICK_COMPILE[1]
    fn = _program(ctx.forward, ctx.diff_idx, vjp, jvp, chain, full, jacfwd, out.ndim == 0, hessian, quick)
    return jax.device_get(fn(ctx.primals, ctx.ct, ctx.tangents))


@functools.lru_cache(maxsize=128)
def _program(forward, diff_idx, vjp, jvp, chain, full, jacfwd, scalar, hessian, quick):
    from jaxcalc.chain import chain_rule_product

    def compute(primals, ct, tangents):
        c = Context("", forward, primals, diff_idx, (), ct, tangents, None)
        diff = c.diff
        v, unravel = ravel_pytree(diff)
        w: dict[str, Any] = {}
        _, pull = jax.vjp(c.f_diff, *diff)
        w["ad_vjp"] = pull(ct)
        if vjp is not None:
            w["hw_vjp"] = tuple(vjp(primals, ct))
        w["ad_jvp"] = jax.jvp(c.f_diff, diff, tangents)[1]
        if jvp is not None:
            w["hw_jvp"] = jvp(primals, tangents)
        w["fd_jvp"] = fd.directional(c.f_diff, diff, tangents)

        def f_flat(u):
            return c.f_diff(*unravel(u))

        if full:
            n = v.size

            def basis(i):
                return jax.nn.one_hot(i, n, dtype=v.dtype)

            w["jrev"] = jax.jacrev(f_flat)(v)
            if jacfwd:
                jfwd = columns(lambda i: jax.jvp(f_flat, (v,), (basis(i),))[1], n, v.dtype)
                w["jfwd"] = jnp.moveaxis(jfwd, 0, -1)
            typ, _ = ravel_pytree(tuple(fd.typical_scale(d) for d in diff))
            h = fd_base_step(v.dtype) * typ
            jfd = columns(lambda i: fd.stencil(lambda s: f_flat(v + s * basis(i)), h[i]), n, v.dtype)
            w["jfd"] = jnp.moveaxis(jfd, 0, -1)
        if chain is not None:
            k = c.diff_idx[0]
            outer, inner = chain(primals)
            w["chain_value"] = outer(inner(primals[k]))
            w["value"] = c.forward(*primals)
            for m in ("forward", "reverse"):
                w[f"chain_{m}"] = chain_rule_product(outer, inner, primals[k], mode=m)
        if scalar:
            grad = jax.grad(f_flat)
            t, _ = ravel_pytree(tangents)
            w["hvp"] = jax.jvp(grad, (v,), (t,))[1]
            grads = jax.grad(c.f_diff, argnums=tuple(range(len(diff))))
            w["hvp_fd"] = fd.directional(lambda *d: ravel_pytree(grads(*d))[0], diff, tangents)
            if hessian:
                w["hessian"] = jax.hessian(f_flat)(v)
            else:
                u = jnp.roll(t, 1) * jnp.linspace(0.5, 1.5, t.size, dtype=t.dtype)
                w["sym"] = (
                    jnp.vdot(u, w["hvp"]),
                    jnp.vdot(t, jax.jvp(grad, (v,), (u,))[1]),
                    jnp.sum(jnp.abs(u * w["hvp"])),
                )
        return w

    # On CPU, skipping LLVM's heavy optimizations cuts compile time by a third to a half and
    # changes no rounding (HLO-level rewrites still run); it slows the compiled code.
    options = _FAST_COMPILE if quick and jax.default_backend() == "cpu" else None
    return jax.jit(compute, compiler_options=options)
