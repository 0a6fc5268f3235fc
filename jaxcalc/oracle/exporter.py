"""Write a golden set (``jaxcalc export``): atomically, deterministically, checked before it lands.

Atomic: every file is written into a fresh temporary directory beside DIR (same filesystem) and
fsynced; the set is read back and checked; only then does it take DIR's name in one rename (or,
replacing an older set with ``force``, one atomic exchange of the two directories, after which
the old set is deleted). A killed export leaves DIR absent or holding the previous set; a
temporary directory it may leave behind (``.DIR.export-PID-*``) is removed by the next export.

Deterministic: arrays come from seeded cases; JSON has sorted keys and shortest round-tripping
floats; npz members are sorted and dated 1980-01-01; the manifest holds no clock time. The same
command on the same backend and versions gives the same bytes.
"""

from __future__ import annotations

import ctypes
import os
import secrets
import shutil
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import jax
import numpy as np

from jaxcalc.cases import Case, Instance, instance
from jaxcalc.numerics import COLUMNS
from jaxcalc.oracle import reference as ref
from jaxcalc.oracle import safety
from jaxcalc.oracle.arrays import dumps, encode_array, loads, npz_bytes
from jaxcalc.oracle.golden import (
    FORMAT,
    FORMAT_VERSION,
    MANIFEST,
    GoldenError,
    flatten,
    load_golden,
    sha256_file,
)

__all__ = ["ExportError", "cpu_low_precision", "export_golden", "manifest_entry", "producer"]

# Seconds to pause after each case file; lets tests interrupt an export midway. Not for users.
_PAUSE_ENV = "_JAXCALC_EXPORT_PAUSE"


class ExportError(Exception):
    """The destination cannot be written (exists, not a golden set, no parent); one line."""


def producer() -> dict[str, Any]:
    """What produced the set: versions, backend, device kind, x64 and matmul precision, and on a
    CPU its native low-precision instructions (:func:`cpu_low_precision`)."""
    from jaxcalc import __version__

    out = {
        "jaxcalc": __version__,
        "jax": jax.__version__,
        "numpy": np.__version__,
        "backend": jax.default_backend(),
        "device": jax.devices()[0].device_kind,
        "x64": True,
        "matmul_precision": "highest",
    }
    if out["backend"] == "cpu":
        out["cpu_low_precision"] = cpu_low_precision()
    return out


# CPU instruction sets that do float16 / bfloat16 arithmetic natively (Linux /proc/cpuinfo names).
_LOW_PRECISION_FLAGS = ("amx_bf16", "amx_fp16", "avx512_bf16", "avx512_fp16")


def cpu_low_precision() -> list[str] | str:
    """The native float16 / bfloat16 instruction sets of this CPU, or "unknown".

    The float16 column's measured errors differ between a CPU with ``avx512_fp16`` and one
    without (gelu_tanh's vjp/x: 2.8e-4 against 1.1e-3); capping XLA's instruction set on the
    former (``XLA_FLAGS=--xla_cpu_max_isa=AVX2``) reproduces the latter's. A set's
    low-precision tolerances are reproducible only on a CPU with the same instructions.
    """
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    return sorted(flags & set(_LOW_PRECISION_FLAGS))
    except OSError:
        pass
    return "unknown"


def _rule(col: str) -> str:
    """How a column's tolerances are derived (the manifest's 'column_rules')."""
    spec = COLUMNS[col]
    floor = f"absolute floor {ref.ABS_FLOOR_ULPS[col]:g} x eps x max|truth|"
    if col == "float64":
        return (
            f"max({ref.FLOAT64_TOLERANCE:g}, 10 x max(handwritten vs autodiff, float32 error x eps64/eps32)) "
            f"per output; {floor}"
        )
    if col == "float32":
        return (
            f"max({spec.factor:g} x error of a JAX float32 evaluation (x64 off) on the inputs rounded to "
            f"float32, {spec.floor:g}) per output; {floor}"
        )
    return (
        f"inputs and cotangent rounded to {col}, float64 truth recomputed on them; ({spec.factor:g} x "
        f"max|JAX {col} evaluation - truth| + {spec.floor:g} x max|round(truth) - truth|) / max|truth| per "
        f"output; {floor}"
    )


def _tolerances(r: ref.Reference) -> dict[str, Any]:
    """Every dtype column with its per-output tolerances, floors and measured errors."""
    out = {}
    for name, col in r.columns.items():
        if not col.applicable:
            out[name] = {"applicable": False, "reason": col.reason}
            continue
        worst = max(col.outputs, key=lambda k: col.outputs[k]["tolerance"])
        out[name] = {
            "applicable": True,
            "tolerance": col.tolerance,
            "outputs": {k: {kk: float(vv) for kk, vv in o.items()} for k, o in col.outputs.items()},
            "derivation": (
                f"measured per output; largest tolerance {col.tolerance:.3g} ({worst}, measured error "
                f"{col.outputs[worst]['measured_error']:.3g})"
            ),
        }
    return out


