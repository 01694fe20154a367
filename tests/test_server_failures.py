"""A Jupyter server hosting the control plane, killed with kill -9, and a kernel killed while
its map runs: nothing waits forever, nothing runs for nobody.

This process is the client (``NBSCALE_CONNECTION_FILE`` names the server's connection file,
as in a kernel the server started); the server and its kernels are real processes."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest
from conftest import command_line
from jupyter_process import Server, eventually

import nbscale

pytestmark = pytest.mark.slow

app = nbscale.App("test-server-failures")


@app.function(max_containers=2, scaledown_window=60)
def sleepy(seconds):
    time.sleep(seconds)
    return seconds


@pytest.fixture
def servers(tmp_path: Path) -> Iterator[list[Server]]:
    """The servers a test starts, stopped (or already dead) at its end."""
    started: list[Server] = []
    yield started
    nbscale.shutdown()
    for server in started:
        server.stop()


def use(server: Server, monkeypatch: pytest.MonkeyPatch) -> None:
    """Make this process a client of ``server``, as a kernel it started is."""
    nbscale.shutdown()
    monkeypatch.setenv("NBSCALE_CONNECTION_FILE", str(server.connection_file))


class Waiting(threading.Thread):
    """A blocking call in a thread of its own: what it raised, and how long it waited
    after ``mark``."""

    def __init__(self, call: Callable[[], Any]) -> None:
        super().__init__(daemon=True)
        self.call = call
        self.error: BaseException | None = None
        self.ended_at = 0.0
        self.start()

    def run(self) -> None:
        try:
            self.call()
        except BaseException as exc:
            self.error = exc
        self.ended_at = time.monotonic()


def test_a_killed_server_fails_every_waiting_call_and_its_restart_is_used(
    tmp_path, servers, monkeypatch
):
    """The defect: after a kill -9 of the Jupyter server, ``.map()``, ``.remote()``,
    ``call.get(timeout=3)``, ``nbscale.status()`` and ``FunctionCall.from_id`` all blocked
    for good."""
    servers.append(server := Server(tmp_path))
    use(server, monkeypatch)
    assert nbscale.status()["mode"] == "server"
    call = sleepy.spawn(60)
    mapping = Waiting(lambda: list(sleepy.map([60] * 4)))
    remote = Waiting(lambda: sleepy.remote(60))

    def waiting_on_the_server() -> bool:
        calls = server.request("GET", "nbscale/api/calls")
        return {"map", "remote", "spawn"} <= {c["kind"] for c in calls}

    deadline = time.monotonic() + 60
    while not waiting_on_the_server():
        assert time.monotonic() < deadline
        time.sleep(0.1)
    workers = server.workers()
    getting = Waiting(lambda: call.get(timeout=3))
    time.sleep(0.2)  # its request is on its way
    killed_at = time.monotonic()
    server.kill()
    for waiting in (mapping, remote, getting):
        waiting.join(timeout=15)
        assert not waiting.is_alive(), "still waiting"
        assert isinstance(waiting.error, nbscale.ConnectionLostError), waiting.error
        assert waiting.ended_at - killed_at < 10
    lost = mapping.error
    assert f":{server.port}/" in (lost.server_url or "")  # names the server, and where
    assert f"Jupyter server {lost.server_url}" in str(lost)
    assert f"its process (pid {server.proc.pid}) is gone" in str(lost)
    _, alive = psutil.wait_procs(workers, timeout=10)  # its workers saw their parent go
    assert alive == []

    started = time.monotonic()
    with pytest.raises(nbscale.ConnectionLostError, match="no restarted Jupyter server serves"):
        nbscale.status()
    with pytest.raises(nbscale.ConnectionLostError):
        nbscale.FunctionCall.from_id(call.object_id)
    assert time.monotonic() - started < 10

    servers.append(again := Server(tmp_path, port=server.port))  # restarted, same URL
    assert sleepy.remote(0) == 0  # reconnected on its own, to the restarted server
    assert nbscale.status()["pid"] == again.proc.pid


def test_a_killed_kernels_map_is_cancelled_on_the_server(tmp_path, servers):
    """The defect: a kernel killed mid-map left its inputs queued and running for nobody,
    its map listed as unfinished forever."""
    servers.append(server := Server(tmp_path))
    asyncio.run(_kill_a_kernel_mid_map(server))


ORPHANED_MAP = """
import time, nbscale
app = nbscale.App("orphaned")

@app.function(max_containers=2, scaledown_window=2)
def step(x):
    time.sleep(0.2)
    return x

for _ in step.map(range(1000)):
    pass
"""


async def _kill_a_kernel_mid_map(server: Server) -> None:
    kernel_id, kernel = await server.start_kernel()
    try:
        kernel.client.execute(ORPHANED_MAP)

        async def running_map() -> dict[str, Any] | None:
            pools = await asyncio.to_thread(server.request, "GET", "nbscale/api/pools")
            pool = next((p for p in pools if p["function"] == "step"), None)
            return pool if pool and pool["backlog"] and pool["num_running_inputs"] else None

        pool = await eventually(running_map, timeout=60)
        [process] = [
            p for p in psutil.Process(server.proc.pid).children() if kernel_id in command_line(p)
        ]
        process.kill()  # kill -9 of the kernel, mid-map

        async def map_cancelled() -> bool:
            calls = await asyncio.to_thread(server.request, "GET", "nbscale/api/calls")
            [orphan] = [c for c in calls if c["function"] == "step"]
            path = f"nbscale/api/pools/{pool['id']}"
            model = await asyncio.to_thread(server.request, "GET", path)
            idle = model["backlog"] == 0 and model["num_running_inputs"] == 0
            return bool(orphan["cancelled"] and orphan["finished"] and idle)

        await eventually(map_cancelled, timeout=20)

        async def scaled_down() -> bool:
            path = f"nbscale/api/pools/{pool['id']}"
            model = await asyncio.to_thread(server.request, "GET", path)
            return model["num_total_runners"] == 0

        await eventually(scaled_down, timeout=30)
        path = f"nbscale/api/pools/{pool['id']}"
        events = (await asyncio.to_thread(server.request, "GET", path))["events"]
        assert any("its caller is gone (its process" in e["message"] for e in events)
    finally:
        kernel.close()
