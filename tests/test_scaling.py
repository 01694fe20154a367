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


def test_concurrent_sync_function_runs_inputs_on_threads_of_one_worker():
    results = list(threaded.map([0.5] * 4))
    assert len({pid for pid, *_ in results}) == 1
    assert len({tid for _, tid, *_ in results}) == 4
    assert _overlap([(s, e) for *_, s, e in results]) == 4


def test_concurrent_async_function_runs_inputs_as_tasks_of_one_worker():
    results = list(coroutine.map([0.5] * 8))
    assert len({pid for pid, *_ in results}) == 1
    assert _overlap([(s, e) for _, s, e in results]) == 8
