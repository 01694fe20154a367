"""Dicts, Queues and deployed apps on a real Jupyter server's control plane: shared by
separate processes and their workers, and kept across a crash of the server (kill -9, then
started again on the same directories)."""

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

import pytest
from conftest import fresh_python_stdout
from jupyter_process import JupyterProcess, Kernel, Server, start_server

pytestmark = pytest.mark.slow

PRELUDE = """
import json, queue, sys, time
import nbscale

app = nbscale.App("dq")

@app.function()
def record(key, value):
    nbscale.Dict.from_name("kept", create_if_missing=True)[key] = value
    nbscale.Queue.from_name("kept", create_if_missing=True).put(value)
"""

DEPLOYED = """
import nbscale

app = nbscale.App("deployed-math")


def helper(x):  # module code the workers need: it travels with the deployment
    return x * x


@app.function()
def square(x):
    return helper(x)


@app.cls()
class Scaler:
    factor: int = nbscale.parameter(default=2)

    @nbscale.method()
    def scale(self, x):
        return self.factor * x
"""


SHARED = """
import os
import nbscale

app = nbscale.App("shared-pool")


@app.function(max_containers=1, scaledown_window=60)
def whose(x):
    return os.getpid()


@app.cls(max_containers=1, scaledown_window=60)
class Counter:
    @nbscale.method()
    def whose(self):
        return os.getpid()
"""


def env_of(server: JupyterProcess) -> dict[str, str]:
    env = dict(os.environ, NBSCALE_CONNECTION_FILE=str(server.connection_file))
    env["NBSCALE_PROGRESS"] = "off"
    return env


def client(server: JupyterProcess, code: str, cwd: Path, timeout: float = 180) -> Any:
    """Run ``code`` (after PRELUDE) as a client of ``server``; its last line, as JSON."""
    script = PRELUDE + textwrap.dedent(code)
    out = fresh_python_stdout(script, env=env_of(server), cwd=cwd, timeout=timeout)
    return json.loads(out.strip().splitlines()[-1])


def nbscale_cli(server: JupyterProcess, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "nbscale", *args],
        env=env_of(server),
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=180,
    )


@pytest.fixture
def servers(tmp_path: Path) -> Iterator[list[JupyterProcess]]:
    started: list[JupyterProcess] = []
    yield started
    for server in started:
        server.stop()


def test_dicts_queues_and_deployed_apps_are_shared_and_survive_a_crash(
    tmp_path: Path, servers: list[Any]
):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    first = start_server(tmp_path)
    servers.append(first)
    assert client(
        first,
        """
        d = nbscale.Dict.from_name("kept", create_if_missing=True)
        d["from-script"] = {"a": 1}
        list(record.map(["w1", "w2"], [10, 20]))  # written by workers
        q = nbscale.Queue.from_name("kept")
        q.put_many(["x", "y"], partition="p")
        print(json.dumps(sorted(d.keys())))
        """,
        elsewhere,
    ) == ["from-script", "w1", "w2"]

    # deployed from its file, then called by name from another process that lacks it
    source = tmp_path / "deployed_app.py"
    source.write_text(DEPLOYED)
    deployed = nbscale_cli(first, "deploy", str(source), cwd=tmp_path)
    assert deployed.returncode == 0, deployed.stderr
    assert "deployed app 'deployed-math': functions square; classes Scaler" in deployed.stdout
    source.unlink()
    [listed_app] = first.request("GET", "nbscale/api/apps")  # what the sidebar lists
    assert (listed_app["name"], listed_app["functions"], listed_app["classes"]) == (
        "deployed-math", ["square"], ["Scaler"],
    )  # fmt: skip
    calls = """
        square = nbscale.Function.from_name("deployed-math", "square")
        Scaler = nbscale.Cls.from_name("deployed-math", "Scaler")
        try:
            nbscale.Function.from_name("no-such-app", "square")
        except nbscale.NotFoundError as exc:
            missing = str(exc)
        print(json.dumps([
            square.remote(7), list(square.map(range(4))), square.spawn(5).get(timeout=60),
            Scaler(factor=3).scale.remote(2), missing,
        ]))
        """
    got = client(first, calls, elsewhere)
    assert got[:4] == [49, [0, 1, 4, 9], 25, 6]
    assert "no deployed app 'no-such-app'" in got[4] and "deployed-math" in got[4]

    first.kill()
    second = start_server(tmp_path)
    servers.append(second)
    assert client(
        second,
        """
        d = nbscale.Dict.from_name("kept")
        q = nbscale.Queue.from_name("kept")
        print(json.dumps([sorted(d.items()), sorted(q.get_many(5, block=False)),
                          q.get_many(5, partition="p", block=False)]))
        """,
        elsewhere,
    ) == [[["from-script", {"a": 1}], ["w1", 10], ["w2", 20]], [10, 20], ["x", "y"]]
    assert client(second, calls, elsewhere)[:4] == [49, [0, 1, 4, 9], 25, 6]

    listed = nbscale_cli(second, "apps", "list", cwd=elsewhere)
    assert listed.returncode == 0 and "deployed-math" in listed.stdout, listed.stderr
    stopped = nbscale_cli(second, "apps", "stop", "deployed-math", cwd=elsewhere)
    assert stopped.returncode == 0, stopped.stderr
    pools = second.request("GET", "nbscale/api/pools")
    deployed_pools = [p for p in pools if p["function"].startswith("deployed-math/")]
    assert {p["function"] for p in deployed_pools} == {
        "deployed-math/square",
        "deployed-math/Scaler(factor=3)",
    }
    assert all(p["status"] == "stopped" for p in deployed_pools)
    gone = nbscale_cli(second, "apps", "stop", "deployed-math", cwd=elsewhere)
    assert gone.returncode == 1 and "no deployed app 'deployed-math'" in gone.stderr
    assert "no deployed apps" in nbscale_cli(second, "apps", "list", cwd=elsewhere).stdout
    assert second.request("GET", "nbscale/api/apps") == []


