"""Named Dicts and Queues in the SQLite store: kept across a reopen, a full disk refusing a
change with the file's path and leaving the object as it was; deployed apps kept too. The
room (``shared_objects.py``, ``deployed.py``) over a real ``SqliteStore``, its answers read
as a linked client reads them."""

from __future__ import annotations

import asyncio
import os
import pickle
import sqlite3
from pathlib import Path
from typing import Any

from conftest import fill

from nbscale_runtime import protocol
from nbscale_server.deployed import DeployedApps
from nbscale_server.errors import RequestError
from nbscale_server.outbox import Outbox
from nbscale_server.shared_objects import SharedObjects
from nbscale_server.sqlite_store import SqliteStore
from nbscale_server.store_writer import MIGRATIONS, SCHEMA_VERSION

WEEK = 7 * 86400.0
ME = b"local-0"


class Room:
    """The rooms over a store, and the answers they sent to ``ME``, by request id."""

    def __init__(self, path: str) -> None:
        self.store = SqliteStore(path, WEEK)
        self.outbox = Outbox()
        self.answers: dict[int, tuple[Any, list[Any]]] = {}
        self.outbox.local_clients[ME] = self._deliver
        self.now = 0.0
        self.shared = SharedObjects(self.outbox, self.store, lambda: self.now)
        self.deployed = DeployedApps(self.outbox, self.store)
        self.rid = 0

    def _deliver(self, msg: protocol.Message, payload: list[Any]) -> None:
        assert isinstance(msg, protocol.Reply)
        self.answers[msg.rid] = (msg.error or msg.value, payload)

    async def ask(self, handler: Any, make: Any, *args: Any, frames: list[bytes] = ()) -> Any:  # type: ignore[assignment]
        self.rid += 1
        msg = make(self.rid, *args)
        try:
            answer = handler(ME, msg, list(frames))
        except RequestError as exc:
            return [exc.kind, str(exc)], []
        if answer is not None:
            return answer
        for _ in range(500):  # written by the store's thread
            if msg.rid in self.answers:
                return self.answers.pop(msg.rid)
            await asyncio.sleep(0.01)
        raise AssertionError(f"no answer to {msg}")

    async def object_id(self, kind: str, name: str) -> str:
        """The id of the Dict or Queue ``name``, made if missing."""
        value, _ = await self.ask(self.shared.on_lookup, protocol.ObjectLookup, kind, name, True)
        return str(value["id"])

    async def put(self, d: str, key: str, value: bytes) -> Any:
        frames = [pickle.dumps(key), value]
        answer, _ = await self.ask(
            self.shared.on_dict, protocol.DictRequest, d, "put", {}, frames=frames
        )
        return answer

    async def get(self, d: str, key: str) -> bytes | None:
        value, frames = await self.ask(
            self.shared.on_dict, protocol.DictRequest, d, "get", {}, frames=[pickle.dumps(key)]
        )
        return bytes(frames[0]) if value["found"] else None


def run(body: Any) -> Any:
    return asyncio.run(body())


def test_named_dicts_queues_and_deployed_apps_are_kept_across_a_reopen(tmp_path: Path):
    path = str(tmp_path / "nbscale.db")

    async def first() -> None:
        room = Room(path)
        d = await room.object_id("dict", "kept")
        assert await room.put(d, "a", b"1") == {"added": True}
        await room.put(d, "b", b"2")
        await room.ask(
            room.shared.on_dict, protocol.DictRequest, d, "pop", {}, frames=[pickle.dumps("b")]
        )
        q = await room.object_id("queue", "jobs")
        await room.ask(
            room.shared.on_queue, protocol.QueueRequest, q, "put", {}, frames=[b"x", b"y", b"z"]
        )
        await room.ask(
            room.shared.on_queue, protocol.QueueRequest, q, "get", {"n": 1, "timeout": 0}
        )
        await room.ask(room.shared.on_lookup, protocol.ObjectLookup, "dict", None)  # ephemeral
        spec = {
            "name": "f",
            "kind": "function",
            "function_id": "fn-1",
            "options": {},
            "sys_path": [],
        }
        answer, _ = await room.ask(
            lambda i, m, p: room.deployed.deploy(i, m, p, {"python": "3"}),
            protocol.DeployApp, "app", [spec], frames=[b"pickle"],
        )  # fmt: skip
        assert answer["functions"] == ["f"]
        room.store.close()

    async def second() -> None:
        room = Room(path)
        d = await room.object_id("dict", "kept")
        assert await room.get(d, "a") == b"1" and await room.get(d, "b") is None
        value, _ = await room.ask(
            room.shared.on_lookup, protocol.ObjectLookup, "queue", "jobs", False
        )
        _, frames = await room.ask(
            room.shared.on_queue, protocol.QueueRequest, value["id"], "get", {"n": 5, "timeout": 0}
        )
        assert [bytes(f) for f in frames] == [b"y", b"z"]
        assert len(room.shared.registry.objects) == 2  # the ephemeral Dict did not outlive it
        assert room.deployed.lookup("app", "f").function == b"pickle"
        room.store.close()

    run(first)
    run(second)


