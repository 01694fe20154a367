"""Docker workers failing: killed mid-input, out of memory, a missing image, no engine, and a
control plane that crashed (the next one cleans up)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from typing import Any

import cloudpickle
import pytest
from conftest import wait_until
from engine_leftovers import left_on_engine
from jupyter_process import Server

import nbscale
from nbscale._image_build import build
from nbscale_server.launchers.docker_engine import reap_orphans, user_network_name

pytestmark = pytest.mark.docker

cloudpickle.register_pickle_by_value(sys.modules[__name__])  # workers lack this module

app = nbscale.App("test-docker-failures")


@pytest.fixture(scope="module", autouse=True)
def _docker(docker_plane):
    return docker_plane


@app.function(max_containers=1, scaledown_window=5, retries=2)
def slow(x):
    time.sleep(3)
    return x + 1


@app.function(max_containers=1, memory=64)
def hog(megabytes):
    data = b"x" * (megabytes * 2**20)  # written, so the pages are really used
    return len(data)


def test_container_killed_mid_input_is_retried(docker_plane):
    call = slow.spawn(1)
    wait_until(lambda: slow.get_current_stats().num_running_inputs == 1, timeout=30)
    (worker,) = slow.get_current_stats().workers
    docker_plane.containers.get(f"nbscale-{worker['id']}").kill()
    assert call.get(timeout=60) == 2  # retried on a new container
    workers = slow.get_current_stats().workers
    assert [w["id"] for w in workers] != [worker["id"]]
    wait_until(
        lambda: (
            not docker_plane.containers.list(
                all=True, filters={"name": worker["id"]}, ignore_removed=True
            )
        )
    )


def test_out_of_memory_is_named_in_the_error():
    with pytest.raises(nbscale.WorkerLostError) as info:
        hog.remote(512)
    error = info.value
    assert "ran out of memory (memory limit 64 MiB)" in str(error)
    assert error.exit_code == 137
    assert hog.remote(1) == 2**20  # a small input still runs, on a new container


def test_out_of_memory_blames_only_the_input_that_ran_out():
    """The defect: the container OOM-killed by input 5 failed inputs 1, 2 and 4 (which had
    finished, or not started) with "ran out of memory"."""
    sizes = [1] * 12
    sizes[5] = 512
    results = list(hog.map(sizes, return_exceptions=True))
    error = results[5]
    assert isinstance(error, nbscale.WorkerLostError) and error.index == 5
    assert "ran out of memory (memory limit 64 MiB)" in str(error)
    assert results[:5] + results[6:] == [2**20] * 11


@app.function(max_containers=1, scaledown_window=5)
def crashes_at_five(x):
    if x == 5:
        os.kill(os.getpid(), signal.SIGKILL)
    return x


def crashes_seen() -> int:
    """Containers of crashes_at_five lost while running input 5, as their pools' logs say."""
    pools = [p for p in nbscale.status()["pools"] if p["function"] == "crashes_at_five"]
    said = "while running input(s) 5 (user's loss"
    return sum(said in e["message"] for p in pools for e in p["events"])


@pytest.mark.parametrize("retries", [0, 2])
def test_only_the_input_that_crashed_its_container_fails(retries):
    fn = crashes_at_five.with_options(retries=nbscale.Retries(retries, initial_delay=0.0))
    before = crashes_seen()
    results = list(fn.map(range(20), return_exceptions=True))
    error = results[5]
    assert isinstance(error, nbscale.WorkerLostError) and error.index == 5
    assert "counted against the function's retries" in str(error)
    assert results[:5] + results[6:] == [x for x in range(20) if x != 5]
    assert crashes_seen() - before == retries + 1


def test_missing_image_fails_fast_without_pulling(docker_plane, fresh_plane):
    # no warm spare, which would serve from the image it started with, removed or not
    fresh_plane(NBSCALE_DOCKER_SPARES="0")
    image = nbscale.Image.from_kernel().env({"NBSCALE_TEST": "doomed"})
    tag = build(image)

    @app.function(image=image, scaledown_window=1, name="doomed")
    def doomed(x):
        return x

    assert doomed.remote(1) == 1
    wait_until(lambda: doomed.get_current_stats().num_total_runners == 0, timeout=30)
    docker_plane.images.remove(tag, force=True)
    started = time.monotonic()
    with pytest.raises(nbscale.LaunchError) as info:
        doomed.remote(2)
    assert time.monotonic() - started < 20  # three tries with backoff, no pull
    assert f"image {tag!r} is not on this Docker host" in str(info.value)
    assert "never pulls" in str(info.value)


