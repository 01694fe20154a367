"""The SQLite file of the Jupyter server's store: its schema, and the thread that writes it.

Schema versions: ``PRAGMA user_version`` is the file's version; ``MIGRATIONS[n]`` takes a
file from version n-1 to n, and every step a file lacks is applied in order when it is
opened, each in a transaction. A file of a newer version than this code knows is refused,
never altered. Version 2 added named Dicts and Queues and deployed apps.

Writes never run on the control plane's loop: ``Writer`` is a thread that takes every
operation queued while its last batch was committing and commits them in one transaction
(group commit: one commit per batch, however many spawns and outputs it holds). WAL mode
with ``synchronous=NORMAL``: a commit is a write to the log, without fsync; a killed server
loses nothing committed (an operating-system crash may lose the last batches).
"""

from __future__ import annotations

import collections
import contextlib
import json
import os
import sqlite3
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

SCHEMA_VERSION = 2
MIGRATIONS: dict[int, str] = {
    1: """
    CREATE TABLE pools (
        pool_id TEXT PRIMARY KEY,
        function_id TEXT NOT NULL,
        name TEXT NOT NULL,
        function BLOB NOT NULL,
        options TEXT NOT NULL,          -- FunctionOptions.to_wire(), JSON
        sys_path TEXT NOT NULL,         -- JSON
        client_versions TEXT NOT NULL,  -- JSON
        owner TEXT NOT NULL             -- who made it (models.OwnerModel), JSON
    );
    CREATE TABLE spawned_calls (
        call_id TEXT PRIMARY KEY,
        seq INTEGER NOT NULL,           -- opened at, microseconds since the epoch
        pool_id TEXT NOT NULL,
        function TEXT NOT NULL,
        timeout REAL NOT NULL,
        owner TEXT NOT NULL,            -- "pid:start time" of the control plane running it
        made_by TEXT NOT NULL,          -- who made the call (models.OwnerModel), JSON
        total INTEGER,
        submitted INTEGER NOT NULL DEFAULT 0,
        reported INTEGER NOT NULL DEFAULT 0,
        failed INTEGER NOT NULL DEFAULT 0,
        cancelled INTEGER NOT NULL DEFAULT 0,
        outcomes BLOB,                  -- calls.Outcomes, once finished
        kind TEXT NOT NULL DEFAULT 'spawn',  -- or 'map': a map detached from its caller
        delivered TEXT,                 -- a detached map's ranges its caller got, JSON
        finished REAL                   -- seconds since the epoch; NULL while it runs
    );
    CREATE INDEX spawned_calls_by_seq ON spawned_calls (seq);
    CREATE INDEX spawned_calls_by_finished ON spawned_calls (finished);
    CREATE TABLE spawned_inputs (       -- not settled yet: run again after a crash
        call_id TEXT NOT NULL,
        idx INTEGER NOT NULL,
        payload BLOB NOT NULL,          -- the pickle, then its out-of-band buffers
        parts TEXT NOT NULL,            -- JSON: the length of each
        PRIMARY KEY (call_id, idx)
    );
    CREATE TABLE spawned_outputs (
        call_id TEXT NOT NULL,
        idx INTEGER NOT NULL,
        row TEXT NOT NULL,              -- the outputs row (protocol.OUT_*), JSON
        payload BLOB NOT NULL,
        parts TEXT NOT NULL,
        PRIMARY KEY (call_id, idx)
    );
    """,
    2: """
    CREATE TABLE shared_objects (       -- named Dicts and Queues (ephemeral ones stay in memory)
        object_id TEXT PRIMARY KEY,
        kind TEXT NOT NULL,             -- 'dict' or 'queue'
        name TEXT NOT NULL,
        created REAL NOT NULL
    );
    CREATE UNIQUE INDEX shared_objects_by_name ON shared_objects (kind, name);
    CREATE TABLE dict_entries (
        object_id TEXT NOT NULL,
        key BLOB NOT NULL,              -- pickled by the client: keys compare by these bytes
        value BLOB NOT NULL,
        PRIMARY KEY (object_id, key)
    );
    CREATE TABLE queue_items (
        object_id TEXT NOT NULL,
        partition TEXT NOT NULL,        -- '' for the default partition
        seq INTEGER NOT NULL,           -- FIFO order within the queue
        value BLOB NOT NULL,
        PRIMARY KEY (object_id, partition, seq)
    );
    CREATE TABLE deployed_functions (   -- app.deploy(): found by Function.from_name
        app TEXT NOT NULL,
        name TEXT NOT NULL,
        kind TEXT NOT NULL,             -- 'function' or 'cls'
        function_id TEXT NOT NULL,
        function BLOB NOT NULL,         -- the pickle a worker loads (a Cls: the class's)
        options TEXT NOT NULL,          -- FunctionOptions.to_wire(), JSON
        sys_path TEXT NOT NULL,         -- JSON
        client_versions TEXT NOT NULL,  -- JSON
        deployed REAL NOT NULL,
        PRIMARY KEY (app, name)
    );
    """,
}
BATCH_BYTES = 64 << 20  # payload bytes per transaction, so that acknowledgements keep coming


