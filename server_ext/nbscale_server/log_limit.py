"""Warnings about what peers send, a few a minute of each kind at most.

A peer that sends garbage in a loop (a broken client, or another process of the user's
probing the sockets) must not fill the disk with the server's log, nor spend the loop on
formatting lines nobody reads. Each kind of warning (its format string) may be logged
``per_window`` times in a window of ``window_s`` seconds; the rest are counted, and the
first of that kind after the window says how many went unlogged.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

_PER_WINDOW = 10
_WINDOW_S = 60.0


class LimitedLog:
    def __init__(
        self,
        logger: logging.Logger,
        per_window: int = _PER_WINDOW,
        window_s: float = _WINDOW_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.logger = logger
        self.per_window = per_window
        self.window_s = window_s
        self.clock = clock
        # per format string: [window start, logged in it, not logged since the last line]
        self._kinds: dict[str, list[Any]] = {}

    def warning(self, msg: str, *args: Any) -> None:
        self._log(logging.WARNING, msg, args, False)

    def exception(self, msg: str, *args: Any) -> None:
        """An error with the traceback being handled, as ``Logger.exception``."""
        self._log(logging.ERROR, msg, args, True)

    def _log(self, level: int, msg: str, args: tuple[Any, ...], exc_info: bool) -> None:
        now = self.clock()
        kind = self._kinds.get(msg)
        if kind is None or now - kind[0] >= self.window_s:
            kind = self._kinds[msg] = [now, 0, kind[2] if kind else 0]
        if kind[1] >= self.per_window:
            kind[2] += 1
            return
        kind[1] += 1
        if kind[2]:
            msg += " (and %d more like it, not logged)"
            args = (*args, kind[2])
            kind[2] = 0
        if kind[1] == self.per_window:
            msg += " (more like it within %.0f s are counted, not logged)"
            args = (*args, self.window_s - (now - kind[0]))
        self.logger.log(level, msg, *args, exc_info=exc_info)
