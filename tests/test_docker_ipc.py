"""Docker workers over a Unix socket of their own, with shared memory
(NBSCALE_DOCKER_TRANSPORT=ipc): large arrays go in and come out through segments, read in
place on both sides, by the containers' non-root user under Docker's default seccomp
profile; a container can speak only for its own worker, and its nested calls come over the
same socket; a container that kills itself mid-input fails only that input, one killed
from outside has its input retried, and neither leaves a segment behind; an engine that
cannot share this kernel is refused, saying what to do."""

from __future__ import annotations

import contextlib
import gc
import json
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Iterator

import cloudpickle
import nested_app
import numpy as np
import psutil
import pytest
from conftest import wait_until
from docker_pools import pool_containers

import nbscale
from nbscale_server.launchers.docker_engine import user_network_name

pytestmark = pytest.mark.docker

cloudpickle.register_pickle_by_value(sys.modules[__name__])
cloudpickle.register_pickle_by_value(nested_app)

app = nbscale.App("test-docker-ipc")
MIB = 1 << 20
CONTROL_SOCKET = "/run/nbscale/control.sock"


@pytest.fixture(scope="module", autouse=True)
def _ipc(docker_plane):
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("NBSCALE_DOCKER_TRANSPORT", "ipc")
        yield docker_plane


def in_segment(array: np.ndarray) -> bool:
    """Whether ``array``'s bytes lie in a mapping of one of nbscale's shared segments."""
    address = array.__array_interface__["data"][0]
    with open("/proc/self/maps") as f:
        for line in f:
            if "/memfd:nbscale" in line:
                start, end = (int(x, 16) for x in line.split()[0].split("-"))
                if start <= address < end:
                    return True
    return False


def segment_inodes(pid: int | str = "self") -> set[str]:
    """The segments ``pid`` has mapped or open, by inode."""
    with open(f"/proc/{pid}/maps") as f:
        found = {line.split()[4] for line in f if "/memfd:nbscale" in line}
    for fd in os.listdir(f"/proc/{pid}/fd"):
        with contextlib.suppress(OSError):
            if os.readlink(f"/proc/{pid}/fd/{fd}").startswith("/memfd:nbscale"):
                found.add(str(os.stat(f"/proc/{pid}/fd/{fd}").st_ino))
    return found


@app.function(max_containers=1, scaledown_window=30)
def doubled(a):
    """Twice ``a`` (a new array), and what the worker saw: its user, whether ``a`` was
    read in place from a segment, its mounts under /run/nbscale."""
    return a * 2, os.getuid(), in_segment(a), sorted(os.listdir("/run/nbscale"))


@app.function(max_containers=1, scaledown_window=30)
def impostor(other: str) -> tuple[bool, bool]:
    """Connect to this worker's socket as another worker, then as a fourth connection of
    its own: whether the control plane drops each."""
    from nbscale_runtime.stream import StreamLink

    with open("/run/nbscale/worker.json") as f:
        mine = json.load(f)["worker_id"]
    answers = []
    for identity in (other, f"{mine}:probe"):
        link = StreamLink(CONTROL_SOCKET, identity)
        link.sock.settimeout(5.0)
        try:
            answers.append(link.sock.recv(1) == b"")  # closed by the control plane
        except TimeoutError:
            answers.append(False)  # still open
        link.close()
    return answers[0], answers[1]


@app.function(max_containers=1, retries=0, scaledown_window=30)
def crashes_on(a, die):
    if die:
        assert in_segment(a)  # killed while it holds its input's segment
        os.kill(os.getpid(), signal.SIGKILL)
    return int(a[0])


def test_large_arrays_go_in_and_out_through_shared_memory(_ipc):
    assert nbscale.status()["worker_endpoint"].startswith("unix://")
    a = np.random.default_rng(3).random(4 * MIB)  # 32 MiB
    result, uid, read_in_place, mounts = doubled.remote(a)
    assert np.array_equal(result, a * 2)
    assert uid != 0  # the containers' unprivileged user, Docker's default seccomp profile
    assert read_in_place  # the input came in a segment the worker mapped
    assert in_segment(result)  # and the result in one of the container's, read in place
    assert mounts == ["control.sock", "register", "worker.json"]  # its own socket alone
    result += 1  # writable (copy-on-write: the container's segment keeps its bytes)
    assert segment_inodes()  # the control plane keeps its segments for the next input
    [container] = pool_containers(_ipc, "doubled")
    container.reload()
    host = container.attrs["HostConfig"]
    assert host["NetworkMode"] == user_network_name()  # it keeps its network
    assert host["ReadonlyRootfs"] and host["CapDrop"] == ["ALL"]
    # under the engine's default seccomp profile, which lets memfds and descriptors through
    assert "name=seccomp,profile=default" in _ipc.info()["SecurityOptions"]
    assert not any("seccomp" in option for option in host.get("SecurityOpt") or [])
    assert not host.get("IpcMode", "").startswith(("host", "container:"))  # its own IPC


