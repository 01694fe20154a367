"""The Jupyter server's store: spawned calls kept in one SQLite file that outlives the server.

The loop side of ``store_writer``: the changes of one turn of the loop (a batch of spawns,
a worker's outputs settled and their calls closed) become one operation for the writer
thread, and until its batch is committed the outputs and summaries it holds stay here, so
that a read (on the loop, with a connection of its own: in WAL mode readers never wait for
the writer) sees them. An operation that fails (a full disk, an I/O error) fails what it
carried, with the file's path and the reason: a spawn is refused, an output becomes an
error for whoever fetches it; the control plane goes on.

After a crash, ``unfinished`` gives the calls that had not finished, with their pools and the
inputs that had not settled (read back by ``stored_calls``): they run again (at least once).
"""

from __future__ import annotations

import asyncio
import collections
import json
import sqlite3
import time
from collections.abc import Mapping, Sequence
from typing import Any

from nbscale_runtime.protocol import (
    ERROR_CONTROL_PLANE,
    OUT_STATUS,
    OUT_WHERE,
    STATUS_REJECTED,
)

from .calls import CallState
from .errors import RequestError, rejection
from .launchers.owner import owner_tag
from .outputs import Entry
from .pool import Pool
from .queue import InputRecord
from .store import Durable, SpawnStore, Unfinished
from .store_writer import BATCH_BYTES, Operation, Step, StoreError, Writer, connect, unpack
from .stored_calls import CALL_COLUMNS, summary, unfinished_calls


