"""A worker's connection over ZeroMQ (``tcp://``, with CurveZMQ): containers that cannot share
the control plane's directory, Slurm jobs, Kubernetes Pods. A module of its own so that a
worker on a Unix socket never imports pyzmq (~10 ms of its start)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import zmq

# Plain ints and the backend's getter: pyzmq's sugar wraps EVENTS in an enum, which costs more
# than the system call on these hot paths.
_EVENTS, _POLLIN = int(zmq.EVENTS), int(zmq.POLLIN)


def has_input(sock: zmq.Socket[Any]) -> bool:
    """Whether a message waits on ``sock`` (reading EVENTS also re-arms its edge-triggered
    descriptor)."""
    return bool(zmq.backend.Socket.get(sock, _EVENTS) & _POLLIN)  # type: ignore[operator]


class ZmqLink:
    def __init__(self, endpoint: str, identity: str, keys: tuple[str, str, str] | None) -> None:
        """``keys``: the server's public key and ours (public, secret), for CurveZMQ."""
        self.ctx: zmq.Context[Any] = zmq.Context()
        sock = self.ctx.socket(zmq.DEALER)
        sock.setsockopt(zmq.IDENTITY, identity.encode())
        sock.setsockopt(zmq.LINGER, 2000)
        if keys is not None:
            sock.curve_serverkey = keys[0].encode()
            sock.curve_publickey = keys[1].encode()
            sock.curve_secretkey = keys[2].encode()
        sock.connect(endpoint)
        self.sock = self.pollable = sock

    def send(self, frames: Sequence[Any]) -> None:
        self.sock.send_multipart(frames, copy=False)

    def receive(self) -> list[list[Any]]:
        sock = self.sock
        messages = []
        # Ask before reading: a zmq.Again raised per message costs more than the read.
        while has_input(sock):
            messages.append(sock.recv_multipart(zmq.NOBLOCK, copy=False))
        return messages

    def poll(self, timeout_ms: int) -> bool:
        return bool(self.sock.poll(timeout_ms))

    def poller(self) -> Any:
        return zmq.Poller()

    def close(self) -> None:
        self.sock.close()
        self.ctx.term()  # waits (up to the linger) for queued messages to leave
