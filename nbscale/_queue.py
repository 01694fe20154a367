"""``nbscale.Queue``: Modal's distributed FIFO queue, held by the control plane.

Partitions are independent FIFO queues within one Queue (the default one has no key).
Modal's limits: items up to 1 MiB, up to 5,000 per partition, 100,000 partitions. A
blocking ``get`` waits on the control plane (no polling) until an item comes or its
``timeout`` passes; when the control plane is gone it ends with ``ConnectionLostError``.
A ``get`` interrupted while it waits is withdrawn; items already on their way back to it
are given back, to the head of the queue, in their places.
"""

from __future__ import annotations

import asyncio
import queue as stdlib_queue
import time
from collections.abc import AsyncIterator, Iterable
from typing import Any

from nbscale_runtime import protocol
from nbscale_server.shared_core import QUEUE, QUEUE_ITEM_MAX, SharedError, check_partition_ttl

from ._aio import data_method
from ._loop import if_abandoned
from ._shared import AsyncIterMethod, SharedObject, check_size, dumps, loads, send_quietly
from .exceptions import InvalidError

_FULL_RETRY = (0.05, 1.0)  # first and longest pause between puts into a full partition


class Queue(SharedObject):
    """A FIFO queue that the kernel, every worker and every other kernel of the same
    control plane share. ``Queue.from_name(name, create_if_missing=True)`` names one (kept
    across restarts of the Jupyter server); ``with Queue.ephemeral() as q:`` makes one."""

    kind = QUEUE

    async def _act(
        self, action: str, frames: list[bytes] | None = None, **args: Any
    ) -> tuple[Any, list[Any]]:
        return await self._request(protocol.QueueRequest, action, args, frames or [])

    # --- put ----------------------------------------------------------------------------

    @data_method
    async def put(
        self,
        v: Any,
        block: bool = True,
        timeout: float | None = None,
        *,
        partition: str | None = None,
        partition_ttl: int | None = None,
    ) -> None:
        """Add ``v``. A full partition (5,000 items) makes it wait, up to ``timeout``
        seconds, then raise ``queue.Full`` (at once when ``block`` is False). The partition
        is cleared ``partition_ttl`` seconds after its last put (at most, and by default, a
        day, as on Modal)."""
        await self._put([v], block, timeout, partition, partition_ttl)

    @data_method
    async def put_many(
        self,
        vs: Iterable[Any],
        block: bool = True,
        timeout: float | None = None,
        *,
        partition: str | None = None,
        partition_ttl: int | None = None,
    ) -> None:
        """Add every value of ``vs``, in order, at once."""
        await self._put(list(vs), block, timeout, partition, partition_ttl)

    async def _put(
        self,
        values: list[Any],
        block: bool,
        timeout: float | None,
        partition: str | None,
        partition_ttl: float | None,
    ) -> None:
        _check_partition(partition)
        try:
            check_partition_ttl(partition_ttl)
        except SharedError as exc:
            raise InvalidError(str(exc)) from None
        client, _ = await self._connected()
        frames = [dumps(v, "item") for v in values]
        for data in frames:
            check_size(client, len(data), QUEUE_ITEM_MAX, "Queue item")
        deadline = None if timeout is None else time.monotonic() + timeout
        pause = _FULL_RETRY[0]
        while True:
            answer, _ = await self._act(
                "put", frames, partition=partition or "", partition_ttl=partition_ttl
            )
            if not answer["full"]:
                return
            # Rare: a consumer far behind. Wait for room without holding the control plane.
            left = None if deadline is None else deadline - time.monotonic()
            if not block or (left is not None and left <= 0):
                raise stdlib_queue.Full(f"partition {partition or '(default)'} of {self!r} is full")
            await asyncio.sleep(pause if left is None else min(pause, left))
            pause = min(2 * pause, _FULL_RETRY[1])

    # --- get ----------------------------------------------------------------------------

    @data_method
    async def get(
        self, block: bool = True, timeout: float | None = None, *, partition: str | None = None
    ) -> Any:
        """Remove and return the oldest item. Waits for one (up to ``timeout`` seconds,
        then returns None); with ``block=False`` raises ``queue.Empty`` when there is none."""
        values = await self._get(1, block, timeout, partition)
        return values[0] if values else None

    @data_method
    async def get_many(
        self,
        n_values: int,
        block: bool = True,
        timeout: float | None = None,
        *,
        partition: str | None = None,
    ) -> list[Any]:
        """Remove and return up to ``n_values`` of the oldest items, as ``get`` waits for
        the first (``[]`` after ``timeout``)."""
        if n_values < 1:
            raise InvalidError(f"n_values must be at least 1, not {n_values}")
        return await self._get(n_values, block, timeout, partition)

    async def _get(
        self, n: int, block: bool, timeout: float | None, partition: str | None
    ) -> list[Any]:
        _check_partition(partition)
        if timeout is not None and timeout < 0:
            raise InvalidError(f"timeout must not be negative, not {timeout}")
        wait = timeout if block else 0.0
        client, object_id = await self._connected()
        args = {"n": n, "timeout": wait, "partition": partition or "", "label": repr(self)}
        msg = protocol.QueueRequest(0, object_id, "get", args)
        request = client.send_request(msg)
        try:
            answer, frames = await asyncio.shield(request)
        except asyncio.CancelledError:  # interrupted: withdraw the wait
            cancel = protocol.QueueRequest(0, object_id, "cancel-get", {"rid": msg.rid})
            send_quietly(client.request(cancel))

            # the items may be on their way already: they go back to the head of the queue
            def give_back(answered: asyncio.Future[tuple[Any, list[Any]]]) -> None:
                if not answered.cancelled() and answered.exception() is None:
                    _unget(client, object_id, partition, *answered.result())

            request.add_done_callback(give_back)
            raise
        if not answer["count"] and not block:
            raise stdlib_queue.Empty(
                f"{self!r} has no item in partition {partition or '(default)'}"
            )
        values = [loads(f) for f in frames]
        # should the caller stop waiting now, the items go back too
        if_abandoned(lambda: _unget(client, object_id, partition, answer, frames))
        return values

    # --- the rest -----------------------------------------------------------------------

    @data_method
    async def len(self, *, partition: str | None = None, total: bool = False) -> int:
        """Items in ``partition`` (the default one), or in all partitions with ``total``."""
        _check_partition(partition)
        if partition is not None and total:
            raise InvalidError("give a partition or total=True, not both")
        answer, _ = await self._act("len", partition=partition or "", total=total)
        return int(answer["len"])

    @data_method
    async def clear(self, *, partition: str | None = None, all: bool = False) -> None:
        """Remove every item of ``partition`` (the default one), or of all of them."""
        _check_partition(partition)
        if partition is not None and all:
            raise InvalidError("give a partition or all=True, not both")
        await self._act("clear", partition=partition or "", all=all)

    @property
    def iterate(self) -> AsyncIterMethod:
        """``q.iterate(partition=None, item_poll_timeout=0.0)``: the items in place, oldest
        first, without removing them; at the end, waits up to ``item_poll_timeout`` seconds
        for more before it stops. ``async for v in q.iterate.aio()``."""
        return AsyncIterMethod(self._iterate)

    async def _iterate(
        self, *, partition: str | None = None, item_poll_timeout: float = 0.0
    ) -> AsyncIterator[Any]:
        poll = item_poll_timeout
        _check_partition(partition)
        after = 0
        quiet_since = time.monotonic()
        while True:
            answer, frames = await self._act("iterate", partition=partition or "", after=after)
            after = answer["last"]
            for frame in frames:
                yield loads(frame)
            if frames:
                quiet_since = time.monotonic()
                continue
            if time.monotonic() - quiet_since >= poll:
                return
            await asyncio.sleep(min(0.1, poll))


def _unget(
    client: Any, object_id: str, partition: str | None, answer: Any, frames: list[Any]
) -> None:
    """Give back what a withdrawn get was answered with, with the items' sequence numbers,
    so that they keep their place in the queue."""
    if answer.get("count"):
        args = {"partition": partition or "", "seqs": answer["seqs"]}
        unget = protocol.QueueRequest(0, object_id, "unget", args)
        send_quietly(client.request(unget, frames))


def _check_partition(partition: str | None) -> None:
    if partition is not None and (not isinstance(partition, str) or not partition):
        raise InvalidError(f"a partition key is a non-empty string, not {partition!r}")
