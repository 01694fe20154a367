"""Callers watching their calls: what workers say of running inputs, passed on to the
callers with a live view, and calls detached from their caller.

A worker's pulse reports, now and then and never per input, the inputs it runs now that it
had not reported and what they printed since (``streaming``); the callers that asked for
progress get it as ``progress`` messages, for their view's drill-down. Detaching a map
(``POST calls/{id}/detach``) keeps its outputs from then on, as a spawned call's, and tells
its caller, which stops waiting and says which results it already returned (``detach-call``):
``FunctionCall.from_id`` then gives the others.
"""

from __future__ import annotations

from typing import Any

from nbscale_runtime import protocol
from nbscale_runtime.protocol import OUT_WHERE, STREAM_CALL_ID
from nbscale_runtime.serialization import split_payload

from .calls import CallState
from .delivery import Delivery
from .outbox import Outbox
from .pool import WorkerState


class Watching:
    def __init__(self, delivery: Delivery, outbox: Outbox) -> None:
        self.delivery = delivery
        self.outbox = outbox

    def on_streaming(
        self, w: WorkerState, msg: protocol.Streaming, payload: list[Any], now: float
    ) -> None:
        by_call: dict[str, list[list[Any]]] = {}
        for row in msg.rows:
            by_call.setdefault(row[STREAM_CALL_ID], []).append(row)
        for call_id, rows in by_call.items():
            call = self.delivery.calls.get(call_id)
            if call is not None and call.progress and not call.detached:
                self.outbox.send_client(call.owner, protocol.Progress(call_id, [], [], rows))

    def detach(self, call: CallState) -> None:
        """Keep the call's outputs from now on and tell its caller to stop waiting."""
        call.detached = call.detaching = True
        self.delivery.spawned.detached(self.delivery.records.pools[call.pool_id], call)
        self.outbox.send_client(call.owner, protocol.Detach(call.call_id))
        self.outbox.emit("call-detached", call.pool_id, call_id=call.call_id)

    def on_detach_call(self, msg: protocol.DetachCall, payload: list[Any]) -> None:
        """A detached call's caller: the results it returned, and those it gives back."""
        call = self.delivery.call(msg.call_id)
        parts = split_payload(payload, [i[OUT_WHERE] for i in msg.items])
        given_back = [
            (item, data, bufs) for item, (data, bufs) in zip(msg.items, parts, strict=True)
        ]
        delivered = [(start, end) for start, end in msg.delivered]
        self.delivery.spawned.returned(call, delivered, given_back)
        self.delivery.settling.maybe_finish(call)

    def orphan(self, call: CallState) -> None:
        """A detached call's caller is gone: no more inputs will come, so the call ends with
        those it was sent (``from_id`` waits for no others)."""
        call.detaching = False
        if call.total is None:
            call.total = call.submitted
        self.delivery.spawned.answer_waiters(call)
        self.delivery.settling.maybe_finish(call)
