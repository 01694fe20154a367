"""The user's Docker network: made once, shared by the user's control planes, kept after
them; made once when several control planes start at once; made again when removed while
a control plane runs."""

from __future__ import annotations

import sys
import threading
import time

import cloudpickle
import pytest
from conftest import wait_until

import nbscale
from nbscale_server.launchers import docker_engine
from nbscale_server.launchers.docker_engine import user_network, user_network_name

pytestmark = pytest.mark.docker

cloudpickle.register_pickle_by_value(sys.modules[__name__])  # workers lack this module

app = nbscale.App("test-docker-network")


@app.function(max_containers=1, scaledown_window=1)
def plus_one(x):
    return x + 1


@app.function(max_containers=1, scaledown_window=60)
def plus_two(x):
    return x + 2


def _network_of_worker(engine) -> str:
    (worker,) = plus_two.get_current_stats().workers
    container = engine.containers.get(f"nbscale-{worker['id']}")
    return container.attrs["HostConfig"]["NetworkMode"]


def test_control_planes_of_a_user_share_one_network_that_outlives_them(docker_plane, fresh_plane):
    assert plus_two.remote(1) == 3
    assert _network_of_worker(docker_plane) == user_network_name()
    network_id = docker_plane.networks.get(user_network_name()).id
    fresh_plane(NBSCALE_LAUNCHER="docker")  # the first control plane stops
    assert docker_plane.networks.get(user_network_name()).id == network_id
    assert plus_two.remote(2) == 4
    assert _network_of_worker(docker_plane) == user_network_name()
    assert docker_plane.networks.get(user_network_name()).id == network_id


def test_control_planes_starting_at_once_make_one_network(docker_plane, monkeypatch):
    """Docker's own check of a name is no lock: two planes asking at once could both make
    one. A name of this test's own, so that the user's network is not touched."""
    name = f"nbscale-test-network-{time.monotonic_ns()}"
    monkeypatch.setattr(docker_engine, "user_network_name", lambda: name)
    gateways: list[str] = []
    start = threading.Barrier(6)

    def make() -> None:
        start.wait()
        gateways.append(user_network(docker_plane.api).gateway)

    threads = [threading.Thread(target=make) for _ in range(6)]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        made = [n for n in docker_plane.networks.list(names=[name]) if n.name == name]
        assert len(made) == 1
        assert len(gateways) == 6 and len(set(gateways)) == 1
    finally:
        for network in docker_plane.networks.list(names=[name]):
            network.remove()


def test_a_network_removed_while_the_plane_runs_is_made_again(
    docker_plane, fresh_plane, monkeypatch
):
    """`docker network prune` removes the network while no worker is on it; the next
    worker still starts, and reaches its control plane. (A warm spare would keep the
    network in use: none here.) A network of this test's own: Docker 20.10 sometimes keeps
    a count of endpoints that are gone ("has active endpoints" with none), which would
    make a shared one impossible to remove here, not nbscale's making it again."""
    name = f"nbscale-test-network-{time.monotonic_ns()}"
    monkeypatch.setattr(docker_engine, "user_network_name", lambda: name)
    fresh_plane(NBSCALE_LAUNCHER="docker", NBSCALE_DOCKER_SPARES="0")
    try:
        assert plus_one.remote(1) == 2
        wait_until(lambda: plus_one.get_current_stats().num_total_runners == 0, timeout=60)

        def removed() -> bool:
            try:
                docker_plane.networks.get(name).remove()
            except Exception as exc:  # the exited worker's container is still being removed
                return "not found" in str(exc)
            return True

        wait_until(removed, timeout=30)
        assert plus_one.remote(5) == 6
        docker_plane.networks.get(name)
    finally:
        nbscale.shutdown()
        for network in docker_plane.networks.list(names=[name]):
            network.remove()
