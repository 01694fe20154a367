"""Multipart messages over a Unix stream socket: how local worker processes talk to their
control plane.

ZeroMQ hands every message to an I/O thread on each side, so a round trip between the
control plane and a worker wakes six threads; on small machines those wake-ups were most of
a ``.remote()``'s latency. A Unix socket in the control plane's private (0700) directory
wakes two, and authenticates the same way ZeroMQ's ``ipc://`` did: by file permissions.
Docker workers, which cannot share that directory, use ZeroMQ over TCP with CurveZMQ, or
(``docker_transport="ipc"``) this stream over a socket of their own mounted into them.

On the wire a message is ``u32 n``, then ``n`` times ``u64 length``, then the ``n`` frames.
Frames are read into buffers of their own (large ones straight from the socket, with no
staging copy) and written with ``sendmsg``, so a big numpy buffer is never joined into a
larger one.

A peer is trusted with nothing it has not sent: a message of no frames, or one announcing
more than the reader's ``max_message`` bytes, closes the connection (``StreamClosed``), and a
large frame is read into an anonymous mapping whose pages exist only once its bytes arrive,
so a peer announcing a gigabyte and sending three bytes costs three bytes.

Large frames (``shared_memory_min_kib``) travel through shared memory instead when both ends
have ``Segments`` (``segments.py``): their announced length has ``SEGMENT_BIT`` set, the
stream carries only the segment's id, and its descriptor comes with ``SCM_RIGHTS``; a
message counting ``RELEASE`` frames gives segments back to their writer.
"""

from __future__ import annotations

import array
import collections
import functools
import mmap
import select
import socket
import struct
from collections.abc import Sequence
from typing import Any

from .segments import ANCILLARY_SIZE, MAX_FDS_PER_SEND, RELEASE, SEGMENT_BIT, Segments

_COUNT = struct.Struct("<I")
_LENGTH = struct.Struct("<Q")
_MAX_FRAMES = 1 << 20  # a peer announcing more is broken
_CHUNK = 256 * 1024  # bytes asked of the socket per read
_IOV_MAX = 512  # buffers per sendmsg, under the system's IOV_MAX (1024 on Linux)
_MAPPED = 1 << 20  # frames from this size are read into an anonymous mapping


class StreamClosed(ConnectionError):
    """The peer closed the connection."""


