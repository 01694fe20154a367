"""``FunctionCall``: a handle on spawned work (``get``, ``iter``, ``gather``, ``cancel``),
which any process connected to the same control plane can rebuild from its id."""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncIterator, Iterator
from typing import Any

from nbscale_runtime import protocol
from nbscale_runtime.protocol import OUT_WHERE
from nbscale_runtime.serialization import split_payload
from nbscale_server.values import is_count

from ._aio import aio_classmethod, aio_method
from ._call_graph import InputInfo, call_graph
from ._client import get_client
from ._loop import get_loop
from ._outcomes import Output, decode, print_output
from ._tracebacks import hidden
from .exceptions import CallCancelledError, InvalidError, from_wire

_FETCHED_TOGETHER = 1024  # calls whose results ``gather`` asks for in one request
_ANSWER_GRACE = 1.0  # seconds past a get's timeout for the control plane's answer to arrive


def _index(name: str, value: Any) -> int:
    if not is_count(value):
        raise InvalidError(f"{name} must be an int >= 0 (an input's index), got {value!r}")
    return value


class FunctionCall:
    """A handle on spawned work: ``get``, ``iter``, ``cancel``, ``num_inputs``; rebuild it in
    another process with ``FunctionCall.from_id(call_id)``."""

    def __init__(self, call_id: str) -> None:
        self.object_id = call_id

    def __repr__(self) -> str:
        return f"<nbscale.FunctionCall {self.object_id}>"

    async def _fetch(self, start: int, end: int | None, timeout: float | None) -> dict[str, Any]:
        if timeout is not None and not (
            isinstance(timeout, int | float) and math.isfinite(timeout) and timeout >= 0
        ):
            raise InvalidError(f"timeout must be a finite number of seconds >= 0, got {timeout}")
        client = await get_client()
        request = client.request(protocol.GetOutputs(0, self.object_id, start, end, timeout))
        if timeout is None:
            value, payload = await request
        else:  # honoured here too, should the control plane not answer in time
            try:
                value, payload = await asyncio.wait_for(request, timeout + _ANSWER_GRACE)
            except TimeoutError:
                raise TimeoutError(
                    f"function call {self.object_id}: no answer from {client.describe()} "
                    f"within its timeout of {timeout:g} s"
                ) from None
        items = value["items"]
        parts = split_payload(payload, [i[OUT_WHERE] for i in items])
        value["outputs"] = [
            decode(item, data, bufs, value["function"], value["timeout"])
            for item, (data, bufs) in zip(items, parts, strict=False)
        ]
        return value  # type: ignore[no-any-return]

    @aio_method
    async def get(self, timeout: float | None = None, *, index: int = 0) -> Any:
        """The result of input ``index``, waiting up to ``timeout`` seconds (None: forever).
        Raises ``TimeoutError`` if it is not ready in time, or the input's own exception."""
        __tracebackhide__ = hidden()  # IPython leaves this frame out of tracebacks
        return await self._get(timeout, index)

    @aio_classmethod
    async def gather(cls: type[FunctionCall], *calls: FunctionCall) -> list[Any]:  # type: ignore[misc]
        """The results of ``calls`` (each its first input's), in their order, once all are
        done, as ``asyncio.gather``: the first failure is raised; the other calls keep
        running (cancel them if they must not)."""
        __tracebackhide__ = hidden()  # IPython leaves this frame out of tracebacks
        found = await _settled_now(calls)  # in one request per thousand calls
        results: list[Any] = [None] * len(calls)
        for at, out in found.items():
            results[at] = _result(calls[at], out)
        rest = [at for at in range(len(calls)) if at not in found]
        waits = [asyncio.ensure_future(calls[at]._get(None, 0)) for at in rest]
        try:
            for at, value in zip(rest, await asyncio.gather(*waits), strict=True):
                results[at] = value
            return results
        finally:
            for wait in waits:  # the waits left after a failure, not the calls
                wait.cancel()

    async def _get(self, timeout: float | None, index: int) -> Any:
        __tracebackhide__ = hidden()  # IPython leaves this frame out of tracebacks
        value = await self._fetch(_index("index", index), index + 1, timeout)
        if value["outputs"] or value["cancelled"]:
            return _result(self, value["outputs"][0] if value["outputs"] else None)
        raise TimeoutError(f"function call {self.object_id}: input {index} not done in {timeout} s")

    @property
    def iter(self) -> _CallIter:
        """``call.iter(start=0, end=None)``: the results in input order, each as soon as it
        and those before it are done; ``call.iter.aio(...)`` is its async twin."""
        return _CallIter(self)

    async def iter_on_loop(self, start: int = 0, end: int | None = None) -> AsyncIterator[Any]:
        __tracebackhide__ = hidden()  # IPython leaves this frame out of tracebacks
        chunk_start = _index("start", start)
        if end is not None and _index("end", end) < start:
            raise InvalidError(f"end must be >= start, got start={start} and end={end}")
        follow = end is None  # up to the call's total, once known: a detached map's caller
        if follow:  # may still be sending its inputs, so the count sent so far is no end
            end = (await self._fetch(0, 0, 0))["total"]
        while end is None or chunk_start < end:
            chunk_end = chunk_start + 64 if end is None else min(end, chunk_start + 64)
            value = await self._fetch(chunk_start, chunk_end, None)
            if follow and value["total"] is not None:
                end = value["total"]
                chunk_end = min(chunk_end, end)
            if value["cancelled"] and len(value["outputs"]) < chunk_end - chunk_start:
                raise CallCancelledError(f"function call {self.object_id} was cancelled")
            for out in value["outputs"]:
                print_output(out, prefix=True)
                if not out.ok:
                    raise out.value
                yield out.value
            chunk_start = chunk_end

    async def _num_inputs(self) -> int:
        value = await self._fetch(0, 0, 0)
        return int(value["total"] if value["total"] is not None else value["submitted"])

    @aio_method
    async def num_inputs(self) -> int:
        """How many inputs the call has (a detached map whose caller still sends them: how
        many it has sent so far)."""
        return await self._num_inputs()

    @aio_method
    async def get_call_graph(self) -> list[InputInfo]:
        """The call's inputs, each with the inputs of the calls its code made (Modal's)."""
        return await call_graph(await get_client(), self.object_id)

    @aio_method
    async def cancel(self) -> None:
        """Cancel the call's pending inputs and stop its running ones."""
        client = await get_client()
        await client.request(protocol.CancelCall(0, self.object_id))

    @aio_classmethod
    async def from_id(cls: type[FunctionCall], call_id: str) -> FunctionCall:  # type: ignore[misc]
        """The ``FunctionCall`` with this id (raises ``NotFoundError`` if there is none)."""
        call = cls(call_id)
        await call._fetch(0, 0, 0)
        return call


