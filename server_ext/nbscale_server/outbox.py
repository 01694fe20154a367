"""Everything the control plane sends: messages to workers, replies, refusals and outputs
to callers, and change events to subscribers (the REST API's event feed).

It holds the channels, which the composition root attaches once it has bound them, and
the clients linked in-process; it decides nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, Protocol, cast

from nbscale_runtime import protocol
from nbscale_runtime.nested import CLIENT_SUFFIX

from .errors import RequestError
from .models import ChangeEvent

log = logging.getLogger("nbscale.control_plane")

Deliver = Callable[[protocol.Message, list[Any]], None]
Subscriber = Callable[[ChangeEvent], None]
_NESTED = CLIENT_SUFFIX.encode()


class Sender(Protocol):
    """A channel's sending end: ``[identity, *frames]`` to one peer."""

    def send(self, frames: list[Any]) -> None: ...


class _Nowhere:
    """The channel of a control plane not started yet: what it is sent goes nowhere."""

    def send(self, frames: list[Any]) -> None:
        log.debug("no channel yet: dropping a message")


class Outbox:
    def __init__(self) -> None:
        self.workers: Sender = _Nowhere()
        self.clients: Sender = _Nowhere()
        self.local_clients: dict[bytes, Deliver] = {}  # clients in this process, linked direct
        self._subscribers: list[Subscriber] = []

    def attach(self, workers: Sender, clients: Sender | None = None) -> None:
        """Send through these channels from now on (``clients``: those not in-process)."""
        self.workers = workers
        if clients is not None:
            self.clients = clients

    # --- workers ------------------------------------------------------------------------

    def send_worker(self, worker_id: str, msg: protocol.Message, payload: Any = ()) -> None:
        target = worker_id
        if isinstance(msg, (protocol.CancelInputs, protocol.Shutdown, protocol.Pong)):
            target += ":pulse"  # the pulse thread hears it even while user code runs
        self.workers.send([target.encode(), *protocol.encode(msg, payload)])

    # --- callers ------------------------------------------------------------------------

    def send_client(self, identity: bytes, msg: protocol.Message, payload: Any = ()) -> None:
        local = self.local_clients.get(identity)
        if local is not None:
            local(msg, list(payload))
        elif identity.endswith(_NESTED):  # code on a worker: over its worker's channel
            self.workers.send([identity, *protocol.encode(msg, payload)])
        else:
            self.clients.send([identity, *protocol.encode(msg, payload)])

    def reply(self, identity: bytes, rid: int, value: Any, payload: Any = ()) -> None:
        self.send_client(identity, protocol.Reply(rid, value), payload)

    def refuse(self, identity: bytes, rid: int, error: RequestError) -> None:
        reply = protocol.Reply(rid, None, [error.kind, str(error), error.details])
        self.send_client(identity, reply)

    # --- change events ------------------------------------------------------------------

    def subscribe(self, callback: Subscriber) -> Callable[[], None]:
        """Call ``callback`` (on the loop) when a pool is added, changed or stopped, a
        worker starts or stops, or a call is cancelled; returns the unsubscribe function.
        Counts (pending, running, done) change too often for events: read them from the
        API's models."""
        self._subscribers.append(callback)
        return lambda: self._subscribers.remove(callback)

    @property
    def subscribers(self) -> int:
        return len(self._subscribers)

    def emit(self, kind: str, pool_id: str, **details: Any) -> None:
        if not self._subscribers:
            return
        event = cast("ChangeEvent", {"type": kind, "pool_id": pool_id, **details})
        for callback in list(self._subscribers):
            try:
                callback(event)
            except Exception:
                log.exception("an event subscriber failed")
