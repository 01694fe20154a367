"""Functions that call functions, and the checks run on them on worker processes
(``test_nested_calls.py``) and on Docker workers (``test_docker_nested_calls.py``)."""

from __future__ import annotations

import asyncio
import itertools
import os
import socket
import time
from typing import Any

import pytest
from conftest import wait_until

import nbscale

app = nbscale.App("test-nested")


def _where() -> str:
    """This worker: its host (a container's own), process and worker id (Pods of the fake
    Kubernetes API share the host's name, each its process 1)."""
    return f"{socket.gethostname()}:{os.getpid()}:{os.environ.get('NBSCALE_WORKER_ID')}"


@app.function(scaledown_window=5)
def inner(x):
    return (x * 10, _where())


@app.function(scaledown_window=5)
def outer_remote(x):
    value, where = inner.remote(x)
    return value + 1, where, _where()


@app.function(scaledown_window=5)
async def async_outer(x):
    value, _ = await inner.remote.aio(x)
    return value + 2


@app.function(scaledown_window=5)
def outer_map(n):
    return sum(value for value, _ in inner.map(range(n)))


@app.function(scaledown_window=5)
def spawn_inner(x):
    return inner.spawn(x).object_id


@app.function(scaledown_window=5)
async def spawn_gathered(n):
    calls = await asyncio.gather(*[inner.spawn.aio(i) for i in range(n)])
    return [call.object_id for call in calls]


@app.function(scaledown_window=5)
def spawn_map_inner(n):
    return inner.spawn_map(range(n)).object_id


@app.function(scaledown_window=5)
def fetch(call_id):
    return nbscale.FunctionCall.from_id(call_id).get(timeout=60)[0]


@app.function(scaledown_window=5)
def stats_of_inner():
    return inner.get_current_stats().num_total_runners >= 0


@app.function(max_containers=1, scaledown_window=5)
def single(x):
    started = time.time()  # workers share the host's clock (containers too)
    time.sleep(0.2)
    return _where(), started, time.time()


@app.function(scaledown_window=5)
def through_single(x):
    return single.remote(x)


@app.function(scaledown_window=5)
def sleeper(x):
    time.sleep(300)
    return x


@app.function(scaledown_window=5)
def waits_on_spawned(n):
    calls = [sleeper.spawn(i) for i in range(n)]
    return [call.get() for call in calls]


@app.function(scaledown_window=5)
def waits_on_map(n):
    return list(sleeper.map(range(n)))


@app.function(scaledown_window=5, timeout=120)
def tree(depth):
    """Fans out to two children per level: 2**(depth+1) - 1 inputs in all."""
    if depth == 0:
        return 1
    return 1 + sum(tree.map([depth - 1, depth - 1]))


@app.function(max_containers=1, scaledown_window=5, timeout=120)
def countdown(n):
    return 0 if n == 0 else countdown.remote(n - 1) + 1


# --- the checks ---------------------------------------------------------------------------


def _my_pool(function: str) -> dict[str, Any]:
    """The pool of ``function`` as this process's control plane lists it among its own."""
    pools = [p for p in nbscale.status()["pools"] if p["function"] == function]
    assert len(pools) == 1, f"pools of {function}: {pools}"
    return pools[0]


def check_nested_remote() -> None:
    value, inner_where, outer_where = outer_remote.remote(4)
    assert value == 41
    assert inner_where != outer_where  # inner ran on a worker of its own pool
    # ...on this control plane, in a pool of ours: not in a control plane of the worker's
    assert _my_pool("inner")["done"] >= 1


def check_nested_call_from_async_code() -> None:
    assert async_outer.remote(4) == 42
    assert _my_pool("inner")["done"] >= 1


def check_nested_map() -> None:
    assert list(outer_map.map([3, 5])) == [30, 100]
    assert _my_pool("inner")["done"] >= 8
    assert stats_of_inner.remote() is True


def check_spawn_and_from_id() -> None:
    # spawned on a worker, fetched here
    call_id = spawn_inner.remote(7)
    assert nbscale.FunctionCall.from_id(call_id).get(timeout=60)[0] == 70
    # spawned here, fetched on a worker
    assert fetch.remote(inner.spawn(8).object_id) == 80


def check_gathered_spawns_on_a_worker() -> None:
    root = spawn_gathered.spawn(3)
    ids = root.get(timeout=120)
    got = [nbscale.FunctionCall.from_id(i).get(timeout=60)[0] for i in ids]
    assert got == [0, 10, 20] and len(set(ids)) == 3
    # each records the input whose code spawned it, read in the task that spawned it
    [top] = root.get_call_graph()
    assert sorted(child.function_call_id for child in top.children) == sorted(ids)


