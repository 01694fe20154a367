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
from nbscale_runtime.serialization import PayloadWriter, pack

from . import _nested
from ._client import Client
from ._map import check_input_sizes, new_call_id
from ._pickling import add_input
from .exceptions import from_wire

_MAX_BATCH = 512  # spawns per message at most

_Pending = tuple[str, list[Any], "asyncio.Future[None]"]  # call id, its frames, its answer


class Spawner:
    """One client's spawns waiting for their loop turn, by pool and parent."""

    def __init__(self, client: Client) -> None:
        self.client = client
        self._waiting: dict[tuple[str, tuple[Any, ...] | None], list[_Pending]] = {}
        max_mib = client.server_info.get("max_input_mib")
        self._max_input = None if max_mib is None else int(max_mib) << 20

    async def spawn(
        self, pool_id: str, name: str, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> str:
        """Spawn a call of one input in ``pool_id``; returns its id once the control plane
        has kept it (durably, with the Jupyter server's store)."""
        writer = PayloadWriter()
        where = add_input(writer, 0, args, kwargs)  # a pickling error is this spawn's alone
        frames = writer.frames()
        if self._max_input is not None:
            check_input_sizes([[0, *where]], frames, self._max_input, name)
        parent = _nested.parent()
        key = (pool_id, None if parent is None else tuple(parent))
        call_id = new_call_id()
        answered = asyncio.get_running_loop().create_future()
        waiting = self._waiting.get(key)
        if waiting is None:
            waiting = self._waiting[key] = []
            asyncio.get_running_loop().call_soon(self._send, key)
        waiting.append((call_id, frames, answered))
        await answered
        return call_id

    def _send(self, key: tuple[str, tuple[Any, ...] | None]) -> None:
        waiting = self._waiting.pop(key)
        for start in range(0, len(waiting), _MAX_BATCH):
            self._request(key, waiting[start : start + _MAX_BATCH])

    def _request(self, key: tuple[str, tuple[Any, ...] | None], batch: list[_Pending]) -> None:
        pool_id, parent = key
        frames, addresses = pack([(f[0], f[1:]) for _, f, _ in batch])
        rows = [[call_id, *where] for (call_id, _, _), where in zip(batch, addresses, strict=True)]
        msg = protocol.SpawnCalls(0, pool_id, rows, None if parent is None else list(parent))
        try:
            reply = self.client.send_request(msg, frames)
        except Exception as exc:  # the connection is lost
            _answer(batch, exc, {})
            return
        reply.add_done_callback(lambda done: _answered(batch, done))


def _answered(batch: list[_Pending], reply: asyncio.Future[tuple[Any, list[Any]]]) -> None:
    if reply.cancelled():  # the client closed
        for _, _, answered in batch:
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
    batch: list[_Pending], error: BaseException | None, refused: dict[int, Exception]
) -> None:
    for at, (_, _, answered) in enumerate(batch):
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
