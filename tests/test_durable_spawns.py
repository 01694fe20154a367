"""Spawned calls outlive the Jupyter server that hosts the control plane.

A real ``jupyter server`` process keeps spawned calls' inputs and results in its SQLite
store (in its data directory); callers are separate Python processes that reach it through
its connection file, as kernels do. The server is killed with SIGKILL (a crash: it cleans
nothing up) and started again on the same directories.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest
from jupyter_process import JupyterProcess, start_server

pytestmark = pytest.mark.slow

FUNCTION = """
import json, os, sys, time
import nbscale

app = nbscale.App("durable")

@app.function(max_containers=2)
def double(x, gate):
    # Inputs from 500 on wait for the gate file: they are still running at the crash.
    while x >= 500 and not os.path.exists(gate):
        time.sleep(0.05)
    return 2 * x

@app.function(max_containers=2)
def gated(x, gate):
    # Quick inputs, which a map sends, queues and runs as runs, but for those from 3,800 on,
    # which wait for the gate file: still running at the crash.
    while x >= 3800 and not os.path.exists(gate):
        time.sleep(0.05)
    return 3 * x

@app.function(max_containers=2)
def gated_too(x, gate):  # the same in a pool of its own, whose workers gated does not hold
    while x >= 3800 and not os.path.exists(gate):
        time.sleep(0.05)
    return 3 * x

@app.function(max_containers=2)
def mebibyte(i):
    return bytes([i % 256]) * (1 << 20)
"""


def client(server: JupyterProcess, code: str, timeout: float = 300) -> Any:
    """Run ``code`` (after FUNCTION) as a client of ``server``; its last line of output, as
    JSON."""
    with start_client(server, code) as proc:
        try:
            out = proc.communicate(timeout=timeout)
        finally:
            proc.kill()
    return client_answer(*out)


def start_client(server: JupyterProcess, code: str) -> subprocess.Popen[str]:
    """``code`` (after FUNCTION) running as a client of ``server``."""
    env = dict(os.environ, NBSCALE_CONNECTION_FILE=str(server.connection_file))
    env["NBSCALE_PROGRESS"] = "off"
    script = FUNCTION + textwrap.dedent(code)
    return subprocess.Popen(
        [sys.executable, "-c", script],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def client_answer(stdout: str, stderr: str) -> Any:
    """A client's last line of output, as JSON."""
    lines = stdout.strip().splitlines()
    assert lines, stderr[-4000:]
    return json.loads(lines[-1])


@pytest.fixture
def servers(tmp_path: Path) -> Iterator[list[JupyterProcess]]:
    """The servers a test starts in ``tmp_path`` (one after another); stopped at the end."""
    started: list[JupyterProcess] = []
    yield started
    for server in started:
        server.stop()


def test_spawned_calls_survive_a_crash_of_the_server(tmp_path: Path, servers: list[Any]):
    gate = tmp_path / "gate"
    first = start_server(tmp_path)
    servers.append(first)
    ids = client(
        first,
        f"""
        calls = [double.spawn(x, {str(gate)!r}) for x in range(1000)]
        assert [c.get(timeout=120) for c in calls[:500]] == [2 * x for x in range(500)]
        print(json.dumps([c.object_id for c in calls]))
        """,
    )
    old_info = json.loads(first.connection_file.read_text())
    old_dir = Path(old_info["client_endpoint"][len("ipc://") :]).parent
    old_file = first.connection_file
    first.kill()
    assert old_file.exists() and old_dir.exists()  # a crash leaves them behind

    gate.touch()  # the inputs that were running or waiting may finish now
    second = start_server(tmp_path)
    servers.append(second)
    assert not old_file.exists() and not old_dir.exists()  # removed by the next start
    results = client(
        second,
        f"""
        ids = {json.dumps(ids)}
        print(json.dumps([nbscale.FunctionCall.from_id(i).get(timeout=180) for i in ids]))
        """,
    )
    assert results == [2 * x for x in range(1000)]
    listed = second.request("GET", "nbscale/api/calls?limit=1000")
    assert len(listed) == 1000 and all(c["finished"] for c in listed)
    assert listed == sorted(listed, key=lambda c: -c["seq"])  # newest first
    store = tmp_path / "data" / "nbscale.db"
    assert store.exists() and oct(store.stat().st_mode & 0o777) == "0o600"


