"""The view of a map outside a notebook: one line on stderr, rewritten in place with ``\\r``,
then the summary line."""

from __future__ import annotations

import sys
from typing import TextIO

from nbscale_server.models import PoolModel

from .._progress import CallProgress
from . import render

BAR_WIDTH = 20


def bar(done: int, total: int | None) -> str:
    """``[#######.............]  35%``, or an empty bar while the total is unknown."""
    if not total:
        return "[" + "." * BAR_WIDTH + "]     "
    filled = min(BAR_WIDTH, BAR_WIDTH * done // total)
    return f"[{'#' * filled}{'.' * (BAR_WIDTH - filled)}] {100 * done // total:3d}%"


class TextBar:
    """A one-line progress bar; the stream is stderr unless given."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self._width = 0

    def _write(self, line: str, end: str = "") -> None:
        self.stream.write("\r" + line.ljust(self._width) + end)
        self.stream.flush()
        self._width = 0 if end else len(line)

    def show(self, progress: CallProgress) -> None:
        self._write(f"{progress.function}: starting")

    def draw(self, progress: CallProgress, pool: PoolModel | None) -> None:
        parts = [
            f"{progress.function} {bar(progress.completed, progress.total)}",
            render.counts_line(progress),
        ]
        line = render.pool_line(pool, progress.throttled_by)
        if line:
            parts.append(line)
        self._write(" · ".join(parts))

    def finish(self, progress: CallProgress, pool: PoolModel | None, outcome: str | None) -> None:
        self._write(render.summary_text(progress, outcome), end="\n")
