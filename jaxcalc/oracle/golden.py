"""The golden set on disk: its layout, and reading it back with every byte and field checked.

Layout (format 2)::

    DIR/manifest.json         format, producer, and per instance: case, size, regime, dims,
                              inputs, output, per dtype column its tolerances, sha256s
    DIR/cases/<id>.json       inputs, cotangent, tangents, outputs (value, vjp, jvp, hvp,
                              jacobian), and per applicable low-precision column the float64
                              truth on the inputs rounded to it ("columns"); the rounded inputs
                              themselves are rederived by rounding, never stored
    DIR/cases/<id>.npz        the same arrays, keyed "inputs/x", "outputs/vjp/x",
                              "columns/bfloat16/outputs/vjp/x", ...

An instance id is ``<case>[@<size>][~<regime>]`` (golden and typical are left out).

:func:`load_golden` trusts nothing: the manifest must parse and name only files under
``cases/``, each file's sha256 must match, every array must decode and have the shape the
manifest gives, and the ``.npz`` must hold exactly the arrays of the ``.json``. A set of format
1 (one instance per case, two columns) is refused with a message saying how to re-export it.
"""

from __future__ import annotations

import difflib
import functools
import re
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from jaxcalc.numerics import LOW_PRECISION_DTYPES, np_dtype
from jaxcalc.oracle import safety
from jaxcalc.oracle.arrays import ArrayFormatError, decode_array, load_npz, loads

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "MANIFEST",
    "GoldenError",
    "Column",
    "GoldenCase",
    "GoldenSet",
    "flatten",
    "sha256_file",
    "load_golden",
    "read_manifest",
    "select_entries",
]

FORMAT = "jaxcalc-golden"
FORMAT_VERSION = 2
MANIFEST = "manifest.json"
# What reading a field of the wrong type raises somewhere below; it becomes one GoldenError line.
_MALFORMED = (TypeError, AttributeError, KeyError, IndexError, ValueError, OverflowError, RecursionError)
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
# an instance id: case[.stage][@size or @DIM=N,...][~regime]
_ID = re.compile(
    r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)?(@([a-z]+|[A-Za-z_][A-Za-z0-9_]*=[0-9]+(,[A-Za-z_][A-Za-z0-9_]*=[0-9]+)*))?(~[a-z]+)?$"
)
_INPUT_DTYPES = ("float64", "int64", "bool")


class GoldenError(Exception):
    """A golden set that is missing, tampered with or malformed; the message is one line."""


class Column(NamedTuple):
    """One dtype column of an instance: whether it applies, why not, and per output
    ('value', 'vjp/x') its (tolerance, floor). Low-precision columns carry their inputs and
    cotangent (the instance's, rounded to the dtype, in the dtype) and the truth on them."""

    name: str
    applicable: bool
    reason: str
    outputs: dict[str, tuple[float, float]]
    inputs: dict[str, np.ndarray] | None = None
    cotangent: np.ndarray | None = None
    value: np.ndarray | None = None
    vjp: dict[str, np.ndarray] | None = None


class GoldenCase(NamedTuple):
    """One instance of a golden set, decoded and checked: its manifest entry and its arrays."""

    name: str  # the instance id
    entry: dict[str, Any]
    inputs: dict[str, np.ndarray]
    cotangent: np.ndarray
    value: np.ndarray
    vjp: dict[str, np.ndarray]
    columns: dict[str, Column]

    @property
    def case(self) -> str:
        """The case this instance belongs to (what an implementation is asked for)."""
        return self.entry["case"]

    @property
    def diff_names(self) -> tuple[str, ...]:
        return tuple(i["name"] for i in self.entry["inputs"] if i["differentiable"])

    @property
    def stage_of(self) -> str | None:
        """The composite instance this is a stage of, or None."""
        return self.entry.get("stage_of")

    @property
    def tolerances(self) -> dict[str, float]:
        """Per column the largest output tolerance (a summary; verdicts use each output's own)."""
        return {c: max((t for t, _ in col.outputs.values()), default=0.0) for c, col in self.columns.items()}

    def shapes(self) -> str:
        """'x (3, 7) -> (3,)': the instance's shapes, for report rows."""
        ins = ", ".join(f"{i['name']} {tuple(i['shape'])}" for i in self.entry["inputs"])
        return f"{ins} -> {tuple(self.entry['output']['shape'])}"


class GoldenSet(NamedTuple):
    """A checked golden set: its manifest and the selected instances, in manifest order."""

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

    walk("", {k: doc[k] for k in ("inputs", "cotangent", "tangents", "outputs", "columns") if k in doc})
    return out


