"""Peers that break the rules: only they are dropped, and everyone else carries on.

Another process of the same user can reach the control plane's worker socket (its private
directory is this user's). Here raw Unix sockets speak the stream framing as a hostile or
broken peer would, against this process's real embedded control plane with real worker
processes; and numbers and sizes no setting allows are refused with a clear error.
"""

from __future__ import annotations

import math
import socket
import struct
import time
from collections.abc import Iterator

import psutil
import pytest
from conftest import wait_until

import nbscale
from nbscale.exceptions import InvalidError, SerializationError

app = nbscale.App("test-hostile-peers")


@app.function(max_containers=1, scaledown_window=60)
def echo(x):
    return x


@app.function(max_containers=1, scaledown_window=60)
def another(x):
    return x + 1


@app.function(max_containers=1, scaledown_window=60)
def big(mib):
    return b"x" * (mib << 20)


def worker_socket() -> str:
    endpoint = nbscale.status()["worker_endpoint"]
    assert endpoint.startswith("unix://")
    return endpoint[len("unix://") :]


def frames(*parts: bytes) -> bytes:
    return struct.pack(f"<I{len(parts)}Q", len(parts), *map(len, parts)) + b"".join(parts)


_opened: list[socket.socket] = []


@pytest.fixture(autouse=True)
def _close_sockets() -> Iterator[None]:
    yield
    while _opened:
        _opened.pop().close()


def connect(identity: bytes | None = b"wk-stranger") -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    _opened.append(sock)
    sock.connect(worker_socket())
    if identity is not None:
        sock.sendall(frames(identity))
    return sock


def dropped(sock: socket.socket, timeout: float = 10.0) -> bool:
    """Whether the control plane closed ``sock`` within ``timeout`` seconds."""
    sock.settimeout(timeout)
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False


def test_a_peer_sending_messages_of_no_frames_is_dropped_and_housekeeping_goes_on():
    echo.remote(0)  # the control plane and one pool are up
    sock = connect(identity=None)
    sock.sendall(struct.pack("<I", 0) * 20_000)  # not even an identity: no frames at all
    assert dropped(sock)
    named = connect()
    named.sendall(struct.pack("<I", 0) * 100)
    assert dropped(named)
    # Housekeeping was not wedged: a new pool still gets a worker launched for it.
    assert another.remote(1) == 2
    assert echo.remote(3) == 3


def test_announcing_huge_frames_costs_nothing_and_over_the_limit_drops_the_peer():
    echo.remote(0)
    me = psutil.Process()
    before = me.memory_info().rss
    sock = connect()
    sock.sendall(struct.pack("<IQQ", 2, 1 << 30, 1 << 30) + b"abc")  # 2 GiB announced
    time.sleep(1.0)  # what arrived is read by now
    grown = (me.memory_info().rss - before) / 2**20
    assert grown < 100, f"{grown:.0f} MiB for 3 bytes"
    assert not dropped(sock, timeout=0.5)  # within max_input_mib's twice 1024 MiB: waits
    over = connect()
    over.sendall(struct.pack("<IQQ", 2, 2 << 30, 1 << 30) + b"abc")  # 3 GiB: over the limit
    assert dropped(over)
    assert echo.remote(5) == 5


def test_a_live_workers_identity_cannot_be_taken_over():
    assert echo.remote(1) == 1
    [pool] = [p for p in nbscale.status()["pools"] if p["function"] == "echo"]
    [worker] = pool["workers"]
    thief = connect(worker["id"].encode())
    assert dropped(thief)  # the name is the live worker's
    # Nor may another connection speak for it (its register or heartbeat).
    stranger = connect()
    register = b'["heartbeat","%s",{}]' % worker["id"].encode()
    stranger.sendall(frames(register))
    assert [echo.remote(x) for x in range(5)] == list(range(5))  # the worker still serves


def test_a_flood_of_garbage_is_logged_a_few_times_not_once_a_message(fresh_plane, caplog):
    fresh_plane()  # a new control plane: no warnings of this kind logged yet
    echo.remote(0)
    stranger = connect()
    stranger.sendall(frames(b"not a message") * 20_000)
    assert not dropped(stranger, timeout=2.0)  # undecodable messages are dropped, not the peer
    assert echo.remote(7) == 7
    said = [r.getMessage() for r in caplog.records if "undecodable" in r.getMessage()]
    assert 1 <= len(said) <= 10, f"{len(said)} lines for 20,000 bad messages"
    assert "are counted, not logged" in said[-1]


def test_an_input_or_a_result_over_the_size_limit_fails_clearly(fresh_plane):
    fresh_plane(NBSCALE_MAX_INPUT_MIB="1")
    with pytest.raises(InvalidError, match=r"input 0 is 2.0 MiB, over the limit of 1 MiB"):
        echo.remote(b"x" * (2 << 20))
    with pytest.raises(InvalidError, match=r"input 0 is 2.0 MiB, over the limit of 1 MiB"):
        echo.spawn(b"x" * (2 << 20))
    with pytest.raises(SerializationError, match=r"over the limit of 1 MiB"):
        big.remote(2)
    assert len(big.remote(0)) == 0  # the worker that refused it still serves


# --- numbers that are not numbers ---------------------------------------------------------


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_non_finite_numbers_are_refused_everywhere(value):
    with pytest.raises(InvalidError, match="cpu"):
        app.function(cpu=value)(lambda x: x)
    with pytest.raises(InvalidError, match="timeout"):
        app.function(timeout=value)(lambda x: x)
    with pytest.raises(InvalidError, match="scaledown_window"):
        echo.update_autoscaler(scaledown_window=value)
    with pytest.raises(InvalidError, match="heartbeat_timeout"):
        nbscale.config(heartbeat_timeout=value)
    call = echo.spawn(1)
    with pytest.raises(InvalidError, match="timeout must be a finite number"):
        call.get(timeout=value)
    assert call.get(timeout=30) == 1


def test_numbers_the_settings_table_refuses_in_the_environment(fresh_plane, monkeypatch):
    fresh_plane(NBSCALE_HEARTBEAT_INTERVAL="nan")
    with pytest.raises(InvalidError, match="heartbeat_interval"):
        echo.remote(1)
    monkeypatch.setenv("NBSCALE_HEARTBEAT_INTERVAL", "0.5")
    wait_until(lambda: echo.remote(2) == 2)
