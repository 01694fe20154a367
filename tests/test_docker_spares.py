"""Warm spare Docker containers (``launchers/docker_spares.py``): a new pool's first worker
takes a container started before its call, through TCP or its own Unix socket; workers with
limits start their own; a spare killed from outside is replaced; ``docker_spares=0`` keeps
none. (That a spare stops once its control plane is killed: ``test_docker_failures``.)"""

from __future__ import annotations

import os
import socket
import sys
import time

import cloudpickle
import numpy as np
import pytest
from conftest import wait_until

import nbscale
from nbscale import _client
from nbscale._loop import get_loop
from nbscale_server.events import EventHub

pytestmark = pytest.mark.docker

cloudpickle.register_pickle_by_value(sys.modules[__name__])  # workers lack this module

app = nbscale.App("test-docker-spares")


@pytest.fixture(scope="module", autouse=True)
def _docker(docker_plane):
    return docker_plane


def where(x):
    """The worker that ran the call, the container's host name, and ``x`` doubled."""
    return os.environ["NBSCALE_WORKER_ID"], socket.gethostname(), x * 2


# Four functions, so four pools (a pool is per function: the same code would share one).
@app.function(scaledown_window=30)
def first(x):
    return where(x)


@app.function(scaledown_window=30)
def second(x):
    return where(x)


@app.function(scaledown_window=30)
def third(x):
    return where(x)


@app.function(memory=256, scaledown_window=5)
def limited(x):
    return where(x)


def spares(client) -> list:
    """This process's control plane's warm spares, as `docker ps` lists them: its running
    containers with an empty pool label that run no worker yet."""
    mine = f"{os.getpid()}:"
    found = client.containers.list(filters={"label": "nbscale.owner"}, ignore_removed=True)
    workers = {w["id"] for p in nbscale.status()["pools"] for w in p["workers"]}
    return [
        c
        for c in found
        if c.labels["nbscale.owner"].startswith(mine)
        and c.labels["nbscale.pool"] == ""
        and c.labels["nbscale.worker"] not in workers
    ]


def feed_spares() -> list[str]:
    """The spares as the events feed sends them to the sidebar (its snapshot's)."""

    async def on_loop() -> list[str]:
        client = await _client.get_client()
        return EventHub(client.control_plane.api).snapshot()["spares"]

    return get_loop().run(on_loop())


def one_spare(client, other_than: str | None = None):
    """The one spare, once it is up (and is not ``other_than``, a container id)."""
    wait_until(
        lambda: [s.id for s in spares(client)] not in ([], [other_than]) and spares(client),
        timeout=60,
    )
    [spare] = spares(client)
    return spare


def test_a_new_functions_first_worker_runs_in_a_spare_started_before_its_call(docker_plane):
    worker, _, doubled = first.remote(1)  # its worker's start leaves a spare of its image
    assert doubled == 2
    spare = one_spare(docker_plane)
    assert spare.labels["nbscale.worker"] != worker
    assert nbscale.status()["spares"] == [spare.name]  # what `docker ps` shows
    assert feed_spares() == [spare.name]  # and the sidebar
    worker, host, doubled = second.remote(21)
    assert doubled == 42
    assert worker == spare.labels["nbscale.worker"]  # the container listed before the call
    assert host == spare.id[:12]
    # named as its worker (as the sidebar shows it), and a new spare waits
    [pool] = [p for p in nbscale.status()["pools"] if p["function"] == "second"]
    assert pool["workers"][0]["name"] == spare.name == f"nbscale-{worker}"
    assert one_spare(docker_plane, other_than=spare.id).id != spare.id
    assert list(second.map(range(5))) == [(worker, host, x * 2) for x in range(5)]


def test_a_worker_with_a_memory_limit_starts_its_own_container(docker_plane):
    spare = one_spare(docker_plane)
    worker, _, doubled = limited.remote(4)
    assert doubled == 8
    assert worker != spare.labels["nbscale.worker"]
    assert [s.id for s in spares(docker_plane)] == [spare.id]  # still waiting, untouched


def test_a_spare_killed_from_outside_is_replaced(docker_plane):
    spare = one_spare(docker_plane)
    spare.kill()
    replacement = one_spare(docker_plane, other_than=spare.id)
    worker, _, doubled = third.remote(5)
    assert doubled == 10
    assert worker == replacement.labels["nbscale.worker"]


def test_no_spare_with_docker_spares_0(docker_plane, fresh_plane):
    fresh_plane(NBSCALE_DOCKER_SPARES="0")
    assert first.remote(3)[2] == 6
    time.sleep(2)  # a spare would be up by now (it is within a second, above)
    assert spares(docker_plane) == []
    assert nbscale.status()["spares"] == []


@app.function(scaledown_window=30)
def big(a):
    return a * 2, os.environ["NBSCALE_WORKER_ID"], sorted(os.listdir("/run/nbscale"))


def test_a_spare_takes_its_worker_socket_and_shared_memory_with_ipc(docker_plane, fresh_plane):
    fresh_plane(NBSCALE_DOCKER_TRANSPORT="ipc")
    assert first.remote(1)[2] == 2
    spare = one_spare(docker_plane)
    a = np.arange(4 << 20, dtype=np.float64)  # 32 MiB: through shared memory
    doubled, worker, files = big.remote(a)
    assert np.array_equal(doubled, a * 2)
    assert worker == spare.labels["nbscale.worker"]
    assert files == ["alive", "control.sock", "register", "wake", "worker.json"]


@app.function(scaledown_window=5)
def wide(x):
    return where(x)


def test_more_starts_at_once_than_the_launcher_has_threads_all_serve(fresh_plane):
    """The defect: each start queued a spare's refill that waited on the launcher's threads
    for the starts still queued behind it: past 8 at once, the rest never started."""
    fresh_plane(NBSCALE_MAX_WORKERS="12")
    wide.update_autoscaler(min_containers=12)
    wait_until(lambda: wide.get_current_stats().containers["idle"] == 12, timeout=90)
    wide.update_autoscaler(min_containers=0)
