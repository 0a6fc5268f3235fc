"""The golden-set array formats: JSON arrays and NumPy ``.npz`` archives, written and read strictly.

A JSON array is ``{"dtype": "float64", "shape": [4, 7], "data": [...]}``: ``data`` is the flat
row-major list of ``prod(shape)`` numbers (a scalar has shape ``[]`` and data ``[v]``). Floats
are written with Python's shortest round-tripping repr, so float64 (and float32) values come back
bit for bit. Non-finite floats, which JSON has no literal for, are the strings ``"inf"``,
``"-inf"`` and ``"nan"`` (a -inf mask entry, an infinite truth); golden files hold infinities
only where the truth is infinite and never NaN. Masks are ``"bool"`` arrays of ``true``/``false``;
``"bfloat16"`` arrays (replies in the bfloat16 column) hold bfloat16 values written as floats.
Decoding refuses anything that is not exactly this format, with a one-line reason.

An ``.npz`` is written by hand with ``zipfile`` (stored members, fixed order, fixed timestamps)
so that the same arrays always give the same bytes; it is read with ``allow_pickle=False`` and
object arrays are refused, so reading a golden set never unpickles anything.
"""

from __future__ import annotations

import io
import json
import math
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

if __package__:
    from jaxcalc.oracle import safety
else:  # loaded by file from worker.py, outside the package, which loaded safety.py first
    import _jaxcalc_safety as safety  # type: ignore[no-redef]

MAX_ARRAY_ELEMENTS, MAX_DIMS = safety.MAX_ARRAY_ELEMENTS, safety.MAX_DIMS
MAX_NPZ_MEMBER, MAX_NPZ_TOTAL, loads_bounded = (
    safety.MAX_NPZ_MEMBER,
    safety.MAX_NPZ_TOTAL,
    safety.loads_bounded,
)

__all__ = [
    "ArrayFormatError",
    "ARRAY_DTYPES",
    "as_numpy",
    "encode_array",
    "decode_array",
    "dumps",
    "loads",
    "npz_bytes",
    "load_npz",
]

# dtypes an array may carry in either format; golden sets use float64 and int64 only.
_FLOAT = ("float64", "float32", "float16", "bfloat16")  # numerics.COLUMNS' names (tests/test_schemas.py)
ARRAY_DTYPES = (*_FLOAT, "int64", "int32", "bool")
_NONFINITE = {"inf": math.inf, "-inf": -math.inf, "nan": math.nan}
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1
_ZIP_DATE = (1980, 1, 1, 0, 0, 0)  # earliest date a zip can hold; no clock enters the bytes


class ArrayFormatError(ValueError):
    """A value is not an array in the jaxcalc format; the message says what and where."""


def as_numpy(x: Any) -> np.ndarray:
    """An implementation's array as NumPy, exactly: a PyTorch tensor (detached, on the CPU), a JAX
    array or anything ``np.asarray`` takes. Floats narrower than float16 or not IEEE (bfloat16 from
    ml_dtypes or torch, float8) become float32, which holds each of their values exactly."""
    if hasattr(x, "detach") and hasattr(x, "cpu"):  # a torch.Tensor, without importing torch
        x = x.detach().cpu()
        if str(x.dtype) in ("torch.bfloat16", "torch.float8_e4m3fn", "torch.float8_e5m2"):
            x = x.float()
    arr = np.asarray(x)
    if arr.dtype.kind == "V" and arr.dtype.name.startswith(("bfloat16", "float8", "float6", "float4")):
        arr = arr.astype(np.float32)  # ml_dtypes: every value exact in float32
    return arr