class StoreError(Exception):
    """The store's file cannot be opened or used."""


def connect(path: str) -> sqlite3.Connection:
    """A connection to the store at ``path``, created (mode 0600) and migrated if needed."""
    os.makedirs(os.path.dirname(path) or ".", mode=0o700, exist_ok=True)
    os.close(os.open(path, os.O_RDWR | os.O_CREAT, 0o600))  # private before SQLite opens it
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=10.0)
    conn.execute("PRAGMA auto_vacuum = INCREMENTAL")  # takes effect on a new file only
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = NORMAL")
    conn.execute("PRAGMA journal_size_limit = 67108864")
    version = conn.execute("PRAGMA user_version").fetchone()[0]
    if version > SCHEMA_VERSION:
        conn.close()
        raise StoreError(
            f"{path} was written by a newer nbscale (schema {version}; this one reads up to "
            f"{SCHEMA_VERSION}): upgrade nbscale, or set c.NbScale.store_path to another file"
        )
    for step in range(version + 1, SCHEMA_VERSION + 1):
        try:
            conn.executescript(
                f"BEGIN IMMEDIATE; {MIGRATIONS[step]}; PRAGMA user_version = {step}; COMMIT;"
            )
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            conn.close()
            raise
    return conn


def pack(data: Any, bufs: Sequence[Any]) -> tuple[bytes, str]:
    """An input's or output's bytes as one blob, and the lengths that split it again."""
    if not bufs:  # most: a pickle alone
        return bytes(data), f"[{memoryview(data).nbytes}]"
    parts = [data, *bufs]
    return b"".join(parts), json.dumps([memoryview(p).nbytes for p in parts])


def unpack(payload: bytes, parts: str) -> tuple[memoryview, list[memoryview]]:
    view = memoryview(payload)
    if "," not in parts:  # most: a pickle alone
        return view, []
    pieces, at = [], 0
    for length in json.loads(parts):
        pieces.append(view[at : at + length])
        at += length
    return pieces[0], pieces[1:]


# --- the writer ---------------------------------------------------------------------------

_SQL = {
    "pool": "INSERT OR IGNORE INTO pools VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
    "call": "INSERT OR IGNORE INTO spawned_calls (call_id, seq, pool_id, function, timeout, "
    "owner, made_by, total, kind) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
    "total": "UPDATE spawned_calls SET total = ? WHERE call_id = ?",
    "delivered": "UPDATE spawned_calls SET delivered = ? WHERE call_id = ?",
    "input": "INSERT OR REPLACE INTO spawned_inputs VALUES (?, ?, ?, ?)",
    "output": "INSERT OR REPLACE INTO spawned_outputs VALUES (?, ?, ?, ?, ?)",
    "input-done": "DELETE FROM spawned_inputs WHERE call_id = ? AND idx = ?",
    "close": "UPDATE spawned_calls SET total = ?, submitted = ?, reported = ?, failed = ?, "
    "cancelled = ?, made_by = ?, outcomes = ?, delivered = ?, finished = ? WHERE call_id = ?",
    "inputs-dropped": "DELETE FROM spawned_inputs WHERE call_id = ?",
    "claim": "UPDATE spawned_calls SET owner = ? WHERE call_id = ?",
}
# Statements run in this order within a transaction: every operation follows the ones it
# depends on (a call before its inputs, an input before its deletion, ...).
_ORDER = tuple(_SQL)
# Steps of Dicts, Queues and deployed apps: run one by one, in the order they were queued
# (a key set, deleted, set again), after the statements above (other tables).
STEPS = {
    "object-add": "INSERT INTO shared_objects VALUES (?, ?, ?, ?)",
    "object-drop": "DELETE FROM shared_objects WHERE object_id = ?",
    "dict-set": "INSERT OR REPLACE INTO dict_entries VALUES (?, ?, ?)",
    "dict-unset": "DELETE FROM dict_entries WHERE object_id = ? AND key = ?",
    "dict-clear": "DELETE FROM dict_entries WHERE object_id = ?",
    "queue-put": "INSERT INTO queue_items VALUES (?, ?, ?, ?)",
    "queue-take": "DELETE FROM queue_items WHERE object_id = ? AND partition = ? AND seq = ?",
    "queue-clear": "DELETE FROM queue_items WHERE object_id = ?",
    "queue-clear-partition": "DELETE FROM queue_items WHERE object_id = ? AND partition = ?",
    "app-drop": "DELETE FROM deployed_functions WHERE app = ?",
    "app-function": "INSERT OR REPLACE INTO deployed_functions VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
}
Step = tuple[str, tuple[Any, ...]]
_PURGE = (
    "DELETE FROM spawned_outputs WHERE call_id IN "
    "(SELECT call_id FROM spawned_calls WHERE finished < ?1)",
    "DELETE FROM spawned_inputs WHERE call_id IN "
    "(SELECT call_id FROM spawned_calls WHERE finished < ?1)",
    "DELETE FROM spawned_calls WHERE finished < ?1",
    "DELETE FROM pools WHERE pool_id NOT IN (SELECT pool_id FROM spawned_calls)",
)


