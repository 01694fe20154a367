"""The view of a map outside a notebook: one status line, then the summary line.

On a terminal the line is redrawn in place, as tqdm does; piped to a file or a CI log, each
update is a line of its own, a few a second at most, so logs stay readable.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from typing import TextIO

from nbscale_server.models import PoolModel

from .._progress import Snapshot
from . import render
from .live import CallInfo, Outcome

BAR_WIDTH = 20
PIPED_INTERVAL = 0.5  # seconds between two lines written to a stream that is not a terminal


def bar(done: int, total: int | None) -> str:
    """``[#######.............]  35%``, or an empty bar while the total is unknown (no
    percentage that could only guess)."""
    if not total:
        return "[" + "." * BAR_WIDTH + "]     "
    filled = min(BAR_WIDTH, BAR_WIDTH * done // total)
    return f"[{'#' * filled}{'.' * (BAR_WIDTH - filled)}] {100 * done // total:3d}%"


def _is_terminal(stream: TextIO) -> bool:
    isatty = getattr(stream, "isatty", None)
    try:
        return bool(isatty is not None and isatty())
    except ValueError:  # a closed stream
        return False


class StatusLine:
    """A line of status on ``stream`` (stderr unless given). On a terminal, ``update``
    rewrites it in place (``\\r``), cut to the terminal's width so that it never wraps onto
    a second line. Elsewhere each update that changes it is a line of its own, at most one
    every ``interval`` seconds: an update that comes sooner waits for the end of the
    interval (a timer writes it then, unless a newer one replaced it), so the last state is
    never held back. ``finish`` writes the line that stays."""

    def __init__(self, stream: TextIO | None = None, interval: float = PIPED_INTERVAL) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.in_place = _is_terminal(self.stream)
        self.interval = interval
        self._lock = threading.Lock()
        self._width = 0  # of what is on the terminal's line now
        self._last = ""
        self._next = 0.0  # piped: when the next line may be written
        self._pending: str | None = None  # piped: an update waiting for its turn
        self._timer: threading.Timer | None = None

    def _columns(self) -> int:
        try:
            return os.get_terminal_size(self.stream.fileno()).columns
        except (AttributeError, OSError, ValueError):
            return 80

    def update(self, text: str) -> None:
        with self._lock:
            if self.in_place:
                room = self._columns() - 1  # the last column would wrap on some terminals
                if len(text) > room:
                    text = text[: max(0, room - 1)] + "…"
                self._write("\r" + text.ljust(min(self._width, room)))
                self._width = len(text)
                return
            self._pending = None if text == self._last else text
            now = time.monotonic()
            if self._pending is not None and now >= self._next:
                self._write_pending(now)
            elif self._pending is not None and self._timer is None:
                self._timer = threading.Timer(self._next - now, self._on_timer)
                self._timer.daemon = True
                self._timer.start()

    def _on_timer(self) -> None:
        with self._lock:
            self._timer = None
            if self._pending is not None:
                self._write_pending(time.monotonic())

    def _write_pending(self, now: float) -> None:
        assert self._pending is not None
        self._last, self._pending = self._pending, None
        self._next = now + self.interval
        self._write(self._last + "\n")

    def _write(self, text: str) -> None:
        self.stream.write(text)
        self.stream.flush()

    def finish(self, text: str) -> None:
        with self._lock:
            if self._timer is not None:
                self._timer.cancel()
            if self.in_place:
                self._write("\r" + text.ljust(min(self._width, self._columns() - 1)) + "\n")
            else:
                self._write(text + "\n")
            self._width, self._last, self._next = 0, "", 0.0
            self._pending, self._timer = None, None


class TextBar:
    """A map's progress as a :class:`StatusLine`; the stream is stderr unless given."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self.line = StatusLine(stream)

    def show(self, snap: Snapshot) -> None:
        self.line.update(f"{snap.function}: starting")

    def draw(self, snap: Snapshot, pool: PoolModel | None, call: CallInfo) -> None:
        parts = [
            f"{snap.function} {bar(snap.counts.completed, snap.counts.total)}",
            render.counts_line(snap),
        ]
        line = render.pool_line(pool, snap.throttled_by)
        if line:
            parts.append(line)
        self.line.update(" · ".join(parts))

    def finish(
        self, snap: Snapshot, pool: PoolModel | None, call: CallInfo, outcome: Outcome
    ) -> None:
        text = render.summary_text(snap, outcome.text)
        self.line.finish(f"{text}\nthe rest: {call.detached}" if call.detached else text)