def encode_array(a: Any) -> dict[str, Any]:
    """Encode a NumPy-convertible array as ``{"dtype", "shape", "data"}`` (data flat, row-major)."""
    arr = np.asarray(a)
    name = arr.dtype.name
    if name not in ARRAY_DTYPES:
        raise ArrayFormatError(f"cannot encode dtype {name!r}; supported: {', '.join(ARRAY_DTYPES)}")
    flat = arr.reshape(-1)
    if name in _FLOAT:
        data = [_float_json(float(v)) for v in flat]
    elif name == "bool":
        data = [bool(v) for v in flat]
    else:
        data = [int(v) for v in flat]
    return {"dtype": name, "shape": [int(s) for s in arr.shape], "data": data}


def _float_json(v: float) -> float | str:
    """A float for JSON: itself when finite, else "inf", "-inf" or "nan"."""
    if math.isfinite(v):
        return v
    return "nan" if math.isnan(v) else ("inf" if v > 0 else "-inf")


def decode_array(
    obj: Any,
    where: str = "array",
    *,
    dtypes: tuple[str, ...] = ARRAY_DTYPES,
    allow_nonfinite: bool = False,
) -> np.ndarray:
    """Decode one JSON array, checking every field; raise ArrayFormatError naming ``where`` otherwise.

    ``dtypes`` limits the accepted dtypes. With ``allow_nonfinite`` a float array may hold NaN,
    +-Infinity or null (read as NaN), so a reply carrying them is compared and reported rather
    than refused; golden files never do.
    """
    if not isinstance(obj, Mapping):
        raise ArrayFormatError(f"{where}: expected an array object {{dtype, shape, data}}, got {_kind(obj)}")
    keys = set(obj)
    if keys != {"dtype", "shape", "data"}:
        missing = sorted({"dtype", "shape", "data"} - keys)
        extra = sorted(keys - {"dtype", "shape", "data"})
        detail = f"missing {missing}" if missing else f"unexpected {extra}"
        raise ArrayFormatError(f"{where}: array object must have exactly dtype, shape, data ({detail})")
    dtype, shape, data = obj["dtype"], obj["shape"], obj["data"]
    if not isinstance(dtype, str) or dtype not in dtypes:
        raise ArrayFormatError(f"{where}: dtype {dtype!r} is not one of {', '.join(dtypes)}")
    if not isinstance(shape, list) or not all(_is_int(s) and s >= 0 for s in shape):
        raise ArrayFormatError(f"{where}: shape must be a list of non-negative integers, got {_short(shape)}")
    _check_shape(shape, where)
    if not isinstance(data, list):
        raise ArrayFormatError(f"{where}: data must be a flat list of numbers, got {_kind(data)}")
    size = math.prod(shape)
    if len(data) != size:
        raise ArrayFormatError(f"{where}: shape {shape} needs {size} values, data has {len(data)}")
    if dtype in _FLOAT:
        values = [_float_item(v, where, k, allow_nonfinite) for k, v in enumerate(data)]
    elif dtype == "bool":
        values = [_bool_item(v, where, k) for k, v in enumerate(data)]
    else:
        values = [_int_item(v, where, k) for k, v in enumerate(data)]
    if dtype == "bfloat16":
        import ml_dtypes

        as32 = np.array(values, dtype=np.float32)
        out = as32.astype(ml_dtypes.bfloat16)
        if not np.array_equal(out.astype(np.float32), as32, equal_nan=True):
            k = int(np.flatnonzero(out.astype(np.float32) != as32)[0])
            raise ArrayFormatError(f"{where}: data[{k}] = {values[k]!r} is not a bfloat16 value")
        return out.reshape(shape)
    return np.array(values, dtype=np.dtype(dtype)).reshape(shape)


def _check_shape(shape: Any, where: str) -> None:
    """Refuse a shape beyond MAX_DIMS dimensions or MAX_ARRAY_ELEMENTS elements (safety), unallocated."""
    if len(shape) > safety.MAX_DIMS:
        raise ArrayFormatError(f"{where}: {len(shape)} dimensions; at most {safety.MAX_DIMS} are allowed")
    if any(s > safety.MAX_ARRAY_ELEMENTS for s in shape) or math.prod(shape) > safety.MAX_ARRAY_ELEMENTS:
        raise ArrayFormatError(
            f"{where}: shape {_short(shape)} has more than {safety.MAX_ARRAY_ELEMENTS} elements"
        )


