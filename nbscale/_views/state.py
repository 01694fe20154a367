"""The state of a map's view, as JSON: what the notebook display sends the browser.

One pure function of a progress snapshot, the pool's model and the call, so that the
JupyterLab renderer (``labextension/src/mapview.ts``), the static HTML (``html.py``) and the
tests read the same numbers. Its shape is ``MapStateModel`` (``nbscale_server/models.py``,
from which the renderer's TypeScript types are generated). It travels as
``application/vnd.nbscale.map+json`` in a display that the kernel updates in place; once the
map ends it is the static summary that a saved notebook keeps. It is bounded whatever the
map's size: a few dozen rows, each with the tail of its output and, for a failure, its
traceback, for the per-input drill-down.
"""

from __future__ import annotations

from nbscale_server.models import MapRowModel, MapStateModel, PoolModel

from .._progress import InputRow, Snapshot, tail
from . import render
from .live import CallInfo, Outcome

MIME = "application/vnd.nbscale.map+json"
VERSION = 1
OUTPUT_CHARS = 2_000  # of an input's output, in the state (the model keeps more)
TRACEBACK_CHARS = 4_000


def map_state(
    snap: Snapshot,
    pool: PoolModel | None,
    call: CallInfo,
    outcome: Outcome | None = None,
) -> MapStateModel:
    """The view's state now; ``outcome`` once the map ended (the state is then final)."""
    c = snap.counts
    final = outcome is not None
    if final:
        assert outcome is not None
        status = outcome.status
    else:
        status = "preparing" if snap.preparing is not None else "running"
    return {
        "version": VERSION,
        "function": snap.function,
        "call_id": call.call_id,
        "control_plane": call.control_plane,
        "kernel_id": call.kernel_id,
        "status": status,
        "final": final,
        "outcome": outcome.text if outcome is not None else None,
        "counts": {
            "total": c.total,
            "submitted": c.submitted,
            "done": c.done,
            "failed": c.failed,
            "cancelled": c.cancelled,
            "running": c.running,
            "pending": c.pending,
            "retries": c.retries,
        },
        "percent": render.percent(c),
        "rate": snap.rate,
        "elapsed": snap.elapsed,
        "eta": snap.eta,
        "started": snap.started_wall,
        "counts_text": render.counts_line(snap),
        "pool_text": render.pool_line(pool, snap.throttled_by, snap.workers),
        "throttled": snap.throttled_by is not None,
        "summary": render.summary_text(snap, outcome.text) if outcome is not None else None,
        "resume": call.detached,
        "rows": [row_state(row, snap.started_wall) for row in snap.rows],
        "failures": [{"index": i, "line": line} for i, line in snap.failures],
    }


def row_state(row: InputRow, started_wall: float) -> MapRowModel:
    """One input's row and its drill-down: attempts (start in seconds after the map's),
    the tail of its output, a failure's traceback."""
    return {
        "index": row.index,
        "status": row.status,
        "worker": row.worker_id,
        "attempt": row.attempt,
        "duration": row.duration,
        "time": render.duration(row.duration) if row.duration is not None else "",
        "summary": row.summary,
        "output": tail(row.output, OUTPUT_CHARS),
        "traceback": tail(row.traceback, TRACEBACK_CHARS),
        "attempts": [
            {
                "number": a.number,
                "worker": a.worker_id,
                "start": None if a.started_at is None else a.started_at - started_wall,
                "duration": a.duration,
                "outcome": a.outcome,
            }
            for a in row.attempts
        ],
    }