def sha256_file(path: Path, limit: int = safety.MAX_CASE_FILE_BYTES) -> str:
    """Hex sha256 of a file's bytes, read in chunks; safety.LimitError past ``limit`` bytes."""
    return safety.sha256_bounded(path, limit)


def _one_line(fn: Callable) -> Callable:
    """Turn a field of the wrong type, noticed anywhere inside ``fn(root, ...)``, into a GoldenError."""

    @functools.wraps(fn)
    def wrapper(root: str | Path, *args: Any) -> Any:
        try:
            return fn(root, *args)
        except _MALFORMED as exc:
            msg = f"{type(exc).__name__}: {safety.one_line(exc, 200)}"
            raise GoldenError(f"{root}: malformed golden set ({msg})") from None

    return wrapper


def _need(cond: bool, msg: str) -> None:
    if not cond:
        raise GoldenError(msg)


@_one_line
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
        version != 1,
        f"{path}: format_version 1 (one tiny instance per case, float64 and float32 only) is no longer "
        f"read; write a format {FORMAT_VERSION} set with 'jaxcalc export {root} --force'",
    )
    _need(
        version == FORMAT_VERSION, f"{path}: format_version {version!r}; this jaxcalc reads {FORMAT_VERSION}"
    )
    columns = manifest.get("columns")
    _need(
        isinstance(columns, list) and all(isinstance(c, str) for c in columns) and columns,
        f"{path}: 'columns' must be a non-empty list of dtype names",
    )
    cases = manifest.get("instances")
    _need(isinstance(cases, list) and len(cases) > 0, f"{path}: 'instances' must be a non-empty list")
    seen = set()
    for k, entry in enumerate(cases):
        _check_entry(entry, f"{path}: instances[{k}]", columns)
        _need(entry["id"] not in seen, f"{path}: instance {entry['id']!r} listed twice")
        seen.add(entry["id"])
    return manifest


def _is_tol(v: Any) -> bool:
    return isinstance(v, float) and 0.0 < v < 1.0


def _check_entry(entry: Any, where: str, columns: list[str]) -> None:
    """The fields of one manifest entry that reading relies on, with file paths pinned under cases/."""
    _need(isinstance(entry, dict), f"{where}: not an object")
    iid = entry.get("id")
    _need(isinstance(iid, str) and bool(_ID.fullmatch(iid)), f"{where}: bad instance id {iid!r}")
    name = entry.get("case")
    _need(isinstance(name, str) and bool(_NAME.fullmatch(name)), f"{where} ({iid}): bad case name {name!r}")
    inputs = entry.get("inputs")
    _need(isinstance(inputs, list) and len(inputs) > 0, f"{where} ({iid}): 'inputs' must be a list")
    for spec in inputs:
        ok = isinstance(spec, dict) and isinstance(spec.get("name"), str) and bool(_NAME.fullmatch(spec["name"]))
        ok = ok and isinstance(spec.get("shape"), list) and spec.get("dtype") in _INPUT_DTYPES
        _need(ok and isinstance(spec.get("differentiable"), bool), f"{where} ({iid}): bad input {spec!r}")
    out = entry.get("output")
    _need(isinstance(out, dict) and isinstance(out.get("shape"), list), f"{where} ({iid}): bad 'output'")
    keys = ["value"] + [f"vjp/{s['name']}" for s in inputs if s["differentiable"]]
    tols = entry.get("tolerances")
    _need(isinstance(tols, dict), f"{where} ({iid}): 'tolerances' must be an object")
    for dtype in columns:
        col = tols.get(dtype)
        _need(
            isinstance(col, dict) and isinstance(col.get("applicable"), bool),
            f"{where} ({iid}): tolerances.{dtype} must say whether it applies",
        )
        if not col["applicable"]:
            _need(
                isinstance(col.get("reason"), str) and col["reason"] != "",
                f"{where} ({iid}): tolerances.{dtype} is not applicable but gives no reason",
            )
            continue
        outs = col.get("outputs")
        _need(
            isinstance(outs, dict) and set(outs) == set(keys),
            f"{where} ({iid}): tolerances.{dtype}.outputs must give {keys}",
        )
        for key in keys:
            o = outs[key]
            ok = isinstance(o, dict) and _is_tol(o.get("tolerance")) and isinstance(o.get("floor"), float)
            _need(
                ok and o["floor"] >= 0.0,
                f"{where} ({iid}): tolerances.{dtype}.outputs.{key} needs a tolerance in (0, 1) and a floor >= 0",
            )
    files = entry.get("files")
    for ext in ("json", "npz"):
        f = files.get(ext) if isinstance(files, dict) else None
        ok = isinstance(f, dict) and f.get("path") == f"cases/{iid}.{ext}"
        ok = ok and isinstance(f.get("sha256"), str) and len(f["sha256"]) == 64
        ok = ok and (f.get("bytes") is None or (type(f["bytes"]) is int and f["bytes"] >= 0))
        _need(ok, f"{where} ({iid}): files.{ext} must give path cases/{iid}.{ext} and its sha256")


