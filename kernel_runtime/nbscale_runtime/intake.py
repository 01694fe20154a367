"""A worker's intake: the inputs it asks for, receives and queues, before it runs them.

The worker asks for as many inputs as it has slots, and for short inputs some ahead (about
``_PREFETCH_SECONDS`` of estimated run time), so that the next starts without a round trip;
``run-inputs`` messages queue them (a run of a plain function stays one queue entry, run by
``runs.py``; other runs are split into inputs of their own). A suspect input is confirmed
before it starts (``confirm_start``), and inputs the control plane takes back while the
worker lends its slot leave the queue (``drop_taken``).
"""

from __future__ import annotations

import collections
import math
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from . import protocol, sending
from .packed_inputs import load_inputs, load_values
from .protocol import (
    RUN_ATTEMPT,
    RUN_CALL_ID,
    RUN_COUNT,
    RUN_INDEX,
    RUN_PACKED,
    RUN_SKIP,
    RUN_WHERE,
)
from .serialization import load, load_run, split_payload

if TYPE_CHECKING:
    from .worker import Worker

# Work a worker asks for ahead of what it runs now, in seconds of estimated run time: enough
# to hide a round trip to the control plane, small enough to keep the load balanced.
_PREFETCH_SECONDS = 0.01
# The most inputs asked for ahead, whatever the estimate. Not lower than the control plane's
# batch floor (pool.py): a worker that may hold one batch alone waits a round trip per batch.
_MAX_PREFETCH = 10_000
# Inputs shorter than this keep one more queued per slot, so the next starts without a round
# trip; one that waits behind another waits at most this long.
_ONE_AHEAD_BELOW = 0.1
_PROCEED_WAIT = 10.0  # seconds to wait for the control plane to note an input's start


class InputCancelled(BaseException):
    """Raised inside a running input when its call is cancelled."""


@dataclass(slots=True)
class _Input:
    call_id: str
    index: int
    attempt: int
    data: Any
    buffers: list[Any]
    arrived: float = 0.0  # monotonic, when it reached this worker
    loaded: Any = None  # its (args, kwargs), once unpickled ahead of its run (batching)
    count: int = 0  # > 0: a run of inputs ``index`` .. ``index + count`` (``runs.py``)
    skip: int = 0  # a run's first element in the list ``data`` holds
    packed: bool = False  # a packed run: each input is one value, its only argument

    @property
    def key(self) -> tuple[str, int]:
        return (self.call_id, self.index)

    def args(self) -> Any:
        """Its (args, kwargs); a run's, a list of them, or of its values when packed."""
        if self.loaded is None:
            if self.packed:
                self.loaded = load_values(self.data, self.skip, self.count)
            elif self.count:
                self.loaded = load_run(self.data, self.buffers, self.skip, self.count)
            else:
                self.loaded = load(self.data, self.buffers)
        return self.loaded


def accept_inputs(w: Worker, msg: protocol.RunInputs, payload: list[Any]) -> None:
    parts = split_payload(payload, [item[RUN_WHERE] for item in msg.items])
    now = time.monotonic()
    received = 0
    for item, (data, buffers) in zip(msg.items, parts, strict=False):
        call_id, index, attempt = item[RUN_CALL_ID], item[RUN_INDEX], item[RUN_ATTEMPT]
        count, packed = item[RUN_COUNT], item[RUN_PACKED]
        received += count or 1
        if count and not w.plain:  # run one by one: each an input of its own
            values = load_inputs(data, buffers, item[RUN_SKIP], count, packed)
            for k, value in enumerate(values):
                w.queue.append(_Input(call_id, index + k, attempt, data, [], now, value))
        else:
            run = _Input(call_id, index, attempt, data, buffers, now, None, count)
            run.skip, run.packed = item[RUN_SKIP], packed
            w.queue.append(run)
            w.run_extra += max(0, count - 1)
        if msg.confirm:
            w.confirm_first.add((call_id, index))
    w.demand = max(0, w.demand - received)


def ask_for_inputs(w: Worker) -> None:
    want = more_wanted(w)
    if want:
        w._send(protocol.GetInputs(w.cfg.worker_id, want))


def more_wanted(w: Worker) -> int:
    """How many more inputs to ask for now (counted as asked for)."""
    if w.fn is None or w.draining:
        return 0
    have = len(w.queue) + w.run_extra + len(w.running) + w.demand
    target = w.slots
    # Look ahead only for short inputs, where a round trip per input would cost: a long
    # input queued here behind another could have run on an idle worker instead.
    avg = w.avg_seconds
    if avg is not None and avg < _PREFETCH_SECONDS:
        per_slot = _PREFETCH_SECONDS / max(avg, 1e-7)
        target += min(_MAX_PREFETCH, math.ceil(per_slot * w.slots))
    elif avg is not None and avg < _ONE_AHEAD_BELOW:
        target += w.slots
    if have < target and (w.demand == 0 or have <= target // 2):
        want = target - have
        w.demand += want
        return want
    return 0


def drop_taken(w: Worker, taken: list[list[Any]]) -> None:
    """The control plane took these back while this worker lent its slot: runs of
    inputs this worker queued, and the rest of the run it is in (if any)."""
    keys = {(call_id, index + k) for call_id, index, count in taken for k in range(count)}
    w.queue = collections.deque(i for i in w.queue if i.key not in keys)
    w.run_extra = sum(max(0, i.count - 1) for i in w.queue)
    w.confirm_first -= keys
    if w.segment is not None:
        w.segment.stop_at_taken(keys)
    w.demand = 0
    w.slot_lent = True


def confirm_start(w: Worker, item: _Input) -> None:
    """Say we start ``item`` and wait until the control plane has noted it: should the
    input kill this worker, it alone is blamed (a worker without a register)."""
    w.confirm_first.discard(item.key)
    sending.flush(w)
    started = protocol.Started(w.cfg.worker_id, item.call_id, item.index, item.attempt)
    w._send(started)
    deadline = time.monotonic() + _PROCEED_WAIT
    while time.monotonic() < deadline:
        if w.data.poll(100) and w._receive_all():
            return