class SqliteStore(SpawnStore):
    durable = True

    def __init__(self, path: str, retention: float) -> None:
        self.location = path
        self.retention = retention
        self.owner = owner_tag()
        try:
            self._reader = connect(path)  # migrates a new or older file first
            self._writer = Writer(path, self._on_written)
        except (sqlite3.Error, OSError) as exc:
            hint = ""
            if isinstance(exc, sqlite3.DatabaseError) and "not a database" in str(exc):
                hint = (
                    " (move it aside to start with an empty store: the spawned calls' results "
                    "it held are then gone; or set c.NbScale.store_path to another file)"
                )
            raise StoreError(f"cannot open the store {path}: {exc}{hint}") from exc
        self._loop: asyncio.AbstractEventLoop | None = None
        self._current: Operation | None = None  # this turn's writes, not handed over yet
        self._number = 0
        self._known_calls: set[str] = set()  # calls whose row is written or queued
        self._pool_rows: dict[str, tuple[Any, ...]] = {}
        self._last_owner: tuple[dict[str, object], str] | None = None
        # written but not committed yet: call id -> index -> (operation number, output)
        self._unwritten: dict[str, dict[int, tuple[int, Entry]]] = {}
        self._unwritten_calls: dict[str, tuple[int, CallState]] = {}
        self._queued: collections.deque[tuple[int, str, str, int]] = collections.deque()
        self._durable: collections.deque[tuple[int, Durable, str]] = collections.deque()
        # outputs (and summaries) that could not be written: what a fetch gets instead
        self._lost: dict[str, dict[int, Entry]] = {}
        self._lost_calls: dict[str, CallState] = {}
        self._writer.start()

    # --- writes -------------------------------------------------------------------------

    def _op(self, size: int = 0) -> Operation:
        """The operation of this turn of the loop: a turn's writes (a batch of spawns, a
        worker's outputs settled and their calls closed) go to the writer as one, at the
        end of the turn, or sooner once it holds ``BATCH_BYTES``."""
        op = self._current
        if op is not None and op.size and op.size + size > BATCH_BYTES:
            self._flush()
            op = None
        if op is None:
            if self._loop is None:
                self._loop = asyncio.get_running_loop()
            op = self._current = Operation(self._next())
            self._loop.call_soon(self._flush, op)
        op.size += size
        return op

    def _flush(self, op: Operation | None = None) -> None:
        """Hand the turn's operation (``op``, if still open) to the writer."""
        current = self._current
        if current is not None and (op is None or op is current):
            self._current = None
            self._writer.put(current)

    def _next(self) -> int:
        self._number += 1
        return self._number

    def submitted(
        self, pool: Pool, call: CallState, records: list[InputRecord], then: Durable
    ) -> None:
        op = self._op(sum(memoryview(r.data).nbytes for r in records))
        if call.call_id not in self._known_calls:
            self._add_call(op, pool, call)
        elif call.total is not None:
            op.add("total", (call.total, call.call_id))
        op.inputs += [(r.call_id, r.index, r.data, r.buffers) for r in records]
        self._durable.append((op.number, then, "spawned inputs"))

    def spawned(
        self, pool: Pool, calls: list[tuple[CallState, InputRecord]], then: Durable
    ) -> None:
        op = self._op(sum(memoryview(r.data).nbytes for _, r in calls))
        for call, record in calls:
            self._add_call(op, pool, call)
            op.inputs.append((record.call_id, record.index, record.data, record.buffers))
        self._durable.append((op.number, then, "spawned inputs"))

    def _add_call(self, op: Operation, pool: Pool, call: CallState) -> None:
        """A new call's row (and its pool's, once an operation)."""
        self._known_calls.add(call.call_id)
        row = self._pool_row(pool)
        if row not in op.rows.get("pool", ()):
            op.add("pool", row)
        op.add(
            "call",
            (call.call_id, call.seq, call.pool_id, call.function, call.timeout, self.owner,
             self._owner_json(call.owner_info), call.total, call.kind),
        )  # fmt: skip

    def _owner_json(self, owner_info: Mapping[str, object]) -> str:
        """``owner_info`` as JSON: the last one's text again when equal (a caller's spawns
        by the thousand share their owner)."""
        last = self._last_owner
        if last is None or last[0] != owner_info:
            last = self._last_owner = (dict(owner_info), json.dumps(owner_info))
        return last[1]

    def _pool_row(self, pool: Pool) -> tuple[Any, ...]:
        """The pool's row, made once (spawns by the thousand share it; a pool's id names
        its options, and the first row stored of a pool id is the one kept anyway)."""
        row = self._pool_rows.get(pool.pool_id)
        if row is None:
            wire = (pool.options.to_wire(), pool.sys_path, pool.client_versions, pool.owner)
            named = (pool.pool_id, pool.function_id, pool.name, pool.function)
            row = self._pool_rows[pool.pool_id] = (*named, *map(json.dumps, wire))
        return row

    def settled(self, call: CallState, index: int, row: list[Any], data: Any, bufs: Any) -> None:
        call_id = call.call_id
        bufs = list(bufs)
        size = memoryview(data).nbytes + sum(memoryview(b).nbytes for b in bufs)
        op = self._op(size)
        op.outputs.append((call_id, index, row, data, bufs))
        op.inputs_done.setdefault(call_id, []).append(index)
        self._unwritten.setdefault(call_id, {})[index] = (op.number, (row, data, bufs))
        self._queued.append((op.number, "output", call_id, index))

    def keep(self, steps: list[Step], then: Durable, what: str = "the change") -> None:
        op = self._op(sum(len(v) for _, row in steps for v in row if isinstance(v, bytes)))
        op.steps += steps
        self._durable.append((op.number, then, what))

    def delivered(self, call: CallState) -> None:
        self._op().add("delivered", (json.dumps(call.delivered), call.call_id))

    def closed(self, call: CallState) -> None:
        self._known_calls.discard(call.call_id)
        outcomes = bytes(call.outcomes.raw) if call.outcomes is not None else b""
        made_by = self._owner_json(call.owner_info)  # its notebook is known by now
        values = (call.total, call.submitted, call.reported, call.failed, int(call.cancelled))
        op = self._op()
        op.add(
            "close",
            (*values, made_by, outcomes, _ranges_json(call.delivered), time.time(), call.call_id),
        )
        op.inputs_done.pop(call.call_id, None)  # all of its inputs go with it
        op.add("inputs-dropped", (call.call_id,))
        self._unwritten_calls[call.call_id] = (op.number, call)
        self._queued.append((op.number, "close", call.call_id, 0))

    def housekeep(self, now: float) -> None:
        self._op().purge_before = now - self.retention

    def close(self) -> None:
        self._flush()
        self._writer.stop()
        self._reader.close()

    def _on_written(self, number: int, error: BaseException | None) -> None:
        """On the writer's thread: a batch up to operation ``number`` is committed (or not)."""
        loop = self._loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(self._written, number, error)

    def _written(self, number: int, error: BaseException | None) -> None:
        queued = self._queued
        while queued and queued[0][0] <= number:
            op_number, kind, call_id, index = queued.popleft()
            if kind == "output":
                held = self._unwritten.get(call_id, {})
                entry = held.get(index)
                if entry is not None and entry[0] == op_number:
                    del held[index]
                    if not held:
                        del self._unwritten[call_id]
                    if error is not None:
                        what = f"the result of input {index} of {call_id}"
                        self._lost.setdefault(call_id, {})[index] = self._failure(
                            entry[1][0], self._describe(what, error)
                        )
            else:
                summary = self._unwritten_calls.get(call_id)
                if summary is not None and summary[0] == op_number:
                    del self._unwritten_calls[call_id]
                    if error is not None:
                        self._lost_calls[call_id] = summary[1]
        while self._durable and self._durable[0][0] <= number:
            _, then, what = self._durable.popleft()
            then(None if error is None else self._describe(what, error))

    def _describe(self, what: str, error: BaseException) -> str:
        return f"could not write {what} to {self.location}: {error}"

    def _failure(self, row: list[Any], message: str) -> Entry:
        failed = list(row)
        failed[OUT_STATUS] = STATUS_REJECTED
        failed[OUT_WHERE] = [0, 0, 0]
        return failed, rejection(ERROR_CONTROL_PLANE, message), []

    # --- reads --------------------------------------------------------------------------

    def read(self, what: str, sql: str, args: tuple[Any, ...] = ()) -> list[Any]:
        try:
            return self._reader.execute(sql, args).fetchall()
        except sqlite3.Error as exc:
            message = f"could not read {what} from {self.location}: {exc}"
            raise RequestError(ERROR_CONTROL_PLANE, message) from None

    def outputs(self, call_id: str, start: int, stop: int | None) -> list[Entry]:
        end = stop if stop is not None else 1 << 62
        found: dict[int, Entry] = {}
        for index, row, payload, parts in self.read(
            f"the results of {call_id}",
            "SELECT idx, row, payload, parts FROM spawned_outputs "
            "WHERE call_id = ? AND idx >= ? AND idx < ? ORDER BY idx",
            (call_id, start, end),
        ):
            data, bufs = unpack(payload, parts)
            found[index] = (json.loads(row), data, list(bufs))
        for index, (_, entry) in self._unwritten.get(call_id, {}).items():
            if start <= index < end:
                found[index] = entry
        for index, entry in self._lost.get(call_id, {}).items():
            if start <= index < end:
                found[index] = entry
        return [found[i] for i in sorted(found)]

    def finished_call(self, call_id: str) -> CallState | None:
        unwritten = self._unwritten_calls.get(call_id)
        if unwritten is not None:
            return unwritten[1]
        if call_id in self._lost_calls:
            return self._lost_calls[call_id]
        rows = self.read(
            f"function call {call_id}",
            f"SELECT {CALL_COLUMNS} FROM spawned_calls WHERE call_id = ? AND finished > 0",
            (call_id,),
        )
        return summary(rows[0]) if rows else None

    def finished_calls_named(self, call_ids: list[str]) -> dict[str, CallState]:
        found = {c: self._unwritten_calls[c][1] for c in call_ids if c in self._unwritten_calls}
        found.update({c: self._lost_calls[c] for c in call_ids if c in self._lost_calls})
        asked = [c for c in call_ids if c not in found]
        if asked:
            rows = self.read(
                "the spawned calls",
                f"SELECT {CALL_COLUMNS} FROM spawned_calls WHERE finished > 0 AND call_id IN "
                "(SELECT value FROM json_each(?))",
                (json.dumps(asked),),
            )
            found.update((call.call_id, call) for call in map(summary, rows))
        return found

    def first_outputs(self, call_ids: list[str]) -> dict[str, Entry]:
        found: dict[str, Entry] = {}
        for call_id, row, payload, parts in self.read(
            "the results of the spawned calls",
            "SELECT call_id, row, payload, parts FROM spawned_outputs WHERE idx = 0 AND "
            "call_id IN (SELECT value FROM json_each(?))",
            (json.dumps(call_ids),),
        ):
            data, bufs = unpack(payload, parts)
            found[call_id] = (json.loads(row), data, list(bufs))
        for call_id in call_ids:  # what is not written yet, or could not be: as ``outputs``
            unwritten = self._unwritten.get(call_id, {})
            if 0 in unwritten:
                found[call_id] = unwritten[0][1]
            lost = self._lost.get(call_id, {})
            if 0 in lost:
                found[call_id] = lost[0]
        return found

    def finished_calls(self, limit: int, before: int | None) -> list[CallState]:
        cursor = before if before is not None else 1 << 62
        rows = self.read(
            "the spawned calls",
            f"SELECT {CALL_COLUMNS} FROM spawned_calls WHERE finished IS NOT NULL "
            "AND seq < ? ORDER BY seq DESC LIMIT ?",
            (cursor, limit),
        )
        calls = {c.call_id: c for c in map(summary, rows)}
        held = [c for _, c in self._unwritten_calls.values()] + list(self._lost_calls.values())
        calls.update({c.call_id: c for c in held if c.seq < cursor})
        return sorted(calls.values(), key=lambda c: c.seq, reverse=True)[:limit]

    def why_missing(self, call_id: str) -> str:
        days = self.retention / 86400
        return (
            f"no function call {call_id} (spawned calls are kept {days:g} days after they "
            f"finish, in {self.location})"
        )

    def last_seq(self) -> int:
        [(seq,)] = self.read("the spawned calls", "SELECT max(seq) FROM spawned_calls", ())
        return int(seq or 0)

    def unfinished(self) -> list[Unfinished]:
        """The calls of control planes that are gone, claimed for this one."""
        found = unfinished_calls(self.read, self.owner)
        for unfinished in found:
            self._known_calls.add(unfinished.call.call_id)
        if found:
            self._flush()  # the writer takes operations in their order
            op = Operation(self._next())
            op.rows = {"claim": [(self.owner, u.call.call_id) for u in found]}
            self._writer.put(op)
        return found


def _ranges_json(ranges: Sequence[Any]) -> str:
    return json.dumps(ranges) if ranges else "[]"  # a spawned call's: none delivered
