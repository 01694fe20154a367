"""Delivery: inputs in, inputs out to workers, outputs back to their callers.

It keeps the call registry (running calls and the latest finished ones), admits submissions
under the limits, hands pending inputs to the workers that asked for them (``dispatch``),
and settles what workers report: an output goes to its caller, or to the store for a
spawned call (``spawned.py``, which also answers those who fetch them), or its input is
retried, as the pool's ``QueueCore`` decides. It never starts or stops a worker (that is
the fleet's job).

Result bytes pass from worker to caller without being unpickled here; a batch that is
final and for one caller is forwarded as it came.
"""

from __future__ import annotations

import collections
import heapq
import itertools
import time
from collections import defaultdict
from collections.abc import Callable
from typing import Any

from nbscale_runtime import protocol
from nbscale_runtime.protocol import (
    ERROR_CALL_CANCELLED,
    ERROR_CONTROL_PLANE,
    ERROR_INVALID,
    ERROR_RESOURCE_EXHAUSTED,
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
    SUBMIT_COUNT,
    SUBMIT_INDEX,
    SUBMIT_SIZES,
    SUBMIT_WHERE,
    output_row,
    row_count,
)
from nbscale_runtime.serialization import pack, split_payload

from .calls import CallState
from .errors import RequestError, rejection
from .input_record import InputRecord, singles
from .limits import Limits, admit, describe
from .outbox import Outbox
from .outputs import Entry, keep_printed, outputs_message, with_earlier_printed
from .pool import Pool, Records, WorkerState
from .queue import Outcome
from .spawned import SpawnedCalls
from .store import Durable, SpawnStore

_FINISHED_CALLS_KEPT = 50  # finished maps and remotes the API still lists

# A final outcome on its way to a caller: (outcome, pickle bytes, buffers, outputs row)
Settled = tuple[Outcome, Any, list[Any], list[Any]]