class FrameReader:
    """Turns bytes read from a stream back into messages (lists of frames)."""

    def __init__(self, max_message: int | None = None, segments: Segments | None = None) -> None:
        """``max_message``: the most bytes a message may announce (None: no limit);
        ``segments``: the connection's shared memory (None: frames come only in the stream)."""
        self.max_message = max_message
        self.segments = segments
        self._in_segments: dict[int, int] = {}  # of the message being read: index -> length
        self._staged = bytearray()  # read, not yet parsed
        self._lengths: list[int] | None = None  # of the message being read
        self._frames: list[Any] = []
        self._big: bytearray | mmap.mmap | None = None  # a frame longer than what is staged
        self._big_filled = 0
        # Reads land here first: recv(n) would allocate (and map) n fresh bytes per call.
        self._landing = memoryview(bytearray(_CHUNK))
        self.messages: collections.deque[list[Any]] = collections.deque()

    def read_from(self, sock: socket.socket) -> None:
        """Read what ``sock`` (non-blocking) has now; complete messages go to
        ``messages``. Raises StreamClosed when the peer has closed the connection.

        A read that fills less than it asked for has emptied the socket: no second read
        to hear it say so (one syscall less per message; what arrives after it wakes the
        reader's poll, which is level-triggered, again)."""
        while True:
            try:
                if self._big is not None:
                    view = memoryview(self._big)[self._big_filled :]
                    n = self._receive(sock, view)
                    if n:
                        self._big_filled += n
                        if self._big_filled == len(self._big):
                            self._frames.append(self._big)
                            self._big = None
                            self._parse()
                    drained = n < len(view)
                else:
                    n = self._receive(sock, self._landing)
                    if n:
                        self._land(self._landing[:n])
                    drained = n < _CHUNK
            except (BlockingIOError, InterruptedError):
                return
            if n == 0:
                raise StreamClosed("the peer closed the connection")
            if drained:
                return

    def _receive(self, sock: socket.socket, into: memoryview) -> int:
        if self.segments is None:
            return sock.recv_into(into)
        n, ancdata, flags, _ = sock.recvmsg_into([into], ANCILLARY_SIZE)
        if ancdata or flags:
            try:
                self.segments.take_fds(ancdata, flags)
            except ConnectionError as exc:
                raise StreamClosed(str(exc)) from exc
        return n

    @property
    def inside_large_frame(self) -> bool:
        return self._big is not None

    def _land(self, landed: memoryview) -> None:
        """Parse what a read brought; nothing left over from before (the usual case): where
        it landed, staging only the rest (one copy of the bytes, not two)."""
        staged = self._staged
        if staged:
            staged += landed
            self._parse()
            return
        pos = self._parse_view(landed)
        if pos >= 0:
            staged += landed[pos:]

    def _parse(self) -> None:
        staged = self._staged
        with memoryview(staged) as view:  # released before ``staged`` is resized below
            pos = self._parse_view(view)
            if pos < 0:  # all of it went to a large frame
                pos = len(staged)
        del staged[:pos]

    def _parse_view(self, staged: memoryview) -> int:
        """Parse complete messages from ``staged``; returns how far it got, or -1 when the
        rest went into a large frame."""
        pos = 0
        while True:
            if self._lengths is None:
                if len(staged) - pos < _COUNT.size:
                    break
                (count,) = _COUNT.unpack_from(staged, pos)
                if count == RELEASE and self.segments is not None:
                    released = self._released(staged, pos)
                    if released < 0:
                        break
                    pos = released
                    continue
                if not 0 < count <= _MAX_FRAMES:
                    raise StreamClosed(f"a message of {count} frames: the peer is broken")
                if len(staged) - pos < _COUNT.size + count * _LENGTH.size:
                    break
                pos += _COUNT.size
                self._lengths = list(_lengths_of(count).unpack_from(staged, pos))
                pos += count * _LENGTH.size
                announced = self._announced(self._lengths)
                if self.max_message is not None and announced > self.max_message:
                    raise StreamClosed(
                        f"a message of {announced} bytes announced, over the limit of "
                        f"{self.max_message}: the peer is broken"
                    )
                self._frames = []
            lengths = self._lengths
            while len(self._frames) < len(lengths):
                length = lengths[len(self._frames)]
                available = len(staged) - pos
                if available >= length:
                    self._frames.append(bytes(staged[pos : pos + length]))
                    pos += length
                    continue
                # The rest of this frame is still in the socket: read it in place (a large
                # one into a mapping: a bytearray would be zero-filled, all of it, at once).
                self._big = mmap.mmap(-1, length) if length >= _MAPPED else bytearray(length)
                self._big[:available] = staged[pos:]
                self._big_filled = available
                return -1
            if self._in_segments:
                self._map_segments()
            self.messages.append(self._frames)
            self._lengths = None
            self._frames = []
        return pos

    def _announced(self, lengths: list[int]) -> int:
        """What the message's frames weigh; the lengths of those in segments become the
        length of their id in the stream."""
        total = sum(lengths)
        if self.segments is None or total < SEGMENT_BIT:  # none has the bit
            return total
        for i, n in enumerate(lengths):
            if n & SEGMENT_BIT:
                self._in_segments[i] = n & ~SEGMENT_BIT
                lengths[i] = _LENGTH.size
        return sum(lengths) + sum(self._in_segments.values())

    def _map_segments(self) -> None:
        assert self.segments is not None
        try:
            for i, length in self._in_segments.items():
                self._frames[i] = self.segments.open(self._frames[i], length)
        except ConnectionError as exc:
            raise StreamClosed(str(exc)) from exc
        finally:
            self._in_segments = {}

    def _released(self, staged: memoryview, pos: int) -> int:
        """Parse a release at ``pos``; returns where it ends, or -1 when incomplete."""
        assert self.segments is not None
        head = _COUNT.size * 2
        if len(staged) - pos < head:
            return -1
        (count,) = _COUNT.unpack_from(staged, pos + _COUNT.size)
        if count > _MAX_FRAMES:
            raise StreamClosed(f"a release of {count} segments: the peer is broken")
        end = pos + head + count * _LENGTH.size
        if len(staged) < end:
            return -1
        ids = [_LENGTH.unpack_from(staged, pos + head + i * 8)[0] for i in range(count)]
        self.segments.released(ids)
        return end


@functools.lru_cache(maxsize=64)
def _lengths_of(count: int) -> struct.Struct:
    """The layout of a message's ``count`` frame lengths."""
    return struct.Struct(f"<{count}Q")


def _prefix(lengths: Sequence[int]) -> bytes:
    return _prefix_of(len(lengths)).pack(len(lengths), *lengths)


@functools.lru_cache(maxsize=64)
def _prefix_of(count: int) -> struct.Struct:
    """The layout of a message's frame count and its ``count`` frame lengths."""
    return struct.Struct(f"<I{count}Q")


def _release(ids: Sequence[int]) -> memoryview:
    return memoryview(struct.pack(f"<II{len(ids)}Q", RELEASE, len(ids), *ids))


