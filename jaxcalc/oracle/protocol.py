"""The JSON Lines conversation with an implementation running as a separate program.

jaxcalc writes one request per line to the program's stdin,
``{"id": 1, "case": "softmax", "inputs": {...}, "cotangent": {...}}``, and reads one reply per
line from its stdout, ``{"id": 1, "value": ..., "vjp": {...}}`` or ``{"id": 1, "error": "..."}``.
Closing stdin ends the session.

Nothing here can hang or crash the caller: the program is started from an argument list (never
a shell) in its own process group; every write and every reply has a deadline; a stall, an
early exit, a garbage line or a reply to the wrong id becomes a :class:`ReplyError` for that
request, the program is killed, and the next request starts it afresh. After ``STALL_LIMIT``
stalls in a row the remaining requests fail at once instead of each waiting out the timeout.
"""

from __future__ import annotations

import collections
import contextlib
import json
import os
import queue
import select
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from jaxcalc.oracle.safety import MAX_REPLY_BYTES, MAX_STDERR_LINE, LimitError, loads_bounded, one_line

__all__ = ["STALL_LIMIT", "ReplyError", "StartError", "Program"]

STALL_LIMIT = 3  # stalls in a row after which the program is no longer restarted


class ReplyError(Exception):
    """A request that got no usable reply; the case fails with this one-line message."""


class StartError(Exception):
    """The program could not be started at all (no such file, not executable, fatal start-up)."""


class _Stall(ReplyError):
    """A deadline passed."""


_OVERLONG = b"<overlong>"  # queued in place of a line longer than the cap
_POLL = 0.1  # seconds a reader or writer waits at most before looking at its stop flag


def _descendants(pid: int) -> list[int]:
    """Every live process whose parent chain leads to ``pid`` (from /proc; empty elsewhere).

    A process that left the group with ``setsid`` is still found this way while its parent lives.
    """
    children: dict[int, list[int]] = {}
    try:
        entries = os.listdir("/proc")
    except OSError:
        return []
    for entry in entries:
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                stat = f.read()
            ppid = int(stat[stat.rindex(b")") + 2 :].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        children.setdefault(ppid, []).append(int(entry))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), ()):
            found.append(child)
            todo.append(child)
    return found


class _LineReader(threading.Thread):
    """Read lines from a pipe ``fd`` with bounded waits, so stopping it never blocks anyone.

    Each complete non-blank line goes to ``sink``; a line longer than ``max_line`` bytes is either
    cut (``cut=True``: its head is kept, the rest read and dropped) or reported as ``_OVERLONG``
    and reading stops. At end of file ``sink(None)``. The thread closes ``fd`` itself when it ends.
    """

    def __init__(self, fd: int, sink: Callable[[bytes | None], None], max_line: int, cut: bool) -> None:
        super().__init__(daemon=True)
        self.fd, self.sink, self.max_line, self.cut = fd, sink, max_line, cut
        self.stop = threading.Event()

    def _emit(self, line: bytes) -> bool:
        """Pass one line on; False when reading must stop (an overlong line that is not cut)."""
        if len(line) <= self.max_line:
            self.sink(line)
            return True
        if self.cut:
            self.sink(line[: self.max_line] + b" [cut]")
            return True
        self.sink(_OVERLONG)
        return False

    def run(self) -> None:
        parts: list[bytes] = []  # the line being read, in pieces (joining once keeps this linear)
        size = 0
        dropping = False  # inside the remainder of a line already cut
        poller = select.poll()
        poller.register(self.fd, select.POLLIN)
        try:
            while not self.stop.is_set():
                if not poller.poll(_POLL * 1000):
                    continue
                chunk = os.read(self.fd, 1 << 16)
                if not chunk:
                    line = b"".join(parts)
                    if line.strip() and not dropping and not self._emit(line):
                        return
                    break
                *complete, tail = chunk.split(b"\n")
                for piece in complete:
                    line = b"".join([*parts, piece])
                    parts, size = [], 0
                    if not dropping and line.strip() and not self._emit(line):
                        return
                    dropping = False
                if tail:
                    parts.append(tail)
                    size += len(tail)
                if size > self.max_line and not dropping:
                    if not self._emit(b"".join(parts)):
                        return
                    parts, size, dropping = [], 0, True
                elif dropping:
                    parts, size = [], 0
        except (OSError, ValueError):
            pass  # the pipe went away under us: the end of the session
        finally:
            self.sink(None)
            with contextlib.suppress(OSError):
                os.close(self.fd)


