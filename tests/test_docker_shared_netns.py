"""Docker workers sharing one network namespace (NBSCALE_DOCKER_NETWORK=shared): they join the
namespace of one holder container and keep everything else of their own; the holder is
hardened, removed with the workers, and replaced when it is lost."""

from __future__ import annotations

import os
import sys
import time

import cloudpickle
import pytest
from conftest import wait_until
from docker_pools import pool_containers

import nbscale
from nbscale_server.launchers.docker_engine import user_network_name

pytestmark = pytest.mark.docker

cloudpickle.register_pickle_by_value(sys.modules[__name__])

app = nbscale.App("test-docker-shared-netns")


@pytest.fixture(scope="module", autouse=True)
def _shared(docker_plane):
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("NBSCALE_DOCKER_NETWORK", "shared")
        mp.setenv("NBSCALE_HEARTBEAT_TIMEOUT", "3")
        yield docker_plane


@app.function(max_containers=2, scaledown_window=2)
def namespaces(seconds):
    """The worker's network and pid namespaces (the kernel's ids for them)."""
    time.sleep(seconds)
    return os.readlink("/proc/self/ns/net"), os.readlink("/proc/self/ns/pid")


def holders(client):
    mine = {"label": ["nbscale.netns", f"nbscale.owner={_owner(client)}"]}
    return client.containers.list(filters=mine, ignore_removed=True)


def _owner(client):
    """This process's control plane's owner label, as its containers carry it."""
    for c in client.containers.list(
        all=True, filters={"label": "nbscale.owner"}, ignore_removed=True
    ):
        if c.labels["nbscale.owner"].startswith(f"{os.getpid()}:"):
            return c.labels["nbscale.owner"]
    raise AssertionError("no container of this process's control plane")


def test_workers_share_the_network_namespace_and_nothing_else(_shared):
    client = _shared
    seen = list(namespaces.map([1.5, 1.5]))
    assert len({net for net, _ in seen}) == 1  # one network namespace
    assert len({pid for _, pid in seen}) == 2  # two containers, processes apart
    (holder,) = holders(client)
    holder.reload()
    host = holder.attrs["HostConfig"]
    assert host["ReadonlyRootfs"] is True and host["CapDrop"] == ["ALL"]
    assert host["NetworkMode"] == user_network_name()  # the control plane's bridge
    assert holder.attrs["Config"]["User"] not in ("", "0", "root")
    workers = pool_containers(client, "namespaces", sparse=False, ignore_removed=True)
    assert workers
    for worker in workers:
        assert worker.attrs["HostConfig"]["NetworkMode"] == f"container:{holder.id}"


def test_a_lost_holder_is_replaced(_shared):
    client = _shared
    namespaces.remote(0)
    (holder,) = holders(client)
    holder.kill()  # its namespace's interface goes with it: the workers are lost
    assert namespaces.remote(0)  # retried on a worker of a new holder
    (replaced,) = holders(client)
    assert replaced.id != holder.id
    wait_until(lambda: len(holders(client)) == 1, timeout=10)