def test_every_caller_of_a_deployed_function_or_class_shares_its_pool(
    tmp_path: Path, servers: list[Any]
):
    server = start_server(tmp_path)
    servers.append(server)
    source = tmp_path / "shared_app.py"
    source.write_text(SHARED)
    deployed = nbscale_cli(server, "deploy", str(source), cwd=tmp_path)
    assert deployed.returncode == 0, deployed.stderr
    calls = """
        whose = nbscale.Function.from_name("shared-pool", "whose")
        Counter = nbscale.Cls.from_name("shared-pool", "Counter")
        print(json.dumps([whose.remote(0), Counter().whose.remote()]))
        """
    first = client(server, calls, tmp_path)
    resize = (
        'nbscale.Function.from_name("shared-pool", "whose").update_autoscaler(max_containers=3)'
    )
    assert client(server, f"{resize}\nprint(1)", tmp_path) == 1
    assert client(server, calls, tmp_path) == first  # the same workers served both callers
    pools = server.request("GET", "nbscale/api/pools")
    shared = [p for p in pools if p["function"].startswith("shared-pool/")]
    assert sorted(p["function"] for p in shared) == ["shared-pool/Counter", "shared-pool/whose"]
    assert {(p["owner"]["app"], p["owner"]["name"]) for p in shared} == {
        ("shared-pool", "app shared-pool")
    }
    # another caller's registration kept what update_autoscaler set (as on Modal)
    [whose] = [p for p in shared if p["function"] == "shared-pool/whose"]
    assert whose["settings"]["max_containers"] == 3


def test_a_blocking_get_is_served_by_another_process_and_ends_when_the_server_dies(
    tmp_path: Path, servers: list[Any]
):
    server = start_server(tmp_path)
    servers.append(server)

    def waiter(code: str) -> subprocess.Popen[str]:
        script = PRELUDE + textwrap.dedent(code)
        return subprocess.Popen(
            [sys.executable, "-c", script],
            env=env_of(server),
            cwd=tmp_path,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    wait_code = """
        q = nbscale.Queue.from_name("handoff", create_if_missing=True)
        print("waiting", flush=True)
        try:
            print(json.dumps(q.get()), flush=True)
        except nbscale.ConnectionLostError as exc:
            print(json.dumps(["lost", str(exc)[:200]]), flush=True)
        """
    proc = waiter(wait_code)
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "waiting"
    time.sleep(1)  # its get has reached the server: nothing there yet
    client(server, 'nbscale.Queue.from_name("handoff").put({"job": 1}); print(1)', tmp_path)
    out, err = proc.communicate(timeout=60)
    assert json.loads(out.strip()) == {"job": 1}, err

    proc = waiter(wait_code)
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "waiting"
    time.sleep(1)
    server.kill()
    out, err = proc.communicate(timeout=60)  # not forever: the client watches the server
    lost = json.loads(out.strip())
    assert lost[0] == "lost" and "lost the connection" in lost[1], err


KERNEL_A = """
import nbscale
app = nbscale.App("kernel-app")
board = nbscale.Dict.from_name("board", create_if_missing=True)
inbox = nbscale.Queue.from_name("inbox", create_if_missing=True)
inbox.clear()  # looked up, hence made, on first use (as Modal's)

@app.function()
def shout(word):
    board[word] = word.upper()  # a worker writes the Dict the other kernel reads
    return word.upper() + "!"

app.deploy()
print("DEPLOYED", sorted(app.deployed["functions"]))
"""

KERNEL_B = """
import nbscale
shout = nbscale.Function.from_name("kernel-app", "shout")
print("CALLED", shout.remote("hi"), list(shout.map(["a", "b"])))
print("BOARD", sorted(nbscale.Dict.from_name("board").items()))
nbscale.Queue.from_name("inbox").put("from kernel B")
"""


async def test_a_kernel_calls_by_name_what_another_kernel_deployed(tmp_path: Path):
    server = Server(tmp_path)
    kernels: list[Kernel] = []
    try:
        _, a = await server.start_kernel()
        kernels.append(a)
        assert "DEPLOYED ['shout']" in await a.run(KERNEL_A)
        _, b = await server.start_kernel()
        kernels.append(b)
        out = await b.run(KERNEL_B, timeout=120)
        assert "CALLED HI! ['A!', 'B!']" in out
        assert "BOARD [('a', 'A'), ('b', 'B'), ('hi', 'HI')]" in out
        assert "from kernel B" in await a.run("print(inbox.get(timeout=30))")
    finally:
        for kernel in kernels:
            kernel.close()
        server.stop()
