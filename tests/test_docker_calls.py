"""Every call style on Docker workers, the containers' hardening, and autoscaling seen from
the Docker engine itself."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from typing import Any

import cloudpickle
import pytest
from conftest import wait_until, worker_logs
from docker_pools import pool_containers

import nbscale

pytestmark = pytest.mark.docker

# Workers have nbscale's runtime, not this test module: send these functions by value, as
# functions defined in a notebook always travel.
cloudpickle.register_pickle_by_value(sys.modules[__name__])

app = nbscale.App("test-docker-calls")


@pytest.fixture(scope="module", autouse=True)
def _docker(docker_plane):
    return docker_plane


@app.function(max_containers=2, scaledown_window=5)
def square(x):
    return x * x


@app.function(max_containers=2, scaledown_window=5)
def add(a, b, scale=1):
    return (a + b) * scale


@app.function(max_containers=1, scaledown_window=5)
def fail_on_odd(x):
    if x % 2:
        raise ValueError(f"odd {x}")
    return x


@app.function(max_containers=1, scaledown_window=5)
async def slow_double(x):
    await asyncio.sleep(0.01)
    return 2 * x


@app.function(max_containers=1, scaledown_window=5, cpu=0.5, memory=256)
def inside():
    """What a worker sees of its container."""
    with open("/proc/self/status") as f:
        status = dict(line.split(":", 1) for line in f if ":" in line)
    try:
        with open("/opt/venv/written", "w"):
            pass
        root_writable = True
    except OSError:
        root_writable = False
    with open("/tmp/scratch", "w") as f:
        f.write("ok")
    return {
        "uid": os.getuid(),
        "in_docker": os.path.exists("/.dockerenv"),
        "cap_eff": status["CapEff"].strip(),
        "no_new_privs": status["NoNewPrivs"].strip(),
        "root_writable": root_writable,
        "docker_socket": os.path.exists("/var/run/docker.sock"),
        "env_keys": sorted(k for k in os.environ if "KEY" in k or "SECRET" in k),
        "python": sys.version_info[:2],
    }


@app.function(max_containers=3, scaledown_window=1)
def hold(seconds):
    time.sleep(seconds)
    return os.uname().nodename


@app.function(max_containers=1, scaledown_window=30)
def chatty(x):
    print(f"working on {x}")
    return x


def test_the_launcher_is_docker():
    info = nbscale.status()
    assert info["launcher"] == "docker"
    assert info["worker_endpoint"].startswith("tcp://")
    assert not info["worker_endpoint"].startswith("tcp://0.0.0.0")


def test_map_remote_and_starmap():
    assert list(square.map(range(20))) == [x * x for x in range(20)]
    assert square.remote(7) == 49
    assert list(add.map([1, 2], [10, 20], kwargs={"scale": 3})) == [33, 66]
    assert list(add.starmap([(1, 2), (3, 4)])) == [3, 7]


def test_spawn_and_for_each():
    call = square.spawn(5)
    assert call.get(timeout=60) == 25
    assert sorted(square.spawn_map(range(4)).iter()) == [0, 1, 4, 9]
    square.for_each(range(5))


def test_return_exceptions_and_remote_errors():
    results = list(fail_on_odd.map(range(4), return_exceptions=True))
    assert results[0] == 0 and results[2] == 2
    assert isinstance(results[1], ValueError) and str(results[1]) == "odd 1"
    with pytest.raises(ValueError, match="odd 3"):
        fail_on_odd.remote(3)


def test_aio_twins():
    async def main():
        one = await slow_double.remote.aio(4)
        many = await slow_double.map.aio(range(5))
        streamed = [x async for x in square.map.aio(range(3))]
        return one, many, streamed

    assert asyncio.run(main()) == (8, [0, 2, 4, 6, 8], [0, 1, 4])


def test_containers_are_hardened_and_limited(docker_plane):
    seen = inside.remote()
    assert seen["in_docker"]
    assert seen["uid"] != 0
    assert seen["cap_eff"] == "0000000000000000"
    assert seen["no_new_privs"] == "1"
    assert not seen["root_writable"]
    assert not seen["docker_socket"]
    assert seen["env_keys"] == []  # keys travel in the mounted config file only
    assert tuple(seen["python"]) == sys.version_info[:2]
    (container,) = pool_containers(docker_plane, "inside")
    container.reload()  # its full inspection
    host = container.attrs["HostConfig"]
    assert host["Init"] is True
    assert host["ReadonlyRootfs"] is True
    assert host["CapDrop"] == ["ALL"]
    assert host["SecurityOpt"] == ["no-new-privileges:true"]
    assert host["NanoCpus"] == 500_000_000
    assert host["Memory"] == 256 * 2**20
    assert host["LogConfig"]["Type"] == "json-file"
    labels = container.labels
    assert {"nbscale.server", "nbscale.pool", "nbscale.worker"} <= set(labels)
    mounts = sorted((m["Destination"], m["RW"]) for m in container.attrs["Mounts"])
    # its config (keys) read-only; its register (which inputs it runs) shared read-write
    assert mounts == [("/run/nbscale/register", True), ("/run/nbscale/worker.json", False)]


def test_pool_scales_up_and_down_in_docker(docker_plane):
    since = time.time()
    call = hold.spawn_map([1.5] * 6)
    wait_until(lambda: len(pool_containers(docker_plane, "hold")) == 3, timeout=30)
    assert hold.get_current_stats().num_total_runners == 3
    ids = [c.id for c in pool_containers(docker_plane, "hold")]
    assert len(set(call.iter())) == 3  # three containers (three host names) did the work

    def running() -> list[Any]:
        return docker_plane.containers.list(filters={"id": ids}, sparse=True)

    wait_until(lambda: not running(), timeout=30)
    # Scaled down, each left cleanly: exit 0, as the sidebar's "stopped" event says (the
    # defect: Docker's SIGTERM caught the worker's interpreter finalizing, exit 143)
    died = docker_plane.api.events(
        since=since,
        until=time.time(),
        filters={"type": "container", "event": "die", "container": ids},
        decode=True,
    )
    assert [e["Actor"]["Attributes"]["exitCode"] for e in died] == ["0"] * 3
    exited = {"status": "exited", "label": "nbscale.worker"}
    owner = f"{os.getpid()}:"  # this control plane's, not a parallel run's

    def left_exited() -> list[Any]:
        found = docker_plane.containers.list(all=True, filters=exited, sparse=True)
        return [c for c in found if c.attrs["Labels"]["nbscale.owner"].startswith(owner)]

    # A container stops running before the launcher, told of its exit, removes it.
    wait_until(lambda: not left_exited(), timeout=30)


def test_stats_list_each_container_with_its_gpus():
    square.remote(1)
    workers = square.get_current_stats().workers
    assert workers and all(w["gpus"] == [] and w["stats"] == {} for w in workers)


def test_a_container_is_named_and_its_log_followed_by_docker_timestamps(docker_plane):
    assert chatty.remote(1) == 1
    [pool] = [p for p in nbscale.status()["pools"] if p["function"] == "chatty"]
    [worker] = pool["workers"]
    (container,) = pool_containers(docker_plane, "chatty")
    container.reload()  # its full inspection
    # the name and image `docker ps` shows, not the pid inside the container
    assert worker["name"] == container.name == f"nbscale-{worker['id']}"
    assert worker["image"] == pool["image"] and pool["image"].startswith("nbscale/")
    first = worker_logs(worker["id"])
    [line] = [line for line in first["lines"] if line["text"] == "working on 1"]
    assert line["index"] == 0 and line["call_id"].startswith("fc-") and line["time"] > 0
    assert isinstance(first["cursor"], int) and first["cursor"] < 2**53
    assert list(chatty.map([7, 8])) == [7, 8]
    since = worker_logs(worker["id"], first["cursor"])
    texts = [(line["index"], line["text"]) for line in since["lines"]]
    assert texts == [(0, "working on 7"), (1, "working on 8")]
    assert worker_logs(worker["id"], since["cursor"])["lines"] == []


def test_host_network_fast_path(fresh_plane):
    fresh_plane(NBSCALE_LAUNCHER="docker", NBSCALE_DOCKER_NETWORK="host")
    assert nbscale.status()["worker_endpoint"].startswith("tcp://127.0.0.1:")
    assert square.remote(9) == 81


def test_demo_prints_the_docker_launcher():
    env = {**os.environ, "NBSCALE_LAUNCHER": "docker"}
    proc = subprocess.run(
        [sys.executable, "-m", "nbscale", "demo", "--inputs", "20", "--scaledown-window", "1"],
        capture_output=True,
        text=True,
        timeout=100,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr
    assert "workers: Docker containers (launcher=docker)" in proc.stdout
    assert "done: 20 results" in proc.stdout
