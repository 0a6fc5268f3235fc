"""Train-step benchmarks: handwritten backward vs jax.grad vs PyTorch eager, side by side.

mlp_step          784-512-512-10 relu MLP, batch 1024, cross-entropy, SGD (jaxcalc.backprop)
transformer_step  pre-norm block d=256, T=128, batch 8, 4 heads, L = 0.5 mean((out - y)^2), SGD:
                  the fast handwritten step (jaxcalc.bench.fast_block), the catalogue's VJP
                  (jaxcalc.cases.transformer) and jax.grad

Throughput counts the matmul FLOPs of forward + backward (3 x the forward's) and is compared
with a float32 GEMM of comparable size timed in the same process. Every variant starts from
the same weights; its first step's loss and update are checked against jax.grad's.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxcalc.bench.config import BenchConfig
from jaxcalc.bench.fast_block import attention_blocks, loss_and_grads
from jaxcalc.bench.harness import compile_jitted, time_calls
from jaxcalc.bench.limits import gemm_call
from jaxcalc.bench.report import Row, Target, WorkloadResult, figure
from jaxcalc.numerics import compare

__all__ = ["mlp_step", "transformer_step", "torch_available"]

First = tuple[float, list[np.ndarray]]  # (loss, new params) of one step from the start


def torch_available() -> bool:
    return importlib.util.find_spec("torch") is not None


def _copy(tree: Any) -> Any:
    return jax.tree_util.tree_map(jnp.copy, tree)


def _leaves(tree: Any) -> list[np.ndarray]:
    return [np.asarray(leaf, np.float64) for leaf in jax.tree_util.tree_leaves(tree)]


def _jax_variant(step: Any, params: Any, batch: Any) -> tuple[Callable[[], Any], First, float]:
    """Compile ``step(params, batch) -> (params, loss)``: (call, first, compile s)."""
    compiled, ct = compile_jitted(step, _copy(params), batch)
    new, loss = compiled(_copy(params), batch)
    first = (float(loss), _leaves(new))
    state = {"p": _copy(params)}

    def call() -> jax.Array:
        state["p"], loss = compiled(state["p"], batch)
        return loss

    return call, first, ct.total_s


def _compare_rows(
    cfg: BenchConfig,
    variants: dict[str, tuple[Callable[[], Any], First]],
    params0: list[np.ndarray],
    flops: float,
    gemm: tuple[Callable[[], Any], int, str],
) -> tuple[list[Row], list[Target]]:
    """Time every variant and the GEMM in one round-robin; rows with throughput vs the GEMM and
    agreement with jax.grad. PyTorch eager on CPU is synchronous: its results need no sync."""
    gemm_call, gemm_flops, gemm_name = gemm
    ref_loss, ref_new = variants["jax.grad"][1]
    ref_delta = np.concatenate([(n - p).ravel() for n, p in zip(ref_new, params0, strict=True)])
    calls = {name: call for name, (call, _) in variants.items()} | {"gemm": gemm_call}
    syncs = {
        name: (lambda _: None) if name.startswith("pytorch") else jax.block_until_ready for name in calls
    }
    times = time_calls(calls, repeats=cfg.repeats, min_time=cfg.min_time, sync=syncs)
    gemm_rate = times.pop("gemm").rate(gemm_flops / 1e9)
    gemm_gflops = gemm_rate.median
    rows = []
    for name, (_, (loss, new)) in variants.items():
        t = times[name]
        delta = np.concatenate([(n - p).ravel() for n, p in zip(new, params0, strict=True)])
        rate = t.rate(flops / 1e9)
        rows.append(
            Row(
                name,
                {
                    "time/step": figure(t.scaled(1e3), "ms"),
                    "throughput": figure(rate, "GFLOP/s"),
                    "vs GEMM": figure(rate.median / gemm_gflops, "fraction"),
                    "time vs jax.grad": figure(t.median / times["jax.grad"].median, "x"),
                    "loss": figure(loss, ""),
                    "loss error": figure(abs(loss - ref_loss) / max(abs(ref_loss), 1e-30), "rel"),
                    "update error": figure(compare(delta, ref_delta).error, "rel"),
                },
            )
        )
    rows.append(Row(f"reference: {gemm_name}", {"throughput": figure(gemm_rate, "GFLOP/s")}))
    hand = times["handwritten"].median
    targets = [
        Target(
            "handwritten throughput vs measured GEMM", flops / hand / 1e9 / gemm_gflops, ">=", 0.9, "fraction"
        ),
        Target("handwritten time vs jax.grad", hand / times["jax.grad"].median, "<=", 1.05, "x"),
    ]
    torch_names = [k for k in times if k.startswith("pytorch")]
    if torch_names:
        fastest = min(torch_names, key=lambda k: times[k].median)
        targets.append(
            Target(
                "handwritten time vs PyTorch eager",
                hand / times[fastest].median,
                "<=",
                1.0,
                "x",
                note=f"against the faster PyTorch run ({fastest})",
            )
        )
    return rows, targets


def _add_torch(variants: dict[str, tuple[Callable[[], Any], First]], build: Callable[[], Any]) -> str:
    """Add PyTorch eager at its default thread count and, when that is more than one, on one thread.

    On a shared machine a multi-threaded eager step can stall at every op's thread barrier
    whenever another process holds a core; the one-thread run shows the step without that.
    """
    from jaxcalc.bench.torch_side import available_threads, with_threads

    n = available_threads()
    variants["pytorch eager"] = build()
    if n > 1:
        call, first = build()
        variants["pytorch eager, 1 thread"] = (with_threads(call, 1), first)
    return f"PyTorch eager on {n} threads (torch's default)" + (", and on 1 thread" if n > 1 else "")


def mlp_step(cfg: BenchConfig, limits: dict[str, float]) -> WorkloadResult:
    """One SGD step of the relu MLP: handwritten backprop vs jax.grad vs PyTorch eager."""
    from jaxcalc.backprop import init_mlp, make_train_step

    sizes, B = cfg.mlp_sizes, cfg.mlp_batch
    params = init_mlp(jax.random.key(0), sizes, jnp.dtype(cfg.dtype))
    x = jax.random.normal(jax.random.key(1), (B, sizes[0]), cfg.dtype)
    labels = jax.random.randint(jax.random.key(2), (B,), 0, sizes[-1])
    n_params = sum(int(p.size) for p in jax.tree_util.tree_leaves(params))
    flops = 6 * B * n_params
    gemm = gemm_call(B, sizes[0], sizes[1], cfg)
    variants: dict[str, tuple[Callable[[], Any], First]] = {}
    compiles: dict[str, float] = {}
    for name, grad in (("handwritten", "handwritten"), ("jax.grad", "autodiff")):
        call, first, c = _jax_variant(make_train_step(cfg.lr, grad), params, (x, labels))
        variants[name], compiles[name] = (call, first), c
    notes = ["FLOPs counted as 6 * batch * params (forward 2, backward 4 per weight and example)"]
    if cfg.use_torch and torch_available():
        from jaxcalc.bench.torch_side import mlp_step_torch

        notes.append(_add_torch(variants, lambda: mlp_step_torch(params, x, labels, cfg.lr, cfg.dtype)))
        notes.append("PyTorch eager: torch.optim.SGD")
    else:
        notes.append("PyTorch eager: skipped (torch not installed or disabled)")
    rows, targets = _compare_rows(cfg, variants, _leaves(params), flops, gemm)
    return WorkloadResult(
        "mlp_step",
        f"SGD train step of a relu MLP {'-'.join(map(str, sizes))}, batch {B}, cross-entropy",
        {"dtype": cfg.dtype, "sizes": list(sizes), "batch": B, "params": n_params, "lr": cfg.lr},
        rows,
        compiles,
        targets,
        notes,
    )


def _transformer_train_step(n_heads: int, lr: float, grad: str, block: int = 0) -> Any:
    """Jitted ``(params, (x, y)) -> (params, loss)`` with L = 0.5 mean((block(x) - y)^2).

    The parameters are not donated: on XLA:CPU a donated step ran 1.35x slower (27.1 vs 20.0 ms
    a step at d=256, T=128, batch 8, timed side by side), its outputs aliased to its inputs.

    grad: "fast" (:mod:`jaxcalc.bench.fast_block`, attention in query blocks of ``block`` rows),
    "catalogue" (forward and handwritten VJP of ``jaxcalc.cases.transformer``) or "autodiff"
    (jax.value_and_grad of the catalogue's forward).
    """
    from jaxcalc.cases.transformer import transformer_block, transformer_block_vjp

    def loss_fn(params: tuple, batch: tuple) -> jax.Array:
        x, y = batch
        return 0.5 * jnp.mean((transformer_block(x, *params, n_heads=n_heads) - y) ** 2)

    def catalogue(params: tuple, batch: tuple) -> tuple[jax.Array, tuple]:
        x, y = batch
        r = transformer_block(x, *params, n_heads=n_heads) - y
        ct = r / r.size  # dL/dout = (out - y) / N
        grads = transformer_block_vjp((x, *params), ct, n_heads=n_heads)[1:]
        return 0.5 * jnp.mean(r * r), grads

    def fast(params: tuple, batch: tuple) -> tuple[jax.Array, tuple]:
        return loss_and_grads(params, *batch, n_heads, block)

    backward = {"fast": fast, "catalogue": catalogue, "autodiff": jax.value_and_grad(loss_fn)}[grad]

    def step(params: tuple, batch: tuple) -> tuple[tuple, jax.Array]:
        loss, grads = backward(params, batch)
        return tuple(p - lr * g for p, g in zip(params, grads, strict=True)), loss

    return jax.jit(step)


def _transformer_params(d: int, f: int, dtype: str) -> tuple[jax.Array, ...]:
    """The block's 12 weights in order (ln1_gamma .. b2); matrices ~ N(0, 1/fan_in)."""
    k = jax.random.split(jax.random.key(3), 12)
    shapes = [(d,), (d,), (d, d), (d, d), (d, d), (d, d), (d,), (d,), (d, f), (f,), (f, d), (d,)]
    fans = [0, 0, d, d, d, d, 0, 0, d, 0, f, 0]
    out = []
    for i, (s, fan) in enumerate(zip(shapes, fans, strict=True)):
        if fan:
            out.append(jax.random.normal(k[i], s, dtype) / jnp.asarray(np.sqrt(fan), dtype))
        elif i in (0, 6):  # layernorm gains
            out.append(1 + 0.1 * jax.random.normal(k[i], s, dtype))
        else:  # biases
            out.append(0.1 * jax.random.normal(k[i], s, dtype))
    return tuple(out)


def transformer_step(cfg: BenchConfig, limits: dict[str, float]) -> WorkloadResult:
    """One SGD step of a transformer block: handwritten VJP vs jax.grad vs PyTorch eager."""
    d, T, B, H, f = cfg.tf_d, cfg.tf_seq, cfg.tf_batch, cfg.tf_heads, cfg.tf_ff
    params = _transformer_params(d, f, cfg.dtype)
    x = jax.random.normal(jax.random.key(4), (B, T, d), cfg.dtype)
    y = jax.random.normal(jax.random.key(5), (B, T, d), cfg.dtype)
    n_params = sum(int(p.size) for p in params)
    # matmuls: 2 N (4 d^2 + 2 d f) for the projections and MLP, 4 B T^2 d for q k^T and p v (mask not skipped)
    flops = 3 * (2 * B * T * (4 * d * d + 2 * d * f) + 4 * B * T * T * d)
    gemm = gemm_call(B * T, d, f, cfg)
    variants: dict[str, tuple[Callable[[], Any], First]] = {}
    compiles: dict[str, float] = {}
    steps = (("handwritten", "fast"), ("handwritten, catalogue VJP", "catalogue"), ("jax.grad", "autodiff"))
    for name, grad in steps:
        call, first, c = _jax_variant(_transformer_train_step(H, cfg.lr, grad, cfg.tf_block), params, (x, y))
        variants[name], compiles[name] = (call, first), c
    blocks = attention_blocks(T, cfg.tf_block)
    done = sum((stop - start) * stop for start, stop in blocks) / T**2  # share of the T x T scores computed
    notes = [
        "FLOPs: 3 x forward matmuls, 2 B T (4 d^2 + 2 d f) + 4 B T^2 d, the dense count for every "
        "variant (the causal mask's dead half included)",
        f"handwritten: one forward kept for the backward, fused QKV projection, attention in "
        f"{len(blocks)} query block(s) of {blocks[0][1]} rows that skip the blocks above the "
        f"diagonal ({done:.0%} of the T x T scores computed); handwritten, catalogue VJP: "
        "jaxcalc.cases.transformer's forward and VJP, which recomputes the forward",
    ]
    if cfg.use_torch and torch_available():
        from jaxcalc.bench.torch_side import transformer_step_torch

        notes.append(_add_torch(variants, lambda: transformer_step_torch(params, x, y, H, cfg.lr, cfg.dtype)))
        notes.append("PyTorch eager: F.scaled_dot_product_attention, torch.optim.SGD")
    else:
        notes.append("PyTorch eager: skipped (torch not installed or disabled)")
    rows, targets = _compare_rows(cfg, variants, _leaves(params), flops, gemm)
    return WorkloadResult(
        "transformer_step",
        f"SGD train step of a pre-norm transformer block d={d}, T={T}, batch {B}, {H} heads, mlp {f}",
        {
            "dtype": cfg.dtype,
            "d": d,
            "seq": T,
            "batch": B,
            "heads": H,
            "ff": f,
            "params": n_params,
            "lr": cfg.lr,
        },
        rows,
        compiles,
        targets,
        notes,
    )
