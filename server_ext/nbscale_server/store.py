"""The store: what outlives a caller, kept for it to fetch later.

Spawned calls (``.spawn()``, ``.spawn_map()``) return at once, and their results are read
later, maybe from another process (``FunctionCall.from_id``). ``spawned.py`` keeps each
active call's counts in memory; the store keeps the bytes: the inputs not yet settled (to
run them again after a crash), the outputs until their retention time has passed, and each
finished call's summary. Two implementations of one small interface:

- ``MemoryStore``, the embedded control plane's: outputs in memory, the oldest finished
  calls dropped beyond a count or a size (a later fetch says why it found nothing);
- ``SqliteStore`` (``sqlite_store.py``), the Jupyter server's: one SQLite file that
  survives the server, written by a thread of its own.

Every method is called on the control plane's loop and returns at once; writes that go to
disk are committed later, in batches, and ``submitted``'s ``then`` says when.
"""

from __future__ import annotations

import abc
import collections
import heapq
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from nbscale_runtime.protocol import OUT_SIZES

from .calls import CallRecord, CallState, from_record, record, record_seq
from .models import OwnerModel
from .outputs import Entry
from .pool import Pool
from .queue import InputRecord
from .store_writer import Step

Durable = Callable[[str | None], None]  # called with None once durable, else with what failed
_FORGOTTEN_KEPT = 100_000  # ids of dropped calls remembered, to say why one is not found
_COPIED_BELOW = 1 << 20  # an output's pickle shorter than this is kept as bytes of its own
StoredOutput = tuple[Any, ...]  # the memory store's: an output's row, pickle, buffers, flat


@dataclass(frozen=True, slots=True)
class StoredPool:
    """What a pool is made from, kept so that its spawned inputs can run after a restart."""

    pool_id: str
    function_id: str
    name: str
    function: bytes
    options: dict[str, Any]  # FunctionOptions.to_wire()
    sys_path: list[str]
    client_versions: dict[str, str]
    owner: OwnerModel  # who made it: a pool's id includes its owner


@dataclass(slots=True)
class Unfinished:
    """A spawned call a crashed control plane left unfinished, with its pool and the inputs
    that had not settled (to run again: at least once)."""

    pool: StoredPool
    call: CallState
    inputs: list[InputRecord]


def nbytes(value: Any) -> int:
    return memoryview(value).nbytes


class SpawnStore(abc.ABC):
    """Spawned calls' inputs, outputs and summaries."""

    location: str  # where it keeps them, for people: "memory" or the SQLite file's path
    durable = False  # whether what it keeps outlives this process

    def keep(self, steps: list[Step], then: Durable, what: str = "the change") -> None:
        """Named Dicts' and Queues' changes, deployed apps (``store_writer.STEPS``), written
        in order; ``then`` as for ``submitted``. In memory, nothing outlives the process."""
        then(None)

    def read(self, what: str, sql: str, args: tuple[Any, ...] = ()) -> list[Any]:
        """Rows of a query on the file (none in memory); ``what`` names them in errors."""
        return []

    @abc.abstractmethod
    def submitted(
        self, pool: Pool, call: CallState, records: list[InputRecord], then: Durable
    ) -> None:
        """New inputs of a spawned call (and, the first time, the call and its pool); ``then``
        is called once they are durable, or with what failed."""

    @abc.abstractmethod
    def spawned(
        self, pool: Pool, calls: list[tuple[CallState, InputRecord]], then: Durable
    ) -> None:
        """New spawned calls of one input each (a batch of ``.spawn()``s), kept as
        ``submitted`` keeps them, in one write: ``then`` once all are durable, or with what
        failed (for all: they are written in one transaction)."""

    @abc.abstractmethod
    def settled(self, call: CallState, index: int, row: list[Any], data: Any, bufs: Any) -> None:
        """An input's final output: kept (until fetched or expired); its input is dropped."""

    def delivered(self, call: CallState) -> None:  # noqa: B027 - optional hook
        """A detached map's ``delivered`` ranges: results its caller got, never stored."""

    @abc.abstractmethod
    def closed(self, call: CallState) -> None:
        """The call finished or was cancelled: keep its summary (and forget inputs left)."""

    @abc.abstractmethod
    def outputs(self, call_id: str, start: int, stop: int | None) -> list[Entry]:
        """The stored outputs of inputs ``start`` .. ``stop`` (None: all), by index."""

    @abc.abstractmethod
    def finished_call(self, call_id: str) -> CallState | None:
        """The summary of a closed call, or None."""

    @abc.abstractmethod
    def finished_calls(self, limit: int, before: int | None) -> list[CallState]:
        """Closed calls, the latest ``limit`` opened before ``before`` (a ``seq``), newest
        first."""

    def finished_calls_named(self, call_ids: list[str]) -> dict[str, CallState]:
        """The summaries of the closed calls among ``call_ids`` (many at once)."""
        found = {c: self.finished_call(c) for c in call_ids}
        return {c: call for c, call in found.items() if call is not None}

    def first_outputs(self, call_ids: list[str]) -> dict[str, Entry]:
        """The stored output of input 0 of each of ``call_ids`` that has one (many at once)."""
        found = {c: self.outputs(c, 0, 1) for c in call_ids}
        return {c: entries[0] for c, entries in found.items() if entries}

    def why_missing(self, call_id: str) -> str:
        """Why ``call_id`` is not here, for its NotFoundError."""
        return f"no function call {call_id}"

    def unfinished(self) -> list[Unfinished]:
        """At start: the spawned calls a previous control plane left unfinished."""
        return []

    def last_seq(self) -> int:
        """The newest ``seq`` kept: new calls are numbered after it."""
        return 0

    def housekeep(self, now: float) -> None:  # noqa: B027 - optional hook
        """Drop what outlived its retention time (``now``: seconds since the epoch)."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Write what is pending and release the files."""


