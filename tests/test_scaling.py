"""The autoscaler and per-worker concurrency, observed on real worker processes."""

from __future__ import annotations

import asyncio
import os
import threading
import time

from conftest import wait_until

import nbscale

app = nbscale.App("test-scaling")


@app.function(max_containers=3, scaledown_window=1)
def busy(seconds):
    time.sleep(seconds)
    return os.getpid()


@app.function(max_containers=4, min_containers=1, buffer_containers=1, scaledown_window=1)
def warm(x):
    return x


@nbscale.concurrent(max_inputs=4)
@app.function(max_containers=1, scaledown_window=5)
def threaded(seconds):
    start = time.monotonic()
    time.sleep(seconds)
    return os.getpid(), threading.get_ident(), start, time.monotonic()


@app.function(max_containers=1, scaledown_window=5)
@nbscale.concurrent(max_inputs=8)
async def coroutine(seconds):
    start = time.monotonic()
    await asyncio.sleep(seconds)
    return os.getpid(), start, time.monotonic()


@app.function(scaledown_window=60)
def holder(x):
    return x


@app.function(max_containers=4, scaledown_window=60)
def evaluate(seconds):
    time.sleep(seconds)
    return os.getpid()


@app.function(max_containers=3, scaledown_window=60)
def long_nap(seconds):
    time.sleep(seconds)
    return os.getpid()


def identity(x):
    return x


def _pool_of(name):
    return next(p for p in nbscale.status()["pools"] if p["function"] == name)


def _overlap(spans):
    """How many of the (start, end) spans run at the same moment, at most."""
    events = sorted([(s, 1) for s, _ in spans] + [(e, -1) for _, e in spans])
    best = now = 0
    for _, step in events:
        now += step
        best = max(best, now)
    return best


def test_pool_scales_up_to_max_containers_and_back_to_zero():
    assert busy.get_current_stats().num_total_runners == 0  # scale to zero by default
    call = busy.spawn_map([1.5] * 6)
    wait_until(lambda: busy.get_current_stats().num_running_inputs == 3)
    peak = busy.get_current_stats()
    assert peak.num_total_runners == 3
    assert peak.containers["busy"] == 3
    assert peak.backlog == 3
    assert len(set(call.iter())) == 3  # three worker processes shared the work
    wait_until(lambda: busy.get_current_stats().num_total_runners == 0, timeout=20)


def test_min_containers_keeps_a_warm_pool_and_buffer_adds_one_under_load():
    wait_until(lambda: warm.get_current_stats().containers["idle"] == 1)
    assert warm.remote(1) == 1
    settings = warm.update_autoscaler(min_containers=0)
    assert settings["min_containers"] == 0
    assert settings["max_containers"] == 4  # unspecified settings keep their value
    wait_until(lambda: warm.get_current_stats().num_total_runners == 0, timeout=20)


def test_update_autoscaler_raises_the_cap_at_runtime():
    busy.update_autoscaler(max_containers=1)
    call = busy.spawn_map([0.5] * 4)
    wait_until(lambda: busy.get_current_stats().num_running_inputs == 1)
    assert busy.get_current_stats().num_total_runners == 1
    busy.update_autoscaler(max_containers=2)
    wait_until(lambda: busy.get_current_stats().num_total_runners == 2)
    assert len(list(call.iter())) == 4
    busy.update_autoscaler(max_containers=3)


def test_a_pool_held_back_by_the_total_cap_takes_the_idle_workers_of_another(fresh_plane):
    """Before, with the cap held by another pool's idle workers, a max_containers=4 map
    ran on one worker."""
    fresh_plane(NBSCALE_MAX_WORKERS="4")
    holder.update_autoscaler(min_containers=4)
    wait_until(lambda: holder.get_current_stats().containers["idle"] == 4, timeout=30)
    holder.update_autoscaler(min_containers=0)  # idle now, kept only by its 60 s window
    call = evaluate.spawn_map([1.0] * 8)
    wait_until(lambda: evaluate.get_current_stats().num_total_runners == 4, timeout=30)
    assert holder.get_current_stats().num_total_runners == 0
    assert len(list(call.iter())) == 8
    log = [e["message"] for e in _pool_of("holder")["events"]]
    assert any("to make room for evaluate" in message for message in log)


def test_lowering_max_containers_drains_the_pool_now():
    """Before, the pool stayed above its new max for its scaledown window (60 s here)."""
    call = long_nap.spawn_map([1.0] * 6)
    wait_until(lambda: long_nap.get_current_stats().num_running_inputs == 3, timeout=30)
    long_nap.update_autoscaler(max_containers=1)
    wait_until(lambda: long_nap.get_current_stats().num_total_runners == 1, timeout=10)
    assert len(list(call.iter())) == 6  # the drained workers' inputs were not lost


def test_decorating_again_applies_the_explicit_settings():
    """Before, re-running the cell kept a max set in between (from the sidebar, say)."""
    first = app.function(max_containers=2, name="redecorated")(identity)
    assert first.remote(1) == 1
    first.update_autoscaler(max_containers=5)
    again = app.function(max_containers=3, name="redecorated")(identity)
    assert again.remote(2) == 2
    pool = _pool_of("redecorated")
    assert pool["settings"]["max_containers"] == 3
    assert pool["events"][-1]["message"].startswith("max_containers 5 -> 3 (set by registering")


def test_concurrent_sync_function_runs_inputs_on_threads_of_one_worker():
    results = list(threaded.map([0.5] * 4))
    assert len({pid for pid, *_ in results}) == 1
    assert len({tid for _, tid, *_ in results}) == 4
    assert _overlap([(s, e) for *_, s, e in results]) == 4


def test_concurrent_async_function_runs_inputs_as_tasks_of_one_worker():
    results = list(coroutine.map([0.5] * 8))
    assert len({pid for pid, *_ in results}) == 1
    assert _overlap([(s, e) for _, s, e in results]) == 8
