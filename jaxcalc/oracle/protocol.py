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
import signal
import subprocess
import threading
import time
from collections.abc import Sequence
from typing import Any

__all__ = ["STALL_LIMIT", "ReplyError", "StartError", "Program"]

STALL_LIMIT = 3  # stalls in a row after which the program is no longer restarted


class ReplyError(Exception):
    """A request that got no usable reply; the case fails with this one-line message."""


class StartError(Exception):
    """The program could not be started at all (no such file, not executable, fatal start-up)."""


class _Stall(ReplyError):
    """A deadline passed."""


class _Session:
    """One running instance of the program, its stdout and stderr drained by daemon threads."""

    def __init__(self, argv: Sequence[str]) -> None:
        try:
            self.proc = subprocess.Popen(
                list(argv),
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                start_new_session=True,
            )
        except OSError as exc:
            raise StartError(f"cannot run {argv[0]!r}: {exc.strerror or exc}") from None
        self.lines: queue.Queue[bytes | None] = queue.Queue()
        self.stderr: collections.deque[str] = collections.deque(maxlen=40)
        threading.Thread(target=self._drain_stdout, daemon=True).start()
        threading.Thread(target=self._drain_stderr, daemon=True).start()

    def _drain_stdout(self) -> None:
        for line in iter(self.proc.stdout.readline, b""):
            self.lines.put(line)
        self.lines.put(None)

    def _drain_stderr(self) -> None:
        for line in iter(self.proc.stderr.readline, b""):
            self.stderr.append(line.decode("utf-8", "replace").rstrip())

    def last_words(self) -> str:
        """The last non-empty stderr line, shortened, as a hint for messages."""
        time.sleep(0.05)  # let the drain thread catch the final line of a program that just died
        for line in reversed(self.stderr):
            if line.strip():
                text = line.strip()
                return f": {text[:200]}" if len(text) <= 200 else f": {text[:200]}..."
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

        def write() -> None:
            with contextlib.suppress(OSError, ValueError):
                self.proc.stdin.write(line)
                self.proc.stdin.flush()

        writer = threading.Thread(target=write, daemon=True)
        writer.start()
        writer.join(timeout)
        if writer.is_alive():
            raise _Stall(f"did not read its input within {timeout:g} s")

    def receive(self, timeout: float) -> bytes:
        """The next non-blank stdout line, waiting at most ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            try:
                line = self.lines.get(timeout=max(left, 0.0))
            except queue.Empty:
                raise _Stall(f"no reply within {timeout:g} s") from None
            if line is None:
                raise ReplyError(f"implementation {self.exit_note()} without replying{self.last_words()}")
            if line.strip():
                return line

    def close(self, grace: float) -> None:
        """Close stdin (the end of the session), wait ``grace`` seconds, then kill what is left."""
        with contextlib.suppress(OSError):
            self.proc.stdin.close()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=grace)
        self.kill()

    def kill(self) -> None:
        """Kill the program and anything it started (its whole process group)."""
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=5)
        for stream in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            with contextlib.suppress(OSError):
                stream.close()


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
                greeting = json.loads(session.receive(self.start_timeout))
            except ReplyError as exc:
                session.kill()
                raise StartError(f"implementation did not start: {exc}") from None
            except ValueError:
                session.kill()
                raise StartError("implementation did not start: its first line is not JSON") from None
            if not (isinstance(greeting, dict) and greeting.get("ready") is True):
                session.kill()
                fatal = greeting.get("fatal") if isinstance(greeting, dict) else None
                raise StartError(str(fatal) if fatal else "implementation did not start: bad greeting")
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
            reply = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            raise ReplyError(f"reply is not a JSON line: {raw[:80]!r}") from None
        if not isinstance(reply, dict):
            raise ReplyError(f"reply is not a JSON object: {raw[:80]!r}")
        if reply.get("id") != rid:
            raise ReplyError(f"reply carries id {reply.get('id')!r}, expected {rid}")
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
