"""Following a worker's output, for ``Launcher.follow_logs``: by byte offset in a log file
(local processes write theirs to one) or by the timestamps Docker gives each line.

A reader asks for what came after the cursor it was last given; it gets whole lines only (a
line still being written comes once it ends), at most a window of the latest when it fell
far behind, and the cursor to ask from next.
"""

from __future__ import annotations

import datetime
import os
from typing import Any

from .base import LogChunk

_WINDOW = 256 * 1024  # bytes read at most per request: the latest, when more came


def follow_file(path: str, after: int | None, limit: int, *, complete: bool) -> LogChunk:
    """The lines of the file at ``path`` after byte offset ``after`` (None: its last
    ``limit`` lines). ``complete``: nothing writes to it any more, so its last line counts
    even without a newline."""
    try:
        f = open(path, "rb")  # noqa: SIM115 - closed below; a missing file is no error
    except OSError:
        return LogChunk("", after or 0)
    with f:
        size = f.seek(0, os.SEEK_END)
        following = after is not None and after <= size  # else: new, or the file was replaced
        start = after if following and after is not None else max(0, size - _WINDOW)
        skipped = following and size - start > _WINDOW
        if skipped:
            start = size - _WINDOW
        f.seek(start)
        data = f.read(size - start)
    if start > 0 and start != after:  # began mid-file: drop the line cut in two
        cut = data.find(b"\n") + 1
        data, start = data[cut:], start + cut
    end = start + len(data)
    if not complete:
        whole = data.rfind(b"\n") + 1
        data, end = data[:whole], start + whole
    lines = split_lines(data.decode(errors="replace"))
    if len(lines) > limit:
        lines, skipped = lines[-limit:], skipped or following
    return LogChunk("".join(lines), end, skipped)


def split_lines(text: str) -> list[str]:
    """``text`` cut at newlines only, each line keeping its own (unlike ``splitlines``,
    which also cuts at the carriage returns of a progress bar)."""
    parts = text.split("\n")
    lines = [part + "\n" for part in parts[:-1]]
    return [*lines, parts[-1]] if parts[-1] else lines


def docker_time(stamp: str) -> int:
    """Docker's RFC 3339 timestamp of a log line ("2025-01-02T03:04:05.123456789Z") in
    microseconds since the epoch: an exact integer, unlike a float, so that a cursor never
    repeats or loses a line, and one that JSON numbers (2**53) hold exactly."""
    seconds, _, fraction = stamp.rstrip("Z").partition(".")
    whole = datetime.datetime.fromisoformat(seconds).replace(tzinfo=datetime.UTC)
    return int(whole.timestamp()) * 1_000_000 + int(fraction.ljust(6, "0")[:6] or 0)


def split_stamps(stamped: str) -> list[tuple[int, str]]:
    """Docker's ``timestamps=True`` output as (microseconds, line) pairs."""
    lines: list[tuple[int, str]] = []
    for line in split_lines(stamped):
        stamp, _, text = line.partition(" ")
        try:
            lines.append((docker_time(stamp), text))
        except ValueError:  # not a timestamp: keep the line, at the time of the one before
            lines.append((lines[-1][0] if lines else 0, line))
    return lines


def follow_stamped(stamped: str, after: int | None, limit: int) -> LogChunk:
    """The lines of Docker's ``timestamps=True`` output written after the microsecond
    ``after`` (None: the last ``limit``), without their timestamps; the cursor is the last
    line's time."""
    lines = split_stamps(stamped)
    if after is not None:
        lines = [(t, text) for t, text in lines if t > after]
    skipped = after is not None and len(lines) > limit
    lines = lines[-limit:] if limit > 0 else []
    cursor = lines[-1][0] if lines else (after or 0)
    return LogChunk("".join(text for _, text in lines), cursor, skipped)


def follow_container(api: Any, container_id: str | None, after: int | None, limit: int) -> LogChunk:
    """:func:`follow_stamped` of what a container printed, asked of the engine (``api``:
    the docker SDK's low-level client): only what came after ``after`` when it is given."""
    if container_id is None:
        return LogChunk("", after or 0)  # not created yet: everything, next time
    query: dict[str, Any] = {}  # after 0: nothing seen yet, so all of it
    if after is None:
        query["tail"] = limit
    elif after > 0:  # a millisecond early: `since` is a float; repeats are dropped
        query["since"] = after / 1e6 - 0.001
    try:
        stamped = api.logs(container_id, timestamps=True, **query).decode(errors="replace")
    except Exception:
        return LogChunk("", after or 0)
    return follow_stamped(stamped, after, limit)


def strip_stamps(stamped: str) -> str:
    """Docker's ``timestamps=True`` output as the worker wrote it."""
    return "".join(text for _, text in split_stamps(stamped))
