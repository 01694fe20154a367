"""Large frames between the control plane and its local workers, through shared memory.

A frame of at least ``min_size`` bytes does not travel through the Unix socket: its writer
copies it into a shared segment (an anonymous ``memfd``, sealed against shrinking and
growing) and sends the segment's descriptor with ``SCM_RIGHTS``; the reader maps it and hands
the mapping on as the frame, so a numpy array unpickled from it is read in place. Through
the socket, 16 MiB cost two copies and a page fault per fresh page on the reading side
(1.3-1.6 GB/s for W4); a warm segment costs one copy (0.45 ms for 16 MiB on the reference
machine) and the reader's mapping.

The writer keeps its segments in a pool and reuses one once its reader says it is done with
it: when the reader's mapping is unreachable (no array, no view of it left), a finalizer
notes it, and the next message the reader's end writes carries a release. A fresh segment's
first write costs a page fault per page (7 ms for 16 MiB), so the pool is what makes it
fast; free segments past ``POOL_FREE_BYTES`` are closed.

Nothing is ever named in a filesystem: a segment is reachable only through descriptors held
by the two processes (and ``/proc/<pid>/fd``, which only their user can read; the segment's
own mode is 0600). When a process dies the kernel closes its descriptors and mappings, and
a segment whose last holder is gone is freed, so a killed worker leaves nothing behind.

A peer is not trusted: a descriptor that is not a sealed segment at least as large as its
frame (one the peer could shrink under our mapping would make reading it crash this
process with SIGBUS) closes the connection.
"""

from __future__ import annotations

import array
import collections
import ctypes
import fcntl
import mmap
import os
import socket
import struct
import weakref
from dataclasses import dataclass
from typing import Any

DEFAULT_MIN_SIZE = 1 << 20  # the shared_memory_min_kib setting's default
POOL_FREE_BYTES = 256 << 20  # free segments kept for reuse, per connection
MAX_SEGMENTS = 256  # per connection; past it (results a caller keeps), frames take the socket
SEGMENT_BIT = 1 << 63  # in a frame's announced length: the frame is in a segment
RELEASE = 0xFFFFFFFF  # in place of a frame count: a release of segments follows
MAX_FDS_PER_SEND = 250  # under the kernel's SCM_MAX_FD (253)
_MAX_UNCLAIMED_FDS = 1024  # descriptors received ahead of their frames: more is a broken peer
_ROUND = 1 << 20  # segment sizes are multiples of this, so that they fit more frames
_ID = struct.Struct("<Q")
_SEALS = fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW | fcntl.F_SEAL_SEAL
_FD_SIZE = array.array("i").itemsize
ANCILLARY_SIZE = socket.CMSG_SPACE(MAX_FDS_PER_SEND * _FD_SIZE)
_libc = ctypes.CDLL(None, use_errno=True)
_libc.mmap.restype = ctypes.c_void_p
_libc.mmap.argtypes = [
    ctypes.c_void_p,
    ctypes.c_size_t,
    ctypes.c_int,
    ctypes.c_int,
    ctypes.c_int,
    ctypes.c_long,
]
_libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
_MAP_FAILED = ctypes.c_void_p(-1).value


class SegmentError(ConnectionError):
    """The peer sent a segment that breaks the rules; its connection is dropped."""


@dataclass(slots=True)
class _Segment:
    fd: int
    memory: ctypes.Array[ctypes.c_ubyte]
    size: int
    busy: bool = False


