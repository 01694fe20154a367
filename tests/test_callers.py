"""A caller that is gone loses its maps, not its spawned calls: the real control plane, fake
workers and a fake clock (``fakes.py``), callers speaking through its request handler as a
kernel's socket does. The same with a real kernel killed: ``test_server_failures.py``."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator

import cloudpickle
import pytest
from fakes import VERSIONS, Harness

from nbscale._pickling import add_input
from nbscale_runtime import protocol
from nbscale_runtime.protocol import OUT_INDEX
from nbscale_runtime.serialization import PayloadWriter
from nbscale_server.options import FunctionOptions


def square(x: int) -> int:
    return x * x


@pytest.fixture
def h() -> Iterator[Harness]:
    harness = Harness(max_workers_total=4, heartbeat_timeout=15.0)
    yield harness
    harness.close()


@pytest.fixture
def doomed() -> Iterator[subprocess.Popen[bytes]]:
    """A process standing for a kernel, which the test kills."""
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    yield proc
    proc.kill()
    proc.wait()


class Kernel:
    """A caller over a socket: it says hello with its process, then submits."""

    def __init__(self, h: Harness, pid: int, host: str = socket.gethostname()) -> None:
        self.h = h
        self.identity = f"kernel-{pid}".encode()
        owner = {"kernel_id": None, "name": "a.ipynb", "pid": pid, "host": host}
        hello = protocol.Hello(
            protocol.PROTOCOL_VERSION, VERSIONS["python"], VERSIONS["cloudpickle"], 1, owner
        )
        self.send(hello)

    def send(self, msg: protocol.Message, payload: list[bytes] | None = None) -> None:
        self.h.plane.api.handle(self.identity, msg, payload or [])

    def submit(self, pool: str, call_id: str, kind: str, n: int, last: bool = True) -> None:
        """Inputs 0 to ``n - 1``; ``last``: no more will come (else the kernel still feeds)."""
        writer = PayloadWriter()
        items = [[i, *add_input(writer, i, (i,), {}), 0] for i in range(n)]
        total = n if last else None
        self.send(protocol.SubmitInputs(2, call_id, pool, kind, items, total), writer.frames())


def registered(h: Harness, kernel: Kernel) -> str:
    options = FunctionOptions(max_containers=2, scaledown_window=5)
    msg = protocol.RegisterFunction(3, "fn-square", "square", options.to_wire(), [])
    kernel.send(msg, [cloudpickle.dumps(square)])
    [pool] = kernel.h.plane.api.records.pools
    return pool


def test_a_dead_kernels_map_is_cancelled_and_its_spawns_kept(h, doomed):
    kernel = Kernel(h, doomed.pid)
    pool = registered(h, kernel)
    kernel.submit(pool, "fc-map", "map", 50)
    kernel.submit(pool, "fc-spawned", "spawn", 2)
    h.tick()
    assert h.pool(pool)["backlog"] > 0
    doomed.kill()  # kill -9 of the kernel
    doomed.wait()
    h.tick(1.0)
    detail = h.plane.api.call_info("fc-map")
    assert (detail["pending"], detail["running"], detail["cancelled"]) == (0, 0, True)
    assert "cancelled map fc-map: its caller is gone (its process" in str(h.pool(pool)["events"])
    assert h.plane.delivery.call("fc-map").cancelled
    spawned = h.plane.delivery.call("fc-spawned")
    assert not spawned.cancelled
    for _ in range(5):
        h.tick()
        for worker in h.workers(pool):
            worker.finish()
    assert spawned.outcomes is not None  # both kept for whoever asks with from_id
    assert spawned.outcomes.all_settled(0, 2)
    h.tick(6.0, steps=2)
    assert h.workers(pool) == []  # and the pool scaled down


def test_a_dead_kernels_detached_map_runs_on_with_the_inputs_it_sent(h, doomed):
    """Detached (its view's Detach button), a map outlives its caller as a spawned call
    does: the inputs the kernel sent before it died run, and ``from_id`` gets them all."""
    kernel = Kernel(h, doomed.pid)
    pool = registered(h, kernel)
    kernel.submit(pool, "fc-detached", "map", 6, last=False)  # the kernel still feeds it
    h.tick()
    h.plane.api.detach_call("fc-detached")
    doomed.kill()
    doomed.wait()
    h.tick(1.0)
    call = h.plane.delivery.call("fc-detached")
    assert not call.cancelled and call.total == 6  # no wait for inputs that will never come
    assert "fc-detached runs on detached: its caller is gone" in str(h.pool(pool)["events"])
    for _ in range(5):
        h.tick()
        for worker in h.workers(pool):
            worker.finish()
    assert call.outcomes is not None and call.outcomes.all_settled(0, 6) and call.finished
    assert [
        row[OUT_INDEX] for row, _, _ in h.plane.delivery.store.outputs(call.call_id, 0, None)
    ] == list(range(6))


def test_a_live_kernel_is_never_judged_by_its_silence(h):
    kernel = Kernel(h, os.getpid())  # alive, on this host, never pinging
    pool = registered(h, kernel)
    kernel.submit(pool, "fc-map", "map", 3)
    h.tick(60.0)
    assert not h.plane.delivery.call("fc-map").cancelled


def test_a_kernel_elsewhere_is_gone_when_silent_past_the_grace(h):
    kernel = Kernel(h, 4242, host="another-host")
    pool = registered(h, kernel)
    kernel.submit(pool, "fc-map", "map", 3)
    h.tick(10.0)
    kernel.send(protocol.Ping(4))
    h.tick(10.0)
    assert not h.plane.delivery.call("fc-map").cancelled  # heard 10 s ago
    h.tick(6.0)
    assert h.plane.delivery.call("fc-map").cancelled
    assert "its caller has been silent for 16 s" in str(h.pool(pool)["events"])