def manifest_entry(r: ref.Reference, hashes: dict[str, str]) -> dict[str, Any]:
    """The manifest record of one instance; ``hashes`` maps 'json'/'npz' to the files' (sha256, bytes)."""
    inst = r.instance
    case = inst.case
    shapes = inst.shapes
    stage = {"stage_of": inst.composite, "stage": inst.stage} if getattr(inst, "stage", "") else {}
    return {
        "id": inst.id,
        "case": case.name,
        **stage,
        "size": inst.size,
        "regime": inst.regime,
        "dims": dict(inst.dims),
        "settings": {k: v for k, v in case.settings.items()},
        "description": case.description,
        "inputs": [
            {
                "name": i.name,
                "dims": [d if isinstance(d, str) else int(d) for d in i.shape],
                "shape": list(shapes[i.name]),
                "dtype": i.dtype,
                "differentiable": i.differentiable,
            }
            for i in case.inputs
        ],
        "output": {"shape": list(r.value.shape), "dtype": "float64"},
        "outputs": sorted({k.split("/")[1] for k in flatten(r.document()) if k.startswith("outputs/")}),
        "jacobian": sorted(r.jacobian),
        "tolerances": _tolerances(r),
        "files": {
            ext: {"path": f"cases/{inst.id}.{ext}", "sha256": hashes[ext][0], "bytes": hashes[ext][1]}
            for ext in ("json", "npz")
        },
    }