class _Session:
    """One running instance of the program; its stdout and stderr are read by two _LineReaders.

    The program is started in its own session and process group, its pipes are plain file
    descriptors, and no call blocks without a deadline: ``kill`` ends the program, everything it
    started (even a grandchild that called setsid and still holds the pipes) and both readers.
    """

    def __init__(self, argv: Sequence[str], max_line: int = MAX_REPLY_BYTES) -> None:
        in_r, in_w = os.pipe()
        out_r, out_w = os.pipe()
        err_r, err_w = os.pipe()
        try:
            self.proc = subprocess.Popen(
                list(argv), stdin=in_r, stdout=out_w, stderr=err_w, start_new_session=True
            )
        except OSError as exc:
            for fd in (in_r, in_w, out_r, out_w, err_r, err_w):
                os.close(fd)
            raise StartError(f"cannot run {one_line(argv[0], 200)!r}: {exc.strerror or exc}") from None
        for fd in (in_r, out_w, err_w):
            os.close(fd)
        os.set_blocking(in_w, False)
        self.stdin: int | None = in_w
        self.lines: queue.Queue[bytes | None] = queue.Queue(maxsize=8)
        self.stderr: collections.deque[str] = collections.deque(maxlen=40)
        self.readers = (
            _LineReader(out_r, self._put, max_line, cut=False),
            _LineReader(err_r, self._keep_stderr, MAX_STDERR_LINE, cut=True),
        )
        for reader in self.readers:
            reader.start()

    def _put(self, line: bytes | None) -> None:
        """Queue a stdout line; give up when the session is being torn down."""
        while not self.readers[0].stop.is_set():
            try:
                self.lines.put(line, timeout=_POLL)
                return
            except queue.Full:
                continue

    def _keep_stderr(self, line: bytes | None) -> None:
        if line is not None:
            self.stderr.append(line.decode("utf-8", "replace").rstrip())

    def last_words(self) -> str:
        """The last non-empty stderr line, escaped on one line and shortened, as a hint."""
        time.sleep(0.05)  # let the reader catch the final line of a program that just died
        for line in reversed(self.stderr):
            if line.strip():
                return f": {one_line(line.strip(), 200)}"
        return ""

    def exit_note(self) -> str:
        try:
            rc = self.proc.wait(timeout=2)
        except subprocess.TimeoutExpired:
            return "closed its output"
        if rc < 0:
            try:
                return f"was killed by {signal.Signals(-rc).name}"
            except ValueError:
                return f"was killed by signal {-rc}"
        return f"exited with status {rc}"

    def send(self, line: bytes, timeout: float) -> None:
        """Write one line; a program that stops reading cannot block us past ``timeout``.

        A failed write (the program has exited) is not raised here: :meth:`receive` then reports
        what the program printed or that it exited, which says more.
        """
        deadline = time.monotonic() + timeout
        view = memoryview(line)
        poller = select.poll()
        if self.stdin is not None:
            poller.register(self.stdin, select.POLLOUT)
        while view and self.stdin is not None:
            left = deadline - time.monotonic()
            if left <= 0:
                raise _Stall(f"did not read its input within {timeout:g} s")
            try:
                if poller.poll(min(left, _POLL) * 1000):
                    view = view[os.write(self.stdin, view) :]
            except BlockingIOError:
                continue
            except (OSError, ValueError):
                return

    def receive(self, timeout: float) -> bytes:
        """The next non-blank stdout line, waiting at most ``timeout`` seconds in all."""
        try:
            line = self.lines.get(timeout=timeout)
        except queue.Empty:
            raise _Stall(f"no reply within {timeout:g} s") from None
        if line is None:
            raise ReplyError(f"implementation {self.exit_note()} without replying{self.last_words()}")
        if line is _OVERLONG:
            raise ReplyError(f"reply line longer than {MAX_REPLY_BYTES} bytes (the limit); refused")
        return line

    def close(self, grace: float) -> None:
        """Close stdin (the end of the session), wait ``grace`` seconds, then kill what is left."""
        others = _descendants(self.proc.pid)  # before the program exits and they are orphaned
        self._close_stdin()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=grace)
        self.kill(others)

    def _close_stdin(self) -> None:
        if self.stdin is not None:
            with contextlib.suppress(OSError):
                os.close(self.stdin)
            self.stdin = None

    def kill(self, others: Sequence[int] = ()) -> None:
        """Kill the program and everything it started: its process group and its descendants."""
        pids = {*others, *_descendants(self.proc.pid)}
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        for pid in pids:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=5)
        self._close_stdin()
        for reader in self.readers:
            reader.stop.set()


