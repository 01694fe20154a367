"""The map engine: streams a call's inputs to the control plane and its outputs back.

One :class:`Invocation` per function call, living on the background loop. Its feeder pulls
the caller's input iterator only as far as the in-flight window allows (inputs sent and not
yet consumed by the caller), pickling chunks of inputs on a worker thread so the loop stays
free. Outputs arrive pushed, are decoded, put in order when asked, and handed to the consumer
in batches: one thread hop per batch, not per result.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import sys
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from nbscale_runtime import protocol
from nbscale_runtime.protocol import (
    OUT_COUNT,
    OUT_WHERE,
    PROGRESS_INDICES,
    PROGRESS_WORKER_ID,
    RETRY_ATTEMPT,
    RETRY_INDEX,
    RETRY_STATUS,
    STREAM_ATTEMPT,
    STREAM_INDEX,
    STREAM_STARTED,
    STREAM_TEXT,
    row_count,
)
from nbscale_runtime.serialization import split_payload
from nbscale_server.limits import Limits, map_limits, small_inputs
from nbscale_server.outputs import outputs_message

from . import _nested
from ._call_ids import new_call_id
from ._chunks import ChunkSizes, InputsFailed, check_input_sizes, pull, submit_chunk
from ._outcomes import Output, Values, decode, decode_run, progress_outcome
from ._progress import CallProgress
from .exceptions import CallDetachedError

if TYPE_CHECKING:
    from ._client import Client


class End:
    """Marks the end of an invocation's outputs; ``error`` ends it with an exception."""

    __slots__ = ("error",)

    def __init__(self, error: BaseException | None = None) -> None:
        self.error = error