@pytest.mark.timeout(400)
def test_runs_of_a_spawn_map_and_a_detached_map_are_kept_per_input_across_a_crash(
    tmp_path: Path, servers: list[Any]
):
    """Their small inputs and results travel as runs, which the server keeps input by
    input: each result is read back on its own, before and after a SIGKILL of the server."""
    gate, flag, release, n = tmp_path / "gate", tmp_path / "consumed", tmp_path / "release", 4000
    first = start_server(tmp_path)
    servers.append(first)
    spawned = client(
        first,
        f"""
        call = gated.spawn_map(range({n}), [{str(gate)!r}] * {n})
        assert [call.get(index=i, timeout=120) for i in range(300)] == [3 * x for x in range(300)]
        print(json.dumps(call.object_id))
        """,
    )
    with start_client(
        first,
        f"""
        got = []
        try:
            for value in gated_too.map(range({n}), [{str(gate)!r}] * {n}):
                got.append(value)
                if len(got) == 100:
                    open({str(flag)!r}, "w").close()
                    time.sleep(2)  # detached meanwhile: the rest are kept on the server
        except nbscale.CallDetachedError as exc:
            print(json.dumps([exc.call_id, got]), flush=True)
            while not os.path.exists({str(release)!r}):  # feeding the rest, until told
                time.sleep(0.05)
        """,
    ) as consumer:
        try:
            deadline = time.monotonic() + 120
            while not flag.exists():
                assert consumer.poll() is None, consumer.communicate()[1][-4000:]
                assert time.monotonic() < deadline, "the map's first 100 results never came"
                time.sleep(0.05)
            calls = first.request("GET", "nbscale/api/calls")
            [running] = [c for c in calls if c["kind"] == "map"]
            first.request("POST", f"nbscale/api/calls/{running['id']}/detach", {})
            assert consumer.stdout is not None
            detached, got = client_answer(consumer.stdout.readline(), "")
            deadline = time.monotonic() + 120
            while first.request("GET", f"nbscale/api/calls/{detached}")["total"] != n:
                assert time.monotonic() < deadline, "the detached map's inputs never all came"
                time.sleep(0.05)
            release.touch()
            assert consumer.wait(60) == 0
        finally:
            consumer.kill()
    assert detached == running["id"] and 100 <= len(got) < 3800
    assert got == [3 * x for x in range(len(got))]
    # (not too close to 3,800: a worker sends the results of what it ran just before an
    # input that blocks once that input ends)
    later = max(len(got), min(len(got) + 300, 3000))
    settled_before = client(
        first,
        f"""
        call = nbscale.FunctionCall.from_id({detached!r})
        print(json.dumps([call.get(index=i, timeout=120) for i in ({len(got)}, {later})]))
        """,
    )
    assert settled_before == [3 * len(got), 3 * later]
    first.kill()

    gate.touch()  # the inputs that were running or waiting may finish now
    second = start_server(tmp_path)
    servers.append(second)
    results = client(
        second,
        f"""
        spawned = nbscale.FunctionCall.from_id({spawned!r})
        detached = nbscale.FunctionCall.from_id({detached!r})
        one_by_one = [spawned.get(index=i, timeout=180) for i in (0, 299, 300, 2600, {n - 1})]
        print(json.dumps([list(spawned.iter()), list(detached.iter()), one_by_one]))
        """,
    )
    assert results[0] == [3 * x for x in range(n)]
    assert got + results[1] == [3 * x for x in range(n)]  # nothing lost, nothing twice
    assert results[2] == [0, 3 * 299, 3 * 300, 3 * 2600, 3 * (n - 1)]


