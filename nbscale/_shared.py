"""What ``nbscale.Dict`` and ``nbscale.Queue`` share: a handle on an object the control
plane holds (``nbscale_server/shared_objects.py``), found by name when first used (as
Modal's, ``from_name`` is lazy) or made for the length of a ``with`` block
(``ephemeral``), and pickled by its name and id so that code on workers uses the same one.

Values and keys are pickled here, with cloudpickle; the control plane keeps bytes only.
"""

from __future__ import annotations

import asyncio
import contextlib
import pickle
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from typing import Any, ClassVar, Generic, TypeVar

import cloudpickle

from nbscale_runtime import protocol
from nbscale_runtime.serialization import PICKLE_PROTOCOL
from nbscale_server.shared_core import SharedError, check_name, kind_label

from ._aio import aio_classmethod
from ._client import Client, get_client
from ._loop import get_loop
from .exceptions import InvalidError, NotFoundError, SerializationError

S = TypeVar("S", bound="SharedObject")


def dumps(value: Any, what: str) -> bytes:
    try:
        return cloudpickle.dumps(value, protocol=PICKLE_PROTOCOL)  # type: ignore[no-any-return]
    except Exception as exc:
        raise SerializationError(f"cannot pickle the {what} {value!r:.80}: {exc}") from exc


def loads(frame: Any) -> Any:
    return pickle.loads(frame.buffer if hasattr(frame, "buffer") else frame)


def check_size(client: Client, size: int, limit: int, what: str) -> None:
    """Refuse, before sending, a value over ``limit`` bytes or over what the control plane
    takes in one message."""
    largest = min(limit, int(client.server_info.get("max_input_mib", 1 << 20)) << 20)
    if size > largest:
        raise InvalidError(
            f"the {what} is {size / (1 << 20):.1f} MiB: the limit is "
            f"{largest / (1 << 20):.0f} MiB (Modal's limit, or this control plane's "
            "max_input_mib)"
        )


class SharedObject:
    """A Dict or Queue on the control plane, by name or ephemeral."""

    kind: ClassVar[str]

    def __init__(
        self, name: str | None = None, create_if_missing: bool = False, object_id: str = ""
    ) -> None:
        self.name = name
        self._create = create_if_missing
        self._id = object_id
        self._client: Client | None = None

    def __repr__(self) -> str:
        what = repr(self.name) if self.name is not None else f"ephemeral {self._id}"
        return f"<nbscale.{kind_label(self.kind)} {what}>"

    def __getstate__(self) -> dict[str, Any]:  # to workers: by name, or by id, no connection
        # A named object is looked up by its name there: the id this process learnt on its
        # first use would change the pickle of every function that captures the object
        # (and with it their function id, so their next call would get a new pool).
        object_id = self._id if self.name is None else ""
        return {"name": self.name, "create": self._create, "id": object_id}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["name"], state["create"], state["id"])  # type: ignore[misc]

    @classmethod
    def from_name(
        cls: type[S],
        name: str,
        *,
        environment_name: str | None = None,
        create_if_missing: bool = False,
        client: Any = None,
    ) -> S:
        """The object named ``name``, looked up when first used (``NotFoundError`` then if
        it does not exist, unless ``create_if_missing``)."""
        try:
            check_name(kind_label(cls.kind), name)
        except SharedError as exc:
            raise InvalidError(str(exc)) from None
        return cls(name, create_if_missing)

    @classmethod
    def ephemeral(
        cls: type[S], *, client: Any = None, environment_name: str | None = None
    ) -> Ephemeral[S]:
        """A new, nameless object for the length of a ``with`` (or ``async with``) block,
        deleted after it (or when this process is gone)."""
        return Ephemeral(cls)

    @classmethod
    async def _make_ephemeral(cls: type[S]) -> S:
        client = await get_client()
        value, _ = await client.request(protocol.ObjectLookup(0, cls.kind, None))
        obj = cls(None, False, value["id"])
        obj._client = client
        return obj

    async def _delete_ephemeral(self) -> None:
        client = await get_client()
        await client.request(protocol.ObjectDelete(0, self.kind, None, self._id))

    @aio_classmethod
    async def delete(
        cls, name: str, *, allow_missing: bool = False, environment_name: str | None = None
    ) -> None:
        """Delete the object named ``name`` and everything in it."""
        client = await get_client()
        try:
            await client.request(protocol.ObjectDelete(0, cls.kind, name))
        except NotFoundError:
            if not allow_missing:
                raise

    async def _connected(self) -> tuple[Client, str]:
        """The client, and this object's id (looked up by name once per connection)."""
        client = await get_client()
        if self._id and (self.name is None or self._client is client):
            return client, self._id
        msg = protocol.ObjectLookup(0, self.kind, self.name, self._create)
        value, _ = await client.request(msg)
        self._id, self._client = value["id"], client
        return client, self._id

    async def _request(
        self,
        message: Callable[..., protocol.Message],
        action: str,
        args: dict[str, Any],
        frames: Sequence[bytes] = (),
    ) -> tuple[Any, list[Any]]:
        client, object_id = await self._connected()
        label = repr(self.name) if self.name is not None else f"(ephemeral) {object_id}"
        msg = message(0, object_id, action, {**args, "label": label})
        return await client.request(msg, list(frames))


class Ephemeral(Generic[S]):
    """``with Dict.ephemeral() as d:`` and ``async with Dict.ephemeral() as d:``."""

    def __init__(self, cls: type[S]) -> None:
        self._cls = cls
        self._obj: S | None = None

    def __enter__(self) -> S:
        self._obj = get_loop().run(self._cls._make_ephemeral(), lend_slot=False)
        return self._obj

    def __exit__(self, *exc: object) -> None:
        if self._obj is not None:
            with contextlib.suppress(Exception):
                get_loop().run(self._obj._delete_ephemeral(), lend_slot=False)

    async def __aenter__(self) -> S:
        self._obj = await get_loop().run_aio(self._cls._make_ephemeral())
        return self._obj

    async def __aexit__(self, *exc: object) -> None:
        if self._obj is not None:
            with contextlib.suppress(Exception):
                await get_loop().run_aio(self._obj._delete_ephemeral())


class AsyncIterMethod:
    """``obj.method(...)``, an iterator, and ``obj.method.aio(...)``, its async twin, over
    one async generator that runs on nbscale's loop. Like ``data_method``, its waits keep
    a worker's slot."""

    def __init__(self, factory: Callable[..., AsyncIterator[Any]]) -> None:
        self._factory = factory

    def __call__(self, *args: Any, **kwargs: Any) -> Iterator[Any]:
        it = self._factory(*args, **kwargs)
        while True:
            try:
                yield get_loop().run(_next(it), lend_slot=False)  # waits on data
            except StopAsyncIteration:
                return

    async def aio(self, *args: Any, **kwargs: Any) -> AsyncIterator[Any]:
        it = self._factory(*args, **kwargs)
        while True:
            try:
                yield await get_loop().run_aio(_next(it))
            except StopAsyncIteration:
                return


async def _next(it: AsyncIterator[Any]) -> Any:
    return await it.__anext__()


_background: set[asyncio.Task[None]] = set()


def send_quietly(coro: Any) -> None:
    """Send a request whose answer nobody waits for (a withdrawn get), on the loop."""

    async def quietly() -> None:
        with contextlib.suppress(Exception, asyncio.CancelledError):
            await coro

    task = asyncio.ensure_future(quietly())
    _background.add(task)
    task.add_done_callback(_background.discard)
