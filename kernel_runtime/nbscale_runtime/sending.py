"""A worker's finished outputs, sent to the control plane in batches: every few milliseconds
while it is busy, at once when it runs out of work (one ``outputs`` message for all that
finished since: results pickled, exceptions recorded, a run's results as one row,
``runs.Segment``)."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from . import intake, protocol
from .protocol import STATUS_ERROR, STATUS_OK, STATUS_SERIALIZATION, STATUS_YIELD, output_row
from .runs import Segment
from .serialization import PayloadWriter, dump_exception

if TYPE_CHECKING:
    from .worker import Worker

FLUSH_INTERVAL = 0.002  # send finished outputs at least this often while busy


def maybe_flush(w: Worker) -> None:
    if w.done and (not w.queue or time.perf_counter() - w.last_flush > FLUSH_INTERVAL):
        flush(w)


def flush(w: Worker) -> None:
    w.last_flush = time.perf_counter()
    if not w.done:
        return
    w.flushing = True
    try:
        _send_done(w)
    finally:
        w.flushing = False


def _send_done(w: Worker) -> None:
    writer = PayloadWriter()
    items = []
    worker_id = w.cfg.worker_id
    live = None
    while w.done:
        entry = w.done.popleft()
        if isinstance(entry, Segment):
            items.extend(entry.rows(writer, worker_id, w.max_result))
            if entry is w.segment:  # flushed from inside its run: more to come
                live = entry
            continue
        item, status, result, seconds, (stdout, stderr) = entry
        if status == STATUS_ERROR:
            where = writer.add_raw(dump_exception(result, skip_runtime=True))
        elif status in (STATUS_OK, STATUS_YIELD):
            try:
                where = writer.add(result, w.max_result)
            except Exception as exc:
                status = STATUS_SERIALIZATION
                where = writer.add_raw(dump_exception(exc))
        else:
            where = writer.add_raw(b"")
        items.append(
            output_row(
                item.call_id,
                item.index,
                item.attempt,
                status,
                where,
                seconds,
                worker_id,
                stdout,
                stderr,
            )
        )
    if live is not None:
        w.done.append(live)
    if items:
        w._send(protocol.Outputs(items, intake.more_wanted(w)), writer.frames())
