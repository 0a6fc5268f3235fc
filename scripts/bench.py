"""
Run jaxcalc's jitted benchmarks at accelerator sizes, on whatever backend JAX finds (GPU, TPU, CPU).

The same workloads as `jaxcalc bench` (seed_descent, batched_descent, mlp_step, transformer_step,
gradcheck) through the same harness: compile time apart, block_until_ready before every clock
read, median and spread over repeats, every figure a ratio to something timed in this process.

Example, on one GPU, bfloat16 weights and TF32-class matmuls, writing the full report:

    python scripts/bench.py --dtype=bfloat16 --precision=high --json=bench_gpu.json

Any setting below can be overridden as --name=value, e.g. --only=mlp_step,transformer_step
--repeats=20 --mlp_batch=16384. On a CPU, shrink the sizes first (or use `jaxcalc bench --quick`).
"""

import json as _json
import sys

from _overrides import apply  # --name=value overrides of the settings below

from jaxcalc.bench import FULL, format_report, run_bench, select

# -----------------------------------------------------------------------------
# configuration: one default per line
dtype = "float32"  # float32 or bfloat16: dtype of every jitted workload (gradcheck stays float64)
precision = "default"  # matmul precision while lowering: default, high or highest (GPUs: TF32 unless highest)
only = ""  # comma-separated workloads to run; empty runs them all
json = ""  # also write the full report (every figure with its unit, machine, versions) here
repeats = 10  # samples per timing
min_time = 0.1  # seconds each sample lasts at least
use_torch = True  # PyTorch eager side by side when torch is installed
seed_steps = "20,1000000"  # step counts of the seed's scalar descent
seed_unroll = 64  # unroll= of the unrolled fused loop
batched_n = "67108864"  # comma-separated sizes of the batched descent: 2^26 x (256 MiB) is past any cache
batched_steps = 100  # steps of the batched descent
chunks = "262144,1048576,4194304"  # cache-block sizes (elements): 1-16 MiB blocks sit in a GPU's L2
block_unroll = 4  # steps per inner-loop iteration of the blocked kernel
mlp_sizes = "784,8192,8192,10"  # MLP widths: hidden 8192 to fill a GPU
mlp_batch = 8192  # MLP batch
tf_d = 1024  # transformer width
tf_seq = 1024  # sequence length
tf_batch = 8  # sequences per step
tf_heads = 16  # attention heads
tf_ff = 4096  # MLP width inside the block
tf_block = 256  # query rows per attention block of the fast handwritten step (0: one block)
gc_shape = "20,96,10,16"  # gradcheck problem: inputs, hidden, classes, batch (about 3K parameters)
# -----------------------------------------------------------------------------
apply(globals(), sys.argv[1:])


def ints(text: str) -> tuple[int, ...]:
    return tuple(int(t) for t in str(text).split(",") if t.strip())


try:
    names = select([n.strip() for n in only.split(",") if n.strip()])
    cfg = FULL.replace(
        dtype=dtype,
        precision=None if precision == "default" else precision,
        repeats=repeats,
        min_time=min_time,
        use_torch=use_torch,
        seed_steps=ints(seed_steps),
        seed_unroll=seed_unroll,
        batched_sizes=ints(batched_n),
        batched_steps=batched_steps,
        chunks=ints(chunks),
        block_unroll=block_unroll,
        mlp_sizes=ints(mlp_sizes),
        mlp_batch=mlp_batch,
        tf_d=tf_d,
        tf_seq=tf_seq,
        tf_batch=tf_batch,
        tf_heads=tf_heads,
        tf_ff=tf_ff,
        tf_block=tf_block,
        gc_shape=ints(gc_shape),
    )
except ValueError as exc:
    sys.exit(f"error: {exc}")

# -----------------------------------------------------------------------------
# run every workload in this one process, then print the tables (and write the report)
report = run_bench(
    cfg,
    names,
    command="python scripts/bench.py " + " ".join(sys.argv[1:]),
    progress=lambda msg: print(f"[bench] {msg}", file=sys.stderr, flush=True),
)
print(format_report(report))
if json:
    with open(json, "w", encoding="utf-8") as fh:
        _json.dump(report.to_dict(), fh, indent=2)
        fh.write("\n")
    print(f"wrote {json}")
