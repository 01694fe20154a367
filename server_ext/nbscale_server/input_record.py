"""What the control plane queues: one input, or a run of a call's consecutive inputs.

A map's small inputs arrive as runs (a chunk's pickles back to back: one record, one message
instead of hundreds); a run moves as one record and is split only where its inputs part ways
(``QueueCore`` decides where). Pieces of a run share its bytes, each knowing where its inputs
start among them (``skip``), so splitting never unpickles anything (a piece goes to a worker
as a slice of them: ``piece``); where inputs are kept one
by one (spawned calls, detached maps), ``apart`` cuts a run's bytes by its inputs' sizes. A
packed run (one pickled list of plain values, ``packed_inputs.py``) is cut the same ways by
where its values lie (its ``Layout``, read once when it arrives).
"""

from __future__ import annotations

from collections.abc import Collection, Iterator
from dataclasses import dataclass, field, replace
from typing import Any

from nbscale_runtime.packed_inputs import Layout
from nbscale_runtime.serialization import cut_run


@dataclass(slots=True)
class InputRecord:
    call_id: str
    index: int
    data: Any  # the pickled (args, kwargs), never unpickled here
    buffers: list[Any] = field(default_factory=list)
    attempt: int = 0  # attempts started so far; the current one is ``attempt``
    worker_id: str | None = None
    spawned: bool = False
    free_attempts: int = 0  # attempts the infrastructure lost: not charged to ``retries``
    infrastructure_streak: int = 0  # such losses in a row
    suspect: bool = False  # on a worker that died, maybe what killed it: runs alone
    confirmed: bool = False  # its worker said it starts it (suspects only)
    earlier_printed: tuple[str, str] = ("", "")  # (stdout, stderr) of retried attempts
    # a generator's input that yielded values: never retried, not even for a loss of the
    # infrastructure's (its values already reached the caller: a retry would replay them)
    yielded: bool = False
    count: int = 1  # inputs ``index`` .. ``index + count``
    skip: int = -1  # -1: ``data`` is one input's pickle; else this run's first in its list
    sizes: list[int] = field(default_factory=list)  # a run's: each input's pickle length
    layout: Layout | None = None  # a packed run's: where its values lie (shared by its pieces)

    @property
    def key(self) -> tuple[str, int]:
        return (self.call_id, self.index)

    @property
    def end(self) -> int:
        return self.index + self.count

    def split(self, at: int) -> InputRecord:
        """Cut a run at index ``at``: this record keeps the inputs before it, the returned
        one (sharing the pickle) those from it on."""
        cut = at - self.index
        rest = replace(self, index=at, count=self.count - cut, skip=self.skip + cut)
        self.count = cut
        return rest

    def piece(self) -> tuple[Any, list[Any], int]:
        """The bytes (pickle, buffers) a worker needs for this record, and where its first
        input starts among them: a piece of a run goes with its own inputs' pickles only (a
        slice of the run's, cut by their sizes, not a copy): the worker unpickles none to
        skip them, and the socket carries none that the piece does not hold."""
        if self.layout is not None:  # a list of its own values
            return self.layout.piece(self.data, self.skip, self.count), self.buffers, 0
        if self.skip < 0 or not self.sizes:
            return self.data, self.buffers, self.skip
        start = sum(self.sizes[: self.skip])
        length = sum(self.sizes[self.skip : self.skip + self.count])
        return memoryview(self.data)[start : start + length], self.buffers, 0

    def singles(self) -> Iterator[InputRecord]:
        """Each input of a run as a record of its own (the run itself is left as it was)."""
        if self.count == 1:
            yield self
            return
        for k in range(self.count):
            yield replace(self, index=self.index + k, count=1, skip=self.skip + k)

    def apart(self) -> list[InputRecord]:
        """Each input of a run as a record of its own with its own bytes (cut from the run's
        by their sizes, never unpickled): what the store keeps, input by input."""
        if self.skip < 0:
            return [self]
        if self.layout is not None:
            cuts = self.layout.apart(self.data, self.skip, self.count)
        else:
            cuts = cut_run(self.data, self.sizes, self.skip, self.count)
        return [
            replace(self, index=self.index + k, data=cut, count=1, skip=-1, sizes=[], layout=None)
            for k, cut in enumerate(cuts)
        ]

    @property
    def charged(self) -> int:
        """Attempts that count against the retry policy."""
        return self.attempt - self.free_attempts


def apart(records: list[InputRecord]) -> list[InputRecord]:
    """Each input of ``records`` as a record of its own bytes (``InputRecord.apart``)."""
    return [one for r in records for one in r.apart()]


def singles(records: list[InputRecord]) -> list[InputRecord]:
    """Each input of ``records`` as a record of its own."""
    return [one for r in records for one in r.singles()]


def holding(
    on_worker: dict[tuple[str, int], InputRecord], call_id: str, index: int
) -> InputRecord | None:
    """The run on a worker that holds input ``index`` of ``call_id`` (not as its first)."""
    for r in on_worker.values():
        if r.call_id == call_id and r.index <= index < r.end:
            return r
    return None


def carve(
    on_worker: dict[tuple[str, int], InputRecord], record: InputRecord, start: int, end: int
) -> InputRecord:
    """Take inputs ``start`` .. ``end`` of ``record`` off the worker as a record of their
    own; what the run holds before and after them stays on the worker."""
    del on_worker[record.key]
    if start > record.index:
        record, before = record.split(start), record
        on_worker[before.key] = before
    if end < record.end:
        after = record.split(end)
        on_worker[after.key] = after
    return record


def cut_at(
    on_worker: dict[tuple[str, int], InputRecord], inputs: Collection[tuple[str, int]]
) -> Iterator[InputRecord]:
    """Every record on a worker (taken off it), runs cut so that each of ``inputs`` (call
    id, index) is a record of its own."""
    by_call: dict[str, list[int]] = {}
    for call_id, index in inputs:
        by_call.setdefault(call_id, []).append(index)
    records = list(on_worker.values())
    on_worker.clear()
    for record in records:
        cuts = sorted(i for i in by_call.get(record.call_id, ()) if record.index <= i < record.end)
        for i in cuts:
            if i > record.index:
                record, before = record.split(i), record
                yield before
            if record.count > 1:
                record, one = record.split(i + 1), record
                yield one
        yield record