def test_missing_base_image_is_a_clear_build_error(monkeypatch):
    from nbscale import _base_image

    monkeypatch.setenv("NBSCALE_BASE_IMAGE", "nbscale/no-such-base:never")
    # as here, where no registry answers (elsewhere the base would be pulled and made)
    monkeypatch.setattr(_base_image, "base_registry_problem", lambda python: "no such host")
    with pytest.raises(nbscale.ImageBuildError) as info:
        build(nbscale.Image.from_kernel())
    assert str(info.value) == (
        "no base image nbscale/no-such-base:never on this Docker host: run "
        "`nbscale images base` (no registry answers to pull one from: no such host)"
    )


def test_no_docker_engine_is_a_clear_error(fresh_plane):
    fresh_plane(NBSCALE_LAUNCHER="docker", DOCKER_HOST="unix:///nonexistent/docker.sock")
    with pytest.raises(nbscale.LaunchError) as info:
        slow.remote(1)
    message = str(info.value)
    assert "cannot reach the Docker engine at unix:///nonexistent/docker.sock" in message
    assert "NBSCALE_LAUNCHER=process" in message


CRASHING_PLANE = """
import os, sys, time
import nbscale
app = nbscale.App("crash")

@app.function(min_containers=2, max_containers=2)
def f(x):
    return x

f.remote(0)
while f.get_current_stats().containers["idle"] < 2:
    time.sleep(0.05)
print("ready", flush=True)
time.sleep(600)
"""


@pytest.mark.parametrize("network", ["bridge", "shared"])
def test_next_control_plane_removes_what_a_crashed_one_left(
    docker_plane, fresh_plane, network, caplog
):
    env = {**os.environ, "NBSCALE_LAUNCHER": "docker", "NBSCALE_DOCKER_NETWORK": network}
    proc = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(CRASHING_PLANE)],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "ready"
    finally:
        proc.send_signal(signal.SIGKILL)  # no chance to clean up
        proc.wait()
        proc.stdout.close()
    owner = {"label": "nbscale.owner"}
    orphans = [
        c
        for c in docker_plane.containers.list(all=True, filters=owner, ignore_removed=True)
        if c.labels["nbscale.owner"].startswith(f"{proc.pid}:")
    ]
    # two workers (and, sharing a network namespace, the holder of it; a warm spare, if it
    # had started one yet, goes too)
    workers = [c for c in orphans if c.labels.get("nbscale.pool") != ""]  # "": a spare
    assert len(workers) == 2 + (network == "shared")
    networks = {c.attrs["HostConfig"]["NetworkMode"] for c in orphans}
    assert networks - {user_network_name()} <= {f"container:{c.id}" for c in orphans}
    fresh_plane(NBSCALE_LAUNCHER="docker")
    assert nbscale.status()["launcher"] == "docker"  # a new control plane starts
    for container in orphans:
        with pytest.raises(Exception, match="404"):
            container.reload()
    said = [r.getMessage() for r in caplog.records if "control plane that died" in r.getMessage()]
    assert said and all(c.name in said[0] for c in orphans), said  # names what it removed
    docker_plane.networks.get(user_network_name())  # kept: the user's, for the next ones


