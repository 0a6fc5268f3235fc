"""The golden set on disk: its layout, and reading it back with every byte and field checked.

Layout::

    DIR/manifest.json         format, producer, and per case: inputs, output, tolerances, sha256s
    DIR/cases/<name>.json     inputs, cotangent, tangents, outputs (value, vjp, jvp, hvp, jacobian)
    DIR/cases/<name>.npz      the same arrays, keyed "inputs/x", "outputs/vjp/x", ...

:func:`load_golden` trusts nothing: the manifest must parse and name only files under
``cases/``, each file's sha256 must match, every array must decode and have the shape the
manifest gives, and the ``.npz`` must hold exactly the arrays of the ``.json``.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from jaxcalc.oracle import safety
from jaxcalc.oracle.arrays import ArrayFormatError, decode_array, load_npz, loads

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "MANIFEST",
    "GoldenError",
    "GoldenCase",
    "GoldenSet",
    "flatten",
    "sha256_file",
    "load_golden",
]

FORMAT = "jaxcalc-golden"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
# What reading a field of the wrong type raises somewhere below; it becomes one GoldenError line.
_MALFORMED = (TypeError, AttributeError, KeyError, IndexError, ValueError, OverflowError, RecursionError)
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class GoldenError(Exception):
    """A golden set that is missing, tampered with or malformed; the message is one line."""


class GoldenCase(NamedTuple):
    """One case of a golden set, decoded and checked: its manifest entry and its arrays."""

    name: str
    entry: dict[str, Any]
    inputs: dict[str, np.ndarray]
    cotangent: np.ndarray
    value: np.ndarray
    vjp: dict[str, np.ndarray]
    tolerances: dict[str, float]

    @property
    def diff_names(self) -> tuple[str, ...]:
        return tuple(i["name"] for i in self.entry["inputs"] if i["differentiable"])


class GoldenSet(NamedTuple):
    """A checked golden set: its manifest and the selected cases, in manifest order."""

    root: Path
    manifest: dict[str, Any]
    cases: dict[str, GoldenCase]


def flatten(doc: Mapping[str, Any]) -> dict[str, Any]:
    """The arrays of a case document keyed by path: 'inputs/x', 'cotangent', 'outputs/vjp/x', ..."""
    out: dict[str, Any] = {}

    def walk(prefix: str, node: Any) -> None:
        if isinstance(node, Mapping) and set(node) != {"dtype", "shape", "data"}:
            for key, child in node.items():
                walk(f"{prefix}/{key}" if prefix else key, child)
        else:
            out[prefix] = node

    walk("", {k: doc[k] for k in ("inputs", "cotangent", "tangents", "outputs") if k in doc})
    return out


def sha256_file(path: Path, limit: int = safety.MAX_CASE_FILE_BYTES) -> str:
    """Hex sha256 of a file's bytes, read in chunks; safety.LimitError past ``limit`` bytes."""
    return safety.sha256_bounded(path, limit)


def _need(cond: bool, msg: str) -> None:
    if not cond:
        raise GoldenError(msg)


