"""The local workers' transport: multipart messages over a Unix stream socket."""

from __future__ import annotations

import random
import select
import socket
import threading

import pytest

from nbscale_runtime.stream import FrameReader, FrameWriter, StreamClosed, StreamLink

OPEN: list[socket.socket] = []


@pytest.fixture(autouse=True)
def _close_sockets():
    yield
    while OPEN:
        OPEN.pop().close()


def pair() -> tuple[socket.socket, socket.socket]:
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    a.setblocking(False)
    b.setblocking(False)
    OPEN.extend((a, b))
    return a, b


def encoded(messages: list[list[bytes]]) -> bytes:
    """What a writer puts on the wire for ``messages``."""
    a, b = pair()
    writer = FrameWriter()
    data = bytearray()
    for frames in messages:
        done = writer.write(a, frames)
        while not done:  # the socket is full: empty it, then go on
            data += b.recv(1 << 20)
            done = writer.flush(a)
    a.close()
    while chunk := b.recv(1 << 20):
        data += chunk
    return bytes(data)


MESSAGES = [[b'["op"]'], [b"h", b"", b"x" * 1000], [b"big", bytes(range(256)) * 4096]]


def test_messages_survive_any_split_of_the_stream():
    wire = encoded(MESSAGES)
    rng = random.Random(7)
    for _ in range(20):
        a, b = pair()
        reader = FrameReader()
        pos = 0
        while pos < len(wire):
            step = rng.choice([1, 3, 17, 4096, 70_000])
            a.sendall(wire[pos : pos + step])
            pos += step
            reader.read_from(b)
        assert [[bytes(f) for f in m] for m in reader.messages] == MESSAGES


def wait(sock: socket.socket, *, write: bool = False) -> None:
    select.select([] if write else [sock], [sock] if write else [], [], 1.0)


def test_a_large_frame_is_read_whole_while_the_writer_is_still_sending():
    a, b = pair()
    big = bytes(range(256)) * 40_000  # 10 MiB: many socket buffers
    writer = FrameWriter()
    assert not writer.write(a, [b"header", big])  # the socket took only part of it

    def pump() -> None:
        while not writer.flush(a):
            wait(a, write=True)

    pumping = threading.Thread(target=pump)
    pumping.start()
    reader = FrameReader()
    while not reader.messages:
        wait(b)
        reader.read_from(b)
    pumping.join()
    ((header, body),) = reader.messages
    assert header == b"header" and bytes(body) == big


def test_a_broken_or_closed_peer_ends_the_stream():
    a, b = pair()
    a.sendall(b"\xff\xff\xff\xff")  # 4 billion frames
    with pytest.raises(StreamClosed, match="frames"):
        FrameReader().read_from(b)
    a, b = pair()
    a.close()
    with pytest.raises(StreamClosed):
        FrameReader().read_from(b)


def test_a_link_names_itself_first(tmp_path):
    path = str(tmp_path / "s")
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(path)
    server.listen(1)
    OPEN.append(server)
    link = StreamLink(path, "wk-1")
    conn, _ = server.accept()
    OPEN.append(conn)
    conn.setblocking(False)
    link.send([b'["hello"]', b"payload"])
    reader = FrameReader()
    while len(reader.messages) < 2:
        wait(conn)
        reader.read_from(conn)
    assert list(reader.messages) == [[b"wk-1"], [b'["hello"]', b"payload"]]
    FrameWriter().write(conn, [b"reply"])
    assert link.poll(1000) and link.receive() == [[b"reply"]]
    link.close()
