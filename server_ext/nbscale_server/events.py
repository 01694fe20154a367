"""The ``events`` WebSocket's feed: the control plane's changes, coalesced.

A ``.map()`` can finish thousands of inputs a second; a browser wants a few messages a second
at most. The hub therefore does not forward each change: every ``interval`` seconds, while at
least one client listens, it compares the pools' and calls' counts with what it last sent and
sends one ``ChangesMessage`` with the models that moved and the lifecycle events (container
started, pool stopped, ...) that the control plane reported in between. Nothing is sent when
nothing changed, and nothing is computed when nobody listens. Nor is a hundred thousand
spawned calls one message: the feed follows the newest ``CALLS_PAGE`` calls, and older ones
are paged through over REST (``GET calls?before=``).
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from typing import Any, Protocol

from .api import CALLS_PAGE, Api
from .calls import CallState
from .models import CallModel, ChangeEvent, ChangesMessage, PoolModel, SnapshotMessage

log = logging.getLogger("nbscale.events")


class Sink(Protocol):
    """A listener, such as one WebSocket connection."""

    def send_text(self, text: str) -> None: ...

    def close(self) -> None: ...


def _pool_signature(model: PoolModel) -> dict[str, Any]:
    """A pool's model without what changes by itself (uptimes), to compare."""
    signature: dict[str, Any] = dict(model)
    signature["workers"] = [
        (w["id"], w["state"], w["waiting_reason"], w["running_inputs"], w["waiting_on_calls"])
        for w in model["workers"]
    ]
    return signature


def _call_signature(call: CallState) -> tuple[Any, ...]:
    return (
        call.submitted,
        call.reported,
        call.failed,
        call.cancelled,
        call.total,
        len(call.children),
    )


class EventHub:
    def __init__(self, api: Api, interval: float = 0.25, max_events: int = 200):
        self.api = api
        self.interval = interval
        self.max_events = max_events  # per message; a burst beyond it is counted, not sent
        self.sinks: list[Sink] = []
        self._events: list[ChangeEvent] = []
        self._dropped = 0
        self._pools: dict[str, dict[str, Any]] = {}
        self._calls: dict[str, tuple[Any, ...]] = {}
        self._spares: list[str] = []
        self._unsubscribe: Callable[[], None] | None = None
        self._task: asyncio.Task[None] | None = None

    def add(self, sink: Sink) -> None:
        """Start feeding ``sink``: a snapshot now, then changes."""
        if not self.sinks:
            self._start()
        self.sinks.append(sink)
        sink.send_text(json.dumps(self.snapshot()))

    def remove(self, sink: Sink) -> None:
        if sink in self.sinks:
            self.sinks.remove(sink)
        if not self.sinks:
            self._stop()

    def close(self) -> None:
        """Close every listener (the server is stopping)."""
        for sink in list(self.sinks):
            sink.close()
        self.sinks.clear()
        self._stop()

    def snapshot(self) -> SnapshotMessage:
        """Every pool, and the newest calls (``CALLS_PAGE``; ``calls_more`` when there are
        older ones: ``GET calls?before=`` pages through them)."""
        calls = self.api.list_calls(CALLS_PAGE + 1)
        return {
            "type": "snapshot",
            "pools": self.api.list_pools(),
            "calls": calls[:CALLS_PAGE],
            "calls_more": len(calls) > CALLS_PAGE,
            "spares": self.api.list_spares(),
        }

    def changes(self) -> ChangesMessage | None:
        """What changed since the last call (or the start), or None for nothing."""
        pools: list[PoolModel] = []
        for model in self.api.list_pools():
            signature = _pool_signature(model)
            if self._pools.get(model["id"]) != signature:
                self._pools[model["id"]] = signature
                pools.append(model)
        calls: list[CallModel] = []
        seen = set()
        for call_id, call in self.api.listed_calls(CALLS_PAGE).items():
            seen.add(call_id)
            key = _call_signature(call)
            if self._calls.get(call_id) != key:
                self._calls[call_id] = key
                calls.append(self.api.call_model(call))
        removed = [call_id for call_id in self._calls if call_id not in seen]
        for call_id in removed:
            del self._calls[call_id]
        events, dropped = self._events, self._dropped
        self._events, self._dropped = [], 0
        spares, moved = self.api.list_spares(), False
        if spares != self._spares:
            self._spares, moved = spares, True
        if not (pools or calls or removed or events or dropped or moved):
            return None
        return {
            "type": "changes",
            "pools": pools,
            "calls": calls,
            "calls_removed": removed,
            "events": events,
            "events_dropped": dropped,
            "spares": spares,
        }

    def _on_event(self, event: ChangeEvent) -> None:
        if len(self._events) < self.max_events:
            self._events.append(event)
        else:
            self._dropped += 1

    def _start(self) -> None:
        # What the first listener's snapshot shows is the baseline of the first changes.
        self._pools = {p["id"]: _pool_signature(p) for p in self.api.list_pools()}
        listed = self.api.listed_calls(CALLS_PAGE)
        self._calls = {i: _call_signature(c) for i, c in listed.items()}
        self._spares = self.api.list_spares()
        self._unsubscribe = self.api.subscribe(self._on_event)
        self._task = asyncio.ensure_future(self._run())

    def _stop(self) -> None:
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None
        if self._task is not None:
            self._task.cancel()
            self._task = None
        self._events, self._dropped = [], 0

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            try:
                message = self.changes()
                if message is None:
                    continue
                text = json.dumps(message)
                for sink in list(self.sinks):
                    sink.send_text(text)
            except Exception:
                log.exception("could not send nbscale events")