Held = tuple[str, int, Any, Sequence[Any]]  # an input: call id, index, pickle, buffers
HeldOutput = tuple[str, int, list[Any], Any, Sequence[Any]]  # call id, index, row, bytes


@dataclass(slots=True)
class Operation:
    """Rows for one or more statements of ``_SQL``, queued together; ``number`` orders it.
    Inputs' and outputs' blobs are joined on the writer's thread, off the loop."""

    number: int
    rows: dict[str, list[tuple[Any, ...]]] = field(default_factory=dict)
    inputs: list[Held] = field(default_factory=list)
    outputs: list[HeldOutput] = field(default_factory=list)
    # settled inputs to drop, by call (a call closed meanwhile drops all of its own at once)
    inputs_done: dict[str, list[int]] = field(default_factory=dict)
    size: int = 0  # payload bytes, to bound a batch
    purge_before: float | None = None  # retention: drop what finished before this time
    steps: list[Step] = field(default_factory=list)  # of ``STEPS``, run in order

    def add(self, name: str, row: tuple[Any, ...]) -> None:
        found = self.rows.get(name)
        if found is None:
            self.rows[name] = [row]
        else:
            found.append(row)

    def all_rows(self) -> dict[str, list[tuple[Any, ...]]]:
        """Its rows by statement, blobs joined (on the writer's thread)."""
        rows = dict(self.rows)
        if self.inputs:
            rows["input"] = [(c, i, *pack(data, bufs)) for c, i, data, bufs in self.inputs]
        if self.outputs:
            rows["output"] = [
                (c, i, json.dumps(row), *pack(data, bufs)) for c, i, row, data, bufs in self.outputs
            ]
        if self.inputs_done:
            done = self.inputs_done.items()
            rows["input-done"] = [(c, i) for c, indices in done for i in indices]
        return rows


Done = Callable[[int, BaseException | None], None]  # (last operation number, error)


class Writer(threading.Thread):
    """Commits queued operations in batches; ``done`` is called (on this thread) after each."""

    def __init__(self, path: str, done: Done) -> None:
        super().__init__(name="nbscale-store-writer", daemon=True)
        self.path = path
        self.done = done
        self.queue: collections.deque[Operation] = collections.deque()
        self.wake = threading.Condition()
        self.closing = False
        self.conn = connect(path)

    def put(self, op: Operation) -> None:
        with self.wake:
            self.queue.append(op)
            self.wake.notify()

    def stop(self) -> None:
        """Commit what is queued, then end."""
        with self.wake:
            self.closing = True
            self.wake.notify()
        self.join()

    def run(self) -> None:
        try:
            while True:
                batch = self._next_batch()
                if not batch:
                    return
                try:
                    self._write(batch)
                except (sqlite3.Error, OSError, MemoryError) as exc:
                    with contextlib.suppress(sqlite3.Error):
                        self.conn.execute("ROLLBACK")
                    self.done(batch[-1].number, exc)
                else:
                    self.done(batch[-1].number, None)
        finally:
            self.conn.close()

    def _next_batch(self) -> list[Operation]:
        with self.wake:
            while not self.queue and not self.closing:
                self.wake.wait()
            batch: list[Operation] = []
            size = 0
            while self.queue and (not batch or size < BATCH_BYTES):
                op = self.queue.popleft()
                batch.append(op)
                size += op.size
            return batch

    def _write(self, batch: list[Operation]) -> None:
        rows: dict[str, list[tuple[Any, ...]]] = collections.defaultdict(list)
        purge = None
        for op in batch:
            for name, values in op.all_rows().items():
                rows[name] += values
            if op.purge_before is not None:
                purge = op.purge_before
        conn = self.conn
        conn.execute("BEGIN IMMEDIATE")
        for name in _ORDER:
            if rows.get(name):
                conn.executemany(_SQL[name], rows[name])
        for op in batch:
            for name, row in op.steps:
                conn.execute(STEPS[name], row)
        if purge is not None:
            for statement in _PURGE:
                conn.execute(statement, (purge,) if "?1" in statement else ())
        conn.execute("COMMIT")
        if purge is not None:
            conn.execute("PRAGMA incremental_vacuum")
