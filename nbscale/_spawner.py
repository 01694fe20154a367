"""``.spawn()`` by the batch: the spawns a process makes in one turn of the loop, for one
pool, go to the control plane in one ``spawn-calls`` message and come back in one reply.

A spawn is a call of one input. Sent alone, each paid for a message, a call opened in the
control plane, a store write and a reply; ``.spawn.aio`` calls gathered together, or spawns
made from several threads, now share them. A spawn made alone is a batch of one: it waits
for nothing but its own loop turn.
"""

from __future__ import annotations

import asyncio
import weakref
from typing import Any

from nbscale_runtime import protocol
from nbscale_runtime.serialization import PayloadWriter, TooLarge

from . import _nested
from ._chunks import check_input_sizes
from ._client import Client
from ._map import new_call_id
from ._pickling import add_input
from .exceptions import from_wire

_MAX_BATCH = 512  # spawns per message at most

_Key = tuple[str, "tuple[Any, ...] | None"]  # pool id, parent


class _Batch:
    """Spawns waiting for their loop turn: their inputs pickled into one payload."""

    __slots__ = ("answers", "rows", "writer")

    def __init__(self) -> None:
        self.writer = PayloadWriter()
        self.rows: list[list[Any]] = []  # SPAWN_* rows
        self.answers: list[asyncio.Future[None]] = []


class Spawner:
    """One client's spawns waiting for their loop turn, by pool and parent."""

    def __init__(self, client: Client) -> None:
        self.client = client
        self._waiting: dict[_Key, _Batch] = {}
        max_mib = client.server_info.get("max_input_mib")
        self._max_input = None if max_mib is None else int(max_mib) << 20

    async def spawn(
        self, pool_id: str, name: str, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> str:
        """Spawn a call of one input in ``pool_id``; returns its id once the control plane
        has kept it (durably, with the Jupyter server's store)."""
        parent = _nested.parent()
        key = (pool_id, None if parent is None else tuple(parent))
        batch = self._waiting.get(key)
        if batch is None or len(batch.rows) >= _MAX_BATCH:
            if batch is not None:
                self._send(key)
            batch = self._waiting[key] = _Batch()
            asyncio.get_running_loop().call_soon(self._send, key, batch)
        try:  # an input that fails is this spawn's alone: the writer drops its bytes
            where = add_input(batch.writer, 0, args, kwargs, self._max_input)
        except TooLarge:  # said in the words of a map's inputs
            alone = PayloadWriter()
            where = alone.add((args, kwargs))
            check_input_sizes([[0, *where]], alone.frames(), self._max_input or 0, name)
            raise
        call_id = new_call_id()
        answered = asyncio.get_running_loop().create_future()
        batch.rows.append([call_id, *where])
        batch.answers.append(answered)
        await answered
        return call_id

    def _send(self, key: _Key, batch: _Batch | None = None) -> None:
        """Send the spawns waiting under ``key`` (unless ``batch`` was sent already)."""
        if batch is not None and self._waiting.get(key) is not batch:
            return
        batch = self._waiting.pop(key)
        if not batch.rows:  # each of its spawns failed to pickle
            return
        pool_id, parent = key
        rows, answers = batch.rows, batch.answers
        msg = protocol.SpawnCalls(0, pool_id, rows, None if parent is None else list(parent))
        try:
            reply = self.client.send_request(msg, batch.writer.frames())
        except Exception as exc:  # the connection is lost
            _answer(answers, exc, {})
            return
        reply.add_done_callback(lambda done: _answered(answers, done))


def _answered(
    batch: list[asyncio.Future[None]], reply: asyncio.Future[tuple[Any, list[Any]]]
) -> None:
    if reply.cancelled():  # the client closed
        for answered in batch:
            answered.cancel()
    elif reply.exception() is not None:  # the connection lost, or the request refused whole
        _answer(batch, reply.exception(), {})
    else:
        refused = reply.result()[0]["refused"]
        _answer(
            batch,
            None,
            {row: from_wire(kind, text, details) for row, kind, text, details in refused},
        )


def _answer(
    batch: list[asyncio.Future[None]], error: BaseException | None, refused: dict[int, Exception]
) -> None:
    for at, answered in enumerate(batch):
        if answered.done():  # its spawn was cancelled meanwhile
            continue
        failed = error or refused.get(at)
        if failed is not None:
            answered.set_exception(failed)
        else:
            answered.set_result(None)


_spawners: weakref.WeakKeyDictionary[Client, Spawner] = weakref.WeakKeyDictionary()


def spawner(client: Client) -> Spawner:
    found = _spawners.get(client)
    if found is None:
        found = _spawners[client] = Spawner(client)
    return found