def read_manifest(root: str | Path) -> dict[str, Any]:
    """The checked manifest of the golden set at ``root`` (no case file is read); GoldenError if bad."""
    return _read_manifest(Path(root))


def select_entries(
    manifest: Mapping[str, Any],
    *,
    cases: Sequence[str] | None = None,
    sizes: Sequence[str] | None = None,
    regimes: Sequence[str] | None = None,
) -> list[str]:
    """The ids of the manifest's instances that the selectors keep, in manifest order.

    ``cases`` holds case names or instance ids; ``None`` keeps everything. A name, size or regime
    the set does not hold, or an empty selection, raises GoldenError naming what the set holds.
    """
    entries = manifest["instances"]
    ids = [e["id"] for e in entries]
    names = {e["case"] for e in entries}
    for kind, given, held in (
        ("size", sizes, sorted({e["size"] for e in entries})),
        ("regime", regimes, sorted({e["regime"] for e in entries})),
    ):
        for g in given or ():
            close = difflib.get_close_matches(g, held, n=1)
            hint = f"; did you mean {close[0]}?" if close else ""
            _need(g in held, f"this golden set holds no {kind} {g!r}{hint} (it holds {', '.join(held)})")
    for item in cases or ():
        if item not in ids and item not in names:
            valid = sorted(names | set(ids))
            close = difflib.get_close_matches(item, valid, n=3, cutoff=0.6)
            hint = f"; did you mean {', '.join(close)}?" if close else ""
            raise GoldenError(f"{item!r} is neither a case nor an instance of this golden set{hint}")
    chosen = [
        e["id"]
        for e in entries
        if (not cases or e["id"] in cases or e["case"] in cases)
        and (not sizes or e["size"] in sizes)
        and (not regimes or e["regime"] in regimes)
    ]
    _need(bool(chosen), "the selection holds no instance of this golden set")
    return chosen


@_one_line
def load_golden(root: str | Path, names: Sequence[str] | None = None) -> GoldenSet:
    """Read and check the golden set at ``root``; ``names`` selects instances by id (default: all).

    Every file listed in the manifest is checksummed, even for unselected instances, so any
    change to the set is caught; the selected instances are then decoded and checked against the
    manifest. Raises GoldenError (one line) on any problem, a field of the wrong type included.
    """
    root = Path(root)
    manifest = _read_manifest(root)
    entries = {e["id"]: e for e in manifest["instances"]}
    for name in names or ():
        if name not in entries:
            close = difflib.get_close_matches(name, entries, n=3, cutoff=0.6)
            hint = f"; did you mean {', '.join(close)}?" if close else f" (see {MANIFEST})"
            raise GoldenError(f"instance {name!r} is not in the golden set {root}{hint}")
    for entry in entries.values():
        for f in entry["files"].values():
            _check_file(root, f)
    wanted = None if names is None else set(names)
    chosen = [n for n in entries if wanted is None or n in wanted]
    columns = manifest["columns"]
    return GoldenSet(root, manifest, {n: _load_case(root, entries[n], columns) for n in chosen})


def _check_file(root: Path, f: dict[str, Any]) -> None:
    """One listed file: present, a regular file, of the size the manifest gives, matching its sha256.

    The size is checked before reading (a huge file is refused unread); the hash reads in chunks.
    """
    path = root / f["path"]
    # a link (even to a good copy) or a FIFO is refused unread: a golden set holds its own files
    _need(not path.is_symlink(), f"{root}: {f['path']} is a symbolic link, not the file itself")
    _need(path.exists(), f"{root}: {f['path']} is missing")
    _need(path.is_file(), f"{root}: {f['path']} is not a regular file")
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


