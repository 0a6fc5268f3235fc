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
from jaxcalc.checks.branches import crossed, with_branches

__all__ = [
    "Context",
    "witnesses",
    "columns",
    "MAX_JACOBIAN",
    "MAX_HESSIAN",
    "MAX_JACFWD",
    "COLUMN_BATCH",
    "JACOBIAN_ORDER",
]

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
# Truncation order of the per-element FD Jacobian: the 2-evaluation central difference. At its
# step eps**(1/3) it is accurate to ~eps**(2/3) (4e-11 in float64, 3e-5 in float32), well
# inside the FD tolerances, at half the cost of the 5-point stencil the directional checks use.
JACOBIAN_ORDER = 2


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


def columns(fn: Callable[[jax.Array], Any], n: int) -> Any:
    """Stack fn(i) for i in range(n): one vmap when small, else lax.map in chunks of COLUMN_BATCH.

    Chunking bounds memory for functions of many thousands of parameters, where one vmap over
    every column would hold every column's intermediates at once.
    """
    idx = jnp.arange(n)
    if n <= COLUMN_BATCH:
        return jax.vmap(fn)(idx)
    return jax.lax.map(fn, idx, batch_size=COLUMN_BATCH)


def witnesses(ctx: Context, vjp, jvp, chain, mode: str, wanted: frozenset[str]) -> dict[str, Any]:
    """Every derivative the checks in ``wanted`` compare, computed in ONE jitted call.

    Eager evaluation would compile each primitive separately; fusing all witnesses into one
    program keeps checking the whole catalogue to seconds. The compiled program is cached per
    (function, derivatives, mode, checks) and input shapes, so checking the same function
    again, at new values, costs no compilation. Every finite difference comes with a flag
    (``*_kink``) saying whether its stencil crossed a kink (:mod:`jaxcalc.checks.branches`).
    """
    out = jax.eval_shape(ctx.f_diff, *ctx.diff)
    n_in = sum(int(np.size(d)) for d in ctx.diff)
    full = mode == "full" and n_in * max(out.size, 1) <= MAX_JACOBIAN
    full = full and bool(wanted & {"jacobian_fd", "jacobian_modes", "vjp_fd"})
    scalar = out.ndim == 0 and bool(wanted & {"hvp", "hessian_symmetry"})
    hessian = mode == "full" and n_in <= MAX_HESSIAN
    # jacfwd costs one JVP per input element: beyond MAX_JACFWD columns it is left out, and the
    # FD Jacobian is compared with jacrev alone.
    jacfwd = full and n_in <= MAX_JACFWD and "jacobian_modes" in wanted
    # Small programs are dominated by compiling, large ones by running: only the former skip
    # LLVM's heavy optimizations.
    quick = n_in <= QUICK_COMPILE[0] and n_in * max(out.size, 1) <= QUICK_COMPILE[1]
    flags = (
        full,
        jacfwd,
        scalar,
        hessian,
        quick,
        "fd_jvp" in wanted,
        chain is not None and "chain_forward" in wanted,
    )
    fn = _program(ctx.forward, ctx.diff_idx, vjp, jvp, chain, flags)
    return jax.device_get(fn(ctx.primals, ctx.ct, ctx.tangents))


@functools.lru_cache(maxsize=128)
def _program(forward, diff_idx, vjp, jvp, chain, flags):
    from jaxcalc.chain import chain_rule_product

    full, jacfwd, scalar, hessian, quick, fd_jvp, chained = flags

    def compute(primals, ct, tangents):
        c = Context("", forward, primals, diff_idx, (), ct, tangents, None)
        diff = c.diff
        v, unravel = ravel_pytree(diff)
        w: dict[str, Any] = {}
        branchy = with_branches(c.f_diff, *diff)
        center = branchy(*diff)[1]

        def kinked(records):  # records of several points, stacked: does any differ from x's?
            if not records:  # a smooth function: no piecewise primitive at all
                return jnp.asarray(False)
            return jnp.any(jax.vmap(lambda r: crossed(r, center))(records))

        _, pull = jax.vjp(c.f_diff, *diff)
        w["ad_vjp"] = pull(ct)
        if vjp is not None:
            w["hw_vjp"] = tuple(vjp(primals, ct))
        w["ad_jvp"] = jax.jvp(c.f_diff, diff, tangents)[1]
        if jvp is not None:
            w["hw_jvp"] = jvp(primals, tangents)
        if fd_jvp:
            w["fd_jvp"], rec = fd.directional(branchy, diff, tangents, has_aux=True)
            w["fd_jvp_kink"] = kinked(rec)

        def f_flat(u):
            return c.f_diff(*unravel(u))

        if full:
            n = v.size

            def basis(i):
                return jax.nn.one_hot(i, n, dtype=v.dtype)

            w["jrev"] = jax.jacrev(f_flat)(v)
            if jacfwd:
                jfwd = columns(lambda i: jax.jvp(f_flat, (v,), (basis(i),))[1], n)
                w["jfwd"] = jnp.moveaxis(jfwd, 0, -1)
            typ, _ = ravel_pytree(tuple(fd.typical_scale(d) for d in diff))
            h = fd.base_step(v.dtype, JACOBIAN_ORDER) * typ

            def column(i):
                def at(s):
                    return branchy(*unravel(v + s * basis(i)))

                d, rec = fd.stencil(at, h[i], order=JACOBIAN_ORDER, has_aux=True)
                return d, kinked(rec)

            jfd, kinks = columns(column, n)
            w["jfd"] = jnp.moveaxis(jfd, 0, -1)
            w["jfd_kink"] = kinks
        if chained:
            k = c.diff_idx[0]
            outer, inner = chain(primals)
            w["chain_value"] = outer(inner(primals[k]))
            w["value"] = c.forward(*primals)
            for m in ("forward", "reverse"):
                w[f"chain_{m}"] = chain_rule_product(outer, inner, primals[k], mode=m)
        if scalar:
            # With a handwritten derivative the Hessian checks differentiate IT: its directional
            # derivative against its own finite difference, and its Jacobian's symmetry.
            if vjp is not None:

                def grad(u):
                    one = jnp.ones((), v.dtype)
                    return ravel_pytree(tuple(vjp(c.with_diff(unravel(u)), one)))[0]
            else:
                grad = jax.grad(f_flat)
            t, _ = ravel_pytree(tangents)
            w["hvp"] = jax.jvp(grad, (v,), (t,))[1]

            def grad_and_branches(*d):
                return grad(ravel_pytree(d)[0]), branchy(*d)[1]

            w["hvp_fd"], rec = fd.directional(grad_and_branches, diff, tangents, has_aux=True)
            w["hvp_kink"] = kinked(rec)
            if hessian:
                w["hessian"] = jax.jacfwd(grad)(v)
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
