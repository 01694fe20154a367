"""A call's input side: its inputs pulled from the caller's iterator a chunk at a time and
pickled for the wire (``pull``, on a worker thread of the client's loop: pickling takes
time), as runs (their pickles back to back, one submit-inputs row each) when they are small,
packed runs (one pickled list of their values, ``packed_inputs.py``) when each is one plain
value, else one by one; how big its chunks are (``ChunkSizes``); each input's size checked
(``check_input_sizes``); and a chunk sent until a limit admits it (``submit_chunk``)."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any

from nbscale_runtime import protocol
from nbscale_runtime.packed import PACKABLE
from nbscale_runtime.packed_inputs import dump_values, values_of
from nbscale_runtime.protocol import SUBMIT_COUNT, row_count
from nbscale_runtime.serialization import PayloadWriter
from nbscale_server.limits import Limits, describe, map_limits, small_inputs

from ._pickling import add_input
from .exceptions import CallCancelledError, InvalidError

if TYPE_CHECKING:
    from ._client import Client
    from ._progress import CallProgress

_CHUNK = 256  # inputs of a call's first submission at most
_MAX_CHUNK = 4096  # inputs of a map's later submissions at most
# Calls whose inputs go as runs, their chunks growing: maps, and spawn_map (whose kept
# inputs and outputs the control plane cuts per index by their sizes)
_RUNS = frozenset({"map", "spawn"})
_THROTTLE_WAIT = 0.05  # seconds before resending a chunk that a limit refused

# A map's chunk travels as one run (``PayloadWriter.add_run``: one row, moved whole, split only
# where its inputs part ways) when it pickles to no more than this: the control plane may
# send a piece of a run with the run's bytes, so big inputs go one by one.
_RUN_MAX_BYTES = 64 * 1024
# Seconds of iterator pulling per chunk, so slow iterators still stream; the clock is read
# after 1, 2, 4, ... inputs, so a chunk of evenly slow ones may take up to twice as long.
_PULL_BUDGET = 0.005

Inputs = Iterator[tuple[tuple[Any, ...], dict[str, Any]]]


class InputsFailed(Exception):
    """The caller's iterator raised ``error`` while ``pull`` took a chunk: ``pulled`` is
    ``pull``'s answer for the inputs it gave before (the iterator exhausted there), which a
    detached map still runs."""

    def __init__(self, error: Exception, pulled: tuple[Any, ...]) -> None:
        super().__init__(str(error))
        self.error = error
        self.pulled = pulled


class OneArgument:
    """A map's inputs that are each one positional argument and no keyword (``f.map(xs)``):
    iterated as ``(args, kwargs)`` pairs, as any inputs are, but pulled (``pull``) as the
    values themselves, which go packed when they are plain (``packed_inputs.py``) without a
    pair made for each (~0.08 us an input) nor checked apart (~0.08 more)."""

    __slots__ = ("_kwargs", "values")

    def __init__(self, values: Iterable[Any]) -> None:
        self.values = iter(values)
        self._kwargs: dict[str, Any] = {}

    def __iter__(self) -> OneArgument:
        return self

    def __next__(self) -> tuple[tuple[Any, ...], dict[str, Any]]:
        return (next(self.values),), self._kwargs


def pull(
    inputs: Inputs, start: int, n: int, runs: bool, most_if_big: int | None = None
) -> tuple[list[list[Any]], list[Any], bool, int, list[tuple[tuple[Any, ...], dict[str, Any]]]]:
    """Take up to ``n`` inputs (or what arrives within the pull budget) and pickle them: as
    one run when ``runs`` and they are small (packed when plain values), else one by one;
    when they are not all small (``small_inputs``), only the first ``most_if_big``. Returns
    the submit-inputs rows, their frames, whether the iterator is exhausted, how many inputs
    they hold, and the inputs taken and left out (to go first next time)."""
    source = inputs.values if isinstance(inputs, OneArgument) else inputs
    one = source is not inputs  # ``taken`` holds the values themselves
    taken: list[Any] = []
    try:
        exhausted = _take(source, n, taken)
    except Exception as exc:
        raise InputsFailed(exc, _pickled(taken, start, runs, one, True, None)) from exc
    return _pickled(taken, start, runs, one, exhausted, most_if_big)


def _pickled(
    taken: list[Any], start: int, runs: bool, one: bool, exhausted: bool, most_if_big: int | None
) -> tuple[list[list[Any]], list[Any], bool, int, list[tuple[tuple[Any, ...], dict[str, Any]]]]:
    plain = one and runs and len(taken) > 1 and set(map(type, taken)) <= PACKABLE
    if plain:  # packed, no pairs made
        writer, items = PayloadWriter(), list[list[Any]]()
        _add_packed(writer, items, taken, start)
        frames = writer.frames()
    else:
        if one:
            taken = [((value,), {}) for value in taken]
        items, frames = _pickle(taken, start, runs)
    if most_if_big is None or len(taken) <= most_if_big or small_inputs(items):
        return items, frames, exhausted, len(taken), []
    # the map's first inputs that are not small: the window of big ones must admit them
    if plain:
        taken = [((value,), {}) for value in taken]
    items, frames = _pickle(taken[:most_if_big], start, runs)
    return items, frames, False, most_if_big, taken[most_if_big:]


def _take(source: Iterator[Any], n: int, taken: list[Any]) -> bool:
    """Up to ``n`` items of ``source`` into ``taken``, or what arrives within the pull
    budget; whether it ran out. Should ``source`` raise, ``taken`` holds those before."""
    deadline = time.perf_counter() + _PULL_BUDGET
    clock = time.perf_counter
    step = 1  # items pulled between looks at the clock: 1, 2, 4, ... (not one look each)
    while len(taken) < n:
        before, want = len(taken), min(step, n - len(taken))
        taken.extend(itertools.islice(source, want))
        if len(taken) - before < want:
            return True
        if clock() > deadline:
            break
        step *= 2
    return False


def _pickle(
    taken: list[tuple[tuple[Any, ...], dict[str, Any]]], start: int, runs: bool
) -> tuple[list[list[Any]], list[Any]]:
    """``taken`` as submit-inputs rows and their frames: runs when ``runs`` (and they
    pickle), else one by one."""
    writer = PayloadWriter()
    items: list[list[Any]] = []
    if runs and len(taken) > 1:
        values = values_of(taken)
        if values is not None:
            _add_packed(writer, items, values, start)
            return items, writer.frames()
        try:
            _add_runs(writer, items, taken, start)
            return items, writer.frames()
        except Exception:
            pass  # pickled one by one below, to name the input that cannot be
        writer, items = PayloadWriter(), []
    for index, (args, kwargs) in enumerate(taken, start):
        offset, length, nbufs = add_input(writer, index, args, kwargs)
        items.append([index, offset, length, nbufs, 0, []])  # a submit-inputs row (SUBMIT_*)
    return items, writer.frames()


def _add_runs(
    writer: PayloadWriter,
    items: list[list[Any]],
    inputs: list[tuple[tuple[Any, ...], dict[str, Any]]],
    start: int,
) -> None:
    """Pickle ``inputs`` as runs of at most ``_RUN_MAX_BYTES`` (halving those that are
    bigger), each a submit-inputs row; an input too big alone goes as one input."""
    (offset, length, nbufs), sizes = writer.add_run(inputs)
    if length <= _RUN_MAX_BYTES and not nbufs:
        items.append([start, offset, length, 0, len(inputs), sizes])
        return
    writer.drop_last(offset, nbufs)
    if len(inputs) == 1:
        args, kwargs = inputs[0]
        items.append([start, *add_input(writer, start, args, kwargs), 0, []])
        return
    half = len(inputs) // 2
    _add_runs(writer, items, inputs[:half], start)
    _add_runs(writer, items, inputs[half:], start + half)


def _add_packed(
    writer: PayloadWriter, items: list[list[Any]], values: list[Any], start: int
) -> None:
    """Pickle the inputs of ``values`` (their one argument each) as packed runs of at most
    ``_RUN_MAX_BYTES`` (halving those that are bigger), each a submit-inputs row without
    sizes; a value too big alone goes as one input."""
    if len(values) == 1:
        items.append([start, *add_input(writer, start, (values[0],), {}), 0, []])
        return
    data = dump_values(values)
    if data is not None and len(data) <= _RUN_MAX_BYTES:
        items.append([start, *writer.add_raw(data), len(values), []])  # no sizes: packed
        return
    half = len(values) // 2
    _add_packed(writer, items, values[:half], start)
    _add_packed(writer, items, values[half:], start + half)


class ChunkSizes:
    """How many inputs a call's next chunk takes at most (``size``), and whether they go as
    runs (``runs``)."""

    __slots__ = ("big_max_size", "max_size", "runs", "size")

    def __init__(self, limits: Limits, kind: str) -> None:
        # A chunk is admitted whole or not at all: never make one bigger than a limit could
        # ever admit, or a throttled map would wait for room that cannot come. A map's
        # chunks may be as big as the limits of small inputs admit (``map_limits``) until it
        # sends one that is not (``became_big``).
        self.runs = kind in _RUNS
        self.size, self.big_max_size = self._sizes(limits, kind)
        if kind == "map":
            _, self.max_size = self._sizes(map_limits(limits, True), kind)
        else:
            self.max_size = self.big_max_size

    @staticmethod
    def _sizes(limits: Limits, kind: str) -> tuple[int, int]:
        """The first chunk's size and the most a chunk grows to under ``limits``."""
        most = min(
            limits.max_inputs_in_flight_per_map, limits.max_pending_inputs, limits.max_total_inputs
        )
        if kind == "spawn":
            most = min(most, limits.max_pending_spawn_inputs)
        first = max(1, min(_CHUNK, most))
        # A map's chunks grow while they go whole, up to half its window (two in flight):
        # fewer, bigger runs, while the first results still come after one small chunk.
        return first, max(first, min(_MAX_CHUNK, most // 2))

    def sent_whole(self, count: int) -> None:
        """A chunk of ``count`` inputs was admitted."""
        if self.runs and count == self.size:
            self.size = min(self.max_size, 2 * self.size)

    def became_big(self) -> None:
        """The map sent inputs that are not small: its chunks as its limits for those allow."""
        self.max_size = self.big_max_size
        self.size = min(self.size, self.max_size)


async def submit_chunk(
    client: Client,
    msg: protocol.SubmitInputs,
    frames: list[Any],
    limits: Limits,
    progress: CallProgress | None,
    name: str,
    small: bool = False,
) -> int:
    """Send one chunk, waiting and resending while a limit refuses it; how many inputs it
    held (``small``: all the map sent so far, this chunk included, were small inputs)."""
    count = sum(row_count(item[SUBMIT_COUNT]) for item in msg.items)
    while True:
        value, _ = await client.request(msg, frames)
        if value.get("cancelled"):  # someone else (the REST API, a sidebar) cancelled it
            raise CallCancelledError(f"{name}: the call was cancelled")
        if value["accepted"] == count:
            if progress is not None:
                progress.sent(count, None)
            return count
        if progress is not None:  # say which limit holds the map back
            limit = value.get("limit")
            progress.sent(0, None if limit is None else describe(limit, limits, small))
        await asyncio.sleep(_THROTTLE_WAIT)


def check_input_sizes(items: list[list[Any]], frames: list[Any], limit: int, name: str) -> None:
    """Refuse an input over ``limit`` bytes (pickle and buffers) with a clear error, before
    the control plane drops a connection that sends it."""
    if sum(memoryview(f).nbytes for f in frames) <= limit:
        return
    buffers, at = frames[1:], 0
    for index, _, length, nbufs, *_ in items:
        size = length + sum(memoryview(b).nbytes for b in buffers[at : at + nbufs])
        at += nbufs
        if size > limit:
            raise InvalidError(
                f"{name}: input {index} is {size / 2**20:,.1f} MiB, over the limit of "
                f"{limit >> 20} MiB (the max_input_mib setting)"
            )
