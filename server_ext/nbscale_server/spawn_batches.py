"""Spawned calls by the batch: many ``.spawn()``s opened in one message (``spawn-calls``),
and many calls' results read in one (``get-first-outputs``).

A spawn is a call of one input, so one message per spawn paid for a round trip, a call
record, a store write and a reply each. A batch pays for one of each: its calls are queued
and dispatched together, and answered in one reply once the store has kept them all (the
store's writer commits what queued meanwhile in one transaction).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from nbscale_runtime import protocol
from nbscale_runtime.protocol import (
    ERROR_CONTROL_PLANE,
    ERROR_INVALID,
    ERROR_NOT_FOUND,
    ERROR_RESOURCE_EXHAUSTED,
    SPAWN_CALL_ID,
    SPAWN_WHERE,
)
from nbscale_runtime.serialization import split_payload

from .calls import CallState, Outcomes
from .delivery import Delivery
from .errors import RequestError
from .limits import describe
from .outputs import Entry, outputs_message
from .pool import Pool
from .queue import InputRecord, Outcome
from .spawned import all_settled

Refusal = list[Any]  # [row, kind, message, details]


def spawn_calls(
    delivery: Delivery, identity: bytes, msg: protocol.SpawnCalls, payload: list[Any]
) -> Pool | None:
    """Open a spawned call of one input per row of ``msg``; the reply goes once the store
    has kept them all (a row refused, by a limit or the store, is named in it). Returns the
    pool that got new pending inputs, if it did."""
    pool = delivery.records.pool(msg.pool_id)
    rows = msg.items
    if not isinstance(rows, list) or not all(_is_row(row) for row in rows):
        raise RequestError(
            ERROR_INVALID, "spawn-calls rows must be [call_id, offset, length, nbufs]"
        )
    parts = split_payload(payload, [row[SPAWN_WHERE] for row in rows])
    room = delivery.limits.max_pending_spawn_inputs - pool.queue.spawn_pending
    answer = _Answer(
        len(rows), lambda refused: delivery.outbox.reply(identity, msg.rid, {"refused": refused})
    )
    records: list[InputRecord] = []
    calls: list[CallState] = []
    for at, (row, (data, bufs)) in enumerate(zip(rows, parts, strict=True)):
        call_id = row[SPAWN_CALL_ID]
        if call_id in delivery.calls:
            answer.refuse(at, ERROR_INVALID, f"spawned call {call_id!r} exists already")
            continue
        if len(records) >= room:
            limit = "max_pending_spawn_inputs"
            answer.refuse(
                at,
                ERROR_RESOURCE_EXHAUSTED,
                f"{pool.name}: over the limit of {describe(limit, delivery.limits)}; "
                "retry later or raise the limit",
                limit=limit,
            )
            continue
        call = delivery.open_call(identity, call_id, pool, "spawn")
        call.total = 1
        call.outcomes = Outcomes()
        record = InputRecord(call_id, 0, data, bufs, spawned=True)
        delivery.store.submitted(pool, call, [record], answer.when_kept(at, call, delivery))
        call.submitted = 1
        if not call.cancelled:  # a store that failed at once: none of it may run unrecorded
            records.append(record)
            calls.append(call)
    if pool.broken:
        status, reason = pool.broken
        delivery.deliver_made(pool, [(Outcome(r, status, True), reason) for r in records])
        for call in calls:
            delivery.maybe_finish(call)
        return None
    if not records:
        return None
    pool.queue.submit(records)
    delivery.dispatch(pool)
    return pool


def _is_row(row: Any) -> bool:
    return (
        isinstance(row, list)
        and len(row) == 4
        and type(row[0]) is str
        and all(type(n) is int and n >= 0 for n in row[1:])
    )


class _Answer:
    """One reply for a batch's rows, sent once each has been kept or refused."""

    def __init__(self, rows: int, send: Callable[[list[Refusal]], None]) -> None:
        self._left = rows
        self._send = send
        self._refused: list[Refusal] = []
        if rows == 0:
            send([])

    def refuse(self, row: int, kind: str, message: str, **details: Any) -> None:
        self._refused.append([row, kind, message, details])
        self._settle()

    def when_kept(
        self, row: int, call: CallState, delivery: Delivery
    ) -> Callable[[str | None], None]:
        def then(error: str | None) -> None:
            if error is not None:  # none of it may run unrecorded
                if not call.cancelled:
                    delivery.cancel(call, call.owner)
                message = f"{error}; spawned call {call.call_id} was cancelled"
                self._refused.append([row, ERROR_CONTROL_PLANE, message, {}])
            self._settle()

        return then

    def _settle(self) -> None:
        self._left -= 1
        if self._left == 0:
            self._send(self._refused)


def first_outputs(
    delivery: Delivery, msg: protocol.GetFirstOutputs
) -> tuple[dict[str, Any], list[Any]]:
    """The answer to ``get-first-outputs``: each call's input 0, if settled, in one go (the
    calls that left memory and their outputs read from the store in one query each)."""
    call_ids = msg.call_ids
    if not isinstance(call_ids, list) or not all(type(c) is str for c in call_ids):
        raise RequestError(ERROR_INVALID, "call_ids must be a list of call ids")
    store = delivery.store
    known = {**delivery.finished_calls, **delivery.calls}
    calls = {c: known[c] for c in call_ids if c in known}
    calls.update(store.finished_calls_named([c for c in call_ids if c not in calls]))
    rows: list[Any] = []
    ready: list[str] = []
    for call_id in call_ids:
        call = calls.get(call_id)
        if call is None:
            rows.append([ERROR_NOT_FOUND, store.why_missing(call_id)])
        elif call.delivered_before(0):
            rows.append([ERROR_INVALID, f"the result of input 0 of {call_id} went to its "
                         "caller before the call was detached"])  # fmt: skip
        elif call.finished or all_settled(call, call.outcomes or Outcomes(), 0, 1):
            rows.append(call)
            ready.append(call_id)
        else:
            rows.append(None)  # not settled yet
    found = store.first_outputs(ready) if ready else {}
    entries: list[Entry] = []
    for at, row in enumerate(rows):
        if isinstance(row, CallState):
            entry = found.get(row.call_id)
            if entry is not None:
                entries.append(entry)
            rows[at] = [int(entry is not None), row.function, row.timeout, row.cancelled]
    message, frames = outputs_message(entries)
    return {"calls": rows, "items": message.items}, frames