def _read_manifest(root: Path) -> dict[str, Any]:
    _need(root.exists(), f"golden set {root} does not exist")
    _need(root.is_dir(), f"golden set {root} is not a directory")
    path = root / MANIFEST
    _need(path.is_file(), f"{root} has no {MANIFEST}; write a golden set with 'jaxcalc export {root}'")
    try:
        manifest = loads(safety.read_bounded(path, safety.MAX_MANIFEST_BYTES, "manifest"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise GoldenError(f"{path}: not valid JSON ({exc})") from None
    _need(isinstance(manifest, dict), f"{path}: not a manifest object")
    _need(manifest.get("format") == FORMAT, f"{path}: format is not {FORMAT!r}")
    _need(isinstance(manifest.get("producer", {}), dict), f"{path}: 'producer' must be an object")
    version = manifest.get("format_version")
    _need(
        version == FORMAT_VERSION, f"{path}: format_version {version!r}; this jaxcalc reads {FORMAT_VERSION}"
    )
    cases = manifest.get("cases")
    _need(isinstance(cases, list) and len(cases) > 0, f"{path}: 'cases' must be a non-empty list")
    seen = set()
    for k, entry in enumerate(cases):
        _check_entry(entry, f"{path}: cases[{k}]")
        _need(entry["name"] not in seen, f"{path}: case {entry['name']!r} listed twice")
        seen.add(entry["name"])
    return manifest


def _check_entry(entry: Any, where: str) -> None:
    """The fields of one manifest entry that reading relies on, with file paths pinned under cases/."""
    _need(isinstance(entry, dict), f"{where}: not an object")
    name = entry.get("name")
    _need(isinstance(name, str) and bool(_NAME.match(name)), f"{where}: bad case name {name!r}")
    inputs = entry.get("inputs")
    _need(isinstance(inputs, list) and len(inputs) > 0, f"{where} ({name}): 'inputs' must be a list")
    for spec in inputs:
        ok = isinstance(spec, dict) and isinstance(spec.get("name"), str) and bool(_NAME.match(spec["name"]))
        ok = ok and isinstance(spec.get("shape"), list) and spec.get("dtype") in ("float64", "int64")
        _need(ok and isinstance(spec.get("differentiable"), bool), f"{where} ({name}): bad input {spec!r}")
    out = entry.get("output")
    _need(isinstance(out, dict) and isinstance(out.get("shape"), list), f"{where} ({name}): bad 'output'")
    tols = entry.get("tolerances")
    for dtype in ("float64", "float32"):
        tol = tols.get(dtype, {}).get("tolerance") if isinstance(tols, dict) else None
        ok = isinstance(tol, float) and 0.0 < tol < 1.0
        _need(ok, f"{where} ({name}): tolerances.{dtype}.tolerance must be a number in (0, 1)")
    files = entry.get("files")
    for ext in ("json", "npz"):
        f = files.get(ext) if isinstance(files, dict) else None
        ok = isinstance(f, dict) and f.get("path") == f"cases/{name}.{ext}"
        ok = ok and isinstance(f.get("sha256"), str) and len(f["sha256"]) == 64
        ok = ok and (f.get("bytes") is None or (type(f["bytes"]) is int and f["bytes"] >= 0))
        _need(ok, f"{where} ({name}): files.{ext} must give path cases/{name}.{ext} and its sha256")


def load_golden(root: str | Path, names: Sequence[str] | None = None) -> GoldenSet:
    """Read and check the golden set at ``root``; ``names`` selects cases (default: all).

    Every file listed in the manifest is checksummed, even for unselected cases, so any change
    to the set is caught; the selected cases are then decoded and checked against the manifest.
    Raises GoldenError (one line) on any problem, including a field of the wrong type.
    """
    try:
        return _load_golden(Path(root), names)
    except _MALFORMED as exc:
        # A manifest or case file whose fields have the wrong types, caught wherever it is noticed.
        msg = f"{type(exc).__name__}: {safety.one_line(exc, 200)}"
        raise GoldenError(f"{root}: malformed golden set ({msg})") from None


def _load_golden(root: Path, names: Sequence[str] | None) -> GoldenSet:
    manifest = _read_manifest(root)
    entries = {e["name"]: e for e in manifest["cases"]}
    for name in names or ():
        close = difflib.get_close_matches(name, entries, n=3, cutoff=0.5)
        hint = f"; did you mean {', '.join(close)}?" if close else f" (see {MANIFEST})"
        _need(name in entries, f"case {name!r} is not in the golden set {root}{hint}")
    for entry in entries.values():
        for f in entry["files"].values():
            _check_file(root, f)
    chosen = [n for n in entries if names is None or n in set(names)]
    return GoldenSet(root, manifest, {n: _load_case(root, entries[n]) for n in chosen})


def _check_file(root: Path, f: dict[str, Any]) -> None:
    """One listed file: present, a regular file, of the size the manifest gives, matching its sha256.

    The size is checked before reading (a huge file is refused unread); the hash reads in chunks.
    """
    path = root / f["path"]
    _need(path.is_file(), f"{root}: {f['path']} is missing")
    size = path.stat().st_size
    expected = f.get("bytes")
    if expected is not None:
        msg = f"{root}: {f['path']} is {size} bytes, the manifest says {expected} (changed)"
        _need(size == expected, msg)
    limit = safety.MAX_CASE_FILE_BYTES
    _need(size <= limit, f"{root}: {f['path']} is {size} bytes, over the {limit}-byte limit")
    try:
        digest = sha256_file(path, limit if expected is None else expected)
    except safety.LimitError:
        raise GoldenError(f"{root}: {f['path']} grew while it was read (changed)") from None
    _need(digest == f["sha256"], f"{root}: {f['path']} fails its sha256 check (changed)")


def _load_case(root: Path, entry: dict[str, Any]) -> GoldenCase:
    """Decode one case's JSON file, check it against the manifest entry and the npz twin."""
    name = entry["name"]
    where = f"cases/{name}.json"
    try:
        doc = loads(safety.read_bounded(root / where, safety.MAX_CASE_FILE_BYTES, "case file"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise GoldenError(f"{where}: not valid JSON ({exc})") from None
    _need(isinstance(doc, dict) and doc.get("case") == name, f"{where}: not the case file of {name!r}")
    for key in ("inputs", "cotangent", "tangents", "outputs"):
        _need(key in doc, f"{where}: missing {key!r}")
    _need(isinstance(doc["outputs"], dict) and "value" in doc["outputs"], f"{where}: missing outputs.value")
    try:
        arrays = {k: decode_array(v, f"{where}: {k}") for k, v in flatten(doc).items()}
    except ArrayFormatError as exc:
        raise GoldenError(str(exc)) from None

    specs = {i["name"]: i for i in entry["inputs"]}
    diff = [n for n, s in specs.items() if s["differentiable"]]
    out_shape = tuple(entry["output"]["shape"])
    expected = {f"inputs/{n}": (tuple(s["shape"]), s["dtype"]) for n, s in specs.items()}
    expected["cotangent"] = (out_shape, "float64")
    expected["outputs/value"] = (out_shape, "float64")
    for n in diff:
        expected[f"tangents/{n}"] = (tuple(specs[n]["shape"]), "float64")
        expected[f"outputs/vjp/{n}"] = (tuple(specs[n]["shape"]), "float64")
    for key, (shape, dtype) in expected.items():
        _need(key in arrays, f"{where}: missing {key}")
        got = arrays[key]
        _need(got.shape == shape, f"{where}: {key} has shape {list(got.shape)}, manifest says {list(shape)}")
        _need(got.dtype.name == dtype, f"{where}: {key} has dtype {got.dtype.name}, expected {dtype}")
    allowed = ("outputs/jvp", "outputs/hvp/", "outputs/jacobian/")
    extra = [k for k in arrays if k not in expected and not k.startswith(allowed)]
    _need(not extra, f"{where}: unexpected entries {extra}")

    npz_name = f"cases/{name}.npz"
    try:
        twin = load_npz(root / npz_name, f"{root / npz_name}")
    except ArrayFormatError as exc:
        raise GoldenError(str(exc)) from None
    _need(set(twin) == set(arrays), f"{npz_name}: holds {sorted(twin)}, the JSON file holds {sorted(arrays)}")
    for key, arr in arrays.items():
        same = twin[key].dtype == arr.dtype and np.array_equal(twin[key], arr)
        _need(same, f"{npz_name}: {key} differs from the JSON file")
    return GoldenCase(
        name=name,
        entry=entry,
        inputs={n: arrays[f"inputs/{n}"] for n in specs},
        cotangent=arrays["cotangent"],
        value=arrays["outputs/value"],
        vjp={n: arrays[f"outputs/vjp/{n}"] for n in diff},
        tolerances={d: entry["tolerances"][d]["tolerance"] for d in ("float64", "float32")},
    )
