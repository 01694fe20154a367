"""Local worker processes get a container's limits: ``memory=``, ``cpu=``, nothing left
behind when they stop, and logs that do not grow without bound.

Real worker processes, started by this process's embedded control plane: with cgroups where
this machine lets it make them (root here), and with the launcher's own watching where it
cannot (the tests take cgroups away to see that too).
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import psutil
import pytest
from conftest import wait_until

import nbscale
from nbscale.exceptions import WorkerLostError
from nbscale_server.launchers import cgroups

app = nbscale.App("test-process-limits")


@app.function(memory=128, max_containers=1, scaledown_window=5)
def hog(mib):
    held = []
    for _ in range(mib // 16):
        held.append(bytearray(16 << 20))  # zero-filled: resident at once
        time.sleep(0.02)
    return len(held)


@app.function(memory=256, max_containers=1, scaledown_window=5)
def modest(mib):
    return len(bytearray(mib << 20))


@app.function(cpu=0.2, max_containers=1, scaledown_window=5)
def burn(seconds):
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        pass
    return time.process_time(), sorted(os.sched_getaffinity(0))


@app.function(max_containers=1, scaledown_window=60)
def leaves_children(n):
    kids = [subprocess.Popen(["sleep", "1000"]) for _ in range(n)]
    subprocess.Popen(["sh", "-c", "sleep 1000 & sleep 1000"])
    time.sleep(0.3)  # the shell's own child started
    return [p.pid for p in psutil.Process().children(recursive=True)] + [k.pid for k in kids]


@app.function(max_containers=1, scaledown_window=60)
def chatty(lines):
    line = b"x" * 100 + b"\n"
    for i in range(lines):
        os.write(1, b"line %07d " % i + line)  # straight to the worker's log
    return os.getpid()


@pytest.fixture
def without_cgroups(monkeypatch, fresh_plane):
    """A control plane that cannot make cgroups: the launcher watches and pins instead."""
    monkeypatch.setattr(cgroups.Cgroups, "find", classmethod(lambda cls: None))
    fresh_plane()


def _over_memory():
    with pytest.raises(WorkerLostError, match=r"ran out of memory \(memory limit 128 MiB\)"):
        hog.remote(1024)
    assert modest.remote(64) == 64 << 20  # a function within its limit is left alone


def test_memory_is_enforced_on_resident_memory_with_a_cgroup(fresh_plane):
    fresh_plane()
    if cgroups.Cgroups.find() is None:
        pytest.skip("no cgroup can be made here (the watched case is tested below)")
    _over_memory()


def test_memory_is_enforced_by_watching_where_no_cgroup_can_be_made(without_cgroups):
    _over_memory()


def test_cpu_is_a_quota_with_a_cgroup(fresh_plane):
    fresh_plane()
    if cgroups.Cgroups.find() is None:
        pytest.skip("no cgroup can be made here (the pinned case is tested below)")
    cpu_seconds, _ = burn.remote(3.0)
    assert cpu_seconds < 3.0 * 0.2 + 0.4, f"{cpu_seconds:.2f} s of CPU in 3 s at cpu=0.2"


def test_cpu_pins_the_worker_where_no_cgroup_can_be_made(without_cgroups):
    _, cores = burn.remote(0.1)
    assert len(cores) == 1  # ceil(0.2) core, of the two or more this machine has
    assert len(os.sched_getaffinity(0)) > 1


def _gone(pids: list[int]) -> bool:
    for pid in pids:
        try:
            if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                return False
        except psutil.NoSuchProcess:
            pass
    return True


def test_what_a_worker_started_is_killed_with_it(fresh_plane):
    fresh_plane()
    pids = leaves_children.remote(3)
    assert len(pids) >= 5 and not _gone(pids)
    nbscale.shutdown()  # stops its worker, gracefully
    wait_until(lambda: _gone(pids), timeout=20)


def test_what_a_killed_worker_started_is_killed_too(fresh_plane):
    fresh_plane()
    pids = leaves_children.remote(2)
    [pool] = [p for p in nbscale.status()["pools"] if p["function"] == "leaves_children"]
    os.kill(pool["workers"][0]["pid"], signal.SIGKILL)
    wait_until(lambda: _gone(pids), timeout=20)


def test_worker_logs_rotate_at_their_size_limit(fresh_plane):
    fresh_plane(NBSCALE_WORKER_LOG_MIB="1")
    pid = chatty.remote(1)
    directory = Path(nbscale.status()["worker_endpoint"][len("unix://") :]).parent
    [pool] = [p for p in nbscale.status()["pools"] if p["function"] == "chatty"]
    log = directory / f"{pool['workers'][0]['id']}.log"
    for _ in range(4):  # 4 x 1.1 MB, a while apart: the launcher looks once a second
        assert chatty.remote(10_000) == pid
        time.sleep(1.5)
    assert log.stat().st_size < 2 << 20
    rotated = log.with_name(log.name + ".1")
    assert rotated.exists() and rotated.stat().st_size >= 1 << 20
    assert b"line 0009999" in log.read_bytes() + rotated.read_bytes()
