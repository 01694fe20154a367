"""A worker's connection to its control plane, whichever the transport: a Unix stream
socket for local worker processes and containers that allow it (``unix://``, see
``stream.py``), ZeroMQ over TCP with CurveZMQ for the others (``tcp://``, see
``zmq_link.py``, imported only then). Both offer the same few calls."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

from .stream import StreamLink


class Poller(Protocol):
    """What ``select.poll`` and ``zmq.Poller`` share: register with ``POLLIN`` (1 in both),
    then ``poll`` gives (watched, events) pairs."""

    def register(self, watched: Any, eventmask: int = ..., /) -> Any: ...

    def poll(self, timeout: int | None = ..., /) -> list[tuple[Any, int]]: ...


class Link(Protocol):
    pollable: Any  # what the link's ``poller()`` watches for incoming messages

    def send(self, frames: Sequence[Any]) -> None: ...

    def receive(self) -> list[list[Any]]:
        """Every message that has arrived, without waiting."""
        ...

    def poll(self, timeout_ms: int) -> bool: ...

    def poller(self) -> Poller:
        """A new poller that watches this link's ``pollable`` and plain descriptors."""
        ...

    def close(self) -> None:
        """Close, after what was sent is on its way."""
        ...


def connect(
    endpoint: str,
    identity: str,
    keys: tuple[str, str, str] | None = None,
    shared_min: int | None = None,
) -> Link:
    """``shared_min``: over a Unix socket, frames from this size go through shared memory."""
    if endpoint.startswith("unix://"):
        return StreamLink(endpoint[len("unix://") :], identity, shared_min)
    from .zmq_link import ZmqLink

    return ZmqLink(endpoint, identity, keys)
