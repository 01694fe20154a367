"""Workers that fail, crash, hang or get cancelled: nothing lost, nothing reported twice."""

from __future__ import annotations

import _thread
import os
import signal
import threading
import time
from pathlib import Path

import pytest
from conftest import wait_until

import nbscale

app = nbscale.App("test-failures")
quick_retries = nbscale.Retries(max_retries=2, backoff_coefficient=1.0, initial_delay=0.0)


def _bump(path: str) -> int:
    """Count attempts in a file: returns how many there were before this one."""
    before = int(Path(path).read_text()) if os.path.exists(path) else 0
    with open(path, "w") as f:
        f.write(str(before + 1))
    return before


@app.function(max_containers=2, retries=quick_retries, scaledown_window=5)
def flaky(path):
    if _bump(path) < 2:
        raise RuntimeError("transient")
    return "ok"


@app.function(max_containers=2, retries=quick_retries, scaledown_window=5)
def always_fails(x):
    raise RuntimeError(f"broken {x}")


@app.function(max_containers=2, retries=1, scaledown_window=5)
def dies_once(path, x):
    if x == 3 and _bump(path) == 0:
        os.kill(os.getpid(), signal.SIGKILL)
    return x


@app.function(max_containers=1, scaledown_window=5)
def dies_always(_):
    os.kill(os.getpid(), signal.SIGKILL)


@app.function(max_containers=1, timeout=1, scaledown_window=5)
def hangs(seconds):
    time.sleep(seconds)
    return os.getpid()


@app.function(max_containers=2, scaledown_window=1)
def sleeps(seconds):
    time.sleep(seconds)
    return seconds


def test_retries_rerun_a_failing_input_until_it_succeeds(tmp_path):
    assert flaky.remote(str(tmp_path / "n")) == "ok"
    assert (tmp_path / "n").read_text() == "3"  # two failures, then success


def test_retries_exhausted_raise_the_last_error():
    results = list(always_fails.map(range(3), return_exceptions=True))
    assert [type(r) for r in results] == [RuntimeError] * 3
    assert [str(r) for r in results] == ["broken 0", "broken 1", "broken 2"]


def test_worker_killed_mid_input_is_retried_elsewhere_and_nothing_is_lost(tmp_path):
    path = str(tmp_path / "deaths")
    results = list(dies_once.map([path] * 8, range(8)))
    assert results == list(range(8))  # every input once, in order, the killed one retried
    assert (tmp_path / "deaths").read_text() == "2"  # input 3 ran twice: killed, then retried


def test_worker_lost_without_retries_names_the_input():
    with pytest.raises(nbscale.WorkerLostError, match="input 0") as info:
        dies_always.remote(0)
    assert info.value.exit_code == -signal.SIGKILL
    assert "SIGKILL" in str(info.value)


def test_timeout_raises_function_timeout_error_and_replaces_the_worker():
    first = hangs.remote(0)
    start = time.monotonic()
    with pytest.raises(nbscale.FunctionTimeoutError, match="timeout of 1 s") as info:
        hangs.remote(30)
    assert isinstance(info.value, TimeoutError)
    assert time.monotonic() - start < 10
    assert hangs.remote(0) != first  # a new worker process serves the next input


def test_cancel_stops_a_spawned_call_and_frees_the_pool():
    call = sleeps.spawn_map([5.0] * 4)
    wait_until(lambda: sleeps.get_current_stats().num_running_inputs > 0)
    call.cancel()
    with pytest.raises(nbscale.CallCancelledError):
        call.get(timeout=10)
    stats = sleeps.get_current_stats()
    assert stats.backlog == 0
    wait_until(lambda: sleeps.get_current_stats().num_running_inputs == 0, timeout=10)
    # the pool scales back to zero once its scaledown window has passed
    wait_until(lambda: sleeps.get_current_stats().num_total_runners == 0, timeout=20)


def test_keyboard_interrupt_in_a_blocking_map_cancels_its_inputs():
    timer = threading.Timer(1.0, _thread.interrupt_main)
    timer.start()
    start = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        list(sleeps.map([3.0] * 10))
    assert time.monotonic() - start < 3  # the interrupt is not held up by running inputs
    stats = sleeps.get_current_stats()
    assert stats.backlog == 0
    wait_until(lambda: sleeps.get_current_stats().num_running_inputs == 0, timeout=10)


def test_breaking_out_of_a_map_early_cancels_the_rest():
    results = sleeps.map([0.0] + [2.0] * 6)
    assert next(results) == 0.0
    results.close()
    wait_until(lambda: sleeps.get_current_stats().backlog == 0, timeout=5)
    wait_until(lambda: sleeps.get_current_stats().num_running_inputs == 0, timeout=10)


@app.function(max_containers=1, scaledown_window=5)
def sleep_then_write(path, seconds):
    time.sleep(seconds)
    Path(path).write_text("finished")
    return os.getpid()


def test_cancel_interrupts_the_running_input_without_killing_the_worker(tmp_path):
    marker = tmp_path / "written"
    first_pid = sleep_then_write.remote(str(tmp_path / "warm"), 0)
    call = sleep_then_write.spawn(str(marker), 3)
    wait_until(lambda: sleep_then_write.get_current_stats().num_running_inputs == 1)
    call.cancel()
    time.sleep(4)
    assert not marker.exists()  # the running input was stopped, not left to finish
    assert sleep_then_write.remote(str(tmp_path / "again"), 0) == first_pid  # same worker


def test_worker_drains_its_input_on_sigterm(tmp_path):
    marker = tmp_path / "written"
    call = sleep_then_write.spawn(str(marker), 1.5)
    wait_until(lambda: sleep_then_write.get_current_stats().num_running_inputs == 1)
    worker = sleep_then_write.get_current_stats().workers[0]
    os.kill(worker["pid"], signal.SIGTERM)
    assert call.get(timeout=30) == worker["pid"]  # the input finished on that worker
    assert marker.read_text() == "finished"
    wait_until(lambda: not _alive(worker["pid"]), timeout=10)  # and then it exited


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except (FileNotFoundError, ProcessLookupError):  # gone, or reaped while being read
        return False


def test_a_frozen_worker_is_killed_at_its_inputs_timeout_and_the_input_retried(
    fresh_plane, tmp_path
):
    fresh_plane(NBSCALE_HEARTBEAT_TIMEOUT="2", NBSCALE_HEARTBEAT_INTERVAL="0.2")
    # Silent while running an input: left alone until that input's timeout, then killed
    # from outside (the frozen worker cannot enforce it) and the input retried.
    retried = sleep_then_write.with_options(retries=quick_retries, timeout=4)
    call = retried.spawn(str(tmp_path / "out"), 1.0)
    wait_until(lambda: retried.get_current_stats().num_running_inputs == 1)
    hung = retried.get_current_stats().workers[0]["pid"]
    os.kill(hung, signal.SIGSTOP)  # frozen: no heartbeats, no progress
    try:
        pid = call.get(timeout=60)
    finally:
        if _alive(hung):
            os.kill(hung, signal.SIGCONT)
    assert pid != hung  # finished on a replacement worker
    wait_until(lambda: not _alive(hung), timeout=10)  # the frozen one was killed