def _short(v: Any, limit: int = 80) -> str:
    """``repr(v)`` cut to ``limit`` characters, for messages about values of any size."""
    text = repr(v)
    return text if len(text) <= limit else text[:limit] + "..."


def _bool_item(v: Any, where: str, k: int) -> bool:
    if not isinstance(v, bool):
        raise ArrayFormatError(f"{where}: data[{k}] is {_kind(v)}, not true or false")
    return v


def _kind(v: Any) -> str:
    """A short description of a JSON value, for messages."""
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean"}.get(
        type(v),
        "null"
        if v is None
        else f"the number {_short(v, 40)}"
        if isinstance(v, int | float)
        else type(v).__name__,
    )


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _float_item(v: Any, where: str, k: int, allow_nonfinite: bool | str) -> float:
    """One float of ``data``. ``allow_nonfinite``: False (finite only), "inf" (the strings "inf"
    and "-inf", as golden truths may hold), or True (also NaN, null and Infinity literals, as a
    reply may hold; they are then compared and reported)."""
    if isinstance(v, str) and v in _NONFINITE and allow_nonfinite:
        if v == "nan" and allow_nonfinite == "inf":
            raise ArrayFormatError(f"{where}: data[{k}] is NaN, which a golden truth never is")
        return _NONFINITE[v]
    if v is None and allow_nonfinite is True:
        return math.nan
    if not isinstance(v, int | float) or isinstance(v, bool):
        raise ArrayFormatError(f"{where}: data[{k}] is {_kind(v)}, not a number")
    try:
        x = float(v)
    except OverflowError:  # an integer too large for any float
        raise ArrayFormatError(f"{where}: data[{k}] is {_kind(v)}, too large for a float") from None
    if allow_nonfinite is not True and not math.isfinite(x):
        raise ArrayFormatError(f"{where}: data[{k}] is {x!r}, not a finite number")
    return x


def _int_item(v: Any, where: str, k: int) -> int:
    if not _is_int(v) or not _INT64_MIN <= v <= _INT64_MAX:
        raise ArrayFormatError(f"{where}: data[{k}] is {_kind(v)}, not a 64-bit integer")
    return v


def dumps(obj: Any, *, indent: int | None = None) -> str:
    """Canonical JSON text: sorted keys, no NaN, shortest round-tripping floats, a final newline."""
    sep = (",", ": ") if indent is not None else (",", ":")
    return json.dumps(obj, sort_keys=True, indent=indent, separators=sep, allow_nan=False) + "\n"


def _no_constant(name: str) -> float:
    raise ValueError(f"{name} is not allowed here")


def loads(text: str | bytes, *, allow_nonfinite: bool = False) -> Any:
    """Parse JSON text; NaN and Infinity literals are refused unless ``allow_nonfinite``.

    Nesting deeper than safety.MAX_JSON_DEPTH is refused (a LimitError, which is a ValueError).
    """
    if allow_nonfinite:
        return safety.loads_bounded(text)
    return safety.loads_bounded(text, parse_constant=_no_constant)


def npz_bytes(arrays: Mapping[str, np.ndarray]) -> bytes:
    """The bytes of an ``.npz`` holding ``arrays``: members sorted by name, stored, dated 1980-01-01.

    ``np.savez`` stamps members with the current time; this writer does not, so the same
    arrays always give the same bytes. ``np.load(..., allow_pickle=False)`` reads the result.
    """
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_STORED) as zf:
        for name in sorted(arrays):
            arr = np.asarray(arrays[name])
            if arr.dtype.name not in ARRAY_DTYPES:
                raise ArrayFormatError(f"{name}: cannot store dtype {arr.dtype.name!r} in a golden npz")
            member = io.BytesIO()
            np.lib.format.write_array(member, arr.copy(order="C"), allow_pickle=False)
            info = zipfile.ZipInfo(f"{name}.npy", date_time=_ZIP_DATE)
            info.compress_type = zipfile.ZIP_STORED
            info.external_attr = 0o644 << 16
            zf.writestr(info, member.getvalue())
    return buf.getvalue()


