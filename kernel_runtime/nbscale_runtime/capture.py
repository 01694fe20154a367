"""Per-input capture of stdout and stderr.

The worker replaces ``sys.stdout``/``sys.stderr`` once with proxies that also write into the
buffer of the input running in the current thread or asyncio task (a context variable); the
text always reaches the real stream, which is the worker's log, too. Concurrent inputs keep
their output apart, which is what lets the caller prefix each line with its input's index.
"""

from __future__ import annotations

import contextvars
import io
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

    def write(self, text: str) -> int:
        target = _current.get()
        if target is not None:
            target.append(text)  # goes back to the caller with the input's result
        # and to the worker's own log too, where `nbscale logs` and the sidebar read it
        return self._fallback.write(text)

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


# What each running input printed so far, by (call id, index): the worker's pulse thread
# reads it to stream a running input's output to its caller.
_running: dict[tuple[str, int], list[str]] = {}


def start(key: tuple[str, int] | None = None) -> contextvars.Token[Any]:
    """Begin capturing for the input running in this thread or task (``key``: its call id
    and index, under which :func:`so_far` finds what it printed while it runs)."""
    pieces: list[str] = []
    if key is not None:
        _running[key] = pieces
    return _current.set(pieces)


def finish(token: contextvars.Token[Any], key: tuple[str, int] | None = None) -> str:
    pieces = _current.get()
    _current.reset(token)
    if key is not None:
        _running.pop(key, None)
    return "".join(pieces) if pieces else ""


def so_far(key: tuple[str, int]) -> list[str]:
    """What the running input ``key`` printed so far, as written pieces (a copy: safe to
    read from another thread while it prints)."""
    pieces = _running.get(key)
    return list(pieces) if pieces else []
