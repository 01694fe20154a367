"""Large buffers between the control plane and local workers travel through shared memory
(``nbscale_runtime/segments.py``): exact bytes both ways, above and below the threshold;
segments reused, private to the two processes, refused when a peer could resize them, and
gone with their holders (a worker killed mid-input leaves nothing behind)."""

from __future__ import annotations

import array
import fcntl
import gc
import hashlib
import os
import signal
import socket
import struct
import time

import numpy as np
import psutil
import pytest
from conftest import wait_until
from test_stream import _close_sockets, pair  # noqa: F401 (the fixture closes the pairs)

import nbscale
from nbscale_runtime.segments import SEGMENT_BIT, Segments
from nbscale_runtime.stream import FrameReader, FrameWriter, StreamClosed

MIB = 1 << 20
app = nbscale.App("test-shared-memory")


@app.function(max_containers=1, scaledown_window=30)
def doubled(x):
    """Inputs are writable on the worker (the caller's copy is not touched)."""
    if isinstance(x, np.ndarray):
        x *= 2
        return x
    return x + x


@app.function(max_containers=1, scaledown_window=30)
def digest(x):
    return hashlib.sha256(memoryview(x).cast("B")).hexdigest()


@app.function(max_containers=1, retries=0, scaledown_window=30)
def held(path, a):
    if os.path.exists(path):  # the second attempt, after the kill
        return a.nbytes
    with open(path, "w") as f:
        f.write(str(os.getpid()))
    time.sleep(60)


def memfds(pid: int | str = "self") -> list[str]:
    """This process's descriptors of nbscale's segments."""
    found = []
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith("/memfd:nbscale"):
            found.append(f"/proc/{pid}/fd/{fd}")
    return found


def segment_inodes(pid: int | str = "self") -> set[str]:
    """The segments ``pid`` has mapped or open, by inode."""
    with open(f"/proc/{pid}/maps") as f:
        found = {line.split()[4] for line in f if "/memfd:nbscale" in line}
    return found | {str(os.stat(path).st_ino) for path in memfds(pid)}


def mapped_segments(pid: int | str = "self") -> int:
    with open(f"/proc/{pid}/maps") as f:
        return sum("/memfd:nbscale" in line for line in f)


def receive(
    reader: FrameReader, sock: socket.socket, flush: tuple[FrameWriter, socket.socket] | None = None
) -> list[object]:
    """The next message ``reader`` reads from ``sock`` (sending what ``flush`` holds)."""

    def arrived() -> object:
        for _ in range(1000):  # a socket buffer at a time
            if flush is not None:
                flush[0].flush(flush[1])
            reader.read_from(sock)
            if reader.messages:
                break
        return reader.messages

    wait_until(arrived, timeout=10)
    return reader.messages.popleft()


# --- the transport alone --------------------------------------------------------------------


def test_frames_from_the_threshold_come_in_segments_with_their_exact_bytes():
    a, b = pair()
    sender, receiver = Segments(MIB), Segments(MIB)
    writer, reader = FrameWriter(sender), FrameReader(segments=receiver)
    big = np.random.default_rng(1).random(2 * MIB)  # 16 MiB
    frames = [b"header", os.urandom(MIB - 1), os.urandom(MIB), memoryview(big).cast("B")]
    writer.write(a, frames)
    got = receive(reader, b, (writer, a))
    assert [bytes(f) for f in got] == [bytes(f) for f in frames]
    assert [isinstance(f, memoryview) for f in got] == [False, False, True, True]
    in_place = np.frombuffer(got[3])
    in_place[:] = -1.0  # writable, copy-on-write: the writer's segment keeps its bytes
    again = FrameReader(segments=receiver)
    [segment] = [p for p in memfds() if os.stat(p).st_size >= 16 * MIB]
    fd = os.open(segment, os.O_RDONLY)
    send_fd(a, fd, 16 * MIB)  # the same segment, mapped again
    os.close(fd)
    assert np.array_equal(np.frombuffer(receive(again, b)[0]), big)
    del got, in_place
    sender.close()
    receiver.close()


def test_a_segment_is_written_again_only_once_its_reader_dropped_every_view_of_it():
    a, b = pair()
    sender = Segments(MIB)
    writer, replies = FrameWriter(sender), FrameReader(segments=sender)
    receiver = Segments(MIB)
    reader, answer = FrameReader(segments=receiver), FrameWriter(receiver)
    first = np.full(MIB, 1.0)
    writer.write(a, [b"h", memoryview(first).cast("B")])
    kept = np.frombuffer(receive(reader, b)[1])  # a view the reader's side keeps
    for value in (2.0, 3.0, 4.0):
        writer.write(a, [b"h", memoryview(np.full(MIB, value)).cast("B")])
        frame = receive(reader, b)[1]
        assert np.frombuffer(frame)[0] == value
        del frame
        gc.collect()
        answer.write(b, [b"reply"])  # carries the release of what the reader dropped
        receive(replies, a)
    assert (kept == 1.0).all()  # never overwritten while read
    assert len(memfds()) == 2  # the kept one, and one reused for 2.0, 3.0 and 4.0
    del kept
    gc.collect()
    sender.close()
    receiver.close()
    assert memfds() == [] and mapped_segments() == 0


def test_segments_are_readable_only_by_their_owner():
    a, _ = pair()
    segments = Segments(MIB)
    FrameWriter(segments).write(a, [os.urandom(2 * MIB)])
    [path] = memfds()
    assert os.stat(path).st_mode & 0o777 == 0o600
    assert os.stat(f"/proc/{os.getpid()}/fd").st_mode & 0o077 == 0  # nor its descriptors
    segments.close()