def test_gathered_spawns_that_returned_survive_a_kill_in_the_middle_of_their_batches(
    tmp_path: Path, servers: list[Any]
):
    """Spawns in flight together go to the store by the batch: a kill -9 while batches are
    being written loses none of those whose ``.spawn.aio`` had returned."""
    gate, returned = tmp_path / "gate", tmp_path / "returned"
    gate.touch()
    first = start_server(tmp_path)
    servers.append(first)
    env = dict(os.environ, NBSCALE_CONNECTION_FILE=str(first.connection_file))
    env["NBSCALE_PROGRESS"] = "off"
    script = FUNCTION + textwrap.dedent(
        f"""
        import asyncio

        async def spawn(x, out):
            call = await double.spawn.aio(x, {str(gate)!r})
            out.write(f"{{call.object_id}} {{x}}\\n")  # only once the spawn returned

        async def main():
            with open({str(returned)!r}, "a", buffering=1) as out:
                for start in range(0, 10**9, 400):  # until the server dies
                    await asyncio.gather(*(spawn(x, out) for x in range(start, start + 400)))

        asyncio.run(main())
        """
    )
    spawner = subprocess.Popen([sys.executable, "-c", script], env=env, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        while not returned.exists() or len(returned.read_text().splitlines()) < 3000:
            assert spawner.poll() is None, spawner.stderr.read()[-4000:]  # type: ignore[union-attr]
            assert time.monotonic() < deadline, "the spawns did not return in time"
            time.sleep(0.01)
        first.kill()  # while the spawner keeps spawning, batch after batch
    finally:
        spawner.kill()
        spawner.communicate(timeout=30)
    lines = [line.split() for line in returned.read_text().splitlines()]
    spawned = {call_id: int(x) for call_id, x in (line for line in lines if len(line) == 2)}
    assert len(spawned) >= 3000

    second = start_server(tmp_path)
    servers.append(second)
    results = client(
        second,
        f"""
        ids = {json.dumps(list(spawned))}
        calls = [nbscale.FunctionCall.from_id(i) for i in ids]
        print(json.dumps(nbscale.FunctionCall.gather(*calls)))
        """,
    )
    assert results == [2 * x for x in spawned.values()]


def test_a_spawn_that_cannot_be_sent_fails_alone_in_its_batch(tmp_path: Path, servers: list[Any]):
    server = start_server(tmp_path)
    servers.append(server)
    failed, results = client(
        server,
        """
        import asyncio, threading

        async def main():
            args = [1, 2, threading.Lock(), 4]  # a lock cannot be pickled
            spawns = [double.spawn.aio(x, "") for x in args]
            return await asyncio.gather(*spawns, return_exceptions=True)

        calls = asyncio.run(main())
        failed = [type(c).__name__ for c in calls if isinstance(c, Exception)]
        ok = [c for c in calls if not isinstance(c, Exception)]
        print(json.dumps([failed, nbscale.FunctionCall.gather(*ok)]))
        """,
    )
    assert len(failed) == 1 and results == [2, 4, 8]


@pytest.mark.timeout(900)  # 10 GiB written and read back: two minutes on the reference machine
def test_results_read_and_dropped_leave_the_server_as_big_as_it_started(
    tmp_path: Path, servers: list[Any]
):
    server = start_server(tmp_path)
    servers.append(server)
    assert client(server, "print(json.dumps(mebibyte.remote(1)[:1] == bytes([1])))")  # warm
    process = psutil.Process(server.proc.pid)
    before = process.memory_info().rss
    count = client(
        server,
        """
        calls = [mebibyte.spawn(i) for i in range(10_000)]
        ok = 0
        for i, call in enumerate(calls):
            result = call.get(timeout=300)
            ok += len(result) == 1 << 20 and result[0] == i % 256
            del result
        print(ok)
        """,
        timeout=900,
    )
    assert count == 10_000
    time.sleep(1)  # the last batches written and their buffers freed
    grown = (process.memory_info().rss - before) / 2**20
    assert grown < 100, f"the server grew by {grown:.0f} MiB"


def test_listings_are_paged_and_the_first_websocket_message_is_bounded(
    tmp_path: Path, servers: list[Any]
):
    server = start_server(tmp_path)
    servers.append(server)
    client(server, "[double.spawn(x, '') for x in range(1200)]; print(1)")
    first = server.request("GET", "nbscale/api/calls?limit=500")
    second = server.request("GET", f"nbscale/api/calls?limit=500&before={first[-1]['seq']}")
    third = server.request("GET", f"nbscale/api/calls?limit=500&before={second[-1]['seq']}")
    ids = [c["id"] for c in first + second + third]
    assert [len(first), len(second), len(third)] == [500, 500, 200]
    assert len(set(ids)) == 1200
    assert len(server.request("GET", "nbscale/api/calls")) == 500  # bounded by default
