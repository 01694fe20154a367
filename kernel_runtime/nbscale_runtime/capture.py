"""Per-input capture of stdout and stderr, and the worker's log lines.

The worker replaces ``sys.stdout``/``sys.stderr`` once with proxies that also write into the
buffer of the input running in the current thread or asyncio task (a context variable); the
text always reaches the real stream, which is the worker's log, too. Concurrent inputs keep
their output apart, which is what lets the caller prefix each line with its input's index.

In the log, each line starts with when it was written and which input wrote it:
``2025-01-02T03:04:05.678Z fc-1a2b3c4d5e6f00000001#17 text`` (``-`` outside any input), so
that the sidebar and ``nbscale logs`` can say both; ``parse_line`` reads it back. Output
written below Python (a C library writing to file descriptor 1) reaches the log as it is.
"""

from __future__ import annotations

import contextvars
import datetime
import io
import re
import sys
import time
from dataclasses import dataclass
from typing import Any, TextIO

# The current input's captured text, as a list of written pieces (cheaper to start than a
# StringIO, and most inputs print nothing), with the input's call id and index: a tuple,
# so that an input that prints nothing costs 20 ns more than the bare list, not a label.
_Current = tuple[list[str], str, int]
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
    def __init__(self, fallback: TextIO) -> None:
        self._fallback = fallback
        self._line_start = True  # the next text written begins a line of the log

    def write(self, text: str) -> int:
        current = _current.get()
        if current is not None:
            current[0].append(text)  # goes back to the caller with the input's result
        # and to the worker's own log too, where `nbscale logs` and the sidebar read it
        if text:
            self._fallback.write(self._stamped(text, current))
        return len(text)

    def _stamped(self, text: str, current: _Current | None) -> str:
        """``text`` with each line it begins prefixed by the time and the input."""
        ends = text.endswith("\n")
        body = text[:-1] if ends else text
        if not self._line_start and "\n" not in body:
            self._line_start = ends
            return text  # the rest of a line already begun (print's own "\n", say)
        prefix = line_prefix(time.time(), *(current[1:] if current else (None, 0)))
        stamped = body.replace("\n", "\n" + prefix) + ("\n" if ends else "")
        head = prefix if self._line_start else ""
        self._line_start = ends
        return head + stamped

    def flush(self) -> None:
        self._fallback.flush()

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
        sys.stdout = _RoutingStream(sys.stdout)  # type: ignore[assignment]
        sys.stderr = _RoutingStream(sys.stderr)  # type: ignore[assignment]


def start(call_id: str, index: int) -> contextvars.Token[Any]:
    """Begin capturing for the input running in this thread or task."""
    return _current.set(([], call_id, index))


def current_input() -> tuple[str, int] | None:
    """(call id, index) of the input running in this thread or task, or None."""
    current = _current.get()
    return (current[1], current[2]) if current is not None else None


def finish(token: contextvars.Token[Any]) -> str:
    current = _current.get()
    _current.reset(token)
    return "".join(current[0]) if current and current[0] else ""
