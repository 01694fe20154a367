"""The input queue of one pool: a pure state machine.

Inputs go pending -> held by one worker (``running``: dispatched, queued there or running)
-> done or failed. The core decides retries (Modal's ``Retries`` semantics), settles the
inputs of lost workers (those the worker was running count as a lost attempt, charged to the
user or free when the infrastructure lost them, see ``losses.py``; those it only held go back
untouched), drops the inputs of cancelled calls and makes sure each input's outcome is
reported once: an output for an attempt that is no longer current (a worker declared lost
that still answered, a cancelled call) is dropped.

A worker without a register (one that shares no files with the control plane) cannot say
exactly what it ran when it died: when its loss was the user's, every input it held becomes
a *suspect*, requeued untouched and then dispatched alone, to a worker holding nothing else,
which confirms that it starts it before it does (``confirm``): a death then blames exactly
that input.

A record may hold a *run*: ``count`` consecutive inputs of one call whose pickles lie back to
back (a map's small inputs, sent as one). A run moves as one record and is split only where
inputs part ways: a worker asks for fewer, one of them is reported apart (it failed, it
printed, it was retried), a lost worker ran one of them, a lent slot gives back the rest.
The pieces share the bytes; each knows where its inputs start among them (``skip``).

The broker feeds it events and acts on what the methods return; nothing here does I/O.
"""

from __future__ import annotations

import collections
import heapq
import itertools
from collections.abc import Collection
from dataclasses import dataclass

from nbscale_runtime.protocol import (
    STATUS_CANCELLED,
    STATUS_ERROR,
    STATUS_LOST,
    STATUS_OK,
    STATUS_TIMEOUT,
)

