"""Settling: what workers report, and what the control plane makes, to where it goes.

An output goes to its caller, or to the store for a spawned or detached call
(``spawned.py``), or its input is retried, as the pool's ``QueueCore`` decides; a
generator's yielded values go to their caller without settling the input. A call whose
inputs are all settled leaves the registry of running calls (``maybe_finish``).

Result bytes pass from worker to caller without being unpickled here; a batch that is
final and for one caller is forwarded as it came.
"""

from __future__ import annotations

import collections
from collections import defaultdict
from typing import Any

from nbscale_runtime import protocol
from nbscale_runtime.protocol import (
    ERROR_CALL_CANCELLED,
    OUT_ATTEMPT,
    OUT_CALL_ID,
    OUT_COUNT,
    OUT_DURATION,
    OUT_INDEX,
    OUT_STATUS,
    OUT_WHERE,
    OUT_WORKER_ID,
    STATUS_OK,
    STATUS_REJECTED,
    STATUS_YIELD,
    output_row,
    row_count,
)
from nbscale_runtime.serialization import pack, split_payload

from .calls import CallState
from .errors import rejection
from .outbox import Outbox
from .outputs import Entry, keep_printed, outputs_message, with_earlier_printed
from .pool import Pool, Records
from .queue import Outcome
from .spawned import SpawnedCalls

_FINISHED_CALLS_KEPT = 50  # finished maps and remotes the API still lists

# A final outcome on its way to a caller: (outcome, pickle bytes, buffers, outputs row)
Settled = tuple[Outcome, Any, list[Any], list[Any]]


