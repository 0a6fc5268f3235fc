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
from pathlib import Path
from typing import Any

import jax
import numpy as np

from jaxcalc.cases import Case
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

__all__ = ["ExportError", "export_golden", "manifest_entry", "producer"]

# Seconds to pause after each case file; lets tests interrupt an export midway. Not for users.
_PAUSE_ENV = "_JAXCALC_EXPORT_PAUSE"


class ExportError(Exception):
    """The destination cannot be written (exists, not a golden set, no parent); one line."""


def producer() -> dict[str, Any]:
    """What produced the set: versions, backend, device kind, x64 and matmul precision."""
    from jaxcalc import __version__

    return {
        "jaxcalc": __version__,
        "jax": jax.__version__,
        "numpy": np.__version__,
        "backend": jax.default_backend(),
        "device": jax.devices()[0].device_kind,
        "x64": True,
        "matmul_precision": "highest",
    }


def _tolerances(r: ref.Reference) -> dict[str, Any]:
    """Both tolerance columns with how each was obtained."""
    f32 = r.float32_tolerance
    raw = ref.FLOAT32_FACTOR * r.float32_error
    rule = "floor" if raw < ref.FLOAT32_FLOOR else "cap" if raw > ref.FLOAT32_CAP else "factor x measured"
    return {
        "float64": {
            "tolerance": ref.FLOAT64_TOLERANCE,
            "measured_error": r.handwritten_error,
            "derivation": (
                "fixed: float64 round-off bound for two exact computations (numerics.TOLERANCES); "
                f"measured handwritten vs autodiff VJP here: {r.handwritten_error:.3g}"
            ),
        },
        "float32": {
            "tolerance": f32,
            "measured_error": r.float32_error,
            "worst": r.float32_worst,
            "factor": ref.FLOAT32_FACTOR,
            "floor": ref.FLOAT32_FLOOR,
            "cap": ref.FLOAT32_CAP,
            "rule": rule,
            "derivation": (
                "measured: JAX in float32 (x64 off, matmul highest) on the inputs rounded to float32, "
                "value and VJPs (autodiff and handwritten) vs these float64 values, largest normwise "
                f"error {r.float32_error:.3g} ({r.float32_worst}); tolerance = min(max("
                f"{ref.FLOAT32_FACTOR:g} x error, {ref.FLOAT32_FLOOR:g}), {ref.FLOAT32_CAP:g}) = {f32:.3g}"
            ),
        },
    }


def manifest_entry(r: ref.Reference, hashes: dict[str, str]) -> dict[str, Any]:
    """The manifest record of one case; ``hashes`` maps 'json'/'npz' to the files' (sha256, bytes)."""
    case = r.case
    return {
        "name": case.name,
        "description": case.description,
        "inputs": [
            {
                "name": i.name,
                "shape": list(i.shape),
                "dtype": "int64" if i.integer else "float64",
                "differentiable": i.differentiable,
            }
            for i in case.inputs
        ],
        "output": {"shape": list(r.value.shape), "dtype": "float64"},
        "outputs": sorted({k.split("/")[1] for k in flatten(r.document()) if k.startswith("outputs/")}),
        "jacobian": sorted(r.jacobian),
        "tolerances": _tolerances(r),
        "files": {
            ext: {"path": f"cases/{case.name}.{ext}", "sha256": hashes[ext][0], "bytes": hashes[ext][1]}
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


def _check_destination(dest: Path, force: bool) -> None:
    """Refuse a destination that ``--force`` would damage: only an empty directory or a whole
    golden set (a manifest of this format, with nothing beside its own files) may be replaced."""
    if not dest.parent.is_dir():
        raise ExportError(f"cannot write {dest}: parent directory {dest.parent} does not exist")
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
    cases: Sequence[Case],
    *,
    force: bool = False,
    progress: Callable[[ref.Reference], None] | None = None,
) -> dict[str, Any]:
    """Compute and write the golden set of ``cases`` to ``dest``; returns the manifest written.

    Raises ExportError for an unusable destination and reference.DisagreementError for a case
    whose handwritten derivative disagrees with autodiff; in both cases nothing is written.
    ``progress`` is called with each case's Reference as it is written.
    """
    dest = Path(os.path.abspath(dest))
    if not dest.parent.is_dir():
        raise ExportError(f"cannot write {dest}: parent directory {dest.parent} does not exist")
    try:
        with safety.dir_lock(dest):  # one export per destination at a time; the loser fails here
            return _export_locked(dest, cases, force, progress)
    except safety.LockedError as exc:
        raise ExportError(str(exc)) from None


def _export_locked(
    dest: Path, cases: Sequence[Case], force: bool, progress: Callable[[ref.Reference], None] | None
) -> dict[str, Any]:
    _clean_stale(dest)  # first: it may put back a previous set a killed export had moved aside
    _check_destination(dest, force)
    pause = float(os.environ.get(_PAUSE_ENV, "0") or 0)
    # mkdir (not mkdtemp, which makes it 0700) so the set gets the usual permissions.
    tmp = dest.with_name(f".{dest.name}.export-{os.getpid()}-{secrets.token_hex(4)}")
    os.mkdir(tmp)
    try:
        (tmp / "cases").mkdir()
        entries = []
        for case in cases:
            r = ref.compute_reference(case)
            doc = {"case": case.name, "format_version": FORMAT_VERSION}
            arrays = flatten(r.document())
            nested = jax.tree.map(encode_array, r.document(), is_leaf=lambda x: isinstance(x, np.ndarray))
            doc.update(nested)
            hashes = {}
            for ext, data in (("json", dumps(doc).encode()), ("npz", npz_bytes(arrays))):
                path = tmp / "cases" / f"{case.name}.{ext}"
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
            "error_measure": "normwise relative: max|got - expected| / max(max|expected|, 1e-30)",
            "cases": entries,
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
