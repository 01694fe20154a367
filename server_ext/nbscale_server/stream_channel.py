"""The control plane's end of its local workers' Unix socket (``nbscale_runtime.stream``),
driven by the asyncio loop, with the interface of a ROUTER ``Channel``: ``on_message`` gets
``[identity, *frames]`` and ``send`` takes the same, so the control plane does not care
which transport a worker uses.

Each connection names itself in its first message (the worker id, or ``<id>:pulse``);
the socket lives in the control plane's private directory, so only this user can connect.
A message for an identity that is not connected is dropped, as a ROUTER socket does.

A Docker container cannot enter that directory: with ``docker_transport="ipc"`` each one
gets a listening socket of its own (``listen``), bind-mounted into it alone, whose
connections may name only that worker (``wk-X``, ``wk-X:pulse``, ``wk-X:client``). The mount
is the credential, as the directory is for local processes: a container cannot reach
another's socket, so it cannot pose as another worker.

Even so, a peer is never trusted to behave: a connection that breaks the framing (a message
of no frames, more than ``max_message`` bytes announced, a first message that is not one
identity) or claims the identity of a live connection is dropped, and only it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from collections.abc import Callable
from typing import Any

from nbscale_runtime.segments import Segments
from nbscale_runtime.stream import FrameReader, FrameWriter, StreamClosed

from .log_limit import LimitedLog

log = logging.getLogger("nbscale.stream_channel")


class _Peer:
    __slots__ = ("identity", "only", "reader", "segments", "sock", "writer", "writing")

    def __init__(
        self,
        sock: socket.socket,
        max_message: int | None,
        shared_min: int | None,
        only: bytes | None = None,
    ) -> None:
        self.sock = sock
        self.identity: bytes | None = None
        self.only = only  # the worker it may speak for (its own socket's), None: any
        self.segments = Segments(shared_min)  # its large frames, both ways (segments.py)
        self.reader = FrameReader(max_message, self.segments)
        self.writer = FrameWriter(self.segments)
        self.writing = False  # waiting for the socket to take more


class StreamChannel:
    def __init__(
        self,
        path: str,
        on_message: Callable[[list[Any]], None],
        loop: asyncio.AbstractEventLoop | None = None,
        max_message: int | None = None,
        shared_min: int | None = None,
    ) -> None:
        """``max_message``: the most bytes a message may announce before its connection is
        dropped (None: no limit); ``shared_min``: frames from this size are sent through
        shared memory (None: never)."""
        self.path = path
        self.on_message = on_message
        self.max_message = max_message
        self.shared_min = shared_min
        self.loop = loop or asyncio.get_running_loop()
        self.listener = self._bind(path, None)
        self._own: dict[str, tuple[socket.socket, str]] = {}  # workers' own: id -> (it, path)
        self._peers: dict[bytes, _Peer] = {}  # by identity
        self._all: set[_Peer] = set()
        self._closed = False
        self._peer_log = LimitedLog(log)  # what broken peers cause

    def _bind(self, path: str, only: bytes | None) -> socket.socket:
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            listener.bind(path)
            os.chmod(path, 0o600)  # connecting takes write permission: its owner's alone
            listener.listen(128)
        except OSError:
            listener.close()
            raise
        listener.setblocking(False)
        self.loop.add_reader(listener.fileno(), self._accept, listener, only)
        return listener

    def listen(self, path: str, worker_id: str) -> None:
        """A listening socket at ``path`` for ``worker_id`` alone (to be mounted into its
        container): connections on it may speak only for that worker. Raises OSError when
        it cannot be made."""
        self._own[worker_id] = (self._bind(path, worker_id.encode()), path)

    def unlisten(self, worker_id: str) -> None:
        """``worker_id``'s own socket goes (its connections stay until they close)."""
        own = self._own.pop(worker_id, None)
        if own is not None:
            self._unbind(*own)

    def _unbind(self, listener: socket.socket, path: str) -> None:
        self.loop.remove_reader(listener.fileno())
        listener.close()
        with contextlib.suppress(OSError):
            os.unlink(path)

    def _accept(self, listener: socket.socket, only: bytes | None) -> None:
        while True:
            try:
                sock, _ = listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError:  # closed meanwhile
                return
            sock.setblocking(False)
            peer = _Peer(sock, self.max_message, self.shared_min, only)
            self._all.add(peer)
            self.loop.add_reader(sock.fileno(), self._readable, peer)

    def _readable(self, peer: _Peer) -> None:
        closed = False
        try:
            peer.reader.read_from(peer.sock)
        except StreamClosed as exc:
            if str(exc) != "the peer closed the connection":
                self._peer_log.warning("dropping a worker connection %r: %s", peer.identity, exc)
            closed = True  # but first handle what it sent before it went
        except OSError:
            closed = True
        messages = peer.reader.messages
        while messages and peer in self._all:
            frames = messages.popleft()
            if peer.identity is None:
                self._name(peer, frames)
                continue
            try:
                self.on_message([peer.identity, *frames])
            except Exception:
                self._peer_log.exception("error handling a message")
        if closed:
            self._drop(peer)

    def _name(self, peer: _Peer, frames: list[Any]) -> None:
        """A connection's first message: its identity, bound to it while it lives."""
        identity = bytes(frames[0]) if len(frames) == 1 else b""
        holder = self._peers.get(identity)
        why = None
        if not identity:
            why = "is not one identity"
        elif holder is not None and holder is not peer:
            why = "is taken by a live connection"
        elif peer.only is not None and identity.split(b":", 1)[0] != peer.only:
            why = f"names another worker than its socket's ({peer.only.decode()})"
        if why is not None:
            self._peer_log.warning("dropping a worker connection: its first message %s", why)
            self._drop(peer)
            return
        peer.identity = identity
        self._peers[identity] = peer

    def drain(self) -> None:
        """Handle every message waiting on any connection now."""
        for peer in list(self._all):
            self._readable(peer)

    def send(self, frames: list[Any]) -> None:
        """``frames[0]`` names the peer; the rest is the message."""
        if self._closed:
            return
        peer = self._peers.get(bytes(frames[0]))
        if peer is None:
            return
        try:
            done = peer.writer.write(peer.sock, frames[1:])
        except OSError as exc:
            log.debug("send to %r failed: %s", peer.identity, exc)
            self._gone(peer)
            return
        if not done and not peer.writing:
            peer.writing = True
            self.loop.add_writer(peer.sock.fileno(), self._writable, peer)

    def _writable(self, peer: _Peer) -> None:
        try:
            done = peer.writer.flush(peer.sock)
        except OSError:
            self._gone(peer)
            return
        if done:
            peer.writing = False
            self.loop.remove_writer(peer.sock.fileno())

    def _gone(self, peer: _Peer) -> None:
        """A peer that cannot be written to has closed: what it sent before it went (a
        worker's last outputs and goodbye) is handled first, then it is dropped."""
        if peer.identity is not None and self._peers.get(peer.identity) is peer:
            del self._peers[peer.identity]  # nothing more is sent to it meanwhile
        self._readable(peer)
        self._drop(peer)

    def _drop(self, peer: _Peer) -> None:
        if peer not in self._all:
            return
        self._all.discard(peer)
        if peer.identity is not None and self._peers.get(peer.identity) is peer:
            del self._peers[peer.identity]
        self.loop.remove_reader(peer.sock.fileno())
        if peer.writing:
            self.loop.remove_writer(peer.sock.fileno())
        peer.sock.close()
        peer.segments.close()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        for peer in list(self._all):
            self._drop(peer)
        for worker_id in list(self._own):
            self.unlisten(worker_id)
        self._unbind(self.listener, self.path)
