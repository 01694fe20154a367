"""Per-input capture of stdout and stderr, and the worker's log lines.

The worker replaces ``sys.stdout``/``sys.stderr`` once with proxies that also write into the
buffer of the input running in the current thread or asyncio task (a context variable); the
text always reaches the real stream, which is the worker's log, too. Concurrent inputs keep
their output apart, which is what lets the caller prefix each line with its input's index.

In the log, each line starts with when it was written and which input wrote it:
``2025-01-02T03:04:05.678Z fc-1a2b3c4d5e6f00000001#17 text`` (``-`` outside any input), so
that the sidebar and ``nbscale logs`` can say both; ``parse_line`` reads it back. Output
written below Python (a C library writing to file descriptor 1) reaches the log as it is.

The log is the worker's, not the input's: when it cannot be written (a full disk), the input
goes on, its text still reaches the caller, and one note says what was dropped where.
"""

from __future__ import annotations

import contextvars
import datetime
import io
import os
import re
import sys
import time
from dataclasses import dataclass
from typing import Any, TextIO

# The current input's captured text, as lists of written pieces for stdout and stderr
# (cheaper to start than a StringIO, and most inputs print nothing), with the input's call
# id and index, and both streams' pieces in order (what the running input's view streams):
# [stdout, stderr, call id, index, both], a bare list, so that an input that prints nothing
# costs little more than the lists, and a run of inputs moves its index in place
# (``start_run``). It also says which input runs: ``current_input``.
_Current = list[Any]
_current: contextvars.ContextVar[_Current | None] = contextvars.ContextVar(
    "nbscale_capture", default=None
)

NO_INPUT = "-"
_LINE = re.compile(
    r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3})Z (?:-|(\S+)#(\d+))(?: (.*))?", re.DOTALL
)


@dataclass(frozen=True, slots=True)
class LogLine:
    """One line of a worker's log: when and by which input it was written (None for a line
    without the prefix), and its text without the newline."""

    time: float | None
    call_id: str | None
    index: int | None
    text: str


# The last second formatted, (second, text): strftime is most of a prefix's cost (1.2 µs).
_second: tuple[int, str] = (-1, "")


def line_prefix(at: float, call_id: str | None, index: int) -> str:
    """``2025-01-02T03:04:05.678Z fc-...#17 `` (``-`` for no input)."""
    global _second
    second, stamp = _second
    if second != int(at):
        second, stamp = int(at), time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(at))
        _second = (second, stamp)
    label = NO_INPUT if call_id is None else f"{call_id}#{index}"
    return f"{stamp}.{int(at * 1000) % 1000:03d}Z {label} "


def parse_line(line: str) -> LogLine:
    """A log line as ``line_prefix`` began it (an unprefixed line has no time nor input)."""
    text = line.rstrip("\r\n")
    match = _LINE.fullmatch(text)
    if match is None:
        return LogLine(None, None, None, _as_shown(text))
    stamp, call_id, index, rest = match.groups()
    at = datetime.datetime.fromisoformat(stamp).replace(tzinfo=datetime.UTC).timestamp()
    return LogLine(at, call_id, None if index is None else int(index), _as_shown(rest or ""))


def _as_shown(text: str) -> str:
    """A line as a terminal shows it: a progress bar redrawn after carriage returns shows
    its last state."""
    if "\r" not in text:
        return text
    return next((part for part in reversed(text.split("\r")) if part), "")