def test_frames_past_what_one_send_or_the_pool_holds_take_the_socket(monkeypatch):
    monkeypatch.setattr("nbscale_runtime.segments.MAX_SEGMENTS", 260)
    a, b = pair()
    sender, receiver = Segments(MIB), Segments(MIB)
    writer, reader = FrameWriter(sender), FrameReader(segments=receiver)
    frames = [b"h"] + [np.full(MIB // 8, float(i)).data for i in range(300)]
    writer.write(a, frames)
    got = receive(reader, b, (writer, a))
    assert [bytes(f) for f in got] == [bytes(f) for f in frames]
    # 250 descriptors at most go in one send: the frames past them took the socket
    assert sum(isinstance(f, memoryview) for f in got) == 250
    writer.write(a, frames[:20])  # 10 more segments, then the pool is full
    got = receive(reader, b, (writer, a))
    assert [bytes(f) for f in got] == [bytes(f) for f in frames[:20]]
    assert sum(isinstance(f, memoryview) for f in got) == 10
    del got
    sender.close()
    receiver.close()


def send_fd(sock: socket.socket, fd: int | None, length: int) -> None:
    prefix = struct.pack("<IQ", 1, length | SEGMENT_BIT) + struct.pack("<Q", 1)
    rights = [] if fd is None else [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [fd]))]
    sock.sendmsg([prefix], rights)


@pytest.mark.parametrize("case", ["unsealed", "too small", "no descriptor", "not a segment"])
def test_a_segment_that_breaks_the_rules_closes_the_connection(case):
    a, b = pair()
    fd = os.memfd_create("x", os.MFD_ALLOW_SEALING)
    os.ftruncate(fd, MIB)
    if case != "unsealed":
        fcntl.fcntl(fd, fcntl.F_ADD_SEALS, fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW)
    r, w = os.pipe()
    sent = {"no descriptor": None, "not a segment": r}.get(case, fd)
    send_fd(a, sent, 2 * MIB if case == "too small" else MIB)
    with pytest.raises(StreamClosed, match="the peer is broken"):
        FrameReader(segments=Segments(MIB)).read_from(b)
    for x in (fd, r, w):
        os.close(x)


# --- real workers ---------------------------------------------------------------------------


def test_arrays_and_bytes_round_trip_exactly_above_and_below_the_threshold():
    rng = np.random.default_rng(7)
    inputs: list[object] = [
        rng.random(128),  # 1 KiB: in the pickle
        rng.integers(0, 255, MIB - 1, dtype=np.uint8),  # out of band, through the socket
        rng.integers(0, 255, MIB, dtype=np.uint8),  # from the threshold: shared memory
        rng.random(2 * MIB).reshape(1024, 2048),  # 16 MiB, 2-D
        os.urandom(100),
        os.urandom(3 * MIB),
    ]
    originals = [x.copy() if isinstance(x, np.ndarray) else x for x in inputs]
    results = list(doubled.map(inputs))
    for x, result in zip(originals, results, strict=True):
        if isinstance(x, np.ndarray):
            assert result.dtype == x.dtype and result.shape == x.shape
            assert np.array_equal(result, x * 2)
            result += 1  # results are writable too
        else:
            assert result == x + x
    for x, original in zip(inputs, originals, strict=True):  # the caller's are untouched
        assert np.array_equal(x, original) if isinstance(x, np.ndarray) else x == original
    sizes = [MIB - 1, MIB, 16 * MIB]
    payloads = [os.urandom(n) for n in sizes]
    assert list(digest.map(payloads)) == [hashlib.sha256(p).hexdigest() for p in payloads]


def test_a_worker_killed_mid_input_leaves_no_segment_behind(tmp_path):
    shm_before = set(os.listdir("/dev/shm"))
    marker = tmp_path / "pid"
    call = held.spawn(str(marker), np.ones(2 * MIB))
    wait_until(lambda: marker.exists() and marker.read_text(), timeout=60)
    pid = int(marker.read_text())
    [read] = segment_inodes(pid)  # the worker reads its input from a segment
    assert read in segment_inodes()  # which the control plane wrote
    os.kill(pid, signal.SIGKILL)
    assert call.get(timeout=60) == 16 * MIB  # retried on a new worker: not the input's fault
    me = psutil.Process()
    holders = [me, *me.children(recursive=True)]
    assert all(read not in segment_inodes(p.pid) for p in holders)  # freed with the worker
    assert set(os.listdir("/dev/shm")) == shm_before  # never a file
    workers = psutil.Process().children(recursive=True)
    nbscale.shutdown()
    psutil.wait_procs(workers, timeout=30)
    gc.collect()
    assert memfds() == [] and mapped_segments() == 0
    assert set(os.listdir("/dev/shm")) == shm_before


def test_the_control_planes_memory_does_not_grow_with_buffer_traffic():
    me = psutil.Process()
    arrays = [np.full(2 * MIB, float(i)) for i in range(6)]  # 16 MiB each

    def traffic() -> None:
        for result, sent in zip(doubled.map(arrays), arrays, strict=True):
            assert result[0] == sent[0] * 2
        gc.collect()

    traffic()
    traffic()  # the segment pools are warm
    warm_rss, warm_fds = me.memory_info().rss, len(memfds())
    for _ in range(8):  # 1.6 GB more each way
        traffic()
    assert me.memory_info().rss - warm_rss < 64 * MIB
    assert len(memfds()) <= warm_fds + 2