class Settling:
    """Over the delivery's call registry (``calls`` running, ``finished_calls`` kept a
    while), which it shares."""

    def __init__(
        self,
        records: Records,
        outbox: Outbox,
        calls: dict[str, CallState],
        finished_calls: collections.OrderedDict[str, CallState],
        spawned: SpawnedCalls,
    ) -> None:
        self.records = records
        self.outbox = outbox
        self.calls = calls
        self.finished_calls = finished_calls
        self.spawned = spawned

    def maybe_finish(self, call: CallState) -> None:
        if not call.finished or call.detaching:
            return
        if self.calls.pop(call.call_id, None) is not None:
            if call.keeps_outputs:
                self.spawned.closed(call)  # the store keeps it, and says when it dropped it
            else:  # kept a while, read-only, so views see a finished call's final counts
                self.finished_calls[call.call_id] = call
                while len(self.finished_calls) > _FINISHED_CALLS_KEPT:
                    self.finished_calls.popitem(last=False)
        pool = self.records.pools.get(call.pool_id)
        if pool and not call.cancelled:
            pool.queue.forget_call(call.call_id)

    def on_outputs(self, msg: protocol.Outputs, payload: list[Any], now: float) -> list[Pool]:
        """Settle a worker's outputs; returns the pools of the workers that reported, whose
        freed slots the delivery fills."""
        items = msg.items
        if len(items) == 1 and payload and items[0][OUT_STATUS] != STATUS_YIELD:
            return self._on_lone_output(msg, payload, now)
        return self._on_batch(msg, payload, now)

    def _on_batch(self, msg: protocol.Outputs, payload: list[Any], now: float) -> list[Pool]:
        items = msg.items
        if items and any(item[OUT_STATUS] == STATUS_YIELD for item in items):
            items, payload = self._forward_yields(items, payload, now)
        if not items:
            return []
        workers = self.records.workers
        pools = self.records.pools
        parts = split_payload(payload, [i[OUT_WHERE] for i in items])
        settled: dict[str, list[Settled]] = defaultdict(list)
        touched: set[str] = set()
        sender = workers.get(items[0][OUT_WORKER_ID])
        if sender is not None:
            seconds = sum(item[OUT_DURATION] for item in items)
            inputs = sum(row_count(item[OUT_COUNT]) for item in items)
            pools[sender.pool_id].observe_durations(seconds, inputs)
        for item, (data, bufs) in zip(items, parts, strict=False):
            worker_id = item[OUT_WORKER_ID]
            w = workers.get(worker_id)
            if w is None:
                continue
            w.last_seen = now
            pool = pools[w.pool_id]
            touched.add(worker_id)
            outcome = pool.queue.report(
                worker_id,
                item[OUT_CALL_ID],
                item[OUT_INDEX],
                item[OUT_ATTEMPT],
                item[OUT_STATUS],
                now,
                row_count(item[OUT_COUNT]),
            )
            if outcome is None:
                continue
            if outcome.final:
                settled[pool.pool_id].append((outcome, data, bufs, item))
            else:
                keep_printed(outcome.record, item)
                self.report_retries([outcome])
        # Usually the whole batch is final and for one caller: forward it as it came.
        whole = (items, payload) if len(settled) == 1 else None
        for pool_id, outcomes in settled.items():
            self._deliver(pools[pool_id], outcomes, whole)
        if msg.want and sender is not None:  # the worker's next request, riding along
            sender.want += msg.want
        freed = []
        for worker_id in touched:
            w = workers[worker_id]
            pool = pools[w.pool_id]
            w.settled(pool.queue.running_on(worker_id), now)
            freed.append(pool)
        return freed

    def _on_lone_output(self, msg: protocol.Outputs, payload: list[Any], now: float) -> list[Pool]:
        """``on_outputs`` of a batch of one row, not a yielded value (a ``.remote()``'s
        output, as a rule), without a batch's grouping (settled and forwarded in 7 us of W2's
        round trip instead of 10.5): the same outcome, step by step."""
        [item] = msg.items
        w = self.records.workers.get(item[OUT_WORKER_ID])
        if w is None:
            return []
        [(data, bufs)] = split_payload(payload, [item[OUT_WHERE]])
        pool = self.records.pools[w.pool_id]
        count = row_count(item[OUT_COUNT])
        pool.observe_durations(item[OUT_DURATION], count)
        w.last_seen = now
        queue = pool.queue
        outcome = queue.report(
            w.worker_id,
            item[OUT_CALL_ID],
            item[OUT_INDEX],
            item[OUT_ATTEMPT],
            item[OUT_STATUS],
            now,
            count,
        )
        if outcome is not None and outcome.final:
            self._deliver(pool, [(outcome, data, bufs, item)], (msg.items, payload))
        elif outcome is not None:
            keep_printed(outcome.record, item)
            self.report_retries([outcome])
        if msg.want:
            w.want += msg.want
        w.settled(queue.running_on(w.worker_id), now)
        return [pool]

    def _forward_yields(
        self, items: list[list[Any]], payload: list[Any], now: float
    ) -> tuple[list[list[Any]], list[Any]]:
        """Send the values generators yielded to their callers (those of the attempt a
        worker holds now); returns the other rows, repacked."""
        by_owner: dict[bytes, list[Entry]] = defaultdict(list)
        rest: list[Entry] = []
        parts = split_payload(payload, [i[OUT_WHERE] for i in items])
        for item, (data, bufs) in zip(items, parts, strict=False):
            if item[OUT_STATUS] != STATUS_YIELD:
                rest.append((item, data, bufs))
                continue
            w = self.records.workers.get(item[OUT_WORKER_ID])
            call = self.calls.get(item[OUT_CALL_ID])
            if w is None or call is None or call.cancelled or call.kind == "spawn":
                continue
            w.last_seen = now
            held = self.records.pools[w.pool_id].queue.held_inputs(w.worker_id)
            record = held.get((item[OUT_CALL_ID], item[OUT_INDEX]))
            if record is not None and record.attempt == item[OUT_ATTEMPT]:
                record.yielded = True
                by_owner[call.owner].append((item, data, bufs))
        for owner, entries in by_owner.items():
            self.outbox.send_client(owner, *outputs_message(entries))
        if not rest:
            return [], []
        msg, frames = outputs_message(rest)
        return msg.items, frames

    def report_retries(self, outcomes: list[Outcome]) -> None:
        for o in outcomes:
            call = self.calls.get(o.record.call_id)
            if call is not None and call.progress and not o.final:
                retry = [[o.record.index, o.record.attempt, o.status]]  # RETRY_* rows
                self.outbox.send_client(call.owner, protocol.Progress(call.call_id, [], retry))

    # --- outcomes the control plane makes -----------------------------------------------

    def deliver_made(self, pool: Pool, outcomes: list[tuple[Outcome, bytes]]) -> None:
        """Deliver control-plane-made final outcomes (lost, rejected, ...) with payloads."""
        rows: list[Settled] = []
        for outcome, data in outcomes:
            assert outcome.record.count == 1, "made outcomes are of single inputs"
            r = outcome.record
            row = output_row(r.call_id, r.index, r.attempt, outcome.status, (0, 0, 0))
            row[OUT_WORKER_ID] = r.worker_id or ""
            rows.append((outcome, data, [], row))
        self._deliver(pool, rows)

    def break_pool(self, pool: Pool, status: str, payload: bytes) -> None:
        """Every waiting input of ``pool`` fails with ``payload``; so will new ones, until the
        function is registered again."""
        pool.broken = (status, payload)
        self.fail_waiting(pool, status, payload)

    def fail_waiting(self, pool: Pool, status: str, payload: bytes) -> None:
        """Every input of ``pool`` waiting for a worker fails with ``payload``."""
        failed = pool.queue.fail_pending()  # each input a record of its own
        self.deliver_made(pool, [(Outcome(r, status, True), payload) for r in failed])

    def _deliver(
        self,
        pool: Pool,
        rows: list[Settled],
        whole: tuple[list[list[Any]], list[Any]] | None = None,
    ) -> None:
        """Push final outcomes to their callers (or store them for spawned calls). ``whole``
        is the worker's message they all came from, forwarded untouched when it can be."""
        if len(rows) == 1:
            self._deliver_one(pool, rows[0], whole)
        else:
            self._deliver_all(pool, rows, whole)

    def _deliver_all(
        self,
        pool: Pool,
        rows: list[Settled],
        whole: tuple[list[list[Any]], list[Any]] | None = None,
    ) -> None:
        by_owner: dict[bytes, list[Entry]] = defaultdict(list)
        finished: dict[str, CallState] = {}
        for outcome, data, bufs, row in rows:
            call = self.calls.get(outcome.record.call_id)
            if call is None or call.cancelled:
                continue
            item = self._count_final(pool, call, outcome, row)
            if item is not row:  # the row changed: the worker's message cannot go as it came
                whole = None
            if call.keeps_outputs:
                self.spawned.settled(call, item, data, bufs)
            else:
                by_owner[call.owner].append((item, data, bufs))
            finished[call.call_id] = call
        for owner, entries in by_owner.items():
            if whole is not None and len(entries) == len(whole[0]) == len(rows):
                self.outbox.send_client(owner, protocol.Outputs(whole[0]), whole[1])
                continue
            self.outbox.send_client(owner, *outputs_message(entries))
        for call in finished.values():
            self.maybe_finish(call)

    def _deliver_one(
        self, pool: Pool, settled: Settled, whole: tuple[list[list[Any]], list[Any]] | None
    ) -> None:
        """``_deliver`` of one final outcome, without grouping by caller."""
        outcome, data, bufs, row = settled
        call = self.calls.get(outcome.record.call_id)
        if call is None or call.cancelled:
            return
        item = self._count_final(pool, call, outcome, row)
        if call.keeps_outputs:
            self.spawned.settled(call, item, data, bufs)
        elif whole is not None and item is row and len(whole[0]) == 1:
            self.outbox.send_client(call.owner, protocol.Outputs(whole[0]), whole[1])
        else:
            self.outbox.send_client(call.owner, *outputs_message([(item, data, bufs)]))
        self.maybe_finish(call)

    @staticmethod
    def _count_final(pool: Pool, call: CallState, outcome: Outcome, row: list[Any]) -> list[Any]:
        """Count a final outcome in its call and pool; its row, after what earlier attempts
        printed."""
        count = outcome.record.count
        failed = count if outcome.status != STATUS_OK else 0
        call.reported += count
        call.failed += failed
        pool.failed += failed
        pool.done += count - failed
        return with_earlier_printed(outcome.record, row)

    def tell_cancelled(self, call: CallState, pool: Pool) -> None:
        pending, running = pool.queue.inputs_of(call.call_id)
        if not pending and not running:
            return
        record = rejection(ERROR_CALL_CANCELLED, f"{pool.name}: the call was cancelled")
        frames, [where] = pack([(record, ())])
        items = [
            output_row(r.call_id, r.index, r.attempt, STATUS_REJECTED, where)
            for r in pending + running
        ]
        self.outbox.send_client(call.owner, protocol.Outputs(items), frames)
