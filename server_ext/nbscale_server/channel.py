"""A ZeroMQ socket driven by an asyncio loop, without a future per message.

pyzmq's asyncio sockets cost a future and several callbacks per message. Here the socket
stays synchronous: the loop watches its file descriptor and, when it fires, every queued
message is read with NOBLOCK and handed to ``on_message`` synchronously. ZeroMQ's descriptor
is edge-triggered and a send can consume the edge, so each send also schedules one drain.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

import zmq

from nbscale_runtime.zmq_link import has_input

from .log_limit import LimitedLog

log = logging.getLogger("nbscale.channel")


class Channel:
    def __init__(
        self,
        sock: zmq.Socket[Any],
        on_message: Callable[[list[Any]], None],
        loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        self.sock = sock
        self.on_message = on_message
        self.loop = loop or asyncio.get_running_loop()
        self._drain_scheduled = False
        self._closed = False
        self._peer_log = LimitedLog(log)  # what broken peers cause
        self.loop.add_reader(sock.fileno(), self.drain)
        self._schedule_drain()

    def _schedule_drain(self) -> None:
        if not self._drain_scheduled and not self._closed:
            self._drain_scheduled = True
            self.loop.call_soon(self.drain)

    def drain(self) -> None:
        """Handle every message waiting on the socket now."""
        self._drain_scheduled = False
        sock = self.sock
        while not self._closed and has_input(sock):
            frames = sock.recv_multipart(zmq.NOBLOCK, copy=False)
            try:
                self.on_message(frames)
            except Exception:
                self._peer_log.exception("error handling a message")

    def send(self, frames: list[Any]) -> None:
        if self._closed:
            return
        try:
            self.sock.send_multipart(frames, zmq.NOBLOCK, copy=False)
        except zmq.Again:
            self._peer_log.warning("dropping a message: the peer is not reading")
        except zmq.ZMQError as exc:
            log.debug("send failed: %s", exc)
        if has_input(self.sock):  # a send can consume the edge: look again
            self._schedule_drain()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self.loop.remove_reader(self.sock.fileno())
        self.sock.close(0)


def unbounded(sock: zmq.Socket[Any]) -> zmq.Socket[Any]:
    """No high-water marks: nbscale bounds its queues itself (windows and limits), and a
    ROUTER at its mark would silently drop messages."""
    sock.setsockopt(zmq.SNDHWM, 0)
    sock.setsockopt(zmq.RCVHWM, 0)
    sock.setsockopt(zmq.LINGER, 0)
    return sock
