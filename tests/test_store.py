"""The store of spawned calls: in memory (bounded) and in a real SQLite file (durable).

The SQLite store is driven as the control plane drives it, from a running asyncio loop,
with its writer thread committing in the background; its file is reopened as a restarted
server would reopen it.
"""

from __future__ import annotations

import asyncio
import dataclasses
import gc
import os
import pickle
import sqlite3
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import psutil
import pytest
from conftest import fill

import nbscale
from nbscale.exceptions import NotFoundError
from nbscale_runtime.protocol import STATUS_ERROR, STATUS_OK, STATUS_REJECTED, output_row
from nbscale_server.calls import CallState, Outcomes
from nbscale_server.options import FunctionOptions
from nbscale_server.pool import Pool
from nbscale_server.queue import InputRecord
from nbscale_server.sqlite_store import SqliteStore
from nbscale_server.store import MemoryStore, SpawnStore
from nbscale_server.store_writer import SCHEMA_VERSION, StoreError

VERSIONS = {"python": "3.11.7", "cloudpickle": "3.1.1"}
WEEK = 7 * 86400.0


def a_pool() -> Pool:
    return Pool.create(
        "fn-1", "square", b"pickled function", FunctionOptions(), ["/x"], VERSIONS, 4
    )


def a_call(call_id: str, seq: int, total: int | None = 1) -> CallState:
    call = CallState(
        call_id, a_pool().pool_id, "spawn", b"owner", "square", 300.0, seq=seq, total=total
    )
    call.outcomes = Outcomes()
    return call


def settle(store: SpawnStore, call: CallState, index: int, value: bytes, ok: bool = True) -> None:
    status = STATUS_OK if ok else STATUS_ERROR
    row = output_row(call.call_id, index, 1, status, (0, len(value), 0), worker_id="wk-1")
    call.outcomes.mark(index, ok, 1)  # type: ignore[union-attr]
    call.reported += 1
    call.failed += not ok
    store.settled(call, index, row, value, [])


def run(body: Callable[[], Awaitable[Any]]) -> Any:
    return asyncio.run(body())


async def submitted(store: SpawnStore, call: CallState, inputs: list[bytes]) -> str | None:
    """Hand inputs to the store; what ``then`` said once they were kept."""
    done: asyncio.Future[str | None] = asyncio.get_running_loop().create_future()
    records = [InputRecord(call.call_id, i, data, spawned=True) for i, data in enumerate(inputs)]
    call.submitted += len(records)
    store.submitted(a_pool(), call, records, done.set_result)
    return await asyncio.wait_for(done, 10)


async def committed(store: SqliteStore) -> None:
    """Wait until every write queued so far is committed: a probe call's turn (writes are
    committed in order)."""
    probe = a_call(f"fc-probe-{os.urandom(4).hex()}", 1)
    assert await submitted(store, probe, []) is None


def is_probe(call: CallState) -> bool:
    return call.call_id.startswith("fc-probe-")


# --- in memory ----------------------------------------------------------------------------


def test_memory_store_drops_the_oldest_finished_calls_beyond_its_count():
    store = MemoryStore(max_calls=2, max_bytes=1 << 30, retention=WEEK)
    calls = [a_call(f"fc-{i}", i) for i in range(3)]
    for call in calls:
        settle(store, call, 0, b"result")
        store.closed(call)
    assert store.finished_call("fc-0") is None
    assert [c.call_id for c in store.finished_calls(10, None)] == ["fc-2", "fc-1"]
    assert store.outputs("fc-0", 0, None) == []
    why = store.why_missing("fc-0")
    assert "latest 2 finished spawned calls" in why and "Jupyter server" in why
    assert store.why_missing("fc-unknown") == "no function call fc-unknown"


def test_memory_store_drops_finished_calls_beyond_its_bytes_never_running_ones():
    store = MemoryStore(max_calls=100, max_bytes=1000, retention=WEEK)
    running = a_call("fc-running", 1, total=2)
    settle(store, running, 0, b"x" * 800)
    done = a_call("fc-done", 2)
    settle(store, done, 0, b"y" * 800)
    store.closed(done)  # 1600 bytes held: the finished one goes, the running one stays
    assert store.finished_call("fc-done") is None
    assert "MiB of spawned results" in store.why_missing("fc-done")
    assert [bytes(d) for _, d, _ in store.outputs("fc-running", 0, None)] == [b"x" * 800]
    assert store.nbytes == 800


