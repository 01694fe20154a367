"""``nbscale.Dict``: Modal's distributed dict, held by the control plane.

Keys are compared by their pickled bytes (Modal hashes them): ``1``, ``1.0`` and ``True``
are three keys here, and a key's pickle must be the same wherever it is made (str, bytes,
numbers and tuples of them are). Values are up to 100 MiB each.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from typing import Any

from nbscale_runtime import protocol
from nbscale_server.shared_core import DICT, DICT_VALUE_MAX

from ._aio import data_method
from ._loop import if_abandoned
from ._shared import AsyncIterMethod, SharedObject, check_size, dumps, loads, send_quietly
from ._tracebacks import hidden

_MISSING: Any = object()


@dataclass(frozen=True)
class DictInfo:
    name: str | None
    object_id: str


class Dict(SharedObject):
    """A dict that the kernel, every worker and every other kernel of the same control
    plane share. ``Dict.from_name(name, create_if_missing=True)`` names one (kept across
    restarts of the Jupyter server); ``with Dict.ephemeral() as d:`` makes one for a block."""

    kind = DICT

    async def _act(self, action: str, frames: list[bytes], **args: Any) -> tuple[Any, list[Any]]:
        return await self._request(protocol.DictRequest, action, args, frames)

    async def _pairs(self, pairs: list[tuple[Any, Any]]) -> list[bytes]:
        client, _ = await self._connected()
        frames = []
        for key, value in pairs:
            data = dumps(value, "value")
            check_size(client, len(data), DICT_VALUE_MAX, f"value of key {key!r:.60}")
            frames += [dumps(key, "key"), data]
        return frames

    @data_method
    async def get(self, key: Any, default: Any = None) -> Any:
        """The value of ``key``, or ``default``."""
        value, frames = await self._act("get", [dumps(key, "key")])
        return loads(frames[0]) if value["found"] else default

    @data_method
    async def contains(self, key: Any) -> bool:
        value, _ = await self._act("contains", [dumps(key, "key")])
        return bool(value["found"])

    @data_method
    async def put(self, key: Any, value: Any, *, skip_if_exists: bool = False) -> bool:
        """Set ``key`` to ``value``; with ``skip_if_exists``, only when ``key`` is absent.
        Returns whether it was set."""
        frames = await self._pairs([(key, value)])
        answer, _ = await self._act("put", frames, skip_if_exists=skip_if_exists)
        return bool(answer["added"])

    @data_method
    async def update(self, other: Any = (), /, **kwargs: Any) -> None:
        """Set every key of ``other`` (a mapping or pairs) and ``kwargs``, at once."""
        items = other.items() if hasattr(other, "items") else other
        pairs = [*items, *kwargs.items()]
        if pairs:
            await self._act("update", await self._pairs(pairs))

    @data_method
    async def pop(self, key: Any, default: Any = _MISSING) -> Any:
        """Remove ``key`` and return its value (``KeyError`` when absent, unless a
        ``default`` is given)."""
        key_frame = dumps(key, "key")
        request = asyncio.ensure_future(self._act("pop", [key_frame]))
        try:
            value, frames = await asyncio.shield(request)
        except asyncio.CancelledError:  # the value may be on its way: it goes back
            request.add_done_callback(lambda done: self._put_back_popped(key_frame, done))
            raise
        if value["found"]:
            if_abandoned(lambda: self._put_back_popped(key_frame, request))
            return loads(frames[0])
        if default is _MISSING:
            raise KeyError(key)
        return default

    def _put_back_popped(self, key_frame: bytes, popped: asyncio.Future[Any]) -> None:
        """Put back a value popped for a caller that stopped waiting, unless the key was
        set again meanwhile."""
        if popped.cancelled() or popped.exception() is not None:
            return
        value, frames = popped.result()
        if value["found"]:
            pair = [key_frame, frames[0]]
            send_quietly(self._act("put", pair, skip_if_exists=True))

    @data_method
    async def len(self) -> int:
        value, _ = await self._act("len", [])
        return int(value["len"])

    @data_method
    async def clear(self) -> None:
        await self._act("clear", [])

    @data_method
    async def info(self) -> DictInfo:
        value, _ = await self._act("info", [])
        return DictInfo(value["name"], value["id"])

    async def _listing(self, action: str) -> AsyncIterator[Any]:
        _, frames = await self._act(action, [])
        if action != "items":
            for frame in frames:
                yield loads(frame)
            return
        for key, value in zip(frames[::2], frames[1::2], strict=True):
            yield loads(key), loads(value)

    @property
    def keys(self) -> AsyncIterMethod:
        """``d.keys()``: an iterator over the keys (as they are when it starts);
        ``async for k in d.keys.aio()``."""
        return AsyncIterMethod(lambda: self._listing("keys"))

    @property
    def values(self) -> AsyncIterMethod:
        return AsyncIterMethod(lambda: self._listing("values"))

    @property
    def items(self) -> AsyncIterMethod:
        return AsyncIterMethod(lambda: self._listing("items"))

    def __getitem__(self, key: Any) -> Any:
        __tracebackhide__ = hidden()
        value = self.get(key, _MISSING)
        if value is _MISSING:
            raise KeyError(key)
        return value

    def __setitem__(self, key: Any, value: Any) -> None:
        self.put(key, value)

    def __delitem__(self, key: Any) -> None:
        self.pop(key)

    def __contains__(self, key: Any) -> bool:
        return bool(self.contains(key))

    def __iter__(self) -> Iterable[Any]:  # Modal has no __iter__: say what to use
        raise TypeError("iterate a Dict with d.keys(), d.values() or d.items()")