def test_gpus_are_assigned_by_uuid_and_a_missing_toolkit_is_explained(docker_plane, tmp_path):
    """This engine has no NVIDIA runtime and this host no GPU: an inventory of two stands in
    for NVML, and Docker's refusal of the GPU request is the real one."""
    from nbscale_server.gpus import GpuInfo
    from nbscale_server.launchers import LaunchFailed, WorkerSpec
    from nbscale_server.launchers.docker import DockerLauncher
    from nbscale_server.options import FunctionOptions

    tag = build(nbscale.Image.from_kernel())
    other = docker_plane.containers.run(  # another control plane's container holds GPU-a
        tag, ["sleep", "60"], detach=True, labels={"nbscale.gpus": "GPU-a"}
    )
    inventory = [
        GpuInfo(0, "GPU-a", "NVIDIA A100-SXM4-80GB", 80 * 2**30),
        GpuInfo(1, "GPU-b", "NVIDIA A100-SXM4-80GB", 80 * 2**30),
    ]
    launcher = DockerLauncher(network="host", gpus=inventory)
    try:
        config = tmp_path / "wk-gpu.json"
        config.write_text("{}")

        def spec(worker_id, gpu):
            return WorkerSpec(worker_id, "pl-gpu", str(config), FunctionOptions(gpu=gpu, image=tag))

        handle = launcher.start(spec("wk-gpu1", "A100"))
        assert handle.ref.gpus == ["GPU-b"]  # GPU-a is taken
        assert launcher.wait(handle, 30) == 125
        reason = launcher.exit_reason(handle) or ""
        assert "Docker here cannot expose GPUs: install nvidia-container-toolkit" in reason
        assert not docker_plane.containers.list(
            all=True, filters={"name": "nbscale-wk-gpu1"}, ignore_removed=True
        )
        # GPU-b is free again; GPU-a is still taken
        with pytest.raises(LaunchFailed, match="not enough free GPUs: 2 requested, 1 free"):
            launcher.start(spec("wk-gpu2", "A100:2"))
        with pytest.raises(LaunchFailed, match=r"no GPU matches 'H100' \(found: 2 x A100-80GB\)"):
            launcher.start(spec("wk-gpu3", "H100"))
    finally:
        launcher.close()
        other.remove(force=True)


def test_close_returns_once_a_removal_already_under_way_is_done(docker_plane) -> None:
    """The defect: a container whose exit was being collected (and so removed) as the
    control plane closed was still on the engine after ``nbscale.shutdown()`` returned: the
    engine answers a second removal with 409 at once, and that was taken as done."""
    import threading

    from nbscale_server.launchers.docker import DockerLauncher

    tag = build(nbscale.Image.from_kernel())
    launcher = DockerLauncher(network="host")
    try:
        # 5,000 files in its writable layer: its removal is slow enough to land inside
        fill = "mkdir /tmp/f && cd /tmp/f && seq 5000 | xargs touch && echo full && sleep 60"
        held = docker_plane.containers.run(
            tag, ["sh", "-c", fill], detach=True, labels=launcher.labels
        )
        wait_until(lambda: b"full" in held.logs(), timeout=60)
        first = threading.Thread(target=held.remove, kwargs={"force": True})
        first.start()  # as _collect does for an exited worker
        wait_until(lambda: _removing(docker_plane, held.id), timeout=10, every=0.001)
    finally:
        launcher.close()
    assert not left_on_engine(docker_plane, os.getpid())
    first.join(30)


def _removing(engine, container_id: str) -> bool:
    [found] = engine.api.containers(all=True, filters={"id": container_id}) or [{"State": "gone"}]
    return found["State"] != "running"


@app.function(min_containers=2, max_containers=2)
def naps(seconds):
    time.sleep(seconds)
    return seconds


@pytest.mark.slow
def test_a_killed_servers_containers_stop_themselves(tmp_path, docker_plane, monkeypatch):
    """The defect: containers outlived a killed control plane (3 of 3 still up after 60 s):
    over TCP nothing told them it was gone, and only the next control plane removed them."""
    server = Server(tmp_path, launcher="docker", heartbeat_timeout=3)
    try:
        nbscale.shutdown()
        monkeypatch.setenv("NBSCALE_CONNECTION_FILE", str(server.connection_file))
        naps.spawn(600)  # one of them busy with user code, the other idle

        def running() -> list[Any]:
            ours = docker_plane.containers.list(
                filters={"label": "nbscale.owner"}, ignore_removed=True
            )
            mine = f"{server.proc.pid}:"
            return [c for c in ours if c.labels["nbscale.owner"].startswith(mine)]

        def workers() -> list[Any]:
            return [c for c in running() if c.labels.get("nbscale.pool") != ""]  # "": a spare

        wait_until(lambda: len(workers()) == 2, timeout=60)
        wait_until(lambda: len(running()) == 3, timeout=60)  # and a warm spare, which too
        # stops when no control plane keeps it alive
        wait_until(lambda: naps.get_current_stats().num_running_inputs == 1, timeout=30)
        server.kill()
        killed_at = time.monotonic()
        wait_until(lambda: not running(), timeout=30)
        assert time.monotonic() - killed_at < 3 + 10  # the grace, and the time to exit
    finally:
        server.stop()
        nbscale.shutdown()
        reap_orphans(docker_plane.api)  # the stopped containers and their network