class Segments:
    """One connection's shared memory: the pool this end writes into, and what it tells
    the peer about the peer's segments it has finished reading."""

    def __init__(self, min_size: int | None = DEFAULT_MIN_SIZE) -> None:
        """``min_size``: frames from this size go through a segment (None or 0: none do)."""
        self.min_size = min_size or None
        self._pool: dict[int, _Segment] = {}
        self._next_id = 0
        self._free_bytes = 0
        # ids of the peer's segments we no longer read; appended by finalizers, on any thread
        self._finished: collections.deque[int] = collections.deque()
        self.received_fds: collections.deque[int] = collections.deque()  # not claimed yet

    # --- writing ------------------------------------------------------------------------

    def put(self, frame: memoryview) -> tuple[bytes, int] | None:
        """Copy ``frame`` into a free segment; returns what travels in the stream in its
        place (the segment's id) and the descriptor to send with it; None when the frame
        must go through the socket (too many segments held by the peer, or no descriptor
        or memory left for a new one)."""
        size = frame.nbytes
        seg_id, seg = self._free_fitting(size)
        if seg is None:
            if len(self._pool) >= MAX_SEGMENTS:
                return None
            try:
                seg_id, seg = self._create(size)
            except OSError:
                return None
        else:
            self._free_bytes -= seg.size
        seg.busy = True
        memoryview(seg.memory).cast("B")[:size] = frame
        return _ID.pack(seg_id), seg.fd

    def _free_fitting(self, size: int) -> tuple[int, _Segment | None]:
        best: tuple[int, _Segment | None] = (-1, None)
        for seg_id, seg in self._pool.items():
            if not seg.busy and seg.size >= size and (best[1] is None or seg.size < best[1].size):
                best = (seg_id, seg)
        return best

    def _create(self, size: int) -> tuple[int, _Segment]:
        size = -(-size // _ROUND) * _ROUND
        fd = os.memfd_create("nbscale", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
        try:
            os.fchmod(fd, 0o600)  # memfd_create makes it 0777
            os.ftruncate(fd, size)
            fcntl.fcntl(fd, fcntl.F_ADD_SEALS, _SEALS)
            seg = _Segment(fd, _map(fd, size, mmap.MAP_SHARED), size)
        except BaseException:
            os.close(fd)
            raise
        self._next_id += 1
        self._pool[self._next_id] = seg
        return self._next_id, seg

    def released(self, ids: list[int]) -> None:
        """The peer finished reading these segments: they may be written again."""
        for seg_id in ids:
            seg = self._pool.get(seg_id)
            if seg is None or not seg.busy:
                continue  # a peer repeating itself harms only its own speed
            seg.busy = False
            self._free_bytes += seg.size
        while self._free_bytes > POOL_FREE_BYTES:  # the largest free ones go first
            seg_id, seg = max(
                ((i, s) for i, s in self._pool.items() if not s.busy), key=lambda x: x[1].size
            )
            self._free_bytes -= seg.size
            self._discard(seg_id)

    def _discard(self, seg_id: int) -> None:
        seg = self._pool.pop(seg_id)
        _libc.munmap(ctypes.addressof(seg.memory), seg.size)  # no view of it is ever kept
        os.close(seg.fd)  # the peer's mapping, if any, keeps the memory until it goes

    # --- reading ------------------------------------------------------------------------

    def take_fds(self, ancdata: list[tuple[int, int, bytes]], flags: int) -> None:
        """Keep the descriptors that came with a read, in order."""
        for level, kind, data in ancdata:
            if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                fds = array.array("i")
                fds.frombytes(data[: len(data) - len(data) % _FD_SIZE])
                self.received_fds.extend(fds)
        if flags & socket.MSG_CTRUNC:
            raise SegmentError("descriptors were cut off: the peer sent too many at once")
        if len(self.received_fds) > _MAX_UNCLAIMED_FDS:
            raise SegmentError("descriptors sent without frames: the peer is broken")

    def open(self, body: Any, length: int) -> memoryview:
        """The frame ``length`` bytes long in the segment named by ``body`` (its id),
        whose descriptor came before: mapped copy-on-write, so that an array read from it
        can be written to (the peer never sees it)."""
        if not self.received_fds:
            raise SegmentError("a segment frame without its descriptor: the peer is broken")
        fd = self.received_fds.popleft()
        try:
            (seg_id,) = _ID.unpack(bytes(body))
            if fcntl.fcntl(fd, fcntl.F_GET_SEALS) & _SEALS != _SEALS:
                raise SegmentError("a segment the peer could resize: the peer is broken")
            if os.fstat(fd).st_size < length:
                raise SegmentError("a segment smaller than its frame: the peer is broken")
            memory = _map(fd, length, mmap.MAP_PRIVATE)
        except (OSError, struct.error) as exc:
            raise SegmentError(f"an unusable segment ({exc}): the peer is broken") from exc
        finally:
            os.close(fd)
        # Every view of it, and every array read from it, holds ``memory``: when it goes,
        # nothing can read the mapping any more.
        done = weakref.finalize(
            memory, _unmapped, ctypes.addressof(memory), length, self._finished, seg_id
        )
        done.atexit = False  # what still holds it at exit may read it: the exit unmaps it
        return memoryview(memory).cast("B")

    def quiet(self, largest: int) -> bool:
        """Whether a message whose largest frame is ``largest`` bytes goes through the
        stream alone: no frame of it for a segment, no release to send first."""
        return (self.min_size is None or largest < self.min_size) and not self._finished

    def finished(self) -> list[int]:
        """The peer's segments read and dropped since the last call, to release."""
        ids = []
        while self._finished:
            ids.append(self._finished.popleft())
        return ids

    def close(self) -> None:
        """The connection is gone: our descriptors go (mappings the peer or our own
        frames still hold keep their memory until they are dropped)."""
        for seg_id in list(self._pool):
            self._discard(seg_id)
        while self.received_fds:
            os.close(self.received_fds.popleft())


def _map(fd: int, length: int, flags: int) -> ctypes.Array[ctypes.c_ubyte]:
    """``length`` bytes of ``fd`` mapped. Not ``mmap.mmap``: before Python 3.13 it keeps a
    duplicate of the descriptor open while it lives, and a caller holding ten thousand
    results would hold ten thousand descriptors, past the process's limit."""
    address = _libc.mmap(None, length, mmap.PROT_READ | mmap.PROT_WRITE, flags, fd, 0)
    if address in (None, _MAP_FAILED):
        errno = ctypes.get_errno()
        raise OSError(errno, os.strerror(errno))
    return (ctypes.c_ubyte * length).from_address(address)


def _unmapped(address: int, length: int, finished: collections.deque[int], seg_id: int) -> None:
    _libc.munmap(address, length)
    finished.append(seg_id)
