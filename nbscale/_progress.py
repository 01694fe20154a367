"""What a live view shows of one map: its counts, and its inputs' rows and drill-down.

A model updated on the background loop by the call's invocation (inputs sent, handed to a
worker, retried, started, printing, finished) and read by the views on the caller's thread
through :meth:`CallProgress.snapshot`, taken under a lock: every view of every refresh
reads counts that add up, ``done + failed + cancelled + running + pending`` being the
total when it is known (from ``len()`` of the inputs, or ``total=``), else the inputs sent.

An input handed to a worker runs there once the worker's earlier inputs are done (workers
queue a few ahead): of the inputs a worker holds, the first ``slots`` count as running, the
rest as pending. The model keeps every failure's row and the latest finished ones (the
``progress_outputs_kept`` setting), never one row per input of a 100,000-input map.
"""

from __future__ import annotations

import collections
import itertools
import threading
import time
from dataclasses import dataclass, field
from typing import Any

MAX_FAILED_ROWS = 10_000  # failures kept with their output and traceback
OUTPUT_CHARS = 8_000  # the tail of an input's output that is kept
# The rows a snapshot carries (a map may run 1,000 inputs at once and fail thousands).
ACTIVE_SHOWN = 10
FAILED_SHOWN = 10
DONE_SHOWN = 10
FIRST_FAILURES = 10  # named in a summary
_SUMMARY_CHARS = 80


def short_repr(value: Any, limit: int = _SUMMARY_CHARS) -> str:
    try:
        text = repr(value)
    except Exception as exc:  # a user __repr__ that fails must not break the view
        text = f"<unrepresentable {type(value).__name__}: {exc}>"
    return text if len(text) <= limit else text[: limit - 1] + "…"


def tail(text: str, limit: int = OUTPUT_CHARS) -> str:
    if len(text) <= limit:
        return text
    return f"[… {len(text) - limit:,} earlier characters not kept]\n" + text[-limit:]


@dataclass(slots=True)
class Attempt:
    """One attempt of an input: where and when it ran, and how it ended."""

    number: int
    worker_id: str
    started_at: float | None = None  # seconds since the epoch, as the worker reported it
    duration: float | None = None
    outcome: str = "running"  # running | ok | error | timeout | lost | cancelled | ...


@dataclass(slots=True)
class InputRow:
    index: int
    # "pending" | "queued" (on a worker, behind others) | "running" | "retrying" | "done" |
    # "failed" | "cancelled"
    status: str
    worker_id: str = ""
    attempt: int = 0
    duration: float | None = None
    summary: str = ""  # a short repr of the result or the exception
    output: str = ""  # what it printed: streamed while it runs, whole once it is done
    traceback: str = ""  # a failure's, as text
    attempts: list[Attempt] = field(default_factory=list)

    def attempt_on(self, worker_id: str, number: int) -> Attempt:
        """The record of attempt ``number`` (on ``worker_id``), made when first heard of."""
        for a in self.attempts:
            if a.number == number:
                return a
        made = Attempt(number, worker_id)
        self.attempts.append(made)
        return made


@dataclass(frozen=True, slots=True)
class Counts:
    """Where a map's inputs are, at one instant; the five states add up to ``of``."""

    total: int | None  # known: from len(), total= or once the inputs ran out
    submitted: int
    done: int
    failed: int
    cancelled: int
    running: int
    pending: int
    retries: int

    @property
    def of(self) -> int:
        return self.done + self.failed + self.cancelled + self.running + self.pending

    @property
    def completed(self) -> int:
        return self.done + self.failed + self.cancelled


@dataclass(frozen=True, slots=True)
class Snapshot:
    """Everything a view draws, read at once under the model's lock."""

    function: str
    counts: Counts
    rows: tuple[InputRow, ...]  # running first, then failures and the latest results
    elapsed: float
    rate: float  # inputs run (done or failed) per second
    eta: float | None  # seconds left; None without a total, or once it ended
    finished: bool
    throttled_by: str | None
    preparing: str | None
    workers: str
    started_wall: float  # seconds since the epoch when the map started
    failures: tuple[tuple[int, str], ...]  # the first failures: (index, the error's repr)