def test_a_full_disk_refuses_a_change_with_the_path_and_leaves_the_dict_as_it_was(
    small_tmpfs: Path,
):
    path = str(small_tmpfs / "nbscale.db")

    async def body() -> None:
        room = Room(path)
        d = await room.object_id("dict", "full")
        await room.put(d, "k", b"before")
        filler = fill(small_tmpfs)
        error = await room.put(d, "k", os.urandom(512 << 10))
        assert error[0] == "ControlPlaneError", error
        assert path in error[1] and "full" in error[1] and "'full' was left as it was" in error[1]
        assert await room.get(d, "k") == b"before"
        filler.unlink()  # space again: it goes on
        assert await room.put(d, "k", b"after") == {"added": True}
        room.store.close()
        reopened = Room(path)
        assert await reopened.get(await reopened.object_id("dict", "full"), "k") == b"after"
        reopened.store.close()

    run(body)


def test_a_file_of_schema_1_is_migrated_keeping_its_spawned_calls(tmp_path: Path):
    path = tmp_path / "nbscale.db"
    conn = sqlite3.connect(path, isolation_level=None)
    conn.executescript(f"{MIGRATIONS[1]}; PRAGMA user_version = 1;")
    conn.execute(
        "INSERT INTO spawned_calls (call_id, seq, pool_id, function, timeout, owner, made_by) "
        "VALUES ('fc-old', 1, 'p', 'f', 60, 'gone', '{}')"
    )
    conn.close()

    async def body() -> None:
        room = Room(str(path))
        assert room.store.read("v", "PRAGMA user_version") == [(SCHEMA_VERSION,)]
        assert room.store.read("calls", "SELECT call_id FROM spawned_calls") == [("fc-old",)]
        d = await room.object_id("dict", "new")  # the new tables are there
        assert await room.put(d, "k", b"v") == {"added": True}
        room.store.close()

    run(body)


def test_an_item_handed_to_a_waiting_get_is_gone_after_a_reopen(tmp_path: Path):
    path = str(tmp_path / "nbscale.db")

    async def body() -> None:
        room = Room(path)
        q = await room.object_id("queue", "q")
        waiting = protocol.QueueRequest(100, q, "get", {"n": 1, "timeout": None})
        assert room.shared.on_queue(ME, waiting, []) is None  # waits
        await room.ask(room.shared.on_queue, protocol.QueueRequest, q, "put", {}, frames=[b"it"])
        for _ in range(500):
            if 100 in room.answers:
                break
            await asyncio.sleep(0.01)
        answer, frames = room.answers.pop(100)
        assert answer["count"] == 1 and [bytes(f) for f in frames] == [b"it"]
        room.store.close()
        reopened = Room(path)
        answer, _ = await reopened.ask(
            reopened.shared.on_queue, protocol.QueueRequest, q, "len", {"total": True}
        )
        assert answer == {"len": 0}
        reopened.store.close()

    run(body)


def test_items_given_back_by_a_withdrawn_get_are_kept_in_their_places_across_a_reopen(
    tmp_path: Path,
):
    path = str(tmp_path / "nbscale.db")

    async def body() -> None:
        room = Room(path)
        q = await room.object_id("queue", "q")
        put = protocol.QueueRequest
        await room.ask(room.shared.on_queue, put, q, "put", {}, frames=[b"1", b"2", b"3"])
        answer, frames = await room.ask(room.shared.on_queue, put, q, "get", {"n": 2})
        # its caller had stopped waiting: the client gives the two back
        back = {"seqs": answer["seqs"]}
        await room.ask(room.shared.on_queue, put, q, "unget", back, frames=list(frames))
        room.store.close()
        reopened = Room(path)
        answer, frames = await reopened.ask(reopened.shared.on_queue, put, q, "get", {"n": 5})
        assert [bytes(f) for f in frames] == [b"1", b"2", b"3"]
        reopened.store.close()

    run(body)


def test_a_partition_is_cleared_partition_ttl_after_its_last_put_and_stays_cleared(
    tmp_path: Path,
):
    path = str(tmp_path / "nbscale.db")

    async def body() -> None:
        room = Room(path)
        q, ask, request = (
            await room.object_id("queue", "q"),
            room.shared.on_queue,
            protocol.QueueRequest,
        )

        async def put(partition: str, ttl: float | None, item: bytes) -> Any:
            args = {"partition": partition, "partition_ttl": ttl}
            return (await room.ask(ask, request, q, "put", args, frames=[item]))[0]

        async def length(partition: str) -> int:
            return (await room.ask(ask, request, q, "len", {"partition": partition}))[0]["len"]

        await put("short", 10, b"1")
        await put("", None, b"kept")  # the default: a day
        room.now = 6.0
        await put("short", 10, b"2")  # its time starts again: 16
        room.now = 15.0
        room.shared.expire()
        assert await length("short") == 2
        room.now = 16.0
        room.shared.expire()
        assert await length("short") == 0 and await length("") == 1
        for _ in range(100):  # the store's writer thread clears it in the file too
            await asyncio.sleep(0.01)
        assert await put("short", 0, b"x") == [
            "InvalidError",
            "partition_ttl is seconds, over 0 and at most 86,400, not 0",
        ]
        room.store.close()
        reopened = Room(path)
        for partition, left in (("short", 0), ("", 1)):
            answer, _ = await reopened.ask(
                reopened.shared.on_queue, request, q, "len", {"partition": partition}
            )
            assert answer["len"] == left
        reopened.store.close()

    run(body)
