"""Spawned calls by the batch: many ``.spawn()``s opened in one message (``spawn-calls``),
and many calls' results read in one (``get-first-outputs``).

A spawn is a call of one input, so one message per spawn paid for a round trip, a call
record, a store write and a reply each. A batch pays for one of each: its calls are queued
and dispatched together, and answered in one reply once the store has kept them all (the
store's writer commits what queued meanwhile in one transaction).
"""

from __future__ import annotations

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
    refused: list[Refusal] = []
    kept: list[tuple[CallState, InputRecord]] = []
    at_row: list[int] = []
    for at, (row, (data, bufs)) in enumerate(zip(rows, parts, strict=True)):
        call_id = row[SPAWN_CALL_ID]
        if call_id in delivery.calls:
            refused.append([at, ERROR_INVALID, f"spawned call {call_id!r} exists already", {}])
            continue
        if len(kept) >= room:
            limit = "max_pending_spawn_inputs"
            message = (
                f"{pool.name}: over the limit of {describe(limit, delivery.limits)}; "
                "retry later or raise the limit"
            )
            refused.append([at, ERROR_RESOURCE_EXHAUSTED, message, {"limit": limit}])
            continue
        call = delivery.open_call(identity, call_id, pool, "spawn")
        call.total = call.submitted = 1  # its Outcomes come with its output (spawned.py)
        kept.append((call, InputRecord(call_id, 0, data, bufs, spawned=True)))
        at_row.append(at)

    def then(error: str | None) -> None:  # the answer, once the store has kept them
        if error is not None:  # none of them may run unrecorded
            for at, (call, _) in zip(at_row, kept, strict=True):
                if not call.cancelled:
                    delivery.cancel(call, call.owner)
                message = f"{error}; spawned call {call.call_id} was cancelled"
                refused.append([at, ERROR_CONTROL_PLANE, message, {}])
            refused.sort(key=lambda refusal: refusal[0])
        delivery.outbox.reply(identity, msg.rid, {"refused": refused})

    if not kept:
        then(None)
        return None
    delivery.store.spawned(pool, kept, then)
    records = [record for call, record in kept if not call.cancelled]  # a store that failed at once
    if pool.broken:
        status, reason = pool.broken
        delivery.settling.deliver_made(pool, [(Outcome(r, status, True), reason) for r in records])
        for call, _ in kept:
            delivery.settling.maybe_finish(call)
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