from .input_record import InputRecord, carve, cut_at, holding, singles
from .losses import MAX_INFRASTRUCTURE_LOSSES
from .values import is_count, is_number

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
        if not is_count(n):
            raise ValueError(f"max_retries must be an int >= 0, got {n!r}")
        for name, low, high in _RETRY_RANGES:
            value = getattr(self, name)
            if not is_number(value):
                raise ValueError(f"{name} must be a number, got {value!r}")
            if not low <= value <= high:
                raise ValueError(f"{name} must be between {low:g} and {high:g}, got {value}")

    def delay(self, retry_number: int) -> float:
        """Seconds to wait before retry ``retry_number`` (1 for the first retry)."""
        raw = self.initial_delay * self.backoff_coefficient ** (retry_number - 1)
        return min(raw, self.max_delay)


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
        # worker id -> records dispatched to it and not yet reported, by their first input
        self.running: dict[str, dict[tuple[str, int], InputRecord]] = {}
        self._held: dict[str, int] = {}  # worker id -> inputs in those records
        self._ready = 0  # inputs in ``pending``
        self.cancelled_calls: set[str] = set()
        self.spawn_pending = 0
        self.suspects_pending = 0  # suspects among ``pending``
        self.alone: set[str] = set()  # workers running a suspect: they get nothing else

    # --- counts -------------------------------------------------------------------------

    @property
    def num_ready(self) -> int:
        """Inputs waiting for a worker now (retries waiting for their delay left out)."""
        return self._ready

    @property
    def num_pending(self) -> int:
        return self._ready + sum(d[2].count for d in self._delayed)

    @property
    def num_running(self) -> int:
        return sum(self._held.values())

    def running_on(self, worker_id: str) -> int:
        return self._held.get(worker_id, 0)

    def held_inputs(self, worker_id: str) -> dict[tuple[str, int], InputRecord]:
        """The inputs a worker holds, each as a record of its own, by (call id, index)."""
        return {
            one.key: one for r in self.running.get(worker_id, {}).values() for one in r.singles()
        }

    def inputs_of(self, call_id: str) -> tuple[list[InputRecord], list[InputRecord]]:
        """A call's (pending, running) inputs, each as a record of its own, retries waiting
        for their delay counted as pending. A scan of the queue: for status pages, never
        for the hot path."""
        pending = [r for r in self.pending if r.call_id == call_id]
        pending += [d[2] for d in self._delayed if d[2].call_id == call_id]
        running = [
            r for inputs in self.running.values() for r in inputs.values() if r.call_id == call_id
        ]
        return singles(pending), singles(running)

    # --- events -------------------------------------------------------------------------

    def submit(self, records: list[InputRecord]) -> None:
        self._push(records)

    def take(self, worker_id: str, n: int) -> list[InputRecord]:
        """Assign up to ``n`` pending inputs to ``worker_id``, oldest first (a run longer
        than what is left of ``n`` is split); a suspect only alone, to a worker that holds
        nothing else."""
        taken: list[InputRecord] = []
        on_worker = self.running.setdefault(worker_id, {})
        pending = self.pending
        if worker_id in self.alone:
            return taken
        suspects = self.suspects_pending  # almost always 0: one test per input, on a local
        got = 0
        while pending and got < n:
            record = pending.popleft()
            if record.call_id in self.cancelled_calls:
                self._ready -= record.count
                self.suspects_pending -= record.suspect
                self.spawn_pending -= record.count if record.spawned else 0
                suspects = self.suspects_pending
                continue
            if suspects and record.suspect:
                if taken or on_worker:
                    pending.appendleft(record)  # it waits for a worker of its own
                    break
                self.suspects_pending = suspects = suspects - 1
                self.alone.add(worker_id)
                n = 1
            if record.count > n - got:
                pending.appendleft(record.split(record.index + n - got))
            self._ready -= record.count
            got += record.count
            record.attempt += 1
            record.worker_id = worker_id
            on_worker[record.key] = record
            taken.append(record)
            if record.spawned:
                self.spawn_pending -= record.count
        self._held[worker_id] = self._held.get(worker_id, 0) + got
        return taken

    def report(
        self,
        worker_id: str,
        call_id: str,
        index: int,
        attempt: int,
        status: str,
        now: float,
        count: int = 1,
    ) -> Outcome | None:
        """A worker reported an attempt's outcome for inputs ``index`` .. ``index + count``
        (of one record it holds); None when it is stale or cancelled."""
        on_worker = self.running.get(worker_id)
        if on_worker is None:
            return None
        record = on_worker.get((call_id, index)) or holding(on_worker, call_id, index)
        if record is None or record.attempt != attempt or index + count > record.end:
            return None
        record = carve(on_worker, record, index, index + count)
        self._held[worker_id] -= count
        if record.suspect:
            record.suspect = record.confirmed = False  # it ended without killing anyone
            self.alone.discard(worker_id)
        if status == STATUS_CANCELLED or call_id in self.cancelled_calls:
            return None
        return self._settle(record, status, now)

    def confirm(self, worker_id: str, call_id: str, index: int, attempt: int) -> bool:
        """A worker says it starts a suspect input it holds; False when it is stale."""
        record = self.running.get(worker_id, {}).get((call_id, index))
        if record is None or record.attempt != attempt or not record.suspect:
            return False
        record.confirmed = True
        return True

    def worker_gone(
        self,
        worker_id: str,
        now: float,
        running: Collection[tuple[str, int, int]] | None,
        infrastructure: bool = False,
    ) -> list[Outcome]:
        """A worker left. The inputs it was running, as ``(call id, index, attempt)`` by its
        own last word, lost an attempt: charged to the user's retries, or free when the
        ``infrastructure`` lost them (after ``MAX_INFRASTRUCTURE_LOSSES`` in a row the input
        fails). The rest it had only queued go back to the front untouched. ``running``
        None: it cannot say (no register); then only a suspect it confirmed it started lost
        an attempt (and stays a suspect, should it be retried), and its other inputs become
        suspects, each on its own."""
        on_worker = self.running.pop(worker_id, {})
        self._held.pop(worker_id, None)
        self.alone.discard(worker_id)
        unknown = running is None
        if running is None:
            running = {(r.call_id, r.index, r.attempt) for r in on_worker.values() if r.confirmed}
        outcomes = []
        unstarted = []
        for record in cut_at(on_worker, {(c, i) for c, i, a in running}):
            if record.call_id in self.cancelled_calls:
                continue
            if (record.call_id, record.index, record.attempt) in running:
                record.suspect, record.confirmed = record.confirmed, False
                if record.yielded:
                    record.worker_id = None
                    outcomes.append(Outcome(record, STATUS_LOST, final=True))
                elif infrastructure:
                    outcomes.append(self._lost_to_infrastructure(record, now))
                else:
                    outcomes.append(self._settle(record, STATUS_LOST, now))
            elif unknown:
                for one in record.singles():
                    one.suspect = True
                    unstarted.append(one)
            else:
                unstarted.append(record)
        self._requeue_unstarted(unstarted)
        return outcomes

    def give_back(self, worker_id: str, running: Collection[tuple[str, int]]) -> list[InputRecord]:
        """A worker lends its slot: the inputs it holds but does not run (``running``:
        their (call id, index)) go back to the front of the queue untouched; returns them."""
        on_worker = self.running.get(worker_id, {})
        kept = set(running)
        unstarted = []
        for record in cut_at(on_worker, kept):
            if record.key in kept:
                on_worker[record.key] = record
            else:
                unstarted.append(record)
        self._held[worker_id] = sum(r.count for r in on_worker.values())
        if worker_id in self.alone and not on_worker:
            self.alone.discard(worker_id)
        self._requeue_unstarted(unstarted)
        return unstarted

    def _requeue_unstarted(self, unstarted: list[InputRecord]) -> None:
        """Inputs a worker held without starting them: pending again, at the front, as if
        never taken."""
        for record in unstarted:
            record.attempt -= 1
            record.worker_id = None
        self._push(unstarted, front=True)

    def _push(self, records: list[InputRecord], front: bool = False) -> None:
        if front:
            self.pending.extendleft(reversed(records))
        else:
            self.pending.extend(records)
        for r in records:
            self._ready += r.count
            if r.spawned:
                self.spawn_pending += r.count
            self.suspects_pending += r.suspect

    def cancel(self, call_id: str) -> set[str]:
        """Drop a call's inputs; returns the workers running some of them now."""
        self.cancelled_calls.add(call_id)
        kept = collections.deque(r for r in self.pending if r.call_id != call_id)
        dropped = [r for r in self.pending if r.call_id == call_id]
        dropped += [d[2] for d in self._delayed if d[2].call_id == call_id]
        self.spawn_pending -= sum(r.count for r in dropped if r.spawned)
        self.pending = kept
        self._ready = sum(r.count for r in kept)
        self.suspects_pending = sum(1 for r in kept if r.suspect)
        self._delayed = [d for d in self._delayed if d[2].call_id != call_id]
        heapq.heapify(self._delayed)
        busy = set()
        for worker_id, inputs in self.running.items():
            for key in [k for k in inputs if k[0] == call_id]:
                record = inputs.pop(key)
                self._held[worker_id] -= record.count
                if record.suspect:
                    self.alone.discard(worker_id)
                busy.add(worker_id)
        return busy

    def fail_pending(self, calls: Collection[str] | None = None) -> list[InputRecord]:
        """Take every input waiting for a worker (of ``calls`` only, when given), retries
        waiting for their delay included, each as a record of its own, to fail them all (a
        broken pool, launches that keep failing, a deadlock); running inputs stay."""
        delayed = [d[2] for d in sorted(self._delayed)]
        records = list(self.pending) + delayed
        if calls is not None:
            records = [r for r in records if r.call_id in calls]
            self.pending = collections.deque(r for r in self.pending if r.call_id not in calls)
            self._delayed = [d for d in self._delayed if d[2].call_id not in calls]
            heapq.heapify(self._delayed)
        else:
            self.pending.clear()
            self._delayed.clear()
        self._ready = sum(r.count for r in self.pending)
        self.suspects_pending = sum(1 for r in self.pending if r.suspect)  # of pending only
        self.spawn_pending -= sum(r.count for r in records if r.spawned)
        return singles(records)

    def forget_call(self, call_id: str) -> None:
        """The call is finished and its record gone: stop remembering it was cancelled."""
        self.cancelled_calls.discard(call_id)

    def release_delayed(self, now: float) -> int:
        """Move retries whose delay has passed to the pending queue; returns how many."""
        moved = 0
        while self._delayed and self._delayed[0][0] <= now:
            record = heapq.heappop(self._delayed)[2]
            self.pending.append(record)
            self._ready += record.count
            self.suspects_pending += record.suspect
            moved += record.count
        return moved

    def next_retry_at(self) -> float | None:
        return self._delayed[0][0] if self._delayed else None

    # --- internals ----------------------------------------------------------------------

    def _lost_to_infrastructure(self, record: InputRecord, now: float) -> Outcome:
        """A free attempt: requeued at once, unless the infrastructure keeps losing it."""
        record.worker_id = None
        record.free_attempts += 1
        record.infrastructure_streak += 1
        if record.infrastructure_streak >= MAX_INFRASTRUCTURE_LOSSES:
            return Outcome(record, STATUS_LOST, final=True)
        self._push([record], front=True)
        return Outcome(record, STATUS_LOST, final=False)

    def _settle(self, record: InputRecord, status: str, now: float) -> Outcome:
        record.worker_id = None
        record.infrastructure_streak = 0
        if (
            status != STATUS_OK
            and status in RETRYABLE
            and record.charged <= self.retries.max_retries
        ):
            delay = self.retries.delay(record.charged)
            if delay <= 0:
                self._push([record], front=True)
            else:
                self.spawn_pending += record.count if record.spawned else 0  # until retaken
                heapq.heappush(self._delayed, (now + delay, next(self._seq), record))
            return Outcome(record, status, final=False)
        return Outcome(record, status, final=True)