def test_a_container_speaks_only_for_its_own_worker():
    other, own_probe = impostor.remote("wk-000000000000")
    assert other  # dropped: it named another worker
    assert not own_probe  # kept: its own worker's connection


def test_a_nested_call_comes_over_the_containers_own_socket():
    """A worker's client connection (``wk-X:client``) is one its socket lets it make."""
    nested_app.check_nested_remote()


def test_a_container_killed_mid_input_frees_its_segments_and_fails_only_its_input(_ipc):
    arrays = [np.full(2 * MIB, float(i)) for i in range(5)]  # 16 MiB each
    others = segment_inodes()  # of other pools' containers
    assert list(crashes_on.map(arrays, [False] * 5)) == list(range(5))  # pools warm
    gc.collect()
    before = segment_inodes() - others  # the control plane's, for this container's connection
    assert before
    results = list(crashes_on.map(arrays, [i == 2 for i in range(5)], return_exceptions=True))
    error = results[2]
    assert isinstance(error, nbscale.WorkerLostError) and error.index == 2
    assert "counted against the function's retries" in str(error)
    assert results[:2] + results[3:] == [0, 1, 3, 4]
    del results, error
    gc.collect()
    # Every segment the control plane wrote for the dead container's connection is closed,
    # and the container's mapping of them went with it: no process holds them any more.
    wait_until(lambda: not before & segment_inodes(), timeout=30)


@app.function(max_containers=1, retries=0, scaledown_window=30)
def held(a):
    """Holds its input's segment until its container is killed; runs at once when retried."""
    marks = nbscale.Dict.from_name("test-docker-ipc-held", create_if_missing=True)
    if not marks.get("started"):
        marks["started"] = os.getpid()
        time.sleep(120)
    return a.nbytes


def test_a_container_killed_from_outside_frees_the_segment_it_read(_ipc):
    marks = nbscale.Dict.from_name("test-docker-ipc-held", create_if_missing=True)
    call = held.spawn(np.ones(2 * MIB))  # 16 MiB
    wait_until(lambda: marks.get("started"), timeout=60)
    [container] = pool_containers(_ipc, "held", sparse=False, ignore_removed=True)
    init = psutil.Process(container.attrs["State"]["Pid"])
    [worker] = init.children()  # the worker, as this host sees it
    [read] = segment_inodes(worker.pid)  # it reads its input from a segment
    assert read in segment_inodes()  # which the control plane wrote
    container.kill()
    assert call.get(timeout=60) == 16 * MIB  # retried in a new container: not the input's fault
    assert read not in segment_inodes()  # freed with the container's connection


@contextlib.contextmanager
def engine_over_tcp() -> Iterator[str]:
    """The local engine reached as a remote one: tcp://127.0.0.1:PORT, forwarded to its
    socket."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.2)
    opened: list[socket.socket] = []
    threads: list[threading.Thread] = []
    stop = threading.Event()

    def pump(source: socket.socket, sink: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := source.recv(65536):
                sink.sendall(data)
            sink.shutdown(socket.SHUT_WR)

    def serve() -> None:
        while not stop.is_set():
            try:
                client, _ = listener.accept()
            except TimeoutError:
                continue
            engine = socket.socket(socket.AF_UNIX)
            opened.extend((client, engine))
            engine.connect("/var/run/docker.sock")
            for a, b in ((client, engine), (engine, client)):
                threads.append(threading.Thread(target=pump, args=(a, b), daemon=True))
                threads[-1].start()

    server = threading.Thread(target=serve, daemon=True)
    server.start()
    try:
        yield f"tcp://127.0.0.1:{listener.getsockname()[1]}"
    finally:
        stop.set()
        server.join(5)
        listener.close()
        for sock in opened:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        for thread in threads:
            thread.join(5)
        for sock in opened:
            sock.close()


@app.function(max_containers=1, scaledown_window=1)
def one(x):
    return x


def test_an_engine_that_cannot_share_this_kernel_is_refused_saying_what_to_do(fresh_plane):
    with engine_over_tcp() as address:
        fresh_plane(NBSCALE_DOCKER_TRANSPORT="ipc", DOCKER_HOST=address)
        with pytest.raises(nbscale.LaunchError) as info:
            one.remote(1)
    message = str(info.value)
    assert "docker_transport='ipc' needs a Docker engine on this machine's own Linux kernel" in (
        message
    )
    assert f"the engine is reached at {address}" in message
    assert "NBSCALE_DOCKER_TRANSPORT=tcp" in message