class MemoryStore(SpawnStore):
    """The embedded control plane's store: outputs in memory, bounded. Finished calls
    beyond ``max_calls`` or ``max_bytes`` of outputs, or older than ``retention`` seconds,
    are dropped oldest first; a later fetch of one raises NotFoundError saying so.

    It lives in the caller's process, whose garbage collector walks every container object
    at each full collection: so what it keeps, by the hundred thousand, is tuples of atomic
    values (which the collector stops tracking at its first look), in flat dicts, never an
    object per call (``calls.record``, ``_stored``)."""

    location = "memory"

    def __init__(self, max_calls: int, max_bytes: int, retention: float) -> None:
        self.max_calls = max_calls
        self.max_bytes = max_bytes
        self.retention = retention
        self.nbytes = 0  # of every output held
        self._outputs: dict[tuple[str, int], StoredOutput] = {}  # by call id and index
        self._ends: dict[str, int] = {}  # a call's highest index with an output, + 1
        self._sizes: dict[str, int] = {}  # bytes of a call's outputs
        # closed calls, oldest first: their records, each followed by when it closed
        self._closed: collections.OrderedDict[str, CallRecord] = collections.OrderedDict()
        self._forgotten: collections.OrderedDict[str, str] = collections.OrderedDict()

    def submitted(
        self, pool: Pool, call: CallState, records: list[InputRecord], then: Durable
    ) -> None:
        then(None)  # the queue holds the inputs; nothing outlives this process here

    def spawned(
        self, pool: Pool, calls: list[tuple[CallState, InputRecord]], then: Durable
    ) -> None:
        then(None)

    def settled(self, call: CallState, index: int, row: list[Any], data: Any, bufs: Any) -> None:
        call_id = call.call_id
        entry = _stored(row, data, bufs)
        size = nbytes(data) + sum(nbytes(b) for b in bufs)
        old = self._outputs.get((call_id, index))
        if old is not None:  # settled again (a detached map's result given back)
            size -= nbytes(old[-2]) + sum(nbytes(b) for b in old[-1])
        self._outputs[call_id, index] = entry
        self._ends[call_id] = max(self._ends.get(call_id, 0), index + 1)
        self._sizes[call_id] = self._sizes.get(call_id, 0) + size
        self.nbytes += size

    def closed(self, call: CallState) -> None:
        now = time.time()
        self._closed[call.call_id] = (*record(call), now)
        self._evict(now)

    def outputs(self, call_id: str, start: int, stop: int | None) -> list[Entry]:
        end = self._ends.get(call_id, 0)
        held = self._outputs
        keys = ((call_id, i) for i in range(max(start, 0), end if stop is None else min(stop, end)))
        return [_entry(held[key]) for key in keys if key in held]

    def first_outputs(self, call_ids: list[str]) -> dict[str, Entry]:
        held = self._outputs
        return {c: _entry(held[c, 0]) for c in call_ids if (c, 0) in held}

    def finished_call(self, call_id: str) -> CallState | None:
        closed = self._closed.get(call_id)
        return from_record(closed) if closed else None

    def finished_calls(self, limit: int, before: int | None) -> list[CallState]:
        kept = (k for k in self._closed.values() if before is None or record_seq(k) < before)
        return [from_record(k) for k in heapq.nlargest(limit, kept, key=record_seq)]

    def why_missing(self, call_id: str) -> str:
        why = self._forgotten.get(call_id)
        if why is None:
            return super().why_missing(call_id)
        return f"function call {call_id} is gone: {why}"

    def housekeep(self, now: float) -> None:
        self._evict(now)

    def _evict(self, now: float) -> None:
        closed = self._closed
        hint = "; a Jupyter server's control plane keeps them on disk"
        while closed:
            call_id, kept = next(iter(closed.items()))
            at = kept[-1]
            if now - at > self.retention:
                why = f"its results expired ({self.retention / 86400:g} days after it finished)"
            elif len(closed) > self.max_calls:
                why = f"this control plane keeps the latest {self.max_calls} finished spawned "
                why += f"calls{hint}"
            elif self.nbytes > self.max_bytes:
                why = f"this control plane keeps {self.max_bytes >> 20} MiB of spawned results"
                why += hint
            else:
                return
            closed.popitem(last=False)
            for index in range(self._ends.pop(call_id, 0)):
                self._outputs.pop((call_id, index), None)
            self.nbytes -= self._sizes.pop(call_id, 0)
            self._forgotten[call_id] = why
            if len(self._forgotten) > _FORGOTTEN_KEPT:
                self._forgotten.popitem(last=False)


def _stored(row: list[Any], data: Any, bufs: Any) -> StoredOutput:
    """An output as the memory store keeps it: one flat tuple of atomic values, its row's
    then its pickle and its buffers (its sizes a tuple: a run's are cut apart, so most are
    empty, the empty tuple is never tracked; a small pickle copied into bytes of its own,
    which also frees the frame it came in). Large pickles and out-of-band buffers stay as
    they came: few, and big."""
    if len(row) > OUT_SIZES:
        row = [*row[:OUT_SIZES], tuple(row[OUT_SIZES]), *row[OUT_SIZES + 1 :]]
    if type(data) is not bytes and nbytes(data) < _COPIED_BELOW:
        data = bytes(data)
    return (*row, data, tuple(bufs))


def _entry(stored: StoredOutput) -> Entry:
    """A stored output as the other stores give theirs: its row, sizes and buffers lists."""
    item = list(stored[:-2])
    if len(item) > OUT_SIZES:
        item[OUT_SIZES] = list(item[OUT_SIZES])
    return item, stored[-2], list(stored[-1])
