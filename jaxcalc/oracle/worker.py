"""Run a Python implementation module behind the JSON Lines protocol (what ``verify --impl`` starts).

``python path/to/jaxcalc/oracle/worker.py MODULE_OR_FILE`` imports the module, prints
``{"ready": true}`` (or ``{"fatal": "..."}`` and exits 3 if it does not import), then answers
each request line by calling the module's function named after the case:
``fn(inputs: dict[str, np.ndarray], cotangent: np.ndarray) -> (value, {name: vjp})``.
A missing function is answered ``unsupported``; an exception becomes an ``error`` reply.

Running the module in its own process is what lets ``verify`` enforce ``--timeout`` on it and
survive it crashing. The module's own prints go to stderr so they cannot corrupt the replies.
Arrays may come back as NumPy arrays, anything ``np.asarray`` takes, or tensors with
``.detach()`` (PyTorch).
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import os
import sys
import types
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TextIO

import numpy as np

if __package__:
    from jaxcalc.oracle.arrays import ArrayFormatError, as_numpy, decode_array, encode_array
    from jaxcalc.oracle.safety import MAX_REPLY_NUMBERS, LimitError, loads_bounded, one_line
else:
    # Started by path (as verify does): load the sibling modules by file, so the worker does not
    # import the jaxcalc package, and JAX with it, unless the implementation itself does; and put
    # the working directory first on sys.path in place of this folder, as ``python -m`` would.
    sys.path[0] = os.getcwd()

    def _sibling(file: str, name: str) -> types.ModuleType:
        spec = importlib.util.spec_from_file_location(name, Path(__file__).with_name(file))
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
        return module

    _safety = _sibling("safety.py", "_jaxcalc_safety")
    _arrays = _sibling("arrays.py", "_jaxcalc_arrays")
    ArrayFormatError, as_numpy, decode_array, encode_array = (
        _arrays.ArrayFormatError,
        _arrays.as_numpy,
        _arrays.decode_array,
        _arrays.encode_array,
    )
    LimitError, loads_bounded, one_line = _safety.LimitError, _safety.loads_bounded, _safety.one_line
    MAX_REPLY_NUMBERS = _safety.MAX_REPLY_NUMBERS

__all__ = ["load_module", "answer", "main"]


def load_module(target: str) -> types.ModuleType:
    """Import ``target``: a path ending in .py (its folder goes on sys.path) or a module name."""
    if target.endswith(".py"):
        path = Path(target).resolve()
        sys.path.insert(0, str(path.parent))
        spec = importlib.util.spec_from_file_location(path.stem, path)
        if spec is None or spec.loader is None:
            raise ImportError(f"cannot load {target}")
        module = importlib.util.module_from_spec(spec)
        sys.modules[path.stem] = module
        spec.loader.exec_module(module)
        return module
    return importlib.import_module(target)


def _line(exc: BaseException) -> str:
    """An exception's message on one line, control characters escaped."""
    return one_line(" ".join(str(exc).split()), 500)


def _to_numpy(x: Any, what: str) -> np.ndarray:
    arr = as_numpy(x)  # torch tensors (on any device), JAX arrays; bfloat16 widened to float32
    if arr.dtype == object or arr.dtype.kind not in "biuf":
        raise TypeError(f"{what} is not a real numeric array (dtype {arr.dtype})")
    if arr.dtype.kind == "f" and arr.dtype.name not in ("float16", "float32", "float64"):
        # Wider than float64 (np.longdouble): round to float64, the nearest format the protocol
        # carries. Narrower (bfloat16, float8): widen to float32, which holds every value exactly.
        arr = arr.astype(np.float64 if arr.dtype.itemsize > 8 else np.float32)
    if arr.dtype.kind == "b":
        raise TypeError(f"{what} is a boolean array, not numbers")
    return arr


def answer(module: types.ModuleType, request: Any) -> dict[str, Any]:
    """The reply to one request (never raises)."""
    rid = request.get("id") if isinstance(request, dict) else None
    try:
        case = request["case"]
        fn = getattr(module, case, None) if isinstance(case, str) else None
        if not callable(fn):
            return {"id": rid, "error": "unsupported"}
        # inputs may hold -inf (masks), written as the string "-inf"
        inputs = {k: decode_array(v, f"inputs.{k}", allow_nonfinite=True) for k, v in request["inputs"].items()}
        cotangent = decode_array(request["cotangent"], "cotangent", allow_nonfinite=True)
    except (KeyError, TypeError, AttributeError, ArrayFormatError) as exc:
        return {"id": rid, "error": f"bad request: {exc}"}
    try:
        result = fn(inputs, cotangent)
    except Exception as exc:
        return {"id": rid, "error": f"{case} raised {type(exc).__name__}: {_line(exc)}"}
    except SystemExit as exc:
        return {"id": rid, "error": f"{case} called sys.exit({exc.code!r})"}
    try:
        if not (isinstance(result, tuple | list) and len(result) == 2 and isinstance(result[1], Mapping)):
            raise TypeError(f"returned {type(result).__name__}, expected a pair (value, {{name: vjp}})")
        arrays = {"value": _to_numpy(result[0], "value")}
        arrays.update({f"vjp[{k!r}]": _to_numpy(v, f"vjp[{k!r}]") for k, v in result[1].items()})
        # counted before any is encoded: a huge reply is refused, never serialised
        numbers = sum(int(a.size) for a in arrays.values())
        if numbers > MAX_REPLY_NUMBERS:
            raise ValueError(f"the reply holds {numbers} numbers, over the limit of {MAX_REPLY_NUMBERS}")
        value = encode_array(arrays.pop("value"))
        vjp = {str(k): encode_array(a) for k, a in zip(result[1], arrays.values(), strict=True)}
    except (TypeError, ValueError, ArrayFormatError) as exc:
        return {"id": rid, "error": f"{case}: {exc}"}
    return {"id": rid, "value": value, "vjp": vjp}


def _send(out: TextIO, obj: dict[str, Any]) -> None:
    out.write(json.dumps(obj, separators=(",", ":")) + "\n")  # NaN/Infinity pass through
    out.flush()


def main(argv: list[str] | None = None) -> int:
    """Serve requests from stdin until it closes."""
    argv = sys.argv[1:] if argv is None else argv
    # Keep the real stdout for replies; anything the module prints goes to stderr.
    out = os.fdopen(os.dup(1), "w", encoding="utf-8")
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    if len(argv) != 1:
        _send(out, {"fatal": "usage: worker.py MODULE_OR_FILE"})
        return 2
    try:
        module = load_module(argv[0])
    except BaseException as exc:  # noqa: BLE001 - any import failure is reported, not raised
        _send(out, {"fatal": f"cannot import {argv[0]}: {type(exc).__name__}: {_line(exc)}"})
        return 3
    _send(out, {"ready": True})
    for line in sys.stdin:
        if not line.strip():
            continue
        try:
            request = loads_bounded(line)
        except (LimitError, ValueError):
            request = None
        _send(out, answer(module, request))
    return 0


if __name__ == "__main__":
    sys.exit(main())
