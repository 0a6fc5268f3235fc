"""
One command for an accelerator: name the device, check every case in float32 (matmul precision
highest) and in the bfloat16 column, export a golden set on the device and verify the PyTorch
example against it, and run the bench at accelerator sizes in float32-highest and in bfloat16.
Each step is its own `python -m jaxcalc ...` or `python scripts/bench.py ...` process, run under
a share of one time budget (8 minutes); one that is not supported yet (the bfloat16 column of
`jaxcalc check`, until it lands) is recorded as "unavailable: <reason>", one that overruns its
share as "timed out". Everything lands in one JSON file and one markdown table.

    python scripts/gpu_check.py                      # on the accelerator, at most 8 minutes
    python scripts/gpu_check.py --smoke              # the same path at small sizes, on a CPU too

Exit status 0 when every step ran and passed (or is unavailable), 1 otherwise, 2 on bad arguments.
Any setting below can be overridden as --name=value.
"""

import json as _json
import os
import subprocess
import sys
import tempfile
import time

from _overrides import apply  # --name=value overrides of the settings below

# -----------------------------------------------------------------------------
# configuration: one default per line
smoke = False  # small sizes and a few cases: the same path in under a minute on a CPU
json = "gpu_check.json"  # the one JSON file: device, every step's command, status and figures
markdown = "gpu_check.md"  # the one markdown table
budget_s = 0.0  # seconds for all steps together; 0: 480 (8 minutes), or 240 with --smoke
cases = ""  # comma-separated cases to check, export and verify; empty: all (--smoke: a few)
workloads = "batched_descent,mlp_step,transformer_step"  # bench workloads (the other two are CPU-sized)
repeats = 5  # bench samples per timing
min_time = 0.05  # bench seconds per sample
# -----------------------------------------------------------------------------
apply(globals(), ["--smoke=True" if a == "--smoke" else a for a in sys.argv[1:]])

SMOKE_CASES = "square,softmax,layernorm"
SMOKE_SIZES = [  # scripts/bench.py overrides: the accelerator defaults shrunk to a few KiB
    "--batched_n=16384", "--chunks=2048", "--batched_steps=10", "--mlp_sizes=12,16,16,3",
    "--mlp_batch=8", "--tf_d=16", "--tf_seq=8", "--tf_batch=2", "--tf_heads=2", "--tf_ff=32",
    "--tf_block=4", "--repeats=3", "--min_time=0.0",
]  # fmt: skip
DEVICE_PROBE = (
    "import json, jax; d = jax.devices()[0]; print(json.dumps({'backend': jax.default_backend(), "
    "'device_kind': d.device_kind, 'device_count': jax.device_count(), 'jax': jax.__version__}))"
)
HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
# every step imports this checkout's jaxcalc (scripts/bench.py would otherwise find an installed one)
ENV = {"PYTHONPATH": os.pathsep.join(p for p in (ROOT, os.environ.get("PYTHONPATH", "")) if p)}
budget = budget_s or (240.0 if smoke else 480.0)
case_list = [c for c in (cases or (SMOKE_CASES if smoke else "")).split(",") if c]
bench_sizes = SMOKE_SIZES if smoke else []
for path in (json, markdown):
    parent = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(parent):
        print(f"error: cannot write {path}: directory {parent} does not exist", file=sys.stderr)
        sys.exit(2)