def _write(path: Path, data: bytes) -> None:
    """Write ``data`` to a new file and fsync it."""
    with open(path, "xb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _exchange(a: Path, b: Path) -> bool:
    """Atomically swap two directories (Linux renameat2 RENAME_EXCHANGE); False where unsupported."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        fn = libc.renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd, rename_exchange = -100, 2
    return fn(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _clean_stale(dest: Path) -> None:
    """Remove temporary directories left by killed exports to ``dest`` (their process is gone)."""
    for tmp in dest.parent.glob(f".{dest.name}.export-*"):
        pid = tmp.name[len(f".{dest.name}.export-") :].split("-")[0]
        if not (pid.isdigit() and not _alive(int(pid)) and tmp.is_dir()):
            continue
        if tmp.name.endswith("-old") and not dest.exists():
            os.rename(tmp, dest)  # killed between the two renames of the fallback swap: restore
        else:
            shutil.rmtree(tmp, ignore_errors=True)


def _listed_paths(manifest: Any) -> set[str]:
    """Every ``"path"`` string anywhere in a manifest: the files that belong to the set."""
    found, stack = set(), [manifest]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            if isinstance(node.get("path"), str):
                found.add(node["path"])
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
    return found


def _check_parent(dest: Path) -> None:
    """ExportError unless dest's parent is a directory (saying what it is otherwise)."""
    parent = dest.parent
    if parent.is_dir():
        return
    if parent.exists() or parent.is_symlink():
        what = "a broken symbolic link" if not parent.exists() else "not a directory"
        raise ExportError(f"cannot write {dest}: {parent} is {what}")
    raise ExportError(f"cannot write {dest}: parent directory {parent} does not exist")


def _check_destination(dest: Path, force: bool) -> None:
    """Refuse a destination that ``--force`` would damage: only an empty directory or a whole
    golden set (a manifest of this format, with nothing beside its own files) may be replaced."""
    _check_parent(dest)
    if not dest.exists():
        return
    if not dest.is_dir():
        raise ExportError(f"{dest} exists and is not a directory")
    if not force:
        raise ExportError(f"{dest} already exists; pass --force to replace it")
    if not any(dest.iterdir()):
        return
    try:
        manifest = loads(safety.read_bounded(dest / MANIFEST, safety.MAX_MANIFEST_BYTES, "manifest"))
        ours = isinstance(manifest, dict) and manifest.get("format") == FORMAT
    except (OSError, ValueError, UnicodeDecodeError):
        ours = False
    if not ours:
        raise ExportError(f"{dest} is not empty and is not a jaxcalc golden set; refusing to replace it")
    listed = {MANIFEST, "cases", *_listed_paths(manifest)}
    present = {p.relative_to(dest).as_posix() for p in dest.rglob("*")}
    extra = sorted(p for p in present - listed if not any(p.startswith(f"{q}/") for q in present - listed))
    if extra:
        shown = ", ".join(extra[:3]) + (f" and {len(extra) - 3} more" if len(extra) > 3 else "")
        raise ExportError(
            f"{dest} holds files that are not part of its golden set ({shown}); "
            "move them away first (--force replaces the whole directory)"
        )


def export_golden(
    dest: str | Path,
    instances: Sequence[Instance | Case],
    *,
    force: bool = False,
    progress: Callable[[ref.Reference], None] | None = None,
    workers: int | None = None,
) -> dict[str, Any]:
    """Compute and write the golden set of ``instances`` to ``dest``; returns the manifest written.

    Raises ExportError for an unusable destination and reference.DisagreementError for an
    instance whose handwritten derivative disagrees with autodiff; in both cases nothing is
    written. ``progress`` is called with each instance's Reference as it is written. References
    are computed on ``workers`` threads (default: the CPU count, at most 4): XLA compiles
    outside the GIL, so one instance's compilation overlaps the next one's tracing.
    """
    dest = Path(os.path.abspath(dest))
    todo = [instance(i) if isinstance(i, Case) else i for i in instances]
    _check_parent(dest)
    try:
        with safety.dir_lock(dest):  # one export per destination at a time; the loser fails here
            return _export_locked(dest, todo, force, progress, workers)
    except safety.LockedError as exc:
        raise ExportError(str(exc)) from None


def _export_locked(
    dest: Path,
    todo: list[Instance],
    force: bool,
    progress: Callable[[ref.Reference], None] | None,
    workers: int | None,
) -> dict[str, Any]:
    _clean_stale(dest)  # first: it may put back a previous set a killed export had moved aside
    _check_destination(dest, force)
    pause = float(os.environ.get(_PAUSE_ENV, "0") or 0)
    # mkdir (not mkdtemp, which makes it 0700) so the set gets the usual permissions.
    tmp = dest.with_name(f".{dest.name}.export-{os.getpid()}-{secrets.token_hex(4)}")
    os.mkdir(tmp)
    workers = workers or min(4, os.cpu_count() or 1)
    try:
        (tmp / "cases").mkdir()
        entries = []
        with ThreadPoolExecutor(max_workers=workers) as pool:
            for r in pool.map(ref.compute_reference, todo):
                iid = r.instance.id
                doc = {"case": r.case.name, "instance": iid, "format_version": FORMAT_VERSION}
                arrays = flatten(r.document())
                nested = jax.tree.map(encode_array, r.document(), is_leaf=lambda x: isinstance(x, np.ndarray))
                doc.update(nested)
                hashes = {}
                for ext, data in (("json", dumps(doc).encode()), ("npz", npz_bytes(arrays))):
                    if len(data) > safety.MAX_CASE_FILE_BYTES:  # a set verify would refuse to read
                        raise ExportError(
                            f"{iid}: its case file {iid}.{ext} would be {len(data):,} bytes, over the "
                            f"{safety.MAX_CASE_FILE_BYTES:,}-byte limit a golden set's reader takes; "
                            "choose smaller dims"
                        )
                    path = tmp / "cases" / f"{iid}.{ext}"
                    _write(path, data)
                    hashes[ext] = (sha256_file(path), len(data))
                entries.append(manifest_entry(r, hashes))
                if progress is not None:
                    progress(r)
                if pause:
                    time.sleep(pause)
        manifest = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "producer": producer(),
            "error_measure": (
                "per output: max|got - truth| / max(max|truth|, floor) <= tolerance, over the finite "
                "entries of the truth; an infinite truth must be matched exactly; NaN never passes"
            ),
            "columns": list(COLUMNS),
            "column_rules": {c: _rule(c) for c in COLUMNS},
            "instances": entries,
        }
        _write(tmp / MANIFEST, dumps(manifest, indent=1).encode())
        _fsync_dir(tmp / "cases")
        _fsync_dir(tmp)
        try:
            load_golden(tmp)  # read back through the same checks 'verify' applies
        except GoldenError as exc:
            raise ExportError(f"the written set failed its read-back check: {exc}") from None
        _place(tmp, dest)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return manifest


def _place(tmp: Path, dest: Path) -> None:
    """Give ``tmp`` the name ``dest``; an existing set stays whole until the new one is in place."""
    if not dest.exists():
        os.rename(tmp, dest)
    elif _exchange(tmp, dest):
        pass  # tmp now holds the old set and is deleted by the caller
    else:
        old = tmp.with_name(tmp.name + "-old")
        os.rename(dest, old)
        os.rename(tmp, dest)
        shutil.rmtree(old, ignore_errors=True)
    _fsync_dir(dest.parent)
