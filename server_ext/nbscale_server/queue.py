"""The input queue of one pool: a pure state machine.

Inputs go pending -> running (on one worker) -> done or failed. The core decides retries
(Modal's ``Retries`` semantics), requeues the inputs of lost workers, drops the inputs of
cancelled calls and makes sure each input's outcome is reported once: an output for an
attempt that is no longer current (a worker declared lost that still answered, a cancelled
call) is dropped.

The broker feeds it events and acts on what the methods return; nothing here does I/O.
"""

from __future__ import annotations

import collections
import heapq
import itertools
from dataclasses import dataclass, field
from typing import Any

from nbscale_runtime.protocol import (
    STATUS_CANCELLED,
    STATUS_ERROR,
    STATUS_LOST,
    STATUS_OK,
    STATUS_TIMEOUT,
)

# Outcomes a worker reports that count as a failed attempt and may be retried.
RETRYABLE = frozenset({STATUS_ERROR, STATUS_TIMEOUT, STATUS_LOST})
# Modal's bounds of a retry policy: (setting, lowest, highest)
_RETRY_RANGES = (
    ("backoff_coefficient", 1.0, 10.0),
    ("initial_delay", 0.0, 60.0),
    ("max_delay", 1.0, 60.0),
)


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Modal's ``Retries``, with its ranges (``nbscale.Retries`` is the public face)."""

    max_retries: int = 0
    backoff_coefficient: float = 2.0
    initial_delay: float = 1.0
    max_delay: float = 60.0

    def __post_init__(self) -> None:
        n = self.max_retries
        if not isinstance(n, int) or isinstance(n, bool) or n < 0:
            raise ValueError(f"max_retries must be an int >= 0, got {n!r}")
        for name, low, high in _RETRY_RANGES:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ValueError(f"{name} must be a number, got {value!r}")
            if not low <= value <= high:
                raise ValueError(f"{name} must be between {low:g} and {high:g}, got {value}")

    def delay(self, retry_number: int) -> float:
        """Seconds to wait before retry ``retry_number`` (1 for the first retry)."""
        raw = self.initial_delay * self.backoff_coefficient ** (retry_number - 1)
        return min(raw, self.max_delay)


@dataclass(slots=True)
class InputRecord:
    call_id: str
    index: int
    data: Any  # the pickled (args, kwargs), never unpickled here
    buffers: list[Any] = field(default_factory=list)
    attempt: int = 0  # attempts started so far; the current one is ``attempt``
    worker_id: str | None = None
    spawned: bool = False

    @property
    def key(self) -> tuple[str, int]:
        return (self.call_id, self.index)


@dataclass(frozen=True, slots=True)
class Outcome:
    """What became of one input after an event: deliver it, or it was retried."""

    record: InputRecord
    status: str  # a protocol status; STATUS_LOST for a worker that vanished
    final: bool  # True: report to the caller; False: it was requeued for another attempt


