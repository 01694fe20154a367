"""Workers lost on real processes: exactly the input that crashed its worker is blamed, an
outside kill is not charged to the user's retries, a worker holding the GIL is left alone
until its timeout, and workers killed before they register do not fail the backlog."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import stat
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
import zmq
from conftest import command_line, wait_until

import nbscale
from nbscale._loop import get_loop
from nbscale_server.control_plane import ControlPlane
from nbscale_server.launchers.process import ProcessLauncher

app = nbscale.App("test-lost-workers")


@app.function(max_containers=1, retries=0, scaledown_window=5)
def crashes_at_five(path, x):
    if x == 5:
        with open(path, "a") as f:
            f.write("crash\n")
        os.kill(os.getpid(), signal.SIGKILL)
    return x


@app.function(max_containers=1, retries=0, scaledown_window=5)
def slow_attempts(path, seconds):
    with open(path, "a") as f:
        f.write(f"{os.getpid()}\n")
    time.sleep(seconds)
    return "done"


@app.function(max_containers=1, timeout=120, scaledown_window=5)
def holds_the_gil(length):
    # Catastrophic backtracking in C, one call: the GIL is not released until it ends
    # (length 30: ~26 s on the 2-core test machine).
    return re.match(r"(a+)+$", "a" * length + "b") is None


def crash_map(fn, path):
    results = list(fn.map([str(path)] * 20, range(20), return_exceptions=True))
    crashes = path.read_text().count("crash")
    return results, crashes


@pytest.mark.parametrize("retries", [0, 2])
def test_only_the_input_that_crashed_its_worker_fails(tmp_path, retries):
    """The defect: inputs 1 and 3, which had finished, failed with WorkerLostError; input 5
    went back as never started; retries=0 crashed 3 workers, retries=2 crashed 5."""
    fn = crashes_at_five.with_options(retries=nbscale.Retries(retries, initial_delay=0.0))
    results, crashes = crash_map(fn, tmp_path / "crashes")
    error = results[5]
    assert isinstance(error, nbscale.WorkerLostError)
    assert error.index == 5 and "while running input 5" in str(error)
    assert "counted against the function's retries" in str(error)
    assert results[:5] + results[6:] == [x for x in range(20) if x != 5]
    assert crashes == retries + 1


def test_a_worker_killed_from_outside_is_not_charged_to_the_inputs_retries(tmp_path):
    path = tmp_path / "attempts"
    call = slow_attempts.spawn(str(path), 3.0)
    wait_until(lambda: path.exists() and path.read_text())
    os.kill(int(path.read_text().split()[0]), signal.SIGKILL)  # an operator's kill -9
    assert call.get(timeout=60) == "done"  # retried, though the function has retries=0
    assert len(path.read_text().split()) == 2


@pytest.mark.slow
def test_an_input_holding_the_gil_past_the_heartbeat_timeout_completes():
    """The defect: with timeout=120 the worker was killed at 15 s (its heartbeats stopped
    while the regex held the GIL) and the input failed with WorkerLostError."""
    assert holds_the_gil.remote(2)  # a warm worker
    seen: list[str] = []
    stop = threading.Event()

    def watch() -> None:
        while not stop.wait(0.5):
            seen.extend(w["state"] for w in holds_the_gil.get_current_stats().workers)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        started = time.monotonic()
        assert holds_the_gil.remote(30) is True
        took = time.monotonic() - started
    finally:
        stop.set()
        watcher.join()
    assert took > 16, f"the regex took {took:.0f} s: no longer than the heartbeat timeout"
    assert "unresponsive" in seen  # shown as such while it held the GIL, and left alone


def test_workers_killed_before_they_register_are_retried(tmp_path, fresh_plane):
    """The defect: three workers killed in a row before registering failed the whole
    backlog with LaunchError, inputs that never ran included."""
    slow_python = tmp_path / "slow-python"
    slow_python.write_text(f'#!/bin/sh\nsleep 1\nexec {sys.executable} "$@"\n')
    slow_python.chmod(slow_python.stat().st_mode | stat.S_IEXEC)
    # Spawned workers: a forked one registers within milliseconds, too soon to be killed.
    fresh_plane(NBSCALE_PYTHON=str(slow_python), NBSCALE_PROCESS_ZYGOTE="off")
    killed: list[int] = []

    def storm() -> None:  # an outside agent kills the first three workers as they start
        me = psutil.Process()
        while len(killed) < 3:
            for child in me.children(recursive=True):
                if child.pid in killed:
                    continue
                if str(slow_python) in command_line(child):
                    with contextlib.suppress(psutil.Error):  # it exited meanwhile
                        child.kill()
                        killed.append(child.pid)
            time.sleep(0.02)

    killer = threading.Thread(target=storm, daemon=True)
    killer.start()
    fn = crashes_at_five.with_options(max_containers=1)
    assert list(fn.map([str(tmp_path / "none")] * 4, range(4))) == [0, 1, 2, 3]
    killer.join(timeout=5)
    assert len(killed) == 3
    stats = nbscale.status()["pools"]
    events = [e["message"] for p in stats for e in p["events"]]
    assert sum("before registering" in e for e in events) >= 3


def test_a_frozen_worker_between_inputs_is_replaced(tmp_path, fresh_plane):
    fresh_plane(NBSCALE_HEARTBEAT_TIMEOUT="2", NBSCALE_HEARTBEAT_INTERVAL="0.2")
    assert crashes_at_five.remote(str(tmp_path), 0) == 0
    [worker] = crashes_at_five.get_current_stats().workers
    os.kill(worker["pid"], signal.SIGSTOP)  # stopped while idle: nothing runs, nothing heard
    try:
        wait_until(lambda: not psutil.pid_exists(worker["pid"]) or _zombie(worker["pid"]), 30)
    finally:
        if psutil.pid_exists(worker["pid"]):
            os.kill(worker["pid"], signal.SIGCONT)
    assert crashes_at_five.remote(str(tmp_path), 1) == 1


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z"
    except OSError:
        return True


class ProcessesSharingNoFiles(ProcessLauncher):
    """Worker processes that cannot map a register, as workers on a cluster's nodes."""

    def register_in_worker(self, path: str) -> str | None:
        return None