def load_npz(path: str | Path, where: str | None = None) -> dict[str, np.ndarray]:
    """Read an ``.npz`` without ever unpickling: every member must be a plain numeric ``.npy``.

    Raises ArrayFormatError, its message starting with ``where`` (default: the path), for a file
    that is not a zip, a member that is not ``.npy``, a member holding pickled (object) data, a
    dtype outside ARRAY_DTYPES, or sizes beyond the limits: safety.MAX_NPZ_MEMBER per member and
    safety.MAX_NPZ_TOTAL for all members, read from the zip directory before anything is inflated.
    """
    path = Path(path)
    where = str(path) if where is None else where
    if not zipfile.is_zipfile(path):
        raise ArrayFormatError(f"{where}: not an npz (zip) archive")
    out: dict[str, np.ndarray] = {}
    try:
        with zipfile.ZipFile(path) as zf:
            infos = zf.infolist()
            total = sum(info.file_size for info in infos)
            if total > safety.MAX_NPZ_TOTAL:
                raise ArrayFormatError(
                    f"{where}: members hold {total} bytes, over the {safety.MAX_NPZ_TOTAL} limit"
                )
            for info in infos:
                if not info.filename.endswith(".npy") or info.is_dir():
                    raise ArrayFormatError(f"{where}: member {info.filename!r} is not an .npy array")
                if info.file_size > safety.MAX_NPZ_MEMBER:
                    raise ArrayFormatError(
                        f"{where}: member {info.filename!r} is over the {safety.MAX_NPZ_MEMBER}-byte limit"
                    )
                with zf.open(info) as f:
                    arr = _read_npy(f, f"{where}:{info.filename}", info.file_size)
                out[info.filename[: -len(".npy")]] = arr
    except (zipfile.BadZipFile, zipfile.LargeZipFile, NotImplementedError, OSError, EOFError) as exc:
        raise ArrayFormatError(f"{where}: unreadable npz ({exc})") from None
    return out


def _read_npy(f: Any, where: str, size: int) -> np.ndarray:
    """One ``.npy`` member, header checked before any data is read; pickles are refused unread."""
    fmt = np.lib.format
    try:
        version = fmt.read_magic(f)
        if version == (1, 0):
            shape, fortran, dtype = fmt.read_array_header_1_0(f)
        elif version == (2, 0):
            shape, fortran, dtype = fmt.read_array_header_2_0(f)
        else:
            raise ValueError(f"unsupported .npy version {version}")
    except (ValueError, TypeError, OSError, EOFError, SyntaxError, MemoryError, RecursionError) as exc:
        raise ArrayFormatError(f"{where}: bad .npy header ({_short(str(exc))})") from None
    if dtype.hasobject:
        raise ArrayFormatError(f"{where}: holds pickled objects; refused (golden arrays are numeric)")
    if dtype.name not in ARRAY_DTYPES or fortran:
        raise ArrayFormatError(f"{where}: dtype {dtype.name!r} (fortran={fortran}) is not a golden array")
    if not all(_is_int(d) and d >= 0 for d in shape):
        raise ArrayFormatError(f"{where}: bad .npy header (shape {_short(shape)})")
    _check_shape(shape, where)
    count = math.prod(shape)
    if count * dtype.itemsize > size:
        raise ArrayFormatError(f"{where}: header claims {count} elements, the member holds {size} bytes")
    raw = f.read(count * dtype.itemsize)
    if len(raw) != count * dtype.itemsize:
        raise ArrayFormatError(f"{where}: truncated data")
    return np.frombuffer(raw, dtype=dtype).reshape(shape).copy()
