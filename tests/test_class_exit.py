"""An ``@app.cls`` class's ``@exit`` on real worker processes, however its worker stops: its
pool stopped, SIGTERM, the control plane stopping (``exit_grace`` on top of ``stop_grace``,
as Modal gives ``@exit`` 30 s), and bounded by ``exit_grace`` when it hangs. (Scale-down:
``test_classes.py``.)"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import psutil
from conftest import wait_until

import nbscale
from nbscale._pools import stop_pools

app = nbscale.App("test-class-exit")

EXIT_SECONDS = 2.0  # longer than the stop_grace of these tests


@app.cls(scaledown_window=300)
class SlowExit:
    log: str = nbscale.parameter()

    @nbscale.method()
    def pid(self):
        return os.getpid()

    @nbscale.exit()
    def flush(self):
        time.sleep(EXIT_SECONDS)  # as saving a model's state would
        with open(self.log, "a") as f:
            f.write(f"{os.getpid()}\n")


@app.cls(scaledown_window=1)
class HungExit:
    log: str = nbscale.parameter()

    @nbscale.method()
    def pid(self):
        return os.getpid()

    @nbscale.exit()
    def hang(self):
        with open(self.log, "a") as f:
            f.write(f"{os.getpid()}\n")
        time.sleep(300)


def _exited(log: Path) -> list[int]:
    return [int(line) for line in log.read_text().split()] if log.exists() else []


def test_exit_runs_when_the_control_plane_stops_past_stop_grace(tmp_path: Path, fresh_plane):
    """Before exit_grace, the control plane killed every worker stop_grace after its stop,
    @exit or not."""
    fresh_plane(NBSCALE_STOP_GRACE="0.5")
    log = tmp_path / "exit.log"
    pid = SlowExit(log=str(log)).pid.remote()
    nbscale.shutdown()  # the embedded control plane stops, and its workers with it
    assert _exited(log) == [pid]
    assert not psutil.pid_exists(pid)


def test_exit_runs_when_the_pool_is_stopped_and_on_sigterm(tmp_path: Path, fresh_plane):
    fresh_plane(NBSCALE_STOP_GRACE="0.5")
    stopped_log, signalled_log = tmp_path / "stopped.log", tmp_path / "signalled.log"
    stopped = SlowExit(log=str(stopped_log))
    pid = stopped.pid.remote()
    [pool] = [p for p in nbscale.status()["pools"] if p["workers"]]
    stop_pools([pool["id"]])
    wait_until(lambda: _exited(stopped_log) == [pid], timeout=30)

    pid = SlowExit(log=str(signalled_log)).pid.remote()
    os.kill(pid, signal.SIGTERM)  # as a container runtime or a Slurm preemption sends
    wait_until(lambda: _exited(signalled_log) == [pid], timeout=30)
    wait_until(lambda: not psutil.pid_exists(pid), timeout=30)


def test_an_exit_that_outlives_exit_grace_is_ended(tmp_path: Path, fresh_plane):
    """Before, a hung @exit on scale-down kept its worker forever: it still heartbeats."""
    fresh_plane(NBSCALE_EXIT_GRACE="1")
    log = tmp_path / "exit.log"
    pid = HungExit(log=str(log)).pid.remote()
    wait_until(lambda: _exited(log) == [pid], timeout=30)  # scaled down: @exit started
    wait_until(lambda: not psutil.pid_exists(pid), timeout=20)  # not the 300 s it sleeps
    [pool] = [p for p in nbscale.status()["pools"] if p["function"].startswith("HungExit")]
    assert pool["workers"] == [] and pool["failed"] == 0