class FrameWriter:
    """Writes messages to a non-blocking stream socket; what the socket does not take now
    waits in order (as views of the caller's buffers, never copies) for ``flush``."""

    def __init__(self, segments: Segments | None = None) -> None:
        self.pending: collections.deque[memoryview] = collections.deque()
        self.segments = segments
        # Descriptors of segments queued: each goes with the first send after it is queued,
        # so it arrives no later than its frame, and in order.
        self.fds: list[int] = []

    def write(self, sock: socket.socket, frames: Sequence[Any]) -> bool:
        """Queue one message and send what the socket takes; True when all is sent."""
        views = [memoryview(f).cast("B") for f in frames]
        lengths = [v.nbytes for v in views]
        segments = self.segments
        quiet = segments is None or segments.quiet(max(lengths))
        if quiet and not self.pending and not self.fds:
            return self._send_now(sock, views, lengths)  # the usual small message
        if segments is not None:
            if finished := segments.finished():
                self.pending.append(_release(finished))
            if segments.min_size is not None:
                for i, view in enumerate(views):
                    if len(self.fds) >= MAX_FDS_PER_SEND:
                        break  # the rest through the socket: all queued ones go in one send
                    if view.nbytes >= segments.min_size and (put := segments.put(view)):
                        body, fd = put
                        views[i] = memoryview(body)
                        lengths[i] = view.nbytes | SEGMENT_BIT
                        self.fds.append(fd)
        self.pending.append(memoryview(_prefix(lengths)))
        self.pending.extend(v for v in views if v.nbytes)
        return self.flush(sock)

    def _send_now(self, sock: socket.socket, views: list[memoryview], lengths: list[int]) -> bool:
        """Send a message with nothing queued before it, no descriptor nor release to go
        with it; what the socket does not take is queued."""
        head = memoryview(_prefix(lengths))
        try:
            sent = sock.sendmsg([head, *views] if len(views) < _IOV_MAX else [head])
        except (BlockingIOError, InterruptedError):
            sent = 0
        if sent == head.nbytes + sum(lengths):
            return True
        self.pending.append(head)
        self.pending.extend(v for v in views if v.nbytes)
        while sent:  # drop what went
            first = self.pending[0]
            if sent >= first.nbytes:
                sent -= first.nbytes
                self.pending.popleft()
            else:
                self.pending[0] = first[sent:]
                sent = 0
        return self.flush(sock)

    def flush(self, sock: socket.socket) -> bool:
        pending = self.pending
        while pending:
            batch = [pending[i] for i in range(min(len(pending), _IOV_MAX))]
            try:
                if self.fds:
                    rights = array.array("i", self.fds).tobytes()
                    sent = sock.sendmsg(batch, [(socket.SOL_SOCKET, socket.SCM_RIGHTS, rights)])
                    self.fds = []
                else:
                    sent = sock.sendmsg(batch)
            except (BlockingIOError, InterruptedError):
                return False
            while sent:
                head = pending[0]
                if sent >= head.nbytes:
                    sent -= head.nbytes
                    pending.popleft()
                else:
                    pending[0] = head[sent:]
                    sent = 0
        return True


class StreamLink:
    """One end of a connection, for a thread that may block: the worker's side."""

    def __init__(self, path: str, identity: str, shared_min: int | None = None) -> None:
        """``shared_min``: frames from this size go through shared memory (None: never)."""
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.pollable = self.sock.fileno()  # pollers report plain descriptors by number
        self.sock.connect(path)
        self.sock.setblocking(False)
        self.segments = Segments(shared_min)
        self.reader = FrameReader(segments=self.segments)
        self.writer = FrameWriter(self.segments)
        self.send([identity.encode()])  # who we are, before anything else

    def send(self, frames: Sequence[Any]) -> None:
        if not self.writer.write(self.sock, frames):
            while not self.writer.flush(self.sock):
                select.select([], [self.sock], [])

    def receive(self) -> list[list[Any]]:
        """Every message that has arrived, without waiting (except for the rest of a large
        frame already arriving: one poll turn per socket buffer of it would cost more)."""
        self.reader.read_from(self.sock)
        while self.reader.inside_large_frame:
            select.select([self.sock], [], [])
            self.reader.read_from(self.sock)
        messages = list(self.reader.messages)
        self.reader.messages.clear()
        return messages

    def poll(self, timeout_ms: int) -> bool:
        """Wait up to ``timeout_ms`` for a message; whether one is there."""
        if self.reader.messages:
            return True
        ready, _, _ = select.select([self.sock], [], [], timeout_ms / 1000)
        if ready:
            self.reader.read_from(self.sock)
        return bool(self.reader.messages)

    def poller(self) -> select.poll:
        """The system's poller: what ZeroMQ's does for plain descriptors, without pyzmq."""
        return select.poll()

    def close(self) -> None:
        self.sock.close()  # what was sent is in the kernel's hands already
        self.segments.close()
