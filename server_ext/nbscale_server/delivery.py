"""Delivery: inputs in, and out to the workers that asked for them.

It keeps the call registry (running calls and the latest finished ones), admits submissions
under the limits, cancels calls, and hands pending inputs to the workers that asked for
them (``dispatch``). What workers report is settled by ``settling.py`` (``Settling``, which
it builds over the same registry), spawned calls' inputs and outputs kept by
``spawned.py``. It never starts or stops a worker (that is the fleet's job).
"""

from __future__ import annotations

import collections
import heapq
import itertools
import time
from collections.abc import Callable
from typing import Any

from nbscale_runtime import protocol
from nbscale_runtime.packed_inputs import Layout
from nbscale_runtime.protocol import (
    ERROR_CONTROL_PLANE,
    ERROR_INVALID,
    ERROR_RESOURCE_EXHAUSTED,
    SUBMIT_COUNT,
    SUBMIT_INDEX,
    SUBMIT_SIZES,
    SUBMIT_WHERE,
    row_count,
)
from nbscale_runtime.serialization import pack, split_payload

from .calls import CallState
from .errors import RequestError
from .input_record import InputRecord, singles
from .limits import Limits, admit, describe, small_inputs
from .outbox import Outbox
from .pool import Pool, Records, WorkerState
from .queue import Outcome
from .settling import Settling
from .spawned import SpawnedCalls
from .store import Durable, SpawnStore


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
        self.settling = Settling(records, outbox, self.calls, self.finished_calls, self.spawned)
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
        lone = msg.kind == "remote" and msg.total == 1 and len(msg.items) == 1
        if lone and msg.call_id not in self.calls:
            answered = self._submit_lone(identity, msg, payload)
            if answered is not None:
                return answered
        call = self.calls.get(msg.call_id)
        if call is None:
            call = self.open_call(identity, msg.call_id, self.records.pool(msg.pool_id), msg.kind)
            call.progress = msg.progress
        if call.cancelled:
            return {"accepted": 0, "limit": None, "cancelled": True}, None
        pool = self.records.pools[call.pool_id]
        queue = pool.queue
        inputs = sum(row_count(i[SUBMIT_COUNT]) for i in msg.items)
        # small inputs count a fraction of the window while the map sends nothing bigger
        call.small = call.small and small_inputs(msg.items)
        admission = admit(
            self.limits,
            call.kind,
            inputs,
            pending=queue.num_pending,
            running=queue.num_running,
            spawn_pending=queue.spawn_pending,
            call_in_flight=call.in_flight,
            small=call.small,
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
            _record(call.call_id, item, data, bufs, spawned)
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
            self.settling.deliver_made(pool, made)
        elif records:
            queue.submit(records)
            self.dispatch(pool)
            grown = pool
        if closing:
            self.spawned.answer_waiters(call)
            self.settling.maybe_finish(call)
        return value, grown

    def _submit_lone(
        self, identity: bytes, msg: protocol.SubmitInputs, payload: list[Any]
    ) -> tuple[dict[str, Any], Pool] | None:
        """A ``.remote()``'s one input, admitted and dispatched without a chunk's
        bookkeeping (in 11 us of W2's round trip instead of 18) when nothing waits ahead of
        it and the limits leave room; None otherwise, the call opened, for ``submit`` to go
        on with as usual (refusals are its to make). The outcome is the general path's."""
        [item] = msg.items
        if item[SUBMIT_COUNT]:  # a run: the general path
            return None
        pool = self.records.pool(msg.pool_id)
        call = self.open_call(identity, msg.call_id, pool, msg.kind)
        call.progress = msg.progress
        queue = pool.queue
        if pool.broken or queue.pending or queue.suspects_pending:
            return None
        waiting = queue.num_pending
        limits = self.limits
        if (
            limits.max_pending_inputs - waiting < 1
            or limits.max_total_inputs - waiting - queue.num_running < 1
        ):
            return None
        [(data, bufs)] = split_payload(payload, [item[SUBMIT_WHERE]])
        call.total = 1
        call.submitted = 1
        queue.submit([InputRecord(call.call_id, item[SUBMIT_INDEX], data, bufs)])
        self.dispatch(pool)
        return {"accepted": 1, "limit": None}, pool

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
            self.settling.tell_cancelled(call, pool)
        call.cancelled = True
        for worker_id in pool.queue.cancel(call.call_id):
            self.outbox.send_worker(worker_id, protocol.CancelInputs(call.call_id))
        self.spawned.answer_waiters(call, force=True)
        self.settling.maybe_finish(call)
        self.outbox.emit("call-cancelled", pool.pool_id, call_id=call.call_id)
        for child_id in call.children:  # down the call graph: nobody waits for them now
            child = self.calls.get(child_id)
            if child is not None and not child.finished:
                self.cancel(child, requester=None)

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
        lone = len(queue.pending) == 1 and queue.pending[0].count == 1
        if lone and not queue.suspects_pending and not queue.alone:
            self._dispatch_lone(pool)
        else:
            self._dispatch_batches(pool)

    def _dispatch_batches(self, pool: Pool) -> None:
        queue = pool.queue
        ready = [w for w in pool.workers.values() if w.want > 0 and w.serving]
        if not ready:
            return
        ready.sort(key=lambda w: queue.running_on(w.worker_id))  # least loaded first
        counted = [w.worker_id for w in pool.workers.values() if w.counted]
        idle = {worker_id for worker_id in counted if not queue.running_on(worker_id)}
        share = pool.share(queue.num_ready, len(counted))  # one split of what is pending now
        # a worker with no other idle: it may take all of a pending tail (``Pool.share``)
        alone = pool.share(queue.num_ready, len(counted), others_idle=False)
        for w in ready:
            if not queue.pending:
                break
            others_idle = bool(idle - {w.worker_id})
            room = (share if others_idle else alone) - queue.running_on(w.worker_id)
            if room <= 0:
                continue
            records = queue.take(w.worker_id, min(w.want, room))
            if records:
                self._send_inputs(w, records)

    def _dispatch_lone(self, pool: Pool) -> None:
        """``dispatch`` of one pending input (a ``.remote()``'s, as a rule): to the
        first of the least loaded workers that asked, as the sort there would choose, when
        its share leaves it room (then every other's leaves none)."""
        queue = pool.queue
        chosen, least = None, 0
        for w in pool.workers.values():
            if w.want > 0 and w.serving:
                held = queue.running_on(w.worker_id)
                if chosen is None or held < least:
                    chosen, least = w, held
                    if not held:
                        break  # none comes before it
        if chosen is None:
            return
        if least:  # (an idle worker's share always leaves it room: at least its slots)
            live = sum(1 for w in pool.workers.values() if w.counted)
            if pool.share(queue.num_ready, live) - least <= 0:
                return
        records = queue.take(chosen.worker_id, 1)
        if records:
            self._send_inputs(chosen, records)

    def _send_inputs(self, w: WorkerState, records: list[InputRecord]) -> None:
        """Send ``records``, just taken from the queue, to the worker ``w``."""
        w.want -= sum(r.count for r in records)
        w.took_inputs()
        pieces = [r.piece() for r in records]
        frames, addresses = pack([(data, buffers) for data, buffers, _ in pieces])
        items = [
            # a run-inputs row (RUN_*): a run's count, where it starts in its list, packed
            [
                r.call_id,
                r.index,
                r.attempt,
                *where,
                r.count if r.skip >= 0 else 0,
                skip,
                r.layout is not None,
            ]
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

    def on_outputs(self, msg: protocol.Outputs, payload: list[Any], now: float) -> None:
        """Settle what a worker reports (``Settling``), then fill the slots it freed."""
        for pool in self.settling.on_outputs(msg, payload, now):
            self.dispatch(pool)


def _record(
    call_id: str, item: list[Any], data: Any, bufs: list[Any], spawned: bool
) -> InputRecord:
    """The record of a submit-inputs row: one input, a run checked against its sizes, or a
    packed run (no sizes) whose values' places are read once (the control plane cuts a run
    by them where its inputs part ways)."""
    record = InputRecord(call_id, item[SUBMIT_INDEX], data, bufs, spawned=spawned)
    count = item[SUBMIT_COUNT]
    if not count:
        return record
    record.count, record.skip = count, 0
    if len(item) > SUBMIT_SIZES and item[SUBMIT_SIZES] == [] and not bufs:
        try:
            record.layout = Layout(data, count)
        except ValueError as exc:
            raise RequestError(
                ERROR_INVALID, f"submit-inputs: the run at input {record.index}: {exc}"
            ) from None
    else:
        record.sizes = _run_sizes(item)
    return record


def _run_sizes(item: list[Any]) -> list[int]:
    """A submit-inputs run row's input sizes, checked against the run (the control plane
    cuts a run by them where it keeps inputs one by one)."""
    _, length, nbufs = item[SUBMIT_WHERE]
    sizes = item[SUBMIT_SIZES] if len(item) > SUBMIT_SIZES else None
    if (
        not isinstance(sizes, list)
        or len(sizes) != item[SUBMIT_COUNT]
        or nbufs
        or set(map(type, sizes)) != {int}  # exact ints (no bools), checked at C speed
        or min(sizes) <= 0
        or sum(sizes) != length
    ):
        raise RequestError(
            ERROR_INVALID, f"submit-inputs: the run at input {item[SUBMIT_INDEX]} has bad sizes"
        )
    return sizes


def _seq(call: CallState) -> int:
    return call.seq
