"""Who owns a pool or a call, and commands that act on their caller's own work only: the
control plane's records (fake workers), ``%nbscale stop`` in a real shell beside another
kernel's pool on real workers, and the Jupyter server naming a kernel's notebook."""

from __future__ import annotations

import asyncio
import builtins
import json
import os
import time
from collections.abc import Iterator
from typing import Any

import cloudpickle
import pytest
from fakes import FakeCaller, Harness, RequestRefused
from IPython.core.error import UsageError
from IPython.core.interactiveshell import InteractiveShell
from IPython.utils.capture import capture_output
from traitlets.config import Config

import nbscale
from nbscale import _client, _owner, _pools
from nbscale._loop import get_loop
from nbscale._map import Invocation
from nbscale._pickling import add_input
from nbscale_runtime import protocol
from nbscale_runtime.serialization import PayloadWriter
from nbscale_server.options import FunctionOptions
from nbscale_server.owners import owner_key


def square(x: int) -> int:
    return x * x


def owner(kernel_id: str | None, pid: int = 100, name: str = "a.ipynb") -> dict[str, Any]:
    return {"kernel_id": kernel_id, "name": name, "pid": pid, "host": "box"}


@pytest.fixture
def h() -> Iterator[Harness]:
    harness = Harness(max_workers_total=4)
    yield harness
    harness.close()


def test_two_notebooks_defining_the_same_function_get_pools_of_their_own(h):
    first = FakeCaller(h.plane, owner("k-1", name="a.ipynb"))
    second = FakeCaller(h.plane, owner("k-2", name="b.ipynb"))
    pools = [first.register(square), second.register(square)]
    assert pools[0] != pools[1]
    assert [h.pool(p)["owner"]["name"] for p in pools] == ["a.ipynb", "b.ipynb"]
    assert h.pool(pools[0])["owner"] == {
        "kernel_id": "k-1",
        "notebook": None,  # only a Jupyter server knows it
        "name": "a.ipynb",
        "pid": 100,
        "host": "box",
        "app": None,
    }
    call = second.submit(pools[1], range(3))
    [listed] = [c for c in h.plane.api.list_calls() if c["id"] == call]
    assert listed["owner"]["kernel_id"] == "k-2" and listed["function"] == "square"
    # Stopping the first notebook's pool leaves the second's call running to its end.
    h.plane.api.stop_pool(pools[0])
    for _ in range(20):
        h.tick()
        for worker in h.workers():
            worker.finish()
    assert second.values(call) == {0: 0, 1: 1, 2: 4}


def test_a_restarted_kernel_finds_its_pools_again_and_a_script_has_its_own(h):
    before = FakeCaller(h.plane, owner("k-1", pid=100)).register(square)
    after = FakeCaller(h.plane, owner("k-1", pid=200)).register(square)
    assert after == before and h.pool(after)["owner"]["pid"] == 200
    script = FakeCaller(h.plane, owner(None, pid=300, name="run.py")).register(square)
    assert script != before and h.pool(script)["owner"]["name"] == "run.py"
    assert owner_key(h.pool(script)["owner"]) == "process:box:300"


def test_a_hello_with_a_malformed_owner_is_refused(h):
    with pytest.raises(RequestRefused, match="owner: bad pid"):
        FakeCaller(h.plane, {"kernel_id": None, "name": "x", "pid": "1", "host": "h"})


def test_only_a_deployed_app_owns_pools_that_are_shared(h):
    """A caller cannot make its pool another's by naming an app: the app must be deployed
    and the function one of its own; the owner a hello names is never an app."""
    caller = FakeCaller(h.plane, {**owner("k-1"), "app": "forged"})
    assert h.pool(caller.register(square))["owner"]["app"] is None

    def register_as(app: str, label: str) -> None:
        msg = protocol.RegisterFunction(
            0, "fn-square", label, FunctionOptions().to_wire(), [], [], app
        )
        caller.request(msg, [cloudpickle.dumps(square)])

    with pytest.raises(RequestRefused, match="no deployed app 'math'"):
        register_as("math", "math/square")
    with pytest.raises(RequestRefused, match="'other/square' is not a function of app 'math'"):
        register_as("math", "other/square")


def test_this_process_says_who_it_is():
    me = _owner.this_owner()
    assert me["kernel_id"] is None and me["pid"] == os.getpid()  # pytest is no kernel
    assert _owner.is_mine({**me, "notebook": None})
    assert not _owner.is_mine({**me, "pid": me["pid"] + 1})
    kernel = {**me, "kernel_id": "k-1"}
    assert _owner.is_mine({"kernel_id": "k-1", "pid": 1, "host": "elsewhere"}, kernel)
    assert not _owner.is_mine({**me, "kernel_id": "k-2"}, kernel)


# --- %nbscale stop beside another kernel, on real workers ------------------------------------

app = nbscale.App("test-ownership")


