"""Every derivative the checks compare, computed in one jitted call per function."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from jaxcalc import fd

__all__ = ["Context", "witnesses", "MAX_JACOBIAN", "MAX_HESSIAN"]

_FAST_COMPILE = {"xla_backend_optimization_level": 0}

# Largest Jacobian (output size x total input size) computed in full, per element.
MAX_JACOBIAN = 4_000_000
# Largest flattened input for which the full Hessian is formed.
MAX_HESSIAN = 2_000


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


def witnesses(ctx: Context, vjp, jvp, chain, mode: str) -> dict[str, Any]:
    """Every derivative the checks compare, computed in ONE jitted call (compiled once per case).

    Eager evaluation would compile each primitive separately; fusing all witnesses into one
    program keeps checking the whole catalogue to seconds.
    """
    from jaxcalc.chain import chain_rule_product

    out = jax.eval_shape(ctx.f_diff, *ctx.diff)
    n_in = sum(int(np.size(d)) for d in ctx.diff)
    full = mode == "full" and n_in * max(out.size, 1) <= MAX_JACOBIAN
    scalar = out.ndim == 0

    def compute(primals, ct, tangents):
        c = ctx._replace(primals=primals, ct=ct, tangents=tangents)
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
            w["jrev"] = jax.jacrev(f_flat)(v)
            w["jfwd"] = jax.jacfwd(f_flat)(v)
            typ, _ = ravel_pytree(tuple(fd.typical_scale(d) for d in diff))
            w["jfd"] = fd.jacobian(f_flat, (v,), scale=typ)
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
            if mode == "full" and v.size <= MAX_HESSIAN:
                w["hessian"] = jax.hessian(f_flat)(v)
            else:
                u = jnp.roll(t, 1) * jnp.linspace(0.5, 1.5, t.size, dtype=t.dtype)
                w["sym"] = (
                    jnp.vdot(u, w["hvp"]),
                    jnp.vdot(t, jax.jvp(grad, (v,), (u,))[1]),
                    jnp.sum(jnp.abs(u * w["hvp"])),
                )
        return w

    # Checking programs run once: on CPU, skipping LLVM's heavy optimizations roughly halves
    # compile time, which dominates, and changes no rounding (HLO-level rewrites still run).
    options = _FAST_COMPILE if jax.default_backend() == "cpu" else None
    fn = jax.jit(compute, compiler_options=options)
    return jax.device_get(fn(ctx.primals, ctx.ct, ctx.tangents))