def test_memory_store_forgets_calls_past_their_retention():
    store = MemoryStore(max_calls=100, max_bytes=1 << 30, retention=10.0)
    call = a_call("fc-old", 1)
    settle(store, call, 0, b"r")
    store.closed(call)
    store.housekeep(time.time() + 11)
    assert store.finished_call("fc-old") is None
    assert "expired" in store.why_missing("fc-old")


def test_memory_store_gives_a_finished_call_back_as_it_was():
    store = MemoryStore(max_calls=100, max_bytes=1 << 30, retention=WEEK)
    call = a_call("fc-full", 7, total=3)
    call.owner_info = {
        "kernel_id": "k-1",
        "notebook": None,
        "name": "nb",
        "pid": 42,
        "host": "h",
        "app": "math",
    }
    call.parent = ("fc-parent", 3)
    call.add_child("fc-child-1")
    call.add_child("fc-child-2")
    call.detached, call.delivered, call.submitted = True, [(1, 2)], 3
    frame = b"..first..third.."
    settle(store, call, 0, memoryview(frame)[2:7])  # a slice of the frame it came in
    settle(store, call, 2, memoryview(frame)[9:14], ok=False)
    store.closed(call)

    kept = store.finished_call("fc-full")
    assert kept is not None and kept is not call
    for field in dataclasses.fields(CallState):
        mine, theirs = getattr(kept, field.name), getattr(call, field.name)
        if field.name == "outcomes":
            mine, theirs = bytes(mine.raw), bytes(theirs.raw)
        elif isinstance(theirs, list):
            mine = list(mine)
        assert mine == theirs, field.name
    assert kept.as_dict() == call.as_dict()
    assert kept.outcomes is not None and kept.outcomes.get(2) == (False, 1)
    assert [(row[1], bytes(data)) for row, data, _ in store.outputs("fc-full", 0, None)] == [
        (0, b"first"),
        (2, b"third"),
    ]
    assert [row[1] for row, _, _ in store.outputs("fc-full", 1, 3)] == [2]
    row, data, bufs = store.first_outputs(["fc-full", "fc-none"])["fc-full"]
    assert isinstance(row, list) and isinstance(row[-1], list) and bufs == []
    assert bytes(data) == b"first" and store.nbytes == 10


def test_memory_store_keeps_finished_calls_out_of_the_garbage_collectors_walks():
    """The embedded store lives in the caller's process: each full collection walks every
    object it keeps. A hundred thousand spawned calls kept as objects (a CallState, its
    lists, its outputs' rows) made those walks most of a spawn's time."""
    store = MemoryStore(max_calls=100_000, max_bytes=1 << 30, retention=WEEK)
    gc.collect()
    before = len(gc.get_objects())
    for i in range(2000):
        call = a_call(f"fc-{i}", i)
        settle(store, call, 0, memoryview(b"a frame of results")[2:7])
        store.closed(call)
    del call
    gc.collect()  # tuples of atomic values are untracked at the collector's first look
    tracked = len(gc.get_objects()) - before
    assert tracked < 100, f"{tracked} objects tracked for 2000 finished calls"
    assert len(store.finished_calls(5000, None)) == 2000


# --- in SQLite ----------------------------------------------------------------------------


def test_sqlite_store_keeps_calls_across_a_reopen(tmp_path: Path):
    path = str(tmp_path / "data" / "nbscale.db")

    async def first() -> None:
        store = SqliteStore(path, WEEK)
        done, half = a_call("fc-done", 10, total=2), a_call("fc-half", 20, total=2)
        assert await submitted(store, done, [b"in0", b"in1"]) is None
        assert await submitted(store, half, [b"in0", b"in1"]) is None
        settle(store, done, 0, b"out0")
        settle(store, done, 1, b"boom", ok=False)
        store.closed(done)
        settle(store, half, 0, b"half0")
        # Readable at once, before the writer committed it.
        assert [bytes(d) for _, d, _ in store.outputs("fc-half", 0, 2)] == [b"half0"]
        await committed(store)
        store._writer.stop()  # a crash: nothing more is written, nothing closed

    run(first)
    assert oct(os.stat(path).st_mode & 0o777) == "0o600"

    async def second() -> None:
        store = SqliteStore(path, WEEK)
        done = store.finished_call("fc-done")
        assert done is not None and (done.total, done.reported, done.failed) == (2, 2, 1)
        assert done.outcomes is not None and done.outcomes.get(1) == (False, 1)
        rows = store.outputs("fc-done", 0, None)
        assert [(r[3], bytes(d)) for r, d, _ in rows] == [
            (STATUS_OK, b"out0"),
            (STATUS_ERROR, b"boom"),
        ]
        [unfinished] = [u for u in store.unfinished() if not is_probe(u.call)]
        assert unfinished.call.call_id == "fc-half" and unfinished.call.reported == 1
        assert [(r.index, bytes(r.data)) for r in unfinished.inputs] == [(1, b"in1")]
        assert unfinished.pool.function == b"pickled function"
        assert FunctionOptions.from_wire(unfinished.pool.options) == FunctionOptions()
        assert store.last_seq() == 20
        listed = [c.call_id for c in store.finished_calls(10, None)]
        assert listed[0] == "fc-done"
        store.close()

    run(second)


