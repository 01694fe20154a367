"""What a live view shows of one function call: counts, rate, and per-input rows.

A pure model, updated on the background loop by the call's invocation (inputs sent, inputs
handed to a worker, retries, results) and read by the views (widget, text bar) on the
caller's thread. It keeps the failures and the latest rows, never one row per input of a
100,000-input map.
"""

from __future__ import annotations

import collections
import time
from dataclasses import dataclass, field
from typing import Any

MAX_RECENT_ROWS = 50  # finished rows kept besides the failures
MAX_FAILED_ROWS = 200
_SUMMARY_CHARS = 80


def short_repr(value: Any, limit: int = _SUMMARY_CHARS) -> str:
    try:
        text = repr(value)
    except Exception as exc:  # a user __repr__ that fails must not break the view
        text = f"<unrepresentable {type(value).__name__}: {exc}>"
    return text if len(text) <= limit else text[: limit - 1] + "…"


@dataclass(slots=True)
class InputRow:
    index: int
    status: str  # "queued" | "running" | "retrying" | "done" | "failed"
    worker_id: str = ""
    attempt: int = 0
    duration: float | None = None
    summary: str = ""  # a short repr of the result or the exception
    stdout: str = ""


@dataclass
class CallProgress:
    function: str
    total: int | None = None  # known once the inputs are exhausted
    submitted: int = 0
    done: int = 0
    failed: int = 0
    retries: int = 0
    throttled_by: str | None = None  # the limit holding the call back, as text
    preparing: str | None = None  # what the call waits for before its inputs go out
    workers: str = ""  # what runs the workers, and why (render.workers_line)
    started_at: float = field(default_factory=time.monotonic)
    finished_at: float | None = None
    running: dict[int, InputRow] = field(default_factory=dict)
    recent: collections.deque[InputRow] = field(
        default_factory=lambda: collections.deque(maxlen=MAX_RECENT_ROWS)
    )
    failures: collections.deque[InputRow] = field(
        default_factory=lambda: collections.deque(maxlen=MAX_FAILED_ROWS)
    )
    version: int = 0  # bumped on every change, so views can skip redraws

    # --- updates (background loop) ------------------------------------------------------

    def prepare(self, step: str | None) -> None:
        """What the call waits for now (an image build's step; None once inputs can go)."""
        self.preparing = step
        self.version += 1

    def sent(self, count: int, throttled_by: str | None) -> None:
        self.submitted += count
        self.throttled_by = throttled_by
        self.version += 1

    def dispatched(self, worker_id: str, indices: list[int]) -> None:
        for index in indices:
            row = self.running.get(index)
            if row is None:
                self.running[index] = InputRow(index, "running", worker_id)
            else:
                row.status, row.worker_id = "running", worker_id
        self.version += 1

    def retrying(self, index: int, attempt: int, reason: str) -> None:
        self.retries += 1
        self.running[index] = InputRow(index, "retrying", attempt=attempt, summary=reason)
        self.version += 1

    def finished(
        self,
        index: int,
        ok: bool,
        value: Any,
        worker_id: str,
        attempt: int,
        duration: float,
        stdout: str,
    ) -> None:
        self.running.pop(index, None)
        row = InputRow(
            index,
            "done" if ok else "failed",
            worker_id,
            attempt,
            duration,
            short_repr(value),
            stdout,
        )
        if ok:
            self.done += 1
        else:
            self.failed += 1
            self.failures.append(row)
        self.recent.append(row)
        self.version += 1

    def close(self, total: int | None = None) -> None:
        if total is not None:
            self.total = total
        self.finished_at = time.monotonic()
        self.running.clear()
        self.version += 1

    # --- reading (views) ----------------------------------------------------------------

    @property
    def completed(self) -> int:
        return self.done + self.failed

    @property
    def pending(self) -> int:
        """Sent and not yet on a worker."""
        return max(0, self.submitted - self.completed - len(self.running))

    @property
    def elapsed(self) -> float:
        return (self.finished_at or time.monotonic()) - self.started_at

    @property
    def rate(self) -> float:
        """Inputs finished per second so far."""
        return self.completed / self.elapsed if self.elapsed > 0 else 0.0

    @property
    def eta(self) -> float | None:
        """Seconds left at the current rate, once the total is known."""
        if self.total is None or not self.rate:
            return None
        return max(0.0, (self.total - self.completed) / self.rate)

    def rows(self) -> list[InputRow]:
        """The rows worth showing: running ones, then failures and the latest results."""
        seen: set[int] = set()
        out: list[InputRow] = []
        for row in [
            *sorted(self.running.values(), key=lambda r: r.index),
            *self.failures,
            *reversed(self.recent),
        ]:
            if row.index not in seen:
                seen.add(row.index)
                out.append(row)
        return out

    def stdout_of(self, index: int) -> str | None:
        for row in [*self.failures, *self.recent]:
            if row.index == index:
                return row.stdout
        return None