@pytest.fixture
def plane_without_registers(tmp_path: Path) -> Iterator[None]:
    """This process's client, on an embedded control plane whose workers have no register."""
    from nbscale import _client

    async def start() -> _client.Client:
        cp = ControlPlane(launcher=ProcessesSharingNoFiles(str(tmp_path)), ctx=zmq.Context())
        await cp.start()
        client = _client.Client(cp.ctx, cp.client_endpoint, control_plane=cp)
        await client.hello()
        return client

    nbscale.shutdown()
    _client._client, _client._client_pid = get_loop().run(start()), os.getpid()
    yield
    nbscale.shutdown()


@app.function(max_containers=1, retries=0, scaledown_window=5)
def segfaults_at_five(path, x):
    if x == 5:
        with open(path, "a") as f:
            f.write("crash\n")
        os.kill(os.getpid(), signal.SIGSEGV)  # as a crashing C extension would
    return x


def test_without_a_register_the_culprit_is_found_by_running_suspects_alone(
    tmp_path, plane_without_registers
):
    """Workers that share no files with the control plane (cluster nodes) cannot say what
    they ran when they died: their inputs are suspects, run alone with a confirmed start."""
    results, crashes = crash_map(segfaults_at_five, tmp_path / "crashes")
    assert isinstance(results[5], nbscale.WorkerLostError) and results[5].index == 5
    assert results[:5] + results[6:] == [x for x in range(20) if x != 5]
    assert crashes == 2  # one crash to find the suspects, one to blame input 5 exactly