def check_spawn_map_on_a_worker() -> None:
    root = spawn_map_inner.spawn(4)
    call = nbscale.FunctionCall.from_id(root.get(timeout=120))
    assert call.num_inputs() == 4
    assert [value for value, _ in call.iter()] == [0, 10, 20, 30]
    # it records the input that made it: the root's graph holds its four inputs
    [top] = root.get_call_graph()
    assert sorted(child.index for child in top.children) == [0, 1, 2, 3]
    assert {child.function_call_id for child in top.children} == {call.object_id}
    assert {(c.function_name, c.status) for c in top.children} == {("inner", "done")}


def check_max_containers_across_nested_calls() -> None:
    runs = list(through_single.map(range(4)))  # four outer inputs, on four workers at once
    places = {where for where, _, _ in runs}
    assert len(places) == 1, f"single (max_containers=1) ran on {places}"
    # ...and one input at a time: no two runs overlap
    spans = sorted((started, ended) for _, started, ended in runs)
    assert all(later[0] >= earlier[1] for earlier, later in itertools.pairwise(spans)), spans
    assert _my_pool("single")["done"] == 4


def check_cancelling_a_parent_cancels_its_children() -> None:
    parent = waits_on_spawned.spawn(3)
    wait_until(lambda: sleeper.get_current_stats().num_running_inputs == 3, timeout=120)
    parent.cancel()
    # the children were spawned (their results kept for whoever asks): only the control
    # plane, following the call graph, cancels them
    wait_until(lambda: sleeper.get_current_stats().num_running_inputs == 0, timeout=60)
    assert sleeper.get_current_stats().backlog == 0


def check_cancelling_a_parent_cancels_the_map_it_waits_on() -> None:
    parent = waits_on_map.spawn(3)
    wait_until(lambda: sleeper.get_current_stats().num_running_inputs == 3, timeout=120)
    parent.cancel()
    wait_until(lambda: sleeper.get_current_stats().num_running_inputs == 0, timeout=60)
    assert sleeper.get_current_stats().backlog == 0
    with pytest.raises(nbscale.CallCancelledError):
        parent.get(timeout=30)


def check_recursive_fan_out() -> None:
    assert tree.remote(2) == 7  # three levels: 1 + 2 + 4
    assert _my_pool("tree")["done"] == 7
    # the call graph of a spawned root: its input, the map it made, that map's inputs
    root = tree.spawn(1)
    assert root.get(timeout=120) == 3
    [top] = root.get_call_graph()
    assert (top.function_name, top.status, len(top.children)) == ("tree", "done", 2)
    assert all(child.children == [] for child in top.children)
    assert {child.function_call_id for child in top.children} != {root.object_id}


def check_self_call_with_one_container() -> None:
    assert countdown.spawn(3).get(timeout=180) == 3
    assert _my_pool("countdown")["done"] == 4  # every level on this control plane


@app.function(max_containers=1, scaledown_window=5, timeout=120)
@nbscale.concurrent(max_inputs=2)
def concurrent_countdown(n):
    return 0 if n == 0 else concurrent_countdown.remote(n - 1) + 1


def check_unlendable_deadlock_fails_fast() -> None:
    # two slots, one worker: levels 3 and 2 fill both and wait on level 1, which nothing
    # can ever run (a @concurrent worker keeps running its other inputs: it cannot lend)
    started = time.monotonic()
    with pytest.raises(nbscale.DeadlockError, match="deadlock"):
        concurrent_countdown.remote(3)
    assert time.monotonic() - started < 60


# --- functions with images of their own (Docker workers only) -----------------------------

own_image = nbscale.Image.from_kernel().env({"NBSCALE_TEST_IMAGE": "own"})
unbuilt_image = nbscale.Image.from_kernel().env({"NBSCALE_TEST_IMAGE": "never built"})


@app.function(image=own_image, scaledown_window=5)
def in_its_own_image():
    return os.environ.get("NBSCALE_TEST_IMAGE")


@app.function(image=unbuilt_image, scaledown_window=5)
def in_an_unbuilt_image():
    return os.environ.get("NBSCALE_TEST_IMAGE")


@app.function(scaledown_window=5)
def calls_in_its_own_image():
    return in_its_own_image.remote(), os.environ.get("NBSCALE_TEST_IMAGE")


@app.function(scaledown_window=5)
def calls_what_it_is_given(fn):
    return fn.remote()


def check_a_nested_call_runs_in_the_image_its_function_declares() -> None:
    # the kernel built own_image when it registered calls_in_its_own_image, which names it
    assert calls_in_its_own_image.remote() == ("own", None)
    # a function that came as an argument, its image never built: refused, saying why
    with pytest.raises(nbscale.InvalidError, match="a container cannot build images"):
        calls_what_it_is_given.remote(in_an_unbuilt_image)
