"""Small helpers shared by the subcommands: backend naming, JSON output, case selection."""

from __future__ import annotations

import json
import os
from typing import Any

__all__ = ["backend_info", "write_json", "select_cases"]


def backend_info() -> dict[str, Any]:
    """The backend and device that produce a report, and the versions involved."""
    import jax

    from jaxcalc import __version__

    dev = jax.devices()[0]
    return {
        "backend": jax.default_backend(),
        "device": getattr(dev, "device_kind", str(dev)),
        "device_count": jax.device_count(),
        "jax": jax.__version__,
        "jaxcalc": __version__,
        "x64": bool(jax.config.jax_enable_x64),
    }


def write_json(path: str, payload: Any, *, allow_nan: bool = True, sort_keys: bool = True) -> None:
    """Write ``payload`` as JSON to ``path`` atomically ('-' means stdout).

    A temporary file beside ``path`` is renamed over it, so a reader never sees half a report
    and a failed write leaves the old file alone. Errors become a one-line UsageError.
    """
    text = json.dumps(payload, indent=2, sort_keys=sort_keys, default=float, allow_nan=allow_nan) + "\n"
    if path == "-":
        print(text, end="")
        return
    from jaxcalc.checkpoint import atomic_write
    from jaxcalc.cli import UsageError

    directory = os.path.dirname(os.path.realpath(path))
    if not os.path.isdir(directory):
        raise UsageError(f"cannot write {path}: directory {directory} does not exist")
    try:
        atomic_write(path, lambda fh: fh.write(text.encode()))
    except OSError as exc:  # no permission, a read-only filesystem, a full device, a FIFO unread
        raise UsageError(f"cannot write {path}: {exc.strerror or exc}") from None


def select_cases(names: list[str] | None):
    """The registered cases named (all when ``names`` is empty); unknown names -> UsageError."""
    from jaxcalc.cases import REGISTRY, UnknownCaseError, get_case
    from jaxcalc.cli import UsageError

    if not names:
        return list(REGISTRY.values())
    try:
        return [get_case(n) for n in dict.fromkeys(names)]
    except UnknownCaseError as exc:
        raise UsageError(str(exc)) from None