def _round(a: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """A float array rounded to ``dtype`` (round to nearest even), in that dtype; others unchanged."""
    if a.dtype.kind != "f":
        return a
    with np.errstate(over="ignore"):
        return a.astype(dtype)


def _load_case(root: Path, entry: dict[str, Any], columns: list[str]) -> GoldenCase:
    """Decode one instance's JSON file, check it against the manifest entry and the npz twin."""
    iid = entry["id"]
    where = f"cases/{iid}.json"
    try:
        doc = loads(safety.read_bounded(root / where, safety.MAX_CASE_FILE_BYTES, "case file"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise GoldenError(f"{where}: not valid JSON ({exc})") from None
    _need(isinstance(doc, dict) and doc.get("instance") == iid, f"{where}: not the case file of {iid!r}")
    for key in ("inputs", "cotangent", "outputs"):
        _need(key in doc, f"{where}: missing {key!r}")
    _need(isinstance(doc["outputs"], dict) and "value" in doc["outputs"], f"{where}: missing outputs.value")
    try:
        arrays = {k: decode_array(v, f"{where}: {k}", allow_nonfinite="inf") for k, v in flatten(doc).items()}
    except ArrayFormatError as exc:
        raise GoldenError(str(exc)) from None

    specs = {i["name"]: i for i in entry["inputs"]}
    diff = [n for n, s in specs.items() if s["differentiable"]]
    out_shape = tuple(entry["output"]["shape"])
    low = [c for c in columns if entry["tolerances"][c]["applicable"] and c in LOW_PRECISION_DTYPES]
    expected: dict[str, tuple[tuple[int, ...], str]] = {}
    for n, s in specs.items():
        expected[f"inputs/{n}"] = (tuple(s["shape"]), s["dtype"])
    expected["cotangent"] = (out_shape, "float64")
    for prefix in ["", *(f"columns/{c}/" for c in low)]:
        expected[f"{prefix}outputs/value"] = (out_shape, "float64")
        for n in diff:
            expected[f"{prefix}outputs/vjp/{n}"] = (tuple(specs[n]["shape"]), "float64")
    if entry.get("size") == "golden":
        for n in diff:
            expected[f"tangents/{n}"] = (tuple(specs[n]["shape"]), "float64")
    for key, (shape, dtype) in expected.items():
        _need(key in arrays, f"{where}: missing {key}")
        got = arrays[key]
        _need(got.shape == shape, f"{where}: {key} has shape {list(got.shape)}, manifest says {list(shape)}")
        _need(got.dtype.name == dtype, f"{where}: {key} has dtype {got.dtype.name}, expected {dtype}")
    for key in ("cotangent", *(k for k in expected if k.startswith("inputs/"))):
        a = arrays[key]
        if a.dtype.kind == "f" and np.isposinf(a).any():
            raise GoldenError(f"{where}: {key} holds +inf; inputs may only be masked with -inf")
    allowed = ("outputs/jvp", "outputs/hvp/", "outputs/jacobian/")
    extra = [k for k in arrays if k not in expected and not k.startswith(allowed)]
    _need(not extra, f"{where}: unexpected entries {extra}")

    npz_name = f"cases/{iid}.npz"
    try:
        twin = load_npz(root / npz_name, f"{root / npz_name}")
    except ArrayFormatError as exc:
        raise GoldenError(str(exc)) from None
    _need(set(twin) == set(arrays), f"{npz_name}: holds {sorted(twin)}, the JSON file holds {sorted(arrays)}")
    for key, arr in arrays.items():
        same = twin[key].dtype == arr.dtype and np.array_equal(twin[key], arr, equal_nan=False)
        _need(same, f"{npz_name}: {key} differs from the JSON file")

    cols = {}
    for c in columns:
        t = entry["tolerances"][c]
        if not t["applicable"]:
            cols[c] = Column(c, False, t["reason"], {})
            continue
        outs = {k: (o["tolerance"], o["floor"]) for k, o in t["outputs"].items()}
        if c in low:
            p = f"columns/{c}/"
            dt = np_dtype(c)
            cols[c] = Column(
                c,
                True,
                "",
                outs,
                inputs={n: _round(arrays[f"inputs/{n}"], dt) for n in specs},
                cotangent=_round(arrays["cotangent"], dt),
                value=arrays[f"{p}outputs/value"],
                vjp={n: arrays[f"{p}outputs/vjp/{n}"] for n in diff},
            )
        else:
            cols[c] = Column(c, True, "", outs)
    return GoldenCase(
        name=iid,
        entry=entry,
        inputs={n: arrays[f"inputs/{n}"] for n in specs},
        cotangent=arrays["cotangent"],
        value=arrays["outputs/value"],
        vjp={n: arrays[f"outputs/vjp/{n}"] for n in diff},
        columns=cols,
    )
