"""Per-input capture of stdout and stderr.

The worker replaces ``sys.stdout``/``sys.stderr`` once with proxies that also write into the
buffer of the input running in the current thread or asyncio task (a context variable); the
text always reaches the real stream, which is the worker's log, too. Concurrent inputs keep
their output apart, which is what lets the caller prefix each line with its input's index.

The log is the worker's, not the input's: when it cannot be written (a full disk), the input
goes on, its text still reaches the caller, and one note says what was dropped where.
"""

from __future__ import annotations

import contextvars
import io
import os
import sys
from typing import Any, TextIO

# The current input's captured text, as a list of written pieces (cheaper to start than a
# StringIO, and most inputs print nothing).
_current: contextvars.ContextVar[list[str] | None] = contextvars.ContextVar(
    "nbscale_capture", default=None
)


class _RoutingStream(io.TextIOBase):
    def __init__(self, fallback: TextIO) -> None:
        self._fallback = fallback
        self._failing: str | None = None  # why the log cannot be written, once noted

    def write(self, text: str) -> int:
        target = _current.get()
        if target is not None:
            target.append(text)  # goes back to the caller with the input's result
        # and to the worker's own log too, where `nbscale logs` and the sidebar read it
        try:
            self._fallback.write(text)
        except OSError as exc:
            self._log_failed(exc, target)
        else:
            self._failing = None
        return len(text)

    def flush(self) -> None:
        try:
            self._fallback.flush()
        except OSError as exc:
            self._log_failed(exc, _current.get())

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
        sys.stdout = _RoutingStream(sys.stdout)  # type: ignore[assignment]
        sys.stderr = _RoutingStream(sys.stderr)  # type: ignore[assignment]


def start() -> contextvars.Token[Any]:
    """Begin capturing for the input running in this thread or task."""
    return _current.set([])


def finish(token: contextvars.Token[Any]) -> str:
    pieces = _current.get()
    _current.reset(token)
    return "".join(pieces) if pieces else ""
