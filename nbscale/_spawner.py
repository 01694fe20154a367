"""``.spawn()`` by the batch: the spawns a process makes in one turn of the loop, for one
pool, go to the control plane in one ``spawn-calls`` message and come back in one reply.

A spawn is a call of one input. Sent alone, each paid for a message, a call opened in the
control plane, a store write and a reply; ``.spawn.aio`` calls gathered together, or spawns
made from several threads, now share them. A spawn made alone is a batch of one: it waits
for nothing but its own loop turn.

``.spawn.aio`` calls made in one turn of the caller's own loop cross to nbscale's loop
together too (``SpawnMethod``): one coroutine there per function and turn, not a task, a
coroutine, futures and callbacks per spawn, which a caller's garbage collector walked at
each full collection while its spawns were in flight.
"""

from __future__ import annotations

import asyncio
import weakref
from typing import Any, Protocol, TypeVar

from nbscale_runtime import protocol
from nbscale_runtime.serialization import PayloadWriter, TooLarge

from . import _nested
from ._aio import _Bound, aio_method
from ._call_ids import new_call_id
from ._chunks import check_input_sizes
from ._client import Client
from ._loop import get_loop
from ._pickling import add_input
from ._tracebacks import hidden
from .exceptions import from_wire

_MAX_BATCH = 512  # spawns per message at most
T = TypeVar("T")

Parent = tuple[Any, ...] | None  # (call id, index) of the worker input spawning, if any
_Key = tuple[str, Parent]  # pool id, parent
Inputs = list[tuple[tuple[Any, ...], dict[str, Any]]]  # (args, kwargs) of each spawn


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
        [result] = await self.spawn_many(pool_id, name, parent_key(), [(args, kwargs)])
        if isinstance(result, BaseException):
            raise result
        return result

    async def spawn_many(
        self, pool_id: str, name: str, parent: Parent, inputs: Inputs
    ) -> list[str | BaseException]:
        """Spawn a call of one input per ``(args, kwargs)`` in ``pool_id``; returns each
        one's id once the control plane has kept it, or what failed it (an input that does
        not pickle, a refusal: its own alone)."""
        added: list[tuple[str, asyncio.Future[None]] | BaseException] = []
        for args, kwargs in inputs:
            try:
                added.append(self._add((pool_id, parent), name, args, kwargs))
            except Exception as exc:
                added.append(exc)
        results: list[str | BaseException] = []
        for one in added:
            if isinstance(one, BaseException):
                results.append(one)
                continue
            call_id, answered = one
            try:
                await answered
            except Exception as exc:
                results.append(exc)
                continue
            results.append(call_id)
        return results

    def _add(
        self, key: _Key, name: str, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> tuple[str, asyncio.Future[None]]:
        """One spawn in the batch of this loop turn; its call id, and its answer to come."""
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
        return call_id, answered

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


def parent_key() -> Parent:
    """The worker input whose code spawns now (in this task), if any, as a batch's key."""
    parent = _nested.parent()
    return None if parent is None else tuple(parent)


# --- .spawn.aio: gathered on the caller's loop --------------------------------------------


class Spawning(Protocol):
    """What ``SpawnMethod`` needs of a function (``Function``)."""

    def _refuse_generator(self, how: str) -> None: ...

    async def _spawn_many(self, parent: Parent, inputs: Inputs) -> list[Any]: ...


class SpawnMethod(aio_method[T]):
    """``f.spawn``: an ``aio_method`` whose ``.aio`` calls, made in one turn of the caller's
    loop, cross to nbscale's loop together (``_Gathered``)."""

    def __get__(self, obj: Any, owner: type | None = None) -> Any:
        if obj is None:
            return self
        return _SpawnBound(self._fn, obj, self.lend_slot)


class _SpawnBound(_Bound[T]):  # no __slots__ of its own: they would hide _Bound's __doc__
    async def aio(self, *args: Any, **kwargs: Any) -> T:
        __tracebackhide__ = hidden()  # IPython leaves this frame out of tracebacks
        function: Spawning = self._obj
        if get_loop().in_loop():
            return await self._fn(function, *args, **kwargs)
        function._refuse_generator(".spawn()")
        result: T = await _gathered(function, parent_key()).add(args, kwargs)
        return result


class _Gathered:
    """The ``.spawn.aio`` calls of one function (and parent) in one turn of a loop."""

    __slots__ = ("answers", "function", "inputs", "parent")

    def __init__(self, function: Spawning, parent: Parent) -> None:
        self.function = function
        self.parent = parent
        self.inputs: Inputs = []
        self.answers: list[asyncio.Future[Any]] = []

    def add(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> asyncio.Future[Any]:
        answer = asyncio.get_running_loop().create_future()
        self.inputs.append((args, kwargs))
        self.answers.append(answer)
        return answer

    async def cross(self) -> None:
        """Spawn them on nbscale's loop, in one go; answer each with its own outcome. A spawn
        cancelled before its turn ended is not made."""
        kept = [at for at, answer in enumerate(self.answers) if not answer.cancelled()]
        inputs = [self.inputs[at] for at in kept]
        answers = [self.answers[at] for at in kept]
        try:
            spawning = self.function._spawn_many(self.parent, inputs)
            results = await get_loop().run_aio(spawning)
        except BaseException as exc:  # its client closed, or this loop ends
            for answer in answers:
                if not answer.done():
                    _fail(answer, exc)
            if not isinstance(exc, Exception):
                raise
            return
        for answer, result in zip(answers, results, strict=True):
            if answer.done():
                continue
            if isinstance(result, BaseException):
                _fail(answer, result)
            else:
                answer.set_result(result)


def _fail(answer: asyncio.Future[Any], error: BaseException) -> None:
    if isinstance(error, asyncio.CancelledError):
        answer.cancel()
    else:
        answer.set_exception(error)


_gathering: dict[tuple[asyncio.AbstractEventLoop, int, Parent], _Gathered] = {}
_crossing: set[asyncio.Task[None]] = set()  # the loop keeps only weak references to tasks


def _gathered(function: Spawning, parent: Parent) -> _Gathered:
    """The spawns of ``function`` gathered in this loop turn (sent once it ends)."""
    loop = asyncio.get_running_loop()
    key = (loop, id(function), parent)
    gathered = _gathering.get(key)
    if gathered is None or len(gathered.inputs) >= _MAX_BATCH:
        gathered = _gathering[key] = _Gathered(function, parent)
        loop.call_soon(_send_gathered, key, gathered)
    return gathered


def _send_gathered(key: tuple[asyncio.AbstractEventLoop, int, Parent], gathered: _Gathered) -> None:
    if _gathering.get(key) is gathered:
        del _gathering[key]
    task = key[0].create_task(gathered.cross())
    _crossing.add(task)
    task.add_done_callback(_crossing.discard)


def spawner(client: Client) -> Spawner:
    found = _spawners.get(client)
    if found is None:
        found = _spawners[client] = Spawner(client)
    return found
