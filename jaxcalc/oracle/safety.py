"""Limits and guards that keep hostile input from crashing, hanging or exhausting jaxcalc.

Every limit is a named constant here (the README's "Limits" section lists them):

- ``MAX_JSON_DEPTH``: JSON nesting deeper than this is refused before anything walks it (a
  golden array is 3 levels deep inside a case file; 64 leaves a wide margin).
- ``MAX_DIMS``: the most dimensions an array may have (NumPy 1.x's own limit).
- ``MAX_ARRAY_ELEMENTS``: the most elements one array may claim (2**26, 512 MiB of float64),
  checked on the shape before any allocation.
- ``MAX_NPZ_MEMBER`` / ``MAX_NPZ_TOTAL``: uncompressed bytes of one ``.npz`` member / of all of
  them together (a zip bomb is refused from its directory, before inflating anything).
- ``MAX_REPLY_BYTES``: the longest reply line read from an implementation. The largest reply is
  ``value`` plus one VJP per input; at most ``MAX_REPLY_NUMBERS`` numbers of at most
  ``NUMBER_CHARS`` characters each ("-1.2345678901234567e-308," is 25), plus 64 KiB for keys.
- ``MAX_STDERR_LINE``: characters kept of one stderr line of an implementation (the rest of the
  line is read and dropped).
- ``MAX_MANIFEST_BYTES`` / ``MAX_CASE_FILE_BYTES``: the largest manifest and case file read.
- ``MAX_TIMEOUT``: the longest ``--timeout`` accepted (one day).

The helpers: :func:`loads_bounded` (JSON with a depth bound), :func:`one_line` (untrusted text
shown escaped on one line), :func:`sha256_bounded` (hash in chunks, refusing a file larger
than expected), :func:`check_writable` (probe an output path before the work), and
:func:`dir_lock` (one writer per destination).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import os
import tempfile
import unicodedata
from collections.abc import Iterator
from pathlib import Path
from typing import Any

__all__ = [
    "MAX_JSON_DEPTH",
    "MAX_DIMS",
    "MAX_ARRAY_ELEMENTS",
    "MAX_NPZ_MEMBER",
    "MAX_NPZ_TOTAL",
    "MAX_REPLY_NUMBERS",
    "NUMBER_CHARS",
    "MAX_REPLY_BYTES",
    "MAX_STDERR_LINE",
    "MAX_MANIFEST_BYTES",
    "MAX_CASE_FILE_BYTES",
    "MAX_TIMEOUT",
    "LimitError",
    "LockedError",
    "loads_bounded",
    "check_depth",
    "one_line",
    "sha256_bounded",
    "read_bounded",
    "check_writable",
    "dir_lock",
]

MAX_JSON_DEPTH = 64
MAX_DIMS = 32
MAX_ARRAY_ELEMENTS = 2**26
MAX_NPZ_MEMBER = 256 * 2**20
MAX_NPZ_TOTAL = 1024 * 2**20
MAX_REPLY_NUMBERS = 2**22
NUMBER_CHARS = 26
MAX_REPLY_BYTES = MAX_REPLY_NUMBERS * NUMBER_CHARS + 2**16  # about 104 MiB
MAX_STDERR_LINE = 2000
MAX_MANIFEST_BYTES = 64 * 2**20
MAX_CASE_FILE_BYTES = 2 * MAX_NPZ_TOTAL
MAX_TIMEOUT = 86400.0


class LimitError(ValueError):
    """Input beyond one of the limits above; the message names the limit."""


class LockedError(OSError):
    """Another process holds the lock on a destination."""


def check_depth(obj: Any, max_depth: int = MAX_JSON_DEPTH) -> None:
    """Raise LimitError if ``obj`` (parsed JSON) nests lists/objects deeper than ``max_depth``.

    Iterative, so it cannot itself overflow the stack.
    """
    stack = [(obj, 1)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, dict):
            children = node.values()
        elif isinstance(node, list):
            children = node
        else:
            continue
        if depth > max_depth:
            raise LimitError(f"JSON nested deeper than {max_depth} levels")
        stack.extend((c, depth + 1) for c in children if isinstance(c, dict | list))


def loads_bounded(text: str | bytes, *, max_depth: int = MAX_JSON_DEPTH, **kwargs: Any) -> Any:
    """``json.loads(text, **kwargs)``, refusing nesting deeper than ``max_depth`` with LimitError.

    JSON too deep for the parser itself (a RecursionError) is refused the same way; any other
    parse failure is the ValueError ``json.loads`` raises.
    """
    try:
        obj = json.loads(text, **kwargs)
    except RecursionError:
        raise LimitError(f"JSON nested deeper than {max_depth} levels") from None
    check_depth(obj, max_depth)
    return obj


def one_line(text: Any, limit: int = 300) -> str:
    """Untrusted text made safe to print on one line: control, format and surrogate characters
    (newlines, CR, escape codes, bidi overrides, lone surrogates) shown as ``\\xNN``/``\\uNNNN``
    escapes, and the result cut to ``limit`` characters with ``...``."""
    out = []
    size = 0
    for ch in str(text):
        if unicodedata.category(ch)[0] in "CZ" and ch != " ":
            ch = ch.encode("unicode_escape", "backslashreplace").decode("ascii")
            if not ch.startswith("\\"):  # e.g. a separator unicode_escape leaves as it is
                ch = f"\\u{ord(ch):04x}"
        out.append(ch)
        size += len(ch)
        if size > limit:
            return "".join(out)[:limit] + "..."
    return "".join(out)


def read_bounded(path: Path, limit: int, what: str = "file") -> bytes:
    """The bytes of ``path``; LimitError when it holds more than ``limit`` bytes (not read whole)."""
    with open(path, "rb") as f:
        data = f.read(limit + 1)
    if len(data) > limit:
        raise LimitError(f"{what} {path} is larger than {limit} bytes")
    return data


def sha256_bounded(path: Path, limit: int, chunk: int = 2**20) -> str:
    """Hex sha256 of ``path``, read in chunks; LimitError as soon as more than ``limit`` bytes come."""
    h = hashlib.sha256()
    size = 0
    with open(path, "rb") as f:
        while block := f.read(chunk):
            size += len(block)
            if size > limit:
                raise LimitError(f"{path} is larger than {limit} bytes")
            h.update(block)
    return h.hexdigest()


def check_writable(path: str, flag: str = "--json") -> str | None:
    """Probe that ``path`` can be written, before any work: the reason it cannot, or None.

    '-' (stdout) is always writable. The probe creates and removes a temporary file beside
    ``path``, which catches a missing directory, no permission and a read-only filesystem.
    """
    if path == "-":
        return None
    real = os.path.realpath(path)  # a symbolic link's target is what gets written
    directory = os.path.dirname(real)
    if not os.path.isdir(directory):
        return f"cannot write {flag} {path}: directory {directory} does not exist"
    if os.path.isdir(real):
        return f"cannot write {flag} {path}: it is a directory"
    if os.path.exists(real) and not os.path.isfile(real):
        # a device or a FIFO is written in place (checkpoint.atomic_write); opening a FIFO here
        # would hand its reader an end of file, so only the permission is probed
        return None if os.access(real, os.W_OK) else f"cannot write {flag} {path}: permission denied"
    try:
        fd, probe = tempfile.mkstemp(dir=directory, prefix=".tmp-probe-")
    except OSError as exc:
        return f"cannot write {flag} {path}: {exc.strerror or exc}"
    os.close(fd)
    with contextlib.suppress(OSError):
        os.unlink(probe)
    return None


@contextlib.contextmanager
def dir_lock(dest: Path) -> Iterator[None]:
    """Hold an exclusive lock for writing ``dest``, or raise LockedError at once.

    The lock is ``flock`` on a hidden file ``.DEST.lock`` beside ``dest``: the kernel drops it
    when its holder exits, however it exits, so a killed writer never leaves a stale lock. The
    file records the holder's pid for the message and is removed by the holder on the way out.
    """
    lock_path = dest.with_name(f".{dest.name}.lock")
    for _attempt in range(5):
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
            os.close(fd)
            if exc.errno not in (errno.EAGAIN, errno.EACCES):
                raise
            who = f" (pid {holder})" if holder.isdigit() else ""
            msg = f"another process{who} is writing {dest}; try again when it has finished"
            raise LockedError(msg) from None
        # A holder that just finished may have unlinked the file we opened: then open it afresh.
        with contextlib.suppress(OSError):
            if os.stat(lock_path).st_ino == os.fstat(fd).st_ino:
                break
        os.close(fd)
    else:
        raise LockedError(f"could not take the lock {lock_path}")
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        yield
    finally:
        with contextlib.suppress(OSError):
            os.unlink(lock_path)
        os.close(fd)
