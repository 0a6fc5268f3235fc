"""Sizes and repeat counts of every benchmark: the full preset, the quick one, and overrides.

``FULL`` holds the sizes the benchmarks are specified at (they suit a CPU and a GPU alike);
``QUICK`` shrinks them so the whole run takes well under a minute on two CPU cores.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

__all__ = ["BenchConfig", "FULL", "QUICK", "DTYPES", "PRECISIONS"]

DTYPES = ("float32", "bfloat16")
PRECISIONS = ("default", "high", "highest")


@dataclass(frozen=True)
class BenchConfig:
    """Every knob of ``jaxcalc bench``; one field per line, with its meaning."""

    dtype: str = "float32"  # dtype of every jitted workload (gradcheck is always float64)
    precision: str | None = None  # jax_default_matmul_precision while lowering; None keeps the default
    repeats: int = 5  # samples per timing (median and spread are over these)
    min_time: float = 0.05  # seconds one sample lasts at least (calls are repeated until it does)
    use_torch: bool = True  # include PyTorch eager side by side when torch is installed
    # seed_descent: x <- x - 0.1 * 2x from x0 = 10
    seed_steps: tuple[int, ...] = (20, 1_000_000)
    seed_python_max_steps: int = 200_000  # pure Python timed over at most this many steps
    seed_dispatch_max_steps: int = 2_000  # the per-step jitted loop timed over at most this many
    seed_unroll: int = 64  # unroll= of the unrolled fused loop
    # batched_descent: many independent x, the same update
    batched_sizes: tuple[int, ...] = (1 << 22, 1 << 24)  # the first one is judged against the target
    batched_steps: int = 100
    chunks: tuple[int, ...] = (4096, 8192, 16384)  # cache-block sizes (elements)
    block_unroll: int = 4  # unroll= of the per-chunk step loop
    # mlp_step
    mlp_sizes: tuple[int, ...] = (784, 512, 512, 10)
    mlp_batch: int = 1024
    lr: float = 0.01
    # transformer_step
    tf_d: int = 256
    tf_seq: int = 128
    tf_batch: int = 8
    tf_heads: int = 4
    tf_ff: int = 1024  # hidden width of the block's MLP (4 d)
    tf_block: int = 64  # query rows per attention block of the fast step (0: the whole sequence)
    # gradcheck: a tanh MLP loss (inputs, hidden, classes, batch); params = h (n_in + 1) + k (h + 1)
    gc_shape: tuple[int, int, int, int] = (20, 96, 10, 16)
    gc_repeats: int = 3
    # machine limits
    fma_chain_steps: int = 1 << 20  # dependent FMAs timed for the latency bound
    # (elements, multiply-adds per element per pass) tried for the vector FMA throughput; best kept
    fma_peak_shapes: tuple[tuple[int, int], ...] = ((4096, 4), (16384, 4), (16384, 8), (65536, 4))
    fma_peak_work: int = 1 << 26  # FMAs per timed call of the throughput kernel

    def replace(self, **changes: object) -> BenchConfig:
        return dataclasses.replace(self, **changes)

    def __post_init__(self) -> None:
        if self.dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {DTYPES}, not {self.dtype!r}")
        if self.precision is not None and self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, not {self.precision!r}")
        for c in self.chunks:
            for n in self.batched_sizes:
                if n % c:
                    raise ValueError(f"batched size {n} is not a multiple of chunk {c}")
        if self.tf_d % self.tf_heads:
            raise ValueError(f"tf_d={self.tf_d} is not a multiple of tf_heads={self.tf_heads}")
        if self.tf_block < 0:
            raise ValueError(f"tf_block must be >= 0 (0: one block), not {self.tf_block}")


FULL = BenchConfig()

QUICK = BenchConfig(
    repeats=3,
    min_time=0.01,
    seed_steps=(20, 1_000_000),
    seed_python_max_steps=20_000,
    seed_dispatch_max_steps=300,
    batched_sizes=(1 << 20,),
    chunks=(8192,),
    mlp_sizes=(784, 128, 128, 10),
    mlp_batch=128,
    tf_d=64,
    tf_seq=32,
    tf_batch=4,
    tf_heads=4,
    tf_ff=256,
    gc_shape=(8, 24, 4, 8),
    gc_repeats=3,  # the first check of a function compiles; the median of 3 is a steady-state call
    fma_chain_steps=1 << 18,
    fma_peak_shapes=((8192, 4), (16384, 8)),
    fma_peak_work=1 << 23,
)