class _RoutingStream(io.TextIOBase):
    def __init__(self, fallback: TextIO, stream: int) -> None:
        self._fallback = fallback
        self._stream = stream  # 0: stdout, 1: stderr (its list in ``_Current``)
        self._line_start = True  # the next text written begins a line of the log
        self._failing: str | None = None  # why the log cannot be written, once noted

    def write(self, text: str) -> int:
        current = _current.get()
        if current is not None:
            current[self._stream].append(text)  # back to the caller
            current[4].append(text)  # both streams in order, for the running input's view
        # and to the worker's own log too, where `nbscale logs` and the sidebar read it
        if text:
            try:
                self._fallback.write(self._stamped(text, current))
            except OSError as exc:
                self._log_failed(exc, current[0] if current else None)
            else:
                self._failing = None
        return len(text)

    def _stamped(self, text: str, current: _Current | None) -> str:
        """``text`` with each line it begins prefixed by the time and the input."""
        ends = text.endswith("\n")
        body = text[:-1] if ends else text
        if not self._line_start and "\n" not in body:
            self._line_start = ends
            return text  # the rest of a line already begun (print's own "\n", say)
        prefix = line_prefix(time.time(), *(current[2:4] if current else (None, 0)))
        stamped = body.replace("\n", "\n" + prefix) + ("\n" if ends else "")
        head = prefix if self._line_start else ""
        self._line_start = ends
        return head + stamped

    def flush(self) -> None:
        try:
            self._fallback.flush()
        except OSError as exc:
            current = _current.get()
            self._log_failed(exc, current[0] if current else None)

    def _log_failed(self, exc: OSError, target: list[str] | None) -> None:
        """Drop what the log cannot take; say so once to the input that hit it."""
        why = exc.strerror or str(exc)
        if self._failing == why:
            return
        self._failing = why
        if target is not None:
            target.append(f"[nbscale: cannot write the worker's log{self._where()} ({why}); ")
            target.append("the output above is not in it]\n")

    def _where(self) -> str:
        try:
            return " " + os.readlink(f"/proc/self/fd/{self._fallback.fileno()}")
        except (OSError, ValueError):
            return ""

    def writable(self) -> bool:
        return True

    def fileno(self) -> int:
        return self._fallback.fileno()

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return getattr(self._fallback, "encoding", "utf-8")

    def isatty(self) -> bool:
        return False


def install() -> None:
    """Route this process's stdout/stderr through the per-input capture."""
    if not isinstance(sys.stdout, _RoutingStream):
        sys.stdout = _RoutingStream(sys.stdout, 0)  # type: ignore[assignment]
        sys.stderr = _RoutingStream(sys.stderr, 1)  # type: ignore[assignment]


def installed() -> bool:
    """Whether this process is a worker (its streams routed by ``install``)."""
    return isinstance(sys.stdout, _RoutingStream)


# What each running input printed so far, by (call id, index): the worker's pulse thread
# reads it to stream a running input's output to its caller.
_running: dict[tuple[str, int], list[str]] = {}


def start(call_id: str, index: int) -> contextvars.Token[Any]:
    """Begin capturing for the input running in this thread or task (:func:`so_far` finds
    what it printed while it runs)."""
    printed: list[str] = []  # stdout and stderr together, as written
    _running[(call_id, index)] = printed
    return _current.set([[], [], call_id, index, printed])


def finish(token: contextvars.Token[Any]) -> tuple[str, str]:
    """What the input wrote to stdout and to stderr, and the capture ended."""
    current = _current.get()
    _current.reset(token)
    if current is None:
        return "", ""
    _running.pop((current[2], current[3]), None)
    out, err = current[0], current[1]
    return "".join(out) if out else "", "".join(err) if err else ""  # most print nothing


# The captures of the runs of inputs going on (``start_run``), for ``so_far``.
_runs: list[_Current] = []


def start_run(call_id: str, index: int) -> tuple[_Current, contextvars.Token[Any]]:
    """Begin capturing for a run of inputs of ``call_id`` from ``index``: one capture for
    them all, whose input the run moves on with ``capture[3] = index``; one that printed
    (``capture[0]`` or ``capture[1]`` not empty) hands its text over with :func:`take`
    before the next begins. End it with :func:`finish_run`."""
    current: _Current = [[], [], call_id, index, []]
    _runs.append(current)
    return current, _current.set(current)


def take(current: _Current) -> tuple[str, str]:
    """What the run's current input wrote to stdout and to stderr; the next starts afresh."""
    out, err = current[0], current[1]
    current[0], current[1], current[4] = [], [], []
    return "".join(out), "".join(err)


def finish_run(current: _Current, token: contextvars.Token[Any]) -> None:
    _current.reset(token)
    _runs.remove(current)


def current_input() -> tuple[str, int] | None:
    """The call id and index of the input running in this thread or task, if any."""
    current = _current.get()
    return None if current is None else (current[2], current[3])


def so_far(key: tuple[str, int]) -> list[str]:
    """What the running input ``key`` printed so far (stdout and stderr), as written pieces
    (a copy: safe to read from another thread while it prints)."""
    pieces = _running.get(key)
    if pieces is None:
        call_id, index = key
        for current in list(_runs):  # the pulse thread reads while the main thread runs
            if current[3] == index and current[2] == call_id:
                pieces = current[4]
    return list(pieces) if pieces else []
