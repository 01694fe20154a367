"""``f.remote_gen(...)``: a generator function run on a worker, its values streamed back as
it yields them (``async for`` over ``f.remote_gen.aio(...)``).

The worker sends each yielded value at once, as a ``yield`` row of an ``outputs`` message;
the control plane forwards those to the caller without settling the input, then the
generator's final row (None, or its exception) ends the stream. Generators are never
retried (as in Modal): their values already reached the caller.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from typing import TYPE_CHECKING, Any

from nbscale_runtime.protocol import OUT_STATUS, OUT_WHERE, STATUS_YIELD
from nbscale_runtime.serialization import PayloadWriter, split_payload

from ._loop import get_loop
from ._map import End, Invocation
from ._outcomes import Output, decode, print_output
from ._pickling import add_input
from .exceptions import CallCancelledError, InvalidError

if TYPE_CHECKING:
    from ._function import Function


class GeneratorInvocation(Invocation):
    """One ``remote_gen`` call: its yielded values go to the consumer one by one; its final
    output (kept in ``final``) ends them, with the generator's exception if it raised."""

    final: Output | None = None

    def _on_outputs(self, items: list[list[Any]], payload: list[Any]) -> None:
        parts = split_payload(payload, [i[OUT_WHERE] for i in items])
        for item, (data, bufs) in zip(items, parts, strict=True):
            out = decode(item, data, bufs, self.function, self.timeout, self.code_files)
            if item[OUT_STATUS] == STATUS_YIELD:
                self.outputs.put_nowait([out])
            elif not self.finished:
                self.final = out
                self.finished = True
                self._forget()
                self.outputs.put_nowait(End(None if out.ok else out.value))


async def _stream(
    fn: Function, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> AsyncIterator[Any]:
    inv = await fn._invocation("remote", factory=GeneratorInvocation)
    assert isinstance(inv, GeneratorInvocation)
    writer = PayloadWriter()
    where = add_input(writer, 0, fn._prefix + args, kwargs)
    try:
        inv.total = 1
        await inv.submit([[0, *where, 0, []]], writer.frames(), total=1)
        while True:
            batch = await inv.next_batch()
            if isinstance(batch, End):
                if inv.final is not None:
                    print_output(inv.final, prefix=False)
                    if batch.error is not None:
                        raise batch.error
                    return
                raise batch.error or CallCancelledError(f"{fn.name}: the call was cancelled")
            for out in batch:
                assert isinstance(out, Output), "a generator's outputs are never runs"
                yield out.value
    finally:  # the consumer stopped early, or was interrupted: the generator stops too
        if not inv.finished:
            await asyncio.shield(inv.cancel())


async def _anext(agen: AsyncIterator[Any]) -> Any:
    return await agen.__anext__()


class RemoteGenMethod:
    """``f.remote_gen(...)`` (a blocking iterator) with ``f.remote_gen.aio(...)`` (an async
    iterator)."""

    def __init__(self, fn: Function) -> None:
        self._fn = fn

    def __call__(self, *args: Any, **kwargs: Any) -> Iterator[Any]:
        self._check()
        return self._iterate(args, kwargs)

    def aio(self, *args: Any, **kwargs: Any) -> AsyncIterator[Any]:
        self._check()
        return self._iterate_aio(args, kwargs)

    def _check(self) -> None:
        """Said at the call, not at the first value."""
        if not self._fn.is_generator:
            raise InvalidError(f"{self._fn.name} is not a generator function: use .remote()")

    def _iterate(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Iterator[Any]:
        lt = get_loop()
        agen = _stream(self._fn, args, kwargs)
        try:
            while True:
                try:
                    yield lt.run(_anext(agen))
                except StopAsyncIteration:
                    return
        finally:
            lt.run(agen.aclose())  # type: ignore[attr-defined]

    async def _iterate_aio(
        self, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> AsyncIterator[Any]:
        lt = get_loop()
        agen = _stream(self._fn, args, kwargs)
        try:
            while True:
                try:
                    yield await lt.run_aio(_anext(agen))
                except StopAsyncIteration:
                    return
        finally:
            await lt.run_aio(agen.aclose())  # type: ignore[attr-defined]