def _result(call: FunctionCall, out: Output | None) -> Any:
    """An input's result (its output printed), or its error raised; None: cancelled."""
    __tracebackhide__ = hidden()  # IPython leaves this frame out of tracebacks
    if out is None:
        raise CallCancelledError(f"function call {call.object_id} was cancelled")
    print_output(out, prefix=False)
    if not out.ok:
        raise out.value
    return out.value


async def _settled_now(calls: tuple[FunctionCall, ...]) -> dict[int, Output | None]:
    """The first outputs of ``calls`` already settled, by position (None: cancelled with
    none), fetched a thousand calls per request; an id the control plane refuses raises."""
    client = await get_client()
    found: dict[int, Output | None] = {}
    for start in range(0, len(calls), _FETCHED_TOGETHER):
        ids = [call.object_id for call in calls[start : start + _FETCHED_TOGETHER]]
        value, payload = await client.request(protocol.GetFirstOutputs(0, ids))
        items = iter(value["items"])
        parts = iter(split_payload(payload, [i[OUT_WHERE] for i in value["items"]]))
        for at, row in enumerate(value["calls"], start):
            if row is None:  # not settled yet
                continue
            if len(row) == 2:
                raise from_wire(row[0], row[1])
            n, function, timeout, cancelled = row
            if n:
                data, bufs = next(parts)
                found[at] = decode(next(items), data, bufs, function, timeout)
            elif cancelled:
                found[at] = None
    return found


async def _anext(agen: AsyncIterator[Any]) -> Any:
    return await agen.__anext__()


class _CallIter:
    def __init__(self, call: FunctionCall) -> None:
        self._call = call

    def __call__(self, *, start: int = 0, end: int | None = None) -> Iterator[Any]:
        __tracebackhide__ = hidden()  # IPython leaves this frame out of tracebacks
        agen = self._call.iter_on_loop(start, end)
        lt = get_loop()
        while True:
            try:
                yield lt.run(_anext(agen))
            except StopAsyncIteration:
                return

    async def aio(self, *, start: int = 0, end: int | None = None) -> AsyncIterator[Any]:
        __tracebackhide__ = hidden()  # IPython leaves this frame out of tracebacks
        agen = self._call.iter_on_loop(start, end)
        lt = get_loop()
        while True:
            try:
                yield await lt.run_aio(_anext(agen))
            except StopAsyncIteration:
                return