class Invocation:
    def __init__(
        self,
        client: Client,
        pool_id: str,
        kind: str,
        function: str,
        timeout: float,
        order_outputs: bool = True,
        call_id: str | None = None,
        code_files: dict[str, str] | None = None,
        progress: CallProgress | None = None,
    ) -> None:
        self.code_files = code_files or {}
        self.progress = progress
        self.client = client
        self.pool_id = pool_id
        self.kind = kind
        self.function = function
        self.timeout = timeout
        self.order_outputs = order_outputs
        self.call_id = call_id or new_call_id()
        self.limits = Limits(**client.server_info.get("limits", {}))
        self.small = True  # all its inputs so far were small: its window holds more
        self.window = map_limits(self.limits, True).max_inputs_in_flight_per_map
        self.chunks = ChunkSizes(self.limits, kind)
        self.outputs: asyncio.Queue[list[Output | Values] | End] = asyncio.Queue()
        self.submitted = 0
        self.consumed = 0
        self.received = 0
        self.total: int | None = None
        self._room = asyncio.Event()
        self._next = 0
        self._held: dict[int, Output | Values] = {}  # by (first) index
        self._feeder: asyncio.Task[None] | None = None
        self._end: End | None = None  # taken from ``outputs`` with a batch, returned next
        self.feed_error: BaseException | None = None
        self.finished = False
        max_mib = client.server_info.get("max_input_mib")
        self.max_input = None if max_mib is None else int(max_mib) << 20
        self._held_raw: dict[int, tuple[list[Any], Any, list[Any]]] = {}  # as received
        self._delivered: set[int] = set()  # unordered: what went to the consumer
        self.detached = False
        self._detaching: asyncio.Future[None] | None = None
        client.handlers[self.call_id] = self._on_outputs
        client.lost_handlers[self.call_id] = self._on_lost
        if progress is not None:
            client.progress_handlers[self.call_id] = self._on_progress
        if kind == "map":
            client.detach_handlers[self.call_id] = self._on_detach

    def _forget(self) -> None:
        """Stop receiving anything for this call."""
        client = self.client
        client.handlers.pop(self.call_id, None)
        client.progress_handlers.pop(self.call_id, None)
        client.lost_handlers.pop(self.call_id, None)
        client.detach_handlers.pop(self.call_id, None)

    def _on_lost(self, error: BaseException) -> None:
        """The connection to the control plane is lost: the call ends with ``error``."""
        if self.finished:
            return
        self.finished = True
        self._forget()
        if self._feeder is not None:
            self._feeder.cancel()
        if self.progress is not None:
            self.progress.close()
        self.outputs.put_nowait(End(error))

    # --- inputs -----------------------------------------------------------------------

    async def submit(
        self, items: list[list[Any]], frames: list[Any], total: int | None = None
    ) -> None:
        """Send one chunk; a map waits and resends while a limit refuses it."""
        if self.max_input is not None:
            check_input_sizes(items, frames, self.max_input, self.function)
        msg = protocol.SubmitInputs(
            0,
            self.call_id,
            self.pool_id,
            self.kind,
            items,
            total,
            self.progress is not None,
            parent=_nested.parent(),  # on a worker: the input whose code makes this call
        )
        count = await submit_chunk(
            self.client, msg, frames, self.limits, self.progress, self.function, self.small
        )
        self.submitted += count
        self.chunks.sent_whole(count)

    def start_feeding(self, inputs: Iterator[tuple[tuple[Any, ...], dict[str, Any]]]) -> None:
        self._feeder = asyncio.ensure_future(self._feed(inputs))

    async def _feed(self, inputs: Iterator[tuple[tuple[Any, ...], dict[str, Any]]]) -> None:
        loop = asyncio.get_running_loop()
        index = 0
        try:
            while True:
                # Wait for a worthwhile chunk of room, not for each freed slot: sending a few
                # inputs per message would cap throughput at the messaging rate. (A detached
                # map has no consumer left: the control plane's limits alone hold it back.)
                while (
                    self._bounded()
                    and self.window - (self.submitted - self.consumed)
                    < min(self.chunks.size, self.window // 4 or 1)
                    and self.submitted > self.consumed
                ):
                    self._room.clear()
                    await self._room.wait()
                bounded = self._bounded()
                room = (
                    self.window - (self.submitted - self.consumed) if bounded else self.chunks.size
                )
                n, most_if_big = min(room, self.chunks.size), self.chunks.big_max_size
                failed: Exception | None = None
                try:
                    items, frames, exhausted, pulled, left = await loop.run_in_executor(
                        None, pull, inputs, index, n, self.chunks.runs, most_if_big
                    )
                except InputsFailed as exc:
                    if not self.detached:  # the caller sees the error: the map ends with it
                        raise exc.error from None
                    failed = exc.error  # nobody does: the inputs before it still run
                    items, frames, exhausted, pulled, left = exc.pulled
                index += pulled
                if left:
                    inputs = itertools.chain(left, inputs)
                if self.small and not small_inputs(items):
                    self.small, self.window = False, self.limits.max_inputs_in_flight_per_map
                    self.chunks.became_big()
                total = index if exhausted else None
                if items or exhausted:
                    await self.submit(items, frames, total)
                if exhausted:
                    self.total = index
                    if self.progress is not None:
                        self.progress.total = index
                    if failed is not None:
                        self._say_inputs_failed(failed)
                    self._maybe_end()
                    return
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the caller's iterator failed, or an input won't pickle
            self.feed_error = exc
            if self.detached:  # nobody waits here for the error: the call ends with what it has
                self.total = self.submitted
                self._say_inputs_failed(exc)
                with contextlib.suppress(Exception):  # the connection is lost: the control
                    await self.submit([], [], self.total)  # plane ends it with those itself
                return
            if self.finished:  # the connection was lost: that already ended the call
                return
            self.outputs.put_nowait(End(exc))
            await self.cancel()

    def _say_inputs_failed(self, exc: Exception) -> None:
        """A detached map's inputs failed: its call ends with those sent (else its
        ``FunctionCall.iter()`` would wait for the others); nobody waits here to be told."""
        print(
            f"nbscale: {self.function}: the inputs of detached map {self.call_id} failed after "
            f"{self.total:,} ({type(exc).__name__}: {exc}); it ends with those",
            file=sys.stderr,
        )

    def _bounded(self) -> bool:
        """Whether the in-flight window holds the feeder back (a map being consumed)."""
        return self.kind == "map" and not self.detached

    async def wait_fed(self) -> None:
        if self._feeder is not None:
            await self._feeder

    # --- outputs ----------------------------------------------------------------------

    def _on_progress(self, msg: protocol.Progress) -> None:
        progress = self.progress
        assert progress is not None
        for row in msg.running:
            progress.dispatched(row[PROGRESS_WORKER_ID], row[PROGRESS_INDICES])
        for row in msg.retrying:
            progress.retrying(row[RETRY_INDEX], row[RETRY_ATTEMPT], row[RETRY_STATUS])
        for row in msg.streaming:
            progress.started(
                row[STREAM_INDEX], row[STREAM_ATTEMPT], row[STREAM_STARTED], row[STREAM_TEXT]
            )

    def _on_outputs(self, items: list[list[Any]], payload: list[Any]) -> None:
        parts = split_payload(payload, [i[OUT_WHERE] for i in items])
        batch: list[Output | Values] = []
        ended = []
        received = 0
        for item, (data, bufs) in zip(items, parts, strict=True):
            outs: list[Output] | list[Values]
            if not item[OUT_COUNT]:
                outs = [decode(item, data, bufs, self.function, self.timeout, self.code_files)]
            elif self.progress is None:  # the fast path: the run, unpickled by its reader
                outs = [Values(item, data, self.function)]
            else:
                outs = decode_run(item, data, self.function)
            received += row_count(item[OUT_COUNT])
            for out in outs:
                if self.progress is not None:
                    assert isinstance(out, Output)
                    ended.append(progress_outcome(out))
                self._order(out, item, data, bufs, batch)
        if self.progress is not None:
            self.progress.finished(ended)
        self.received += received
        if batch:
            self.outputs.put_nowait(batch)
        self._maybe_end()

    def _order(
        self, out: Output | Values, item: list[Any], data: Any, bufs: list[Any], batch: list[Any]
    ) -> None:
        """Put ``out`` in ``batch`` now, or hold it until those before it came."""
        held = self._held
        if not self.order_outputs:
            batch.append(out)
            self._delivered.update(range(out.index, out.index + _count(out)))
        elif out.index == self._next and not held:  # the common case: already in order
            batch.append(out)
            self._next += _count(out)
        else:
            held[out.index] = out
            self._held_raw[out.index] = (item, data, bufs)  # given back if detached
            while self._next in held:
                first = self._next
                ready = held.pop(first)
                batch.append(ready)
                self._held_raw.pop(first, None)
                self._next += _count(ready)

    def _maybe_end(self) -> None:
        if self.total is not None and self.received >= self.total and not self.finished:
            self.finished = True
            self.outputs.put_nowait(End())
            self._forget()
            if self.progress is not None:
                self.progress.close(self.total)

    # --- detaching --------------------------------------------------------------------

    def _on_detach(self, msg: protocol.Detach) -> None:
        if not self.finished:
            self._detaching = asyncio.ensure_future(self._detach())

    async def _detach(self) -> None:
        """The call was detached (its view's Detach button): tell the control plane which
        results went to the consumer and give back those that did not, then stop waiting
        (the consumer gets ``CallDetachedError``) while the feeder sends the rest."""
        self.detached = self.finished = True
        self._forget()
        if self.order_outputs:
            delivered = [[0, self._next]] if self._next else []
        else:
            delivered = ranges(self._delivered)
        kept = list(
            {id(e): e for e in (self._held_raw[i] for i in sorted(self._held_raw))}.values()
        )
        self._held.clear()
        self._held_raw.clear()
        message, frames = outputs_message(kept)
        msg = protocol.DetachCall(0, self.call_id, delivered, message.items)
        await self.client.request(msg, frames)
        self._room.set()  # a feeder waiting for room goes on
        got = self._next if self.order_outputs else len(self._delivered)
        of = f" of {self.total:,}" if self.total is not None else ""
        resume = f'nbscale.FunctionCall.from_id("{self.call_id}").iter()'
        self.outputs.put_nowait(
            End(
                CallDetachedError(
                    f"{self.function}: detached after {got:,}{of} results; the others keep "
                    f"running, and {resume} gives them",
                    self.call_id,
                    resume,
                )
            )
        )

    async def next_batch(self) -> list[Output | Values] | End:
        """The outputs that came since the last call (one hop to the consumer for all of
        them), or the end."""
        if self._end is not None:
            return self._end
        batch = await self.outputs.get()
        if isinstance(batch, list):
            while not self.outputs.empty():
                more = self.outputs.get_nowait()
                if isinstance(more, End):
                    self._end = more
                    break
                batch += more
            self.consumed += sum(_count(out) for out in batch)
            self._room.set()
        return batch

    async def next_batch_within(self, timeout: float) -> list[Output | Values] | End | None:
        """``next_batch``, or None when nothing arrives within ``timeout`` seconds, so that a
        consumer with a live view wakes to redraw it while slow inputs run. (An output that
        arrives as the wait times out stays queued: ``Queue.get`` loses nothing when
        cancelled.)"""
        if self._end is not None or not self.outputs.empty():
            return await self.next_batch()
        try:
            return await asyncio.wait_for(self.next_batch(), timeout)
        except TimeoutError:
            return None

    async def cancel(self) -> None:
        """Cancel the call's pending and running inputs on the control plane."""
        if self._feeder is not None and self._feeder is not asyncio.current_task():
            self._feeder.cancel()
        self._forget()
        if self.progress is not None:
            self.progress.close(cancelled=True)
        if not self.finished:
            self.finished = True
            if self.submitted:  # else the control plane has never heard of the call
                await self.client.request(protocol.CancelCall(0, self.call_id))


def _count(out: Output | Values) -> int:
    return out.count if isinstance(out, Values) else 1


def ranges(indices: set[int]) -> list[list[int]]:
    """``{0, 1, 2, 5}`` as ``[[0, 3], [5, 6]]``: [start, end) ranges."""
    out: list[list[int]] = []
    for i in sorted(indices):
        if out and out[-1][1] == i:
            out[-1][1] = i + 1
        else:
            out.append([i, i + 1])
    return out