def last_line(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else ""


def run(argv: list[str], timeout: float, env: dict[str, str] | None = None) -> dict:
    """Run one step as a subprocess from the repository root: rc, wall seconds, output tails."""
    t0 = time.perf_counter()
    try:
        full_env = {**os.environ, **ENV, **(env or {})}
        p = subprocess.run(argv, cwd=ROOT, env=full_env, capture_output=True, text=True, timeout=timeout)
        rc, out, err = p.returncode, p.stdout, p.stderr
    except subprocess.TimeoutExpired as exc:
        rc, out, err = None, exc.stdout or "", exc.stderr or ""
        out, err = (s.decode(errors="replace") if isinstance(s, bytes) else s for s in (out, err))
    return {"rc": rc, "wall_s": round(time.perf_counter() - t0, 2), "stdout": out, "stderr": err}


def read_json(path: str) -> dict | None:
    try:
        with open(path, encoding="utf-8") as fh:
            return _json.load(fh)
    except (OSError, ValueError):
        return None


def status_of(r: dict, ok_rcs: tuple[int, ...] = (0,)) -> str:
    if r["rc"] is None:
        return f"timed out after {r['wall_s']:.0f} s"
    if r["rc"] in ok_rcs:
        return "ok"
    return f"FAILED (exit {r['rc']}): {last_line(r['stderr']) or last_line(r['stdout'])}"


# -----------------------------------------------------------------------------
# the steps: (name, share of the budget, argv builder, environment, how to read the result)
py = sys.executable
work = tempfile.TemporaryDirectory(prefix="gpu_check_")
tmp = work.name
golden = os.path.join(tmp, "golden")
cases_flag = ["--cases", *case_list] if case_list else []


def check_step(dtype: str) -> list[str]:
    return [py, "-m", "jaxcalc", "check", "--dtype", dtype, "--json", f"{tmp}/check_{dtype}.json", *case_list]


def bench_step(dtype: str, precision: str) -> list[str]:
    return [
        py, "scripts/bench.py", f"--dtype={dtype}", f"--precision={precision}", f"--only={workloads}",
        "--use_torch=False", f"--repeats={repeats}", f"--min_time={min_time}",
        f"--json={tmp}/bench_{dtype}.json", *bench_sizes,
    ]  # fmt: skip


def read_check(r: dict, dtype: str, new_column: bool = False) -> dict:
    """The check's summary; for a ``new_column`` (a dtype the CLI is still gaining), a refusal or a
    crash before any report is written reads "unavailable: <reason>" rather than a failure."""
    report = read_json(f"{tmp}/check_{dtype}.json")
    if new_column and not report and r["rc"] not in (0, None):
        reason = last_line(r["stderr"]) or last_line(r["stdout"])
        crashed = "Traceback (most recent call last)" in r["stderr"]
        return {"status": f"unavailable: {'crashed: ' if crashed else ''}{reason}"}
    if not report:
        return {"status": status_of(r)}
    s = report["summary"]
    failed = [f"{x['case']}/{x['check']}" for x in report["results"] if x["status"] == "FAIL"]
    return {
        "status": status_of(r, (0,)) if not failed else f"FAILED: {len(failed)} checks",
        "summary": s,
        "backend": report.get("machine", {}).get("backend"),
        "failed": failed,
        "result": ", ".join(f"{v} {k}" for k, v in s.items()),
    }


def read_verify(r: dict, dtype: str) -> dict:
    report = read_json(f"{tmp}/verify_{dtype}.json")
    if not report:
        return {"status": status_of(r)}
    entries = report.get("instances", report.get("cases", []))  # golden format 2 verifies instances
    failed = [c.get("instance", c.get("case")) for c in entries if c.get("verdict") not in ("pass", "skip")]
    return {"status": status_of(r), "result": report["summary"], "failed": failed}


def verdict(met: bool | None) -> str:
    return "no verdict" if met is None else "met" if met else "not met"


def read_bench(r: dict, dtype: str) -> dict:
    report = read_json(f"{tmp}/bench_{dtype}.json")
    if not report:
        return {"status": status_of(r)}
    targets = [
        f"{name}: {t['name']} {t['value']:.3g} {t['unit']} ({verdict(t['met'])})"
        for name, w in report["workloads"].items()
        for t in w["targets"]
        if t["value"] is not None
    ]
    return {"status": status_of(r), "report": report, "result": "; ".join(targets)}


def read_device(r: dict) -> dict:
    try:
        info = _json.loads(last_line(r["stdout"]))
    except ValueError:
        return {"status": status_of(r)}
    smi = None if smoke else run(["nvidia-smi", "--query-gpu=name,memory.total", "--format=csv,noheader"], 20)
    if smi and smi["rc"] == 0:
        info["nvidia_smi"] = smi["stdout"].strip()
    name = f"{info['device_kind']} x{info['device_count']} ({info['backend']}, jax {info['jax']})"
    return {"status": status_of(r), "device": info, "result": name}


def jaxcalc(*args: str) -> list[str]:
    return [py, "-m", "jaxcalc", *args]


def verify_step(dtype: str) -> list[str]:
    return jaxcalc("verify", golden, "--impl", "examples/torch_impl.py", "--dtype", dtype,
                   "--json", f"{tmp}/verify_{dtype}.json")  # fmt: skip


highest = {"JAX_DEFAULT_MATMUL_PRECISION": "highest"}
steps = [
    ("device", 1, [py, "-c", DEVICE_PROBE], None, read_device),
    ("check float32, matmul precision highest", 3, check_step("float32"), highest,
     lambda r: read_check(r, "float32")),
    ("check bfloat16", 3, check_step("bfloat16"), None, lambda r: read_check(r, "bfloat16", True)),
    ("export golden set on the device", 2, jaxcalc("export", golden, "--force", "--json", *cases_flag), None,
     lambda r: {"status": status_of(r)}),
    ("verify examples/torch_impl.py, float64", 1, verify_step("float64"), None,
     lambda r: read_verify(r, "float64")),
    ("verify examples/torch_impl.py, float32", 1, verify_step("float32"), None,
     lambda r: read_verify(r, "float32")),
    ("bench float32, matmul precision highest", 4, bench_step("float32", "highest"), None,
     lambda r: read_bench(r, "float32")),
    ("bench bfloat16", 4, bench_step("bfloat16", "default"), None, lambda r: read_bench(r, "bfloat16")),
]  # fmt: skip

# -----------------------------------------------------------------------------
# run the steps in order; each gets its share of what is left of the budget
t_start = time.perf_counter()
results = []
for i, (name, share, argv, env, read) in enumerate(steps):
    left = budget - (time.perf_counter() - t_start)
    timeout = max(5.0, left * share / sum(s[1] for s in steps[i:]))
    print(f"[gpu_check] {name} (at most {timeout:.0f} s)", file=sys.stderr, flush=True)
    r = run(argv, timeout, env)
    try:
        found = read(r)
    except (KeyError, TypeError, ValueError) as exc:  # a report whose layout this script does not know
        found = {"status": f"FAILED: cannot read its report ({type(exc).__name__}: {exc})"}
    shown = " ".join("python" if a == py else a.replace(tmp, "$TMP") for a in argv)
    shown = shown.replace(DEVICE_PROBE, "'<print jax.devices()[0] as JSON>'")
    env_text = " ".join(f"{k}={v}" for k, v in (env or {}).items())
    entry = {"step": name, "command": f"{env_text} {shown}".strip(), "wall_s": r["wall_s"], "rc": r["rc"]}
    entry.update(found)
    if entry["status"] != "ok" and not entry["status"].startswith("unavailable"):
        entry["stderr_tail"] = r["stderr"][-2000:]
    results.append(entry)
    print(f"[gpu_check]   {entry['status']} in {r['wall_s']:.1f} s", file=sys.stderr, flush=True)
wall = time.perf_counter() - t_start
device = next((e.get("result") for e in results if e["step"] == "device"), None) or "unknown"
passed = all(e["status"] == "ok" or e["status"].startswith("unavailable") for e in results)

# -----------------------------------------------------------------------------
# one JSON file and one markdown table
doc = {
    "command": "python scripts/gpu_check.py " + " ".join(sys.argv[1:]),
    "smoke": smoke,
    "device": device,
    "budget_s": budget,
    "wall_s": round(wall, 1),
    "passed": passed,
    "steps": results,
}
with open(json, "w", encoding="utf-8") as fh:
    _json.dump(doc, fh, indent=2)
    fh.write("\n")


def cell(text: object) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


md = [
    f"# gpu_check{' --smoke' if smoke else ''}: {device}",
    "",
    f"`{doc['command'].strip()}`: {wall:.0f} s of a {budget:.0f} s budget; "
    f"{'every step passed or is unavailable' if passed else 'NOT all steps passed'}.",
    "",
    "| step | status | wall [s] | result | command |",
    "|---|---|---|---|---|",
]
for e in results:
    result = cell(e.get("result", ""))
    md.append(
        f"| {cell(e['step'])} | {cell(e['status'])} | {e['wall_s']:.1f} | {result} | `{cell(e['command'])}` |"
    )
bench_rows = []
for e in results:
    for wname, w in (e.get("report") or {}).get("workloads", {}).items():
        for row in w["rows"]:
            f = row["figures"]
            time_fig = f.get("time/step") or f.get("time")
            rate = f.get("throughput") or f.get("updates")
            frac = f.get("vs GEMM") or f.get("vs FMA peak")
            if time_fig is None and rate is None:
                continue
            show = [
                (f"{x['value']:.4g} {x['unit']}" if x and x["value"] is not None else "-")
                for x in (time_fig, rate, frac)
            ]
            cells = [cell(e["step"]), wname, cell(row["name"]), *show]
            bench_rows.append("| " + " | ".join(cells) + " |")
if bench_rows:
    md += [
        "",
        "| bench | workload | variant | time | throughput | vs GEMM / FMA peak |",
        "|---|---|---|---|---|---|",
    ]
    md += bench_rows
md += [
    "",
    "PyTorch eager is left out of the bench here (its side runs on the host CPU); seed_descent and "
    "gradcheck are CPU-sized workloads (`jaxcalc bench`). The torch example is verified on the host "
    "against the golden set exported on the device.",
]
with open(markdown, "w", encoding="utf-8") as fh:
    fh.write("\n".join(md) + "\n")
print("\n".join(md))
print(f"wrote {json} and {markdown}")
work.cleanup()
sys.exit(0 if passed else 1)