class Program:
    """An implementation run as a program speaking JSON Lines; restarted after any broken reply.

    ``hello``: the program first prints one line, ``{"ready": true}`` or ``{"fatal": "..."}``
    (the Python worker behind ``--impl`` does, so an import error is reported before any case);
    it has ``start_timeout`` seconds for that (default max(timeout, 60): importing a framework
    can take a while), and ``timeout`` seconds for each reply.
    """

    def __init__(
        self, argv: Sequence[str], timeout: float, *, hello: bool = False, start_timeout: float | None = None
    ) -> None:
        if not argv:
            raise StartError("empty command")
        self.argv = list(argv)
        self.timeout = timeout
        self.start_timeout = max(timeout, 60.0) if start_timeout is None else start_timeout
        self.hello = hello
        self.session: _Session | None = None
        self.next_id = 1
        self.stalls = 0
        self.started = 0

    def __enter__(self) -> Program:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def start(self) -> None:
        """Start the program (if not running); StartError if it cannot start or says it is unfit."""
        if self.session is not None:
            return
        session = _Session(self.argv)
        self.started += 1
        if self.hello:
            try:
                greeting = loads_bounded(session.receive(self.start_timeout))
            except ReplyError as exc:
                session.kill()
                raise StartError(f"implementation did not start: {exc}") from None
            except ValueError:
                session.kill()
                raise StartError("implementation did not start: its first line is not JSON") from None
            if not (isinstance(greeting, dict) and greeting.get("ready") is True):
                session.kill()
                fatal = greeting.get("fatal") if isinstance(greeting, dict) else None
                raise StartError(one_line(fatal) if fatal else "implementation did not start: bad greeting")
        self.session = session

    def ask(self, request: dict[str, Any]) -> dict[str, Any]:
        """Send ``request`` (an id is added) and return the reply object; ReplyError on any failure."""
        if self.stalls >= STALL_LIMIT:
            raise ReplyError(f"not run: the implementation stalled on {STALL_LIMIT} requests in a row")
        if self.session is None:
            try:
                self.start()
            except StartError as exc:
                raise ReplyError(f"could not restart the implementation: {exc}") from None
        rid, self.next_id = self.next_id, self.next_id + 1
        line = json.dumps({"id": rid, **request}, separators=(",", ":"), allow_nan=False)
        try:
            self.session.send(line.encode() + b"\n", self.timeout)
            raw = self.session.receive(self.timeout)
            reply = self._parse(raw, rid)
        except _Stall:
            self.stalls += 1
            self._drop()
            raise
        except ReplyError:
            self._drop()
            raise
        self.stalls = 0
        return reply

    def _parse(self, raw: bytes, rid: int) -> dict[str, Any]:
        try:
            reply = loads_bounded(raw.decode("utf-8"))
        except LimitError as exc:
            raise ReplyError(f"reply refused: {exc}") from None
        except (UnicodeDecodeError, ValueError):
            raise ReplyError(f"reply is not a JSON line: {raw[:80]!r}") from None
        if not isinstance(reply, dict):
            raise ReplyError(f"reply is not a JSON object: {raw[:80]!r}")
        if reply.get("id") != rid:
            raise ReplyError(f"reply carries id {one_line(repr(reply.get('id')), 80)}, expected {rid}")
        return reply

    def _drop(self) -> None:
        if self.session is not None:
            self.session.kill()
            self.session = None

    def close(self) -> None:
        """End the session: close stdin, give the program a moment to exit, then kill it."""
        if self.session is not None:
            self.session.close(grace=2.0)
            self.session = None
