"""The SQLite store's rows read back as calls: a finished call's summary, and, at start,
the calls a crashed control plane left unfinished, with their pools and the inputs that
had not settled (they run again: at least once)."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from nbscale_runtime.protocol import OUT_ATTEMPT, OUT_STATUS, STATUS_OK

from .calls import CallState, Outcomes
from .launchers.owner import owner_alive
from .queue import InputRecord
from .store import StoredPool, Unfinished
from .store_writer import unpack

CALL_COLUMNS = (
    "call_id, seq, pool_id, function, timeout, total, submitted, reported, failed, cancelled, "
    "made_by, outcomes, kind, delivered"
)
Read = Callable[[str, str, tuple[Any, ...]], list[Any]]  # SqliteStore.read: what, sql, args


def summary(row: tuple[Any, ...]) -> CallState:
    """The call of a ``CALL_COLUMNS`` row."""
    call_id, seq, pool_id, function, timeout, total = row[:6]
    call = CallState(
        call_id, pool_id, row[12], b"", function=function, timeout=timeout, seq=seq, total=total
    )
    call.submitted, call.reported, call.failed, cancelled, made_by, outcomes = row[6:12]
    call.detached = call.kind == "map"
    call.delivered = [(start, end) for start, end in json.loads(row[13] or "[]")]
    call.cancelled = bool(cancelled)
    call.owner_info = json.loads(made_by)
    call.outcomes = Outcomes(outcomes or b"")
    return call


def unfinished_calls(read: Read, owner: str) -> list[Unfinished]:
    """The unfinished calls of control planes that are gone (``owner``: this one's tag)."""
    found = []
    pools: dict[str, StoredPool] = {}
    rows = read(
        "the spawned calls",
        f"SELECT {CALL_COLUMNS}, owner FROM spawned_calls WHERE finished IS NULL",
        (),
    )
    for row in rows:
        if row[-1] != owner and owner_alive(row[-1]):
            continue  # another live control plane shares this file: its own
        call = summary(row[:-1])
        pool = pools.get(call.pool_id) or _pool(read, call.pool_id)
        if pool is None:
            continue
        pools[pool.pool_id] = pool
        found.append(Unfinished(pool, call, _resume(read, call)))
    return found


def _pool(read: Read, pool_id: str) -> StoredPool | None:
    rows = read(
        f"pool {pool_id}",
        "SELECT pool_id, function_id, name, function, options, sys_path, client_versions, "
        "owner FROM pools WHERE pool_id = ?",
        (pool_id,),
    )
    if not rows:
        return None
    pool_id, function_id, name, function, options, sys_path, versions, owner = rows[0]
    return StoredPool(
        pool_id,
        function_id,
        name,
        bytes(function),
        json.loads(options),
        json.loads(sys_path),
        json.loads(versions),
        json.loads(owner),
    )


def _resume(read: Read, call: CallState) -> list[InputRecord]:
    """``call``'s counts from its outputs, and its inputs to run again."""
    outcomes = call.outcomes = Outcomes()
    for index, row in read(
        f"the results of {call.call_id}",
        "SELECT idx, row FROM spawned_outputs WHERE call_id = ?",
        (call.call_id,),
    ):
        item = json.loads(row)
        ok = item[OUT_STATUS] == STATUS_OK
        outcomes.mark(index, ok, int(item[OUT_ATTEMPT]))
        call.reported += 1
        call.failed += not ok
    call.reported += sum(end - start for start, end in call.delivered)  # a detached map's
    records = []
    for index, payload, parts in read(
        f"the inputs of {call.call_id}",
        "SELECT idx, payload, parts FROM spawned_inputs WHERE call_id = ? ORDER BY idx",
        (call.call_id,),
    ):
        data, bufs = unpack(payload, parts)
        records.append(InputRecord(call.call_id, index, data, list(bufs), spawned=True))
    call.submitted = call.reported + len(records)
    return records