class CallProgress:
    def __init__(
        self, function: str, total: int | None = None, slots: int = 1, kept: int = 100
    ) -> None:
        """``total``: the inputs' number when known beforehand; ``slots``: inputs a worker
        runs at once; ``kept``: finished inputs whose rows (and output) are kept."""
        self.function = function
        self.total = total
        self.slots = max(1, slots)
        self.submitted = self.done = self.failed = self.cancelled = self.retries = 0
        self.throttled_by: str | None = None  # the limit holding the call back, as text
        self.preparing: str | None = None  # what the call waits for before its inputs go
        self.workers = ""  # what runs the workers, and why (render.workers_line)
        self.started_at = time.monotonic()
        self.started_wall = time.time()
        self.finished_at: float | None = None
        self.on_workers: dict[str, list[int]] = {}  # inputs each worker holds, in order
        self.active: dict[int, InputRow] = {}  # inputs on a worker or waiting for a retry
        self.recent: collections.deque[InputRow] = collections.deque(maxlen=max(1, kept))
        self.failures: collections.deque[InputRow] = collections.deque(maxlen=MAX_FAILED_ROWS)
        self.version = 0  # bumped on every change, so that views can skip redraws
        self._lock = threading.Lock()

    # --- updates (background loop) ------------------------------------------------------

    def prepare(self, step: str | None) -> None:
        """What the call waits for now (an image build's step; None once inputs can go)."""
        with self._lock:
            self.preparing = step
            self.version += 1

    def sent(self, count: int, throttled_by: str | None) -> None:
        with self._lock:
            self.submitted += count
            self.throttled_by = throttled_by
            self.version += 1

    def dispatched(self, worker_id: str, indices: list[int]) -> None:
        """The control plane handed these inputs to ``worker_id``."""
        with self._lock:
            held = self.on_workers.setdefault(worker_id, [])
            for index in indices:
                row = self.active.get(index)
                if row is None:
                    row = self.active[index] = InputRow(index, "pending")
                if row.status in ("queued", "running"):  # handed back untouched (lost worker)
                    self._leave_worker(row)
                    row.attempt_on(worker_id, row.attempt).worker_id = worker_id
                else:  # a first attempt, or a retry
                    row.attempt += 1
                    row.attempt_on(worker_id, row.attempt)
                row.status, row.worker_id = "queued", worker_id
                held.append(index)
            self.version += 1

    def retrying(self, index: int, attempt: int, status: str) -> None:
        """Attempt ``attempt`` of input ``index`` ended with ``status``; it waits again."""
        with self._lock:
            self.retries += 1
            row = self.active.get(index)
            if row is None:
                row = self.active[index] = InputRow(index, "retrying", attempt=attempt)
            self._leave_worker(row)
            row.attempt_on(row.worker_id, attempt).outcome = status
            row.status, row.summary = "retrying", f"attempt {attempt} {status}"
            self.version += 1

    def started(self, index: int, attempt: int, started_at: float, text: str) -> None:
        """A worker reports input ``index`` running since ``started_at`` (epoch seconds),
        and what it printed since its last report."""
        with self._lock:
            row = self.active.get(index)
            if row is None or row.status not in ("queued", "running"):
                return  # finished in between: its whole output came with its result
            row.attempt_on(row.worker_id, attempt).started_at = started_at
            if text:
                row.output = tail(row.output + text)
            self.version += 1

    def finished(self, outputs: list[tuple[int, str, Any, str, int, float, str, str]]) -> None:
        """Inputs that ended: (index, status, value, worker id, attempt, duration, output,
        traceback text); status is "done", "failed" or "cancelled"."""
        with self._lock:
            for index, status, value, worker_id, attempt, duration, output, tb in outputs:
                row = self.active.pop(index, None) or InputRow(index, status)
                self._leave_worker(row)
                row.status, row.worker_id, row.attempt = status, worker_id, attempt
                # a cancelled input whose worker never said how long it ran has no time
                took = None if status == "cancelled" and not duration else duration
                row.duration, row.summary = took, short_repr(value)
                row.output, row.traceback = tail(output), tb
                run = row.attempt_on(worker_id, attempt)
                run.worker_id, run.duration = worker_id, took  # the worker that said so
                run.outcome = {"done": "ok", "failed": "error"}.get(status, status)
                if status == "done":
                    self.done += 1
                elif status == "failed":
                    self.failed += 1
                    self.failures.append(row)
                else:
                    self.cancelled += 1
                if status != "failed":
                    self.recent.append(row)
            self.version += 1

    def close(self, total: int | None = None, cancelled: bool = False) -> None:
        """The map ended (``total``: its inputs, once they ran out). ``cancelled``: the
        inputs that did not finish never will (cancelled, interrupted, stopped early)."""
        with self._lock:
            if total is not None:
                self.total = total
            if self.finished_at is None:
                self.finished_at = time.monotonic()
            if cancelled:
                of = max(self.total or 0, self.submitted)
                self.cancelled = of - self.done - self.failed
            self.active.clear()
            self.on_workers.clear()
            self.version += 1

    def _leave_worker(self, row: InputRow) -> None:
        held = self.on_workers.get(row.worker_id)
        if held is not None and row.index in held:
            held.remove(row.index)
            if not held:
                del self.on_workers[row.worker_id]

    # --- reading (views) ----------------------------------------------------------------

    def snapshot(self) -> Snapshot:
        with self._lock:
            now = time.monotonic()
            running = 0
            for held in self.on_workers.values():  # each worker runs its first ``slots``
                for position, index in enumerate(held):
                    row = self.active[index]
                    row.status = "running" if position < self.slots else "queued"
                    running += position < self.slots
            known = self.total if self.total is not None else None
            of = max(known or 0, self.submitted)
            completed = self.done + self.failed + self.cancelled
            counts = Counts(
                known if known is None else of,
                self.submitted,
                self.done,
                self.failed,
                self.cancelled,
                running,
                max(0, of - completed - running),
                self.retries,
            )
            finished = self.finished_at is not None
            elapsed = (self.finished_at or now) - self.started_at
            ran = self.done + self.failed  # cancelled inputs did not run: not in the rate
            rate = ran / elapsed if elapsed > 0 else 0.0
            eta = None
            if not finished and counts.total is not None and rate > 0 and ran:
                eta = (counts.total - completed) / rate
            first_failures = itertools.islice(self.failures, FIRST_FAILURES)
            return Snapshot(
                self.function,
                counts,
                tuple(self._rows()),
                elapsed,
                rate,
                eta,
                finished,
                self.throttled_by,
                self.preparing,
                self.workers,
                self.started_wall,
                tuple((r.index, r.summary) for r in first_failures),
            )

    def _rows(self) -> list[InputRow]:
        """Some running inputs first (then retrying and queued ones), the latest failures,
        the latest results; each input once. Rows are copied: a view reads them while the
        loop updates the model."""
        order = {"running": 0, "retrying": 1, "queued": 2}
        active = sorted(self.active.values(), key=lambda r: (order.get(r.status, 3), r.index))
        failed = [self.failures[-i] for i in range(1, min(FAILED_SHOWN, len(self.failures)) + 1)]
        done = [self.recent[-i] for i in range(1, min(DONE_SHOWN, len(self.recent)) + 1)]
        seen: set[int] = set()
        rows = []
        for row in [*active[:ACTIVE_SHOWN], *failed, *done]:
            if row.index not in seen:
                seen.add(row.index)
                rows.append(_copy(row))
        return rows

    def row(self, index: int) -> InputRow | None:
        """Input ``index``'s row, if the model keeps it."""
        with self._lock:
            for row in [*self.active.values(), *self.failures, *self.recent]:
                if row.index == index:
                    return _copy(row)
        return None


def _copy(row: InputRow) -> InputRow:
    attempts = [
        Attempt(a.number, a.worker_id, a.started_at, a.duration, a.outcome) for a in row.attempts
    ]
    return InputRow(
        row.index,
        row.status,
        row.worker_id,
        row.attempt,
        row.duration,
        row.summary,
        row.output,
        row.traceback,
        attempts,
    )