def test_first_outputs_and_finished_calls_are_read_many_at_once(tmp_path: Path):
    async def body() -> None:
        store = SqliteStore(str(tmp_path / "nbscale.db"), WEEK)
        calls = [a_call(f"fc-{i}", i + 1) for i in range(4)]
        for call in calls:
            assert await submitted(store, call, [b"in"]) is None
        for call in calls[:3]:
            settle(store, call, 0, call.call_id.encode())
            store.closed(call)
        ids = [c.call_id for c in calls] + ["fc-nope"]
        for when in ("before the commit", "after it"):
            found = store.first_outputs(ids)
            assert {c: bytes(d) for c, (_, d, _) in found.items()} == {
                "fc-0": b"fc-0", "fc-1": b"fc-1", "fc-2": b"fc-2"
            }, when  # fmt: skip
            assert sorted(store.finished_calls_named(ids)) == ["fc-0", "fc-1", "fc-2"], when
            await committed(store)
        store._writer.stop()

    run(body)


def test_a_turn_of_the_loop_is_one_write_and_a_batch_of_spawns_one_acknowledgement(
    tmp_path: Path,
):
    path = str(tmp_path / "nbscale.db")

    async def body() -> None:
        store = SqliteStore(path, WEEK)
        writes: list[Any] = []
        put = store._writer.put
        store._writer.put = lambda op: (writes.append(op), put(op))[1]  # type: ignore[method-assign]
        calls = [a_call(f"fc-{i}", i + 1) for i in range(100)]
        batch = [(c, InputRecord(c.call_id, 0, b"in", spawned=True)) for c in calls]
        acknowledged: list[str | None] = []
        store.spawned(a_pool(), batch, acknowledged.append)
        await committed(store)  # its probe in the same turn: the same write
        assert acknowledged == [None]  # once, for the batch
        assert len(writes[0].rows["pool"]) == 1 and len(writes[0].inputs) == 100
        for call in calls[:60]:  # a worker's outputs: each settled, its call closed
            settle(store, call, 0, call.call_id.encode())
            store.closed(call)
        for call in calls[60:]:  # settled, not closed yet: their inputs are dropped one by one
            settle(store, call, 0, call.call_id.encode())
        await committed(store)
        assert len(writes) == 2  # a write for each turn
        settled = writes[1]
        assert len(settled.outputs) == 100 and len(settled.rows["close"]) == 60
        assert sorted(settled.inputs_done) == sorted(c.call_id for c in calls[60:])
        store._writer.stop()  # a crash: the calls not closed run from their outputs, not again

    run(body)
    conn = sqlite3.connect(path)
    assert conn.execute("SELECT count(*) FROM spawned_inputs").fetchone() == (0,)
    assert conn.execute("SELECT count(*) FROM spawned_outputs").fetchone() == (100,)
    closed = conn.execute("SELECT count(*) FROM spawned_calls WHERE finished > 0").fetchone()
    assert closed == (60,)
    conn.close()


def test_sqlite_store_lists_finished_calls_newest_first_in_pages(tmp_path: Path):
    async def body() -> None:
        store = SqliteStore(str(tmp_path / "nbscale.db"), WEEK)
        for i in range(25):
            call = a_call(f"fc-{i:02}", 1000 + i)
            await submitted(store, call, [b"x"])
            settle(store, call, 0, b"y")
            store.closed(call)
        await committed(store)
        first = store.finished_calls(10, None)
        second = store.finished_calls(10, first[-1].seq)
        assert [c.call_id for c in first] == [f"fc-{i:02}" for i in range(24, 14, -1)]
        assert [c.call_id for c in second] == [f"fc-{i:02}" for i in range(14, 4, -1)]
        store.close()

    run(body)


