"""Runs of inputs: a map's small inputs, run at full speed, their results sent as one.

A run is ``count`` consecutive inputs of one call whose arguments arrived pickled back to
back. A worker running a plain function inline goes through it in one tight loop: each input
still has its own register slot entry (a death blames exactly the input it ran), its own
timeout clock, cancellation and output capture; what changes is that the results of inputs
that returned and printed nothing are gathered into a :class:`Segment` and sent as one
outputs row (one pickled list when all are plain scalars: ``packed.py``; else their pickles
one after the other: ``PayloadWriter.add_run``). An input that
fails or prints ends the segment: its outcome goes as a row of its own, and the next input
begins a new segment.
"""

from __future__ import annotations

import time
from collections.abc import Collection
from types import CoroutineType
from typing import TYPE_CHECKING, Any

from . import capture
from .packed import dump_packed
from .protocol import (
    OUT_COUNT,
    OUT_SIZES,
    STATUS_CANCELLED,
    STATUS_ERROR,
    STATUS_OK,
    STATUS_SERIALIZATION,
    output_row,
)
from .serialization import PayloadWriter, dump_exception
from .service import run_alone

# A run's results go as one row up to this many bytes (no out-of-band buffers); bigger ones
# go one by one, each under the worker's result limit.
_RUN_MAX_BYTES = 1 << 20

if TYPE_CHECKING:
    from .worker import Worker


class Segment:
    """The results of a run's inputs ``first`` .. ``first + len(results)`` so far, all "ok"
    and silent; ``end``: where the run stops (lowered when the control plane takes the rest
    back from a worker that lends its slot, or when an input ends it)."""

    __slots__ = ("attempt", "call_id", "end", "first", "results", "seconds", "sent", "sent_s")

    def __init__(self, call_id: str, attempt: int, first: int, end: int) -> None:
        self.call_id = call_id
        self.attempt = attempt
        self.first = first
        self.end = end
        self.results: list[Any] = []
        self.seconds = 0.0  # run time of ``results``
        self.sent = 0  # results already sent
        self.sent_s = 0.0

    def stop_at_taken(self, keys: Collection[tuple[str, int]]) -> None:
        """The inputs ``keys`` (call id, index) were taken back: the run stops before them."""
        taken = [i for c, i in keys if c == self.call_id and i < self.end]
        if taken:
            self.end = max(self.first + len(self.results), min(taken))

    def rows(
        self, writer: PayloadWriter, worker_id: str, limit: int | None = None
    ) -> list[list[Any]]:
        """The outputs rows of the results not sent yet: one for all of them (one for each
        when one will not pickle, so that only the culprit fails)."""
        results = self.results[self.sent :]
        if not results:
            return []
        first, seconds = self.first + self.sent, self.seconds - self.sent_s
        self.sent, self.sent_s = len(self.results), self.seconds
        call_id, attempt = self.call_id, self.attempt
        if len(results) > 1:
            packed = dump_packed(results)
            if packed is not None and len(packed) <= _RUN_MAX_BYTES:
                where = writer.add_raw(packed)
                row = output_row(call_id, first, attempt, STATUS_OK, where, seconds, worker_id)
                row[OUT_COUNT] = len(results)  # and no sizes: packed
                return [row]
            try:
                where, sizes = writer.add_run(results)
            except Exception:
                pass
            else:
                if not where[2] and where[1] <= _RUN_MAX_BYTES:
                    row = output_row(call_id, first, attempt, STATUS_OK, where, seconds, worker_id)
                    row[OUT_COUNT], row[OUT_SIZES] = len(results), sizes
                    return [row]
                writer.drop_last(where[0], where[2])  # big results: each in a row of its own
        rows = []
        each = seconds / len(results)
        for k, result in enumerate(results):
            status = STATUS_OK
            try:
                where = writer.add(result, limit)
            except Exception as exc:
                status, where = STATUS_SERIALIZATION, writer.add_raw(dump_exception(exc))
            rows.append(output_row(call_id, first + k, attempt, status, where, each, worker_id))
        return rows


def run_segment(
    w: Worker,
    call_id: str,
    attempt: int,
    index: int,
    values: list[Any],
    deadline: float,
    packed: bool = False,
) -> tuple[int, int]:
    """Run the inputs ``index`` .. ``index + len(values)`` of a run (``values``: their
    (args, kwargs), or when ``packed`` each one's only argument) until done, cancelled,
    taken back, or ``deadline`` (perf_counter) passes; returns where it stopped and where
    the run now ends (the rest, if any, is the caller's to queue)."""
    from .intake import InputCancelled, _Input

    seg = Segment(call_id, attempt, index, index + len(values))
    w.segment = seg
    w.done.append(seg)
    fn, running, cancelled = w.fn, w.running, w.cancelled
    finish_slot = w.slot_writers[0][1]
    start_slot = w.register.run_start(0, call_id, attempt)
    # One clock read an input: each starts when the one before ended (monotonic: the
    # register's clock is the host's), and the deadline is read on it too.
    clock = time.monotonic
    started = clock()
    deadline += started - time.perf_counter()
    offset = -index
    results = seg.results
    # One capture for the run, its index moved on each input; an input that printed takes
    # its text with it (``capture.take``).
    captured, capturing = capture.start_run(call_id, index)
    try:
        while index < seg.end:
            if call_id in cancelled:
                seg.end = index  # the control plane dropped the rest
                break
            value = values[offset + index]
            key = (call_id, index)
            running[key] = (started, attempt, 0)
            start_slot(index, started)
            captured[3] = index
            w.inline_key = key
            try:
                w.in_user_code = True
                # a packed run's value is its input's one argument: no (args, kwargs) made
                result = fn(value) if packed else fn(*value[0], **value[1])
                if type(result) is CoroutineType:  # inspect.iscoroutine: it has no subclass
                    result = run_alone(result)
                status = STATUS_OK
            except InputCancelled:
                result, status = None, STATUS_CANCELLED
            except BaseException as exc:
                result, status = exc, STATUS_ERROR
            finally:
                w.in_user_code = False
                finish_slot()
                w.inline_key = None
                del running[key]
            ended = clock()
            if status == STATUS_OK and not captured[0] and not captured[1]:
                results.append(result)
                seg.seconds += ended - started
            else:  # an outcome of its own; the inputs after it begin a new segment
                one = _Input(call_id, index, attempt, None, [])
                w.record(one, status, result, ended - started, capture.take(captured))
                seg = Segment(call_id, attempt, index + 1, seg.end)
                w.segment = seg
                w.done.append(seg)
                results = seg.results
                ended = clock()  # the next input's time does not count this
            started = ended
            index += 1
            if ended > deadline:
                break
    finally:
        capture.finish_run(captured, capturing)
        w.segment = None
    if results:
        each = seg.seconds / len(results)
        avg = w.avg_seconds
        w.avg_seconds = each if avg is None else 0.8 * avg + 0.2 * each
    return index, seg.end
