"""Only authenticated peers are served: CurveZMQ over TCP; locally, a Unix socket in a private
directory."""

from __future__ import annotations

import contextlib
import json
import os
import pickle
import socket
import stat
from pathlib import Path

import pytest
import zmq
from conftest import wait_until

import nbscale
from nbscale_runtime import protocol

app = nbscale.App("test-security")


@app.function(max_containers=1, scaledown_window=30)
def double(x):
    return 2 * x


@app.function(max_containers=1, scaledown_window=30)
def slow_double(x):
    import time

    time.sleep(1.0)
    return 2 * x


class _Exploit:
    """Unpickling this creates a file: proof that someone unpickled attacker bytes."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


def _rogue_messages(call_id: str, marker: str) -> list[list[bytes]]:
    evil = pickle.dumps(_Exploit(marker))
    register = protocol.Register(
        "wk-rogue", "pl-x", protocol.PROTOCOL_VERSION, "3.11.0", "3.1", 1, []
    )
    item = [call_id, 0, 1, protocol.STATUS_OK, 0, len(evil), 0, 0.0, "wk-rogue", ""]
    outputs = protocol.Outputs([item])
    return [protocol.encode(register), protocol.encode(outputs, [evil])]


def _rogue_peer(ctx: zmq.Context, endpoint: str, curve_server_key: str | None) -> zmq.Socket:
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    if curve_server_key:
        public, secret = zmq.curve_keypair()  # a key pair the control plane never issued
        sock.curve_serverkey = curve_server_key.encode()
        sock.curve_publickey = public
        sock.curve_secretkey = secret
    sock.connect(endpoint)
    return sock


@pytest.mark.parametrize("with_curve_client", [False, True], ids=["no-key", "unknown-key"])
def test_unauthenticated_worker_peer_gets_nothing_and_cannot_inject(
    fresh_plane, tmp_path, with_curve_client
):
    fresh_plane(NBSCALE_WORKER_TRANSPORT="tcp")
    assert list(double.map(range(5))) == [0, 2, 4, 6, 8]  # real workers authenticate fine
    info = nbscale.status()
    endpoint = info["worker_endpoint"]
    assert endpoint.startswith("tcp://127.0.0.1:")  # loopback, never 0.0.0.0
    server_key = info["worker_public_key"] if with_curve_client else None

    call = slow_double.spawn(21)
    marker = str(tmp_path / "pwned")
    ctx = zmq.Context()
    try:
        sock = _rogue_peer(ctx, endpoint, server_key)
        for frames in _rogue_messages(call.object_id, marker):
            # with no connection ever allowed, nothing can even be queued
            with contextlib.suppress(zmq.Again):
                sock.send_multipart(frames, zmq.NOBLOCK)
        assert not sock.poll(1000)  # the control plane never answers it
        sock.close()
    finally:
        ctx.term()
    assert call.get(timeout=30) == 42  # the real result, not the injected one
    assert not os.path.exists(marker)
    assert double.remote(4) == 8  # the control plane keeps serving


def test_worker_keys_travel_in_a_private_file_not_argv_or_environment(fresh_plane):
    # A spawned worker: a forked one's argv and initial environment are its zygote's
    # (``--fd N``, no keys); its own ``sys.argv`` is checked in test_zygote.py.
    fresh_plane(NBSCALE_WORKER_TRANSPORT="tcp", NBSCALE_PROCESS_ZYGOTE="off")
    double.remote(1)
    wait_until(lambda: double.get_current_stats().containers["idle"] == 1)
    worker = double.get_current_stats().workers[0]
    pid = worker["pid"]
    cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    environ = Path(f"/proc/{pid}/environ").read_bytes()
    config_path = cmdline[cmdline.index(b"--config") + 1].decode()
    mode = stat.S_IMODE(os.stat(config_path).st_mode)
    assert mode == 0o600
    assert stat.S_IMODE(os.stat(os.path.dirname(config_path)).st_mode) == 0o700
    secret = json.loads(Path(config_path).read_text())["secret_key"].encode()
    assert secret and secret not in b" ".join(cmdline) and secret not in environ


def test_local_endpoints_live_in_a_private_directory(fresh_plane):
    fresh_plane()
    double.remote(1)
    endpoint = nbscale.status()["worker_endpoint"]
    assert endpoint.startswith("unix://")  # a Unix socket, reachable through its directory
    directory = os.path.dirname(endpoint[len("unix://") :])
    assert stat.S_IMODE(os.stat(directory).st_mode) == 0o700


def test_garbage_on_the_local_worker_socket_is_dropped_and_serving_goes_on(fresh_plane):
    fresh_plane()
    assert double.remote(1) == 2
    path = nbscale.status()["worker_endpoint"][len("unix://") :]
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as peer:
        peer.connect(path)
        peer.sendall(b"\xff" * 64)  # a frame count past any limit
        peer.settimeout(10)
        with contextlib.suppress(ConnectionResetError):
            assert peer.recv(1) == b""  # the control plane hung up on the broken peer
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as peer:
        peer.connect(path)  # an identity, then garbage: dropped, or left waiting for more
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            peer.sendall(b"\x01\x00\x00\x00\x03\x00\x00\x00\x00\x00\x00\x00wk-1")
            peer.sendall(b"\x01\x00\x00\x00\x05\x00\x00\x00\x00\x00\x00\x00[nul]")
    assert double.remote(2) == 4


def test_workers_dial_the_worker_address_an_interface_names(fresh_plane):
    fresh_plane(NBSCALE_WORKER_TRANSPORT="tcp", NBSCALE_WORKER_ADDRESS="lo")
    assert double.remote(3) == 6
    assert nbscale.status()["worker_endpoint"].startswith("tcp://127.0.0.1:")


def test_bind_host_still_works_as_the_deprecated_name_of_worker_address(fresh_plane, caplog):
    fresh_plane(NBSCALE_WORKER_TRANSPORT="tcp", NBSCALE_BIND_HOST="localhost")
    assert double.remote(4) == 8
    assert nbscale.status()["worker_endpoint"].startswith(("tcp://127.0.0.1:", "tcp://[::1]:"))
    assert "bind_host setting is deprecated" in caplog.text


def test_every_interface_is_refused_unless_explicitly_allowed(fresh_plane):
    fresh_plane(NBSCALE_WORKER_TRANSPORT="tcp", NBSCALE_WORKER_ADDRESS="0.0.0.0")
    with pytest.raises(nbscale.LaunchError, match=r"every network interface.*allow_all_interfaces"):
        double.remote(1)
    fresh_plane(NBSCALE_ALLOW_ALL_INTERFACES="1")
    assert double.remote(5) == 10  # CurveZMQ still: only our workers' keys get in
    host = nbscale.status()["worker_endpoint"].removeprefix("tcp://").rpartition(":")[0]
    assert host not in ("0.0.0.0", "") and not host.startswith("127.")  # one workers can dial