class Delivery:
    def __init__(
        self,
        records: Records,
        outbox: Outbox,
        limits: Limits,
        clock: Callable[[], float],
        store: SpawnStore,
    ) -> None:
        self.records = records
        self.outbox = outbox
        self.limits = limits
        self.clock = clock
        self.calls: dict[str, CallState] = {}
        # finished calls, kept a while so the API can show how they ended (spawned ones
        # stay in the store beyond)
        self.finished_calls: collections.OrderedDict[str, CallState] = collections.OrderedDict()
        self.store = store
        self.spawned = SpawnedCalls(self.calls, outbox, self.store, clock)
        self._last_seq = self.store.last_seq()

    # --- the call registry --------------------------------------------------------------

    def call(self, call_id: str) -> CallState:
        """A call running or finished lately, or a spawned call in the store."""
        call = self.calls.get(call_id) or self.finished_calls.get(call_id)
        return call if call is not None else self.spawned.lookup(call_id)

    def _new_seq(self) -> int:
        """Microseconds since the epoch, unique and increasing in this control plane."""
        self._last_seq = max(self._last_seq + 1, time.time_ns() // 1000)
        return self._last_seq

    def listed_calls(self, limit: int | None = None) -> dict[str, CallState]:
        """The calls in memory: those running, then the latest finished ones; with a
        ``limit``, only the newest that many (cheap with a hundred thousand spawns running:
        both registries are in the order calls were opened)."""
        if limit is None:
            return {**self.calls, **self.finished_calls}
        running = itertools.islice(reversed(self.calls.values()), limit)
        finished = itertools.islice(reversed(self.finished_calls.values()), limit)
        newest = heapq.nlargest(limit, itertools.chain(running, finished), key=_seq)
        return {c.call_id: c for c in newest}

    def cancelled_before(self, call_id: str) -> bool:
        """Cancelled (by the REST API) and forgotten since."""
        return call_id not in self.calls and any(
            call_id in p.queue.cancelled_calls for p in self.records.pools.values()
        )

    def submit(
        self, identity: bytes, msg: protocol.SubmitInputs, payload: list[Any]
    ) -> tuple[dict[str, Any] | None, Pool | None]:
        """Admit a chunk of a call's inputs (the first chunk opens the call); returns the
        reply (None for a spawned call's: it goes once the store has kept the inputs) and
        the pool that got new pending inputs, if one did."""
        call = self.calls.get(msg.call_id)
        if call is None:
            call = self.open_call(identity, msg.call_id, self.records.pool(msg.pool_id), msg.kind)
            call.progress = msg.progress
        if call.cancelled:
            return {"accepted": 0, "limit": None, "cancelled": True}, None
        pool = self.records.pools[call.pool_id]
        queue = pool.queue
        inputs = sum(row_count(i[SUBMIT_COUNT]) for i in msg.items)
        admission = admit(
            self.limits,
            call.kind,
            inputs,
            pending=queue.num_pending,
            running=queue.num_running,
            spawn_pending=queue.spawn_pending,
            call_in_flight=call.in_flight,
        )
        if admission.limit and call.kind != "map":
            raise RequestError(
                ERROR_RESOURCE_EXHAUSTED,
                f"{pool.name}: over the limit of {describe(admission.limit, self.limits)}; "
                "retry later or raise the limit",
                limit=admission.limit,
            )
        # a chunk is admitted whole or not at all (the client sizes them to fit)
        accepted = msg.items if admission.accepted >= inputs else []
        parts = split_payload(payload, [i[SUBMIT_WHERE] for i in accepted])
        spawned = call.kind == "spawn"
        records = [
            InputRecord(
                call.call_id,
                item[SUBMIT_INDEX],
                data,
                bufs,
                spawned=spawned,
                count=row_count(item[SUBMIT_COUNT]),
                skip=0 if item[SUBMIT_COUNT] else -1,
                sizes=_run_sizes(item) if item[SUBMIT_COUNT] else [],
            )
            for item, (data, bufs) in zip(accepted, parts, strict=False)
        ]
        admitted = sum(r.count for r in records)
        closing = msg.total is not None and admitted == inputs
        if closing:
            call.total = msg.total
        accepted_value = {"accepted": admitted, "limit": admission.limit}
        value: dict[str, Any] | None = accepted_value
        if call.keeps_outputs and (records or closing):
            kept = self._when_kept(identity, msg.rid, call, accepted_value)
            self.spawned.submitted(pool, call, records, kept)
            value = None
        call.submitted += admitted
        grown = None
        if pool.broken:
            status, reason = pool.broken
            made = [(Outcome(one, status, True), reason) for one in singles(records)]
            self.deliver_made(pool, made)
        elif records:
            queue.submit(records)
            self.dispatch(pool)
            grown = pool
        if closing:
            self.spawned.answer_waiters(call)
            self.maybe_finish(call)
        return value, grown

    def open_call(self, identity: bytes, call_id: str, pool: Pool, kind: str) -> CallState:
        """A new call of ``identity``'s in ``pool``, registered."""
        call = CallState(call_id, pool.pool_id, kind, identity, pool.name, pool.timeout)
        call.seq = self._new_seq()
        if identity in self.records.owners:
            call.owner_info = self.records.owners[identity]
        self.calls[call_id] = call
        return call

    def _when_kept(
        self, identity: bytes, rid: int, call: CallState, value: dict[str, Any]
    ) -> Durable:
        """What answers a spawn once the store has kept its inputs: accepted, or refused
        with what failed (the call is then cancelled: none of it may run unrecorded)."""

        def then(error: str | None) -> None:
            if error is None:
                self.outbox.reply(identity, rid, value)
                return
            if not call.cancelled:
                self.cancel(call, call.owner)
            message = f"{error}; spawned call {call.call_id} was cancelled"
            self.outbox.refuse(identity, rid, RequestError(ERROR_CONTROL_PLANE, message))

        return then

    def cancel(self, call: CallState, requester: bytes | None) -> None:
        """Cancel a call's pending and running inputs. When someone other than the caller
        cancels it (the REST API), the caller is told too: each of its unfinished inputs
        ends with ``CallCancelledError``, so a ``.map()`` does not wait forever."""
        pool = self.records.pools[call.pool_id]
        if requester != call.owner and not call.keeps_outputs and not call.finished:
            self._tell_cancelled(call, pool)
        call.cancelled = True
        for worker_id in pool.queue.cancel(call.call_id):
            self.outbox.send_worker(worker_id, protocol.CancelInputs(call.call_id))
        self.spawned.answer_waiters(call, force=True)
        self.maybe_finish(call)
        self.outbox.emit("call-cancelled", pool.pool_id, call_id=call.call_id)
        for child_id in call.children:  # down the call graph: nobody waits for them now
            child = self.calls.get(child_id)
            if child is not None and not child.finished:
                self.cancel(child, requester=None)

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

    # --- spawned calls' outputs, fetched (see spawned.py) -------------------------------

    def wait_for_outputs(self, identity: bytes, msg: protocol.GetOutputs) -> None:
        self.spawned.wait_for_outputs(identity, msg, self.call(msg.call_id))

    def answer_waiting(self) -> None:
        self.spawned.answer_waiting()

    # --- inputs to workers --------------------------------------------------------------

    def on_get_inputs(
        self, w: WorkerState, msg: protocol.GetInputs, payload: list[Any], now: float
    ) -> None:
        w.want += msg.want
        pool = self.records.pools[w.pool_id]
        pool.enter_failures = 0  # a worker that asks for inputs has started
        self.dispatch(pool)

    def dispatch(self, pool: Pool) -> None:
        """Hand pending inputs to workers that asked for them, in guided-size batches."""
        queue = pool.queue
        if not queue.pending:
            return
        ready = [w for w in pool.workers.values() if w.want > 0 and w.serving]
        if not ready:
            return
        ready.sort(key=lambda w: queue.running_on(w.worker_id))  # least loaded first
        live = sum(1 for w in pool.workers.values() if w.counted)
        share = pool.share(queue.num_ready, live)  # one split of what is pending now
        for w in ready:
            if not queue.pending:
                break
            room = share - queue.running_on(w.worker_id)
            if room <= 0:
                continue
            records = queue.take(w.worker_id, min(w.want, room))
            if not records:
                continue
            w.want -= sum(r.count for r in records)
            w.took_inputs()
            pieces = [r.piece() for r in records]
            frames, addresses = pack([(data, buffers) for data, buffers, _ in pieces])
            items = [
                # a run-inputs row (RUN_*): a run's count, and where it starts in its list
                [r.call_id, r.index, r.attempt, *where, r.count if r.skip >= 0 else 0, skip]
                for r, where, (_, _, skip) in zip(records, addresses, pieces, strict=True)
            ]
            confirm = records[0].suspect  # then alone: the worker says when it starts it
            self.outbox.send_worker(w.worker_id, protocol.RunInputs(items, confirm), frames)
            self._report_running(w.worker_id, records)

    def _report_running(self, worker_id: str, records: list[InputRecord]) -> None:
        """Tell callers that asked for progress which of their inputs this worker took."""
        by_call: dict[str, list[int]] = {}
        for r in records:
            call = self.calls.get(r.call_id)
            if call is not None and call.progress:
                by_call.setdefault(r.call_id, []).extend(range(r.index, r.end))
        for call_id, indices in by_call.items():
            msg = protocol.Progress(call_id, [[worker_id, indices]], [])
            self.outbox.send_client(self.calls[call_id].owner, msg)

    # --- outputs from workers -----------------------------------------------------------

    def on_outputs(self, msg: protocol.Outputs, payload: list[Any], now: float) -> None:
        items = msg.items
        if items and any(item[OUT_STATUS] == STATUS_YIELD for item in items):
            items, payload = self._forward_yields(items, payload, now)
        if not items:
            return
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
        for worker_id in touched:
            w = workers[worker_id]
            pool = pools[w.pool_id]
            w.settled(pool.queue.running_on(worker_id), now)
            self.dispatch(pool)

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
        by_owner: dict[bytes, list[Entry]] = defaultdict(list)
        finished: dict[str, CallState] = {}
        for outcome, data, bufs, row in rows:
            call = self.calls.get(outcome.record.call_id)
            if call is None or call.cancelled:
                continue
            item = with_earlier_printed(outcome.record, row)
            if item is not row:  # the row changed: the worker's message cannot go as it came
                whole = None
            count = outcome.record.count
            failed = count if outcome.status != STATUS_OK else 0
            call.reported += count
            call.failed += failed
            pool.failed += failed
            pool.done += count - failed
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

    def _tell_cancelled(self, call: CallState, pool: Pool) -> None:
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


def _run_sizes(item: list[Any]) -> list[int]:
    """A submit-inputs run row's input sizes, checked against the run (the control plane
    cuts a run by them where it keeps inputs one by one)."""
    _, length, nbufs = item[SUBMIT_WHERE]
    sizes = item[SUBMIT_SIZES] if len(item) > SUBMIT_SIZES else None
    if (
        not isinstance(sizes, list)
        or len(sizes) != item[SUBMIT_COUNT]
        or nbufs
        or not all(type(n) is int and n > 0 for n in sizes)
        or sum(sizes) != length
    ):
        raise RequestError(
            ERROR_INVALID, f"submit-inputs: the run at input {item[SUBMIT_INDEX]} has bad sizes"
        )
    return sizes


def _seq(call: CallState) -> int:
    return call.seq