class QueueCore:
    def __init__(self, retries: RetryPolicy | None = None) -> None:
        self.retries = retries or RetryPolicy()
        self.pending: collections.deque[InputRecord] = collections.deque()
        self._delayed: list[tuple[float, int, InputRecord]] = []
        self._seq = itertools.count()
        # worker id -> inputs dispatched to it and not yet reported, in dispatch order
        self.running: dict[str, dict[tuple[str, int], InputRecord]] = {}
        self.cancelled_calls: set[str] = set()
        self.spawn_pending = 0

    # --- counts -------------------------------------------------------------------------

    @property
    def num_pending(self) -> int:
        return len(self.pending) + len(self._delayed)

    @property
    def num_running(self) -> int:
        return sum(len(inputs) for inputs in self.running.values())

    def running_on(self, worker_id: str) -> int:
        return len(self.running.get(worker_id, ()))

    def inputs_of(self, call_id: str) -> tuple[list[InputRecord], list[InputRecord]]:
        """A call's (pending, running) inputs, retries waiting for their delay counted as
        pending. A scan of the queue: for status pages, never for the hot path."""
        pending = [r for r in self.pending if r.call_id == call_id]
        pending += [d[2] for d in self._delayed if d[2].call_id == call_id]
        running = [
            r for inputs in self.running.values() for r in inputs.values() if r.call_id == call_id
        ]
        return pending, running

    # --- events -------------------------------------------------------------------------

    def submit(self, records: list[InputRecord]) -> None:
        self.pending.extend(records)
        self.spawn_pending += sum(1 for r in records if r.spawned)

    def take(self, worker_id: str, n: int) -> list[InputRecord]:
        """Assign up to ``n`` pending inputs to ``worker_id``, oldest first."""
        taken: list[InputRecord] = []
        on_worker = self.running.setdefault(worker_id, {})
        pending = self.pending
        while pending and len(taken) < n:
            record = pending.popleft()
            if record.call_id in self.cancelled_calls:
                continue
            record.attempt += 1
            record.worker_id = worker_id
            on_worker[record.key] = record
            taken.append(record)
            if record.spawned:
                self.spawn_pending -= 1
        return taken

    def report(
        self, worker_id: str, call_id: str, index: int, attempt: int, status: str, now: float
    ) -> Outcome | None:
        """A worker reported an attempt's outcome; None when it is stale or cancelled."""
        on_worker = self.running.get(worker_id)
        record = on_worker.get((call_id, index)) if on_worker else None
        if on_worker is None or record is None or record.attempt != attempt:
            return None
        del on_worker[(call_id, index)]
        if status == STATUS_CANCELLED or call_id in self.cancelled_calls:
            return None
        return self._settle(record, status, now)

    def worker_gone(self, worker_id: str, now: float, at_fault: int) -> list[Outcome]:
        """A worker left. Its first ``at_fault`` inputs (the ones it was running) count as a
        failed attempt; the rest it had only queued go back to the front untouched."""
        inputs = list(self.running.pop(worker_id, {}).values())
        outcomes = []
        unstarted = []
        for position, record in enumerate(inputs):
            if record.call_id in self.cancelled_calls:
                continue
            if position < at_fault:
                outcomes.append(self._settle(record, STATUS_LOST, now))
            else:
                record.attempt -= 1
                record.worker_id = None
                unstarted.append(record)
        self.pending.extendleft(reversed(unstarted))
        self.spawn_pending += sum(1 for r in unstarted if r.spawned)
        return outcomes

    def cancel(self, call_id: str) -> set[str]:
        """Drop a call's inputs; returns the workers running some of them now."""
        self.cancelled_calls.add(call_id)
        kept = collections.deque(r for r in self.pending if r.call_id != call_id)
        dropped = [r for r in self.pending if r.call_id == call_id]
        dropped += [d[2] for d in self._delayed if d[2].call_id == call_id]
        self.spawn_pending -= sum(1 for r in dropped if r.spawned)
        self.pending = kept
        self._delayed = [d for d in self._delayed if d[2].call_id != call_id]
        heapq.heapify(self._delayed)
        busy = set()
        for worker_id, inputs in self.running.items():
            for key in [k for k in inputs if k[0] == call_id]:
                del inputs[key]
                busy.add(worker_id)
        return busy

    def fail_pending(self) -> list[InputRecord]:
        """Take every input waiting for a worker, retries waiting for their delay included,
        to fail them all (a broken pool, launches that keep failing); running inputs stay."""
        records = list(self.pending) + [d[2] for d in sorted(self._delayed)]
        self.pending.clear()
        self._delayed.clear()
        self.spawn_pending -= sum(1 for r in records if r.spawned)
        return records

    def forget_call(self, call_id: str) -> None:
        """The call is finished and its record gone: stop remembering it was cancelled."""
        self.cancelled_calls.discard(call_id)

    def release_delayed(self, now: float) -> int:
        """Move retries whose delay has passed to the pending queue; returns how many."""
        moved = 0
        while self._delayed and self._delayed[0][0] <= now:
            self.pending.append(heapq.heappop(self._delayed)[2])
            moved += 1
        return moved

    def next_retry_at(self) -> float | None:
        return self._delayed[0][0] if self._delayed else None

    # --- internals ----------------------------------------------------------------------

    def _settle(self, record: InputRecord, status: str, now: float) -> Outcome:
        record.worker_id = None
        if (
            status != STATUS_OK
            and status in RETRYABLE
            and record.attempt <= self.retries.max_retries
        ):
            delay = self.retries.delay(record.attempt)
            self.spawn_pending += record.spawned  # pending again until retaken
            if delay <= 0:
                self.pending.appendleft(record)
            else:
                heapq.heappush(self._delayed, (now + delay, next(self._seq), record))
            return Outcome(record, status, final=False)
        return Outcome(record, status, final=True)
