"""A real ``jupyter server`` process hosting the control plane, with kernels it started.

The server runs as a subprocess (random port, token), kernels are started through its REST
API and driven with jupyter_client over their connection files, and what they do is watched
through nbscale's REST API and its events WebSocket, as the sidebar would.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest
from jupyter_process import Kernel, Server, eventually

import nbscale

pytestmark = pytest.mark.slow

SETUP = """
import time, nbscale
app = nbscale.App("e2e")

@app.function(max_containers=2, scaledown_window=60)
def work(x):
    time.sleep(0.4)
    return x * x

call = work.spawn(21)
print("MODE", nbscale.status()["mode"])
print("SPAWNED", call.object_id)
"""

MAP = "print('RESULT', list(work.map(range(16))))"


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    s = Server(tmp_path)
    yield s
    s.stop()


async def test_a_kernel_maps_through_the_server_and_the_api_shows_it(server):
    kernel_id, kernel = await server.start_kernel()
    try:
        out = await kernel.run(SETUP)
        assert "MODE server" in out
        spawned = re.search(r"SPAWNED (fc-\w+)", out)[1]
        ws = await server.events()
        assert json.loads(await ws.read_message())["type"] == "snapshot"

        mapping = asyncio.ensure_future(kernel.run(MAP))

        async def map_pending() -> Any:
            pools = await asyncio.to_thread(server.request, "GET", "nbscale/api/pools")
            pool = next((p for p in pools if p["function"] == "work"), None)
            busy = pool and pool["backlog"] > 0 and pool["containers"]["busy"] > 0
            return pool if busy else None

        pool = await eventually(map_pending)
        assert pool["settings"]["max_containers"] == 2
        calls = await asyncio.to_thread(server.request, "GET", "nbscale/api/calls")
        [map_call] = [c for c in calls if c["kind"] == "map"]

        async def inputs_pending_and_running() -> bool:
            path = f"nbscale/api/calls/{map_call['id']}"
            detail = await asyncio.to_thread(server.request, "GET", path)
            return {"pending", "running"} <= {i["status"] for i in detail["inputs"]}

        await eventually(inputs_pending_and_running)

        async def progress_pushed() -> bool:
            message = json.loads(await asyncio.wait_for(ws.read_message(), 10))
            return any(c["id"] == map_call["id"] and c["done"] > 0 for c in message["calls"])

        await eventually(progress_pushed)
        out = await mapping
        assert f"RESULT {[x * x for x in range(16)]}" in out
        ws.close()

        # A restart loses neither the pool, its workers, nor the spawned call.
        workers = {p.pid for p in server.workers()}
        assert workers
        kernel.close()
        await asyncio.to_thread(server.request, "POST", f"api/kernels/{kernel_id}/restart")
        kernel = await Kernel.connect(server.runtime_dir / f"kernel-{kernel_id}.json")
        code = f"import nbscale; print('GOT', nbscale.FunctionCall.from_id({spawned!r}).get())"
        assert "GOT 441" in await kernel.run(code)
        assert workers <= {p.pid for p in server.workers()}
        pools = await asyncio.to_thread(server.request, "GET", "nbscale/api/pools")
        assert [p["done"] for p in pools if p["function"] == "work"] == [17]
    finally:
        kernel.close()


async def test_stopping_the_server_stops_every_worker(server):
    _, kernel = await server.start_kernel()
    try:
        await kernel.run(SETUP + MAP)
    finally:
        kernel.close()
    workers = server.workers()
    assert workers
    [connection_file] = server.runtime_dir.glob("nbscale-*.json")
    endpoint = json.loads(connection_file.read_text())["worker_endpoint"]
    private_dir = os.path.dirname(endpoint.removeprefix("ipc://"))

    await asyncio.to_thread(server.stop)
    assert server.proc.returncode is not None
    _, alive = psutil.wait_procs(workers, timeout=5)
    assert alive == []
    leftovers = [
        p.pid
        for p in psutil.process_iter(["cmdline"])
        if any(private_dir in arg for arg in p.info["cmdline"] or [])
    ]
    assert leftovers == []
    assert not connection_file.exists()
    assert not os.path.exists(private_dir)


def test_doctor_reaches_the_servers_control_plane(server):
    env = {**os.environ, "JUPYTER_RUNTIME_DIR": str(server.runtime_dir)}
    env.pop("NBSCALE_CONNECTION_FILE", None)
    proc = subprocess.run(
        [sys.executable, "-m", "nbscale", "doctor"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    [line] = [line for line in proc.stdout.splitlines() if "control plane" in line]
    assert line == (
        f"  control plane  the Jupyter server's (pid {server.proc.pid}, nbscale "
        f"{nbscale.__version__}) answers; workers: local processes (launcher=process)"
    )


ARRAYS = """
import hashlib, numpy as np, nbscale
app = nbscale.App("e2e-arrays")

@app.function(max_containers=1)
def doubled(a):
    a *= 2  # inputs are writable on the worker
    return a

rng = np.random.default_rng(3)
arrays = [rng.random(n) for n in (100, (1 << 17) - 1, 1 << 17, 2 << 20)]  # up to 16 MiB
results = list(doubled.map(arrays))
print("EXACT", all(np.array_equal(r, a * 2) for r, a in zip(results, arrays)))
"""


async def test_large_arrays_travel_exactly_through_the_servers_control_plane(server):
    """Kernel -> server over ZeroMQ, server -> worker through shared memory, and back."""
    _, kernel = await server.start_kernel()
    try:
        assert "EXACT True" in await kernel.run(ARRAYS)
    finally:
        kernel.close()
