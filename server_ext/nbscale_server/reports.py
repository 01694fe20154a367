"""The API's models built from the control plane's records: pure functions, no I/O.

Per-input status is computed when asked, by scanning the call's pool queue, so that the hot
path (50,000 inputs/s through one control plane) keeps only counters.
"""

from __future__ import annotations

from typing import cast

from nbscale_runtime.capture import parse_line

from .calls import CallState
from .launchers.base import LogChunk, WorkerHandle
from .launchers.logs import split_lines
from .models import (
    CallDetailModel,
    CallModel,
    InputModel,
    InputStatus,
    LogLineModel,
    LogsModel,
    PoolModel,
)
from .pool import Pool


def pool_model(pool: Pool, now: float) -> PoolModel:
    return cast("PoolModel", pool.stats(now))


def call_model(call: CallState, pool: Pool | None) -> CallModel:
    model = cast("CallModel", call.as_dict())
    model["function"] = call.function or (pool.name if pool is not None else "")
    return model


def call_detail(
    call: CallState, pool: Pool | None, start: int, limit: int, started: set[tuple[str, int]]
) -> CallDetailModel:
    """The call with the status of inputs ``start`` .. ``start + limit`` (those submitted).
    An input on a worker is running once the worker says it started it (``started``: the
    (call id, index) its workers say they run); until then it is pending there. ``pool``:
    None for a stored call whose pool is gone (none of it runs)."""
    pending, held = pool.queue.inputs_of(call.call_id) if pool is not None else ([], [])
    end = min(start + limit, call.submitted)
    active: dict[int, InputModel] = {}
    for r in pending:
        active[r.index] = {"index": r.index, "status": "pending", "attempt": r.attempt}
    running = [r for r in held if r.key in started]
    for r in held:
        active[r.index] = {
            "index": r.index,
            "status": "running" if r.key in started else "pending",
            "attempt": r.attempt,
            "worker_id": r.worker_id or "",
        }
    inputs: list[InputModel] = []
    for index in range(max(0, start), end):
        model = active.get(index)
        if model is None:
            settled = call.outcomes.get(index) if call.outcomes is not None else None
            model = {"index": index, "status": _settled(call, settled), "attempt": 0}
            if settled is not None:
                model["attempt"] = settled[1]
        inputs.append(model)
    return {
        **call_model(call, pool),
        "pending": len(pending) + len(held) - len(running),
        "running": len(running),
        "start": max(0, start),
        "inputs": inputs,
    }


def _settled(call: CallState, settled: tuple[bool, int] | None) -> InputStatus:
    """The status of an input of ``call`` that is neither pending nor running."""
    if settled is not None:
        return "done" if settled[0] else "failed"
    if call.cancelled:
        return "cancelled"
    return "finished"


def logs_model(handle: WorkerHandle, tail: int, chunk: LogChunk) -> LogsModel:
    """A worker's output, each line read for its time and input."""
    lines: list[LogLineModel] = [
        {"time": line.time, "call_id": line.call_id, "index": line.index, "text": line.text}
        for line in map(parse_line, split_lines(chunk.text))
    ]
    return {
        "container_id": handle.worker_id,
        "pool_id": handle.pool_id,
        "tail": tail,
        "logs": chunk.text,
        "lines": lines,
        "cursor": chunk.cursor,
        "skipped": chunk.skipped,
    }