def test_sqlite_store_drops_what_outlived_its_retention(tmp_path: Path):
    path = str(tmp_path / "nbscale.db")

    async def body() -> None:
        store = SqliteStore(path, retention=3600.0)
        call = a_call("fc-old", 1)
        await submitted(store, call, [b"x"])
        settle(store, call, 0, b"y")
        store.closed(call)
        await committed(store)
        store.housekeep(time.time() + 3601)
        await committed(store)
        assert store.finished_call("fc-old") is None
        assert "kept 0.0416667 days" in store.why_missing("fc-old")
        store.close()

    run(body)
    with sqlite3.connect(path) as db:
        calls = db.execute("SELECT call_id FROM spawned_calls WHERE call_id = 'fc-old'")
        assert calls.fetchall() == []
        assert db.execute("SELECT count(*) FROM spawned_outputs").fetchone()[0] == 0


def test_a_file_of_a_newer_schema_is_refused_untouched(tmp_path: Path):
    path = tmp_path / "nbscale.db"
    with sqlite3.connect(path) as db:
        db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    with pytest.raises(StoreError, match="newer nbscale"):
        SqliteStore(str(path), WEEK)
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION + 1


def test_a_file_that_is_not_a_database_is_refused_untouched_with_what_to_do(tmp_path: Path):
    path = tmp_path / "nbscale.db"
    garbage = os.urandom(5000)
    path.write_bytes(garbage)
    with pytest.raises(StoreError, match="not a database") as refused:
        SqliteStore(str(path), WEEK)
    assert str(path) in str(refused.value) and "move it aside" in str(refused.value)
    assert path.read_bytes() == garbage


def test_a_call_of_a_live_control_plane_sharing_the_file_is_not_taken(tmp_path: Path):
    """Two servers with one data directory: each runs again only its own dead peers' calls."""
    path = str(tmp_path / "nbscale.db")

    async def body() -> None:
        store = SqliteStore(path, WEEK)
        await submitted(store, a_call("fc-mine", 1), [b"x"])
        await committed(store)
        store._writer.stop()

    run(body)
    with sqlite3.connect(path) as db:  # as if written by a process that still runs
        live = f"{os.getppid()}:{psutil.Process(os.getppid()).create_time():.2f}"
        db.execute("UPDATE spawned_calls SET owner = ?", (live,))

    async def reopened() -> None:
        store = SqliteStore(path, WEEK)
        assert [u for u in store.unfinished() if not is_probe(u.call)] == []
        store.close()

    run(reopened)


# --- write failures -----------------------------------------------------------------------


def test_a_full_disk_fails_the_spawn_and_the_result_with_the_path(small_tmpfs: Path):
    path = str(small_tmpfs / "nbscale.db")

    async def body() -> None:
        store = SqliteStore(path, WEEK)
        kept = a_call("fc-kept", 1, total=2)
        assert await submitted(store, kept, [b"a", b"b"]) is None
        filler = fill(small_tmpfs)
        error = await submitted(store, a_call("fc-refused", 2), [os.urandom(256 << 10)])
        assert error is not None and path in error and "full" in error, error
        settle(store, kept, 0, os.urandom(256 << 10))
        await committed_or_not(store)
        [(row, data, _)] = store.outputs("fc-kept", 0, 1)
        assert row[3] == STATUS_REJECTED
        record = pickle.loads(bytes(data))
        assert record["kind"] == "ControlPlaneError"
        assert "result of input 0 of fc-kept" in record["message"] and path in record["message"]
        filler.unlink()  # space again: the store goes on
        assert await submitted(store, a_call("fc-later", 3), [b"c"]) is None
        store.close()

    run(body)


async def committed_or_not(store: SqliteStore) -> None:
    probe = a_call(f"fc-probe-{os.urandom(4).hex()}", 1)
    await submitted(store, probe, [])


# --- through a real client ----------------------------------------------------------------

app = nbscale.App("test-store")


@app.function(max_containers=1, scaledown_window=30)
def square(x):
    return x * x


def test_the_embedded_control_plane_drops_old_results_and_says_so(fresh_plane):
    fresh_plane(NBSCALE_SPAWN_MEMORY_CALLS="2")
    calls = [square.spawn(x) for x in range(3)]
    assert [c.get(timeout=60) for c in calls] == [0, 1, 4]
    assert nbscale.FunctionCall.from_id(calls[2].object_id).get() == 4
    with pytest.raises(NotFoundError, match="keeps the latest 2 finished spawned calls"):
        nbscale.FunctionCall.from_id(calls[0].object_id)
