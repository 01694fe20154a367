"""The API's models built from the control plane's records: pure functions, no I/O.

Per-input status is computed when asked, by scanning the call's pool queue, so that the hot
path (50,000 inputs/s through one control plane) keeps only counters.
"""

from __future__ import annotations

from typing import cast

from .models import CallDetailModel, CallModel, InputModel, InputStatus, PoolModel
from .pool import CallState, Pool


def pool_model(pool: Pool, now: float) -> PoolModel:
    return cast("PoolModel", pool.stats(now))


def call_model(call: CallState) -> CallModel:
    return cast("CallModel", call.as_dict())


def call_detail(call: CallState, pool: Pool | None, start: int, limit: int) -> CallDetailModel:
    """The call with the status of inputs ``start`` .. ``start + limit`` (those submitted);
    ``pool``: its pool, None for a stored call whose pool is gone (none of it runs)."""
    pending, running = pool.queue.inputs_of(call.call_id) if pool else ([], [])
    end = min(start + limit, call.submitted)
    active: dict[int, InputModel] = {}
    for r in pending:
        active[r.index] = {"index": r.index, "status": "pending", "attempt": r.attempt}
    for r in running:
        active[r.index] = {
            "index": r.index,
            "status": "running",
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
        **call_model(call),
        "pending": len(pending),
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