@app.function(max_containers=1, scaledown_window=30)
def nap(seconds: float) -> float:
    time.sleep(seconds)
    return seconds


@app.function(max_containers=1, scaledown_window=30)
def mine(x: int) -> int:
    return x


@pytest.fixture
def ip(tmp_path: Any) -> Iterator[InteractiveShell]:
    os.environ["IPYTHONDIR"] = str(tmp_path / "ipython")
    config = Config()
    config.HistoryManager.hist_file = ":memory:"
    config.InteractiveShell.colors = "NoColor"
    shell = InteractiveShell.instance(config=config)
    shell.run_line_magic("load_ext", "nbscale")
    yield shell
    InteractiveShell.clear_instance()
    del os.environ["IPYTHONDIR"]


def _spawn_as_another_kernel(seconds: float) -> tuple[str, str]:
    """A second client of this process's control plane that says it is another kernel
    (``other.ipynb``) spawns ``nap(seconds)``; returns its pool and call ids."""

    async def spawn() -> tuple[str, str]:
        main = await _client.get_client()
        assert main.control_plane is not None, "the embedded control plane"
        other = _client.Client(main.ctx, "", control_plane=main.control_plane)
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(_client, "this_owner", lambda: owner("other-kernel", name="other.ipynb"))
            await other.hello()
        pool_id = await nap._pool_id(other)
        inv = Invocation(other, pool_id, "spawn", nap.name, 300.0)
        other.handlers.pop(inv.call_id, None)
        writer = PayloadWriter()
        where = add_input(writer, 0, (seconds,), {})
        await inv.submit([[0, *where, 0]], writer.frames(), total=1)
        return pool_id, inv.call_id

    return get_loop().run(spawn())


def test_stop_stops_this_kernels_pools_and_all_asks_before_stopping_the_others(ip, monkeypatch):
    assert list(mine.map(range(3))) == [0, 1, 2]
    other_pool, call_id = _spawn_as_another_kernel(1.0)
    mine_pool = _pools.find_pool("mine")["id"]
    assert other_pool not in {p["id"] for p in _pools.pools()}
    assert nbscale.status()["other_pools"] == 1
    assert {p["id"] for p in nbscale.status(all_pools=True)["pools"]} >= {mine_pool, other_pool}

    with capture_output() as out:
        result = ip.run_cell("%nbscale stop")
    assert result.success and f"stopped {mine_pool}" in out.stdout
    assert other_pool not in out.stdout
    assert not _pools.find_pool(other_pool)["stopped"]
    # The other kernel's call was not cancelled: it runs to its end.
    assert nbscale.FunctionCall.from_id(call_id).get(timeout=30) == 1.0
    with capture_output() as out:
        ip.run_cell("%nbscale stop nap")  # a name means one of this kernel's pools
    assert "no pool 'nap' of this kernel" in out.stderr and "other.ipynb (1)" in out.stderr

    # --all asks first; "no" stops nothing, and where it cannot ask it says to add --yes.
    monkeypatch.setattr(builtins, "input", lambda question: "n")
    with capture_output() as out:
        ip.run_cell("%nbscale stop --all")
    assert "nothing stopped" in out.stdout and not _pools.find_pool(other_pool)["stopped"]

    def no_stdin(question: str) -> str:
        raise EOFError

    monkeypatch.setattr(builtins, "input", no_stdin)
    with capture_output() as out:
        result = ip.run_cell("%nbscale stop --all")
    assert isinstance(result.error_in_exec, UsageError) and "add --yes" in out.stderr
    with capture_output() as out:
        result = ip.run_cell("%nbscale stop --all --yes")
    assert result.success and other_pool in out.stdout
    assert _pools.find_pool(other_pool)["stopped"]


# --- the Jupyter server names the notebook ---------------------------------------------------


async def test_the_server_fills_in_the_notebook_of_a_kernels_pools(nbscale_ext, jp_fetch):
    response = await jp_fetch(
        "api",
        "sessions",
        method="POST",
        body=json.dumps({"path": "work/sweep.ipynb", "type": "notebook", "kernel": {}}),
    )
    session = json.loads(response.body)
    kernel_id = session["kernel"]["id"]
    try:
        plane = nbscale_ext.control_plane
        reply: list[Any] = []
        send = plane.connect_local(lambda msg, payload: reply.append(msg))
        hello = protocol.Hello(
            protocol.PROTOCOL_VERSION, "3.11.0", "3.0.0", 1, owner(kernel_id, name="kernel x")
        )
        send(hello, [])
        assert reply and reply[0].error is None
        [known] = [o for o in plane.records.owners.values() if o["kernel_id"] == kernel_id]
        for _ in range(100):
            if known["notebook"] is not None:
                break
            await asyncio.sleep(0.05)
        assert known["notebook"] == "work/sweep.ipynb" and known["name"] == "sweep.ipynb"
    finally:
        await jp_fetch("api", "sessions", session["id"], method="DELETE")
