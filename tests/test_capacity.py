"""Fair capacity, against fake workers and a fake clock: a pool held back by the total cap
takes idle workers of other pools (never busy ones) and says who holds the cap; a lowered
max_containers drains the pool now; registering a function again applies its explicit
settings and says so in the pool's event log. (test_scaling shows the same on real
workers.)"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fakes import Harness

from nbscale_server.options import FunctionOptions


def tick(x: int) -> int:
    return x


def evaluate_model(x: int) -> int:
    return x + 1


@pytest.fixture
def h() -> Iterator[Harness]:
    harness = Harness(max_workers_total=4)
    yield harness
    harness.close()


def busy_workers(h: Harness, pool_id: str, n: int) -> None:
    """Give ``pool_id`` ``n`` inputs and run them until each of its workers holds one."""
    h.caller.submit(pool_id, range(n))
    h.tick(steps=2)


def idle_workers(h: Harness, pool_id: str, n: int) -> None:
    """Give ``pool_id`` ``n`` workers that ran an input each and are idle now."""
    busy_workers(h, pool_id, n)
    for worker in h.workers(pool_id):
        worker.finish()
    h.tick()
    assert h.pool(pool_id)["containers"]["idle"] == n


def events(h: Harness, pool_id: str) -> list[str]:
    return [e["message"] for e in h.pool(pool_id)["events"]]


def test_a_pool_held_back_by_the_cap_takes_the_idle_workers_of_others(h):
    """The defect: a max_containers=4 map ran on 1 worker while the cap of 4 was held by
    idle workers of another pool."""
    ticks = h.caller.register(tick, FunctionOptions(scaledown_window=60))
    idle_workers(h, ticks, 4)
    evaluate = h.caller.register(evaluate_model, FunctionOptions(max_containers=4))
    call = h.caller.submit(evaluate, range(8))
    assert h.pool(ticks)["containers"]["draining"] == 4
    assert h.pool(evaluate)["num_total_runners"] == 4  # all it wants, at once
    h.tick(steps=2)
    assert h.pool(ticks)["num_total_runners"] == 0
    assert h.pool(evaluate)["containers"]["busy"] == 4
    assert "stopping 4 idle worker(s) of tick to make room" in events(h, evaluate)[-2]
    assert "to make room for evaluate_model" in events(h, ticks)[-1]
    for _ in range(4):
        for worker in h.workers(evaluate):
            worker.finish()
        h.tick()
    assert h.caller.values(call) == {i: i + 1 for i in range(8)}


def test_busy_workers_are_never_taken_and_the_status_says_who_holds_the_cap(h):
    ticks = h.caller.register(tick, FunctionOptions(scaledown_window=60))
    busy_workers(h, ticks, 1)  # one busy
    first, *_ = h.workers(ticks)
    evaluate = h.caller.register(evaluate_model, FunctionOptions(max_containers=4))
    h.caller.submit(evaluate, range(8))
    h.tick(steps=2)
    assert first.stop is None  # busy: kept
    pool = h.pool(evaluate)
    assert pool["num_total_runners"] == 3
    assert pool["status"] == "waiting: 4 of 4 workers in use: evaluate_model 3 busy, tick 1 busy"
    assert pool["cap_holders"] == [
        dict(pool_id=evaluate, function="evaluate_model", waiting=0, starting=0, idle=0, busy=3),
        {"pool_id": ticks, "function": "tick", "waiting": 0, "starting": 0, "idle": 0, "busy": 1},
    ]
    assert pool["status"] in events(h, evaluate)  # said once, in the log too
    first.finish()  # now idle: the waiting pool takes its place
    h.tick(steps=2)
    assert first.exit_code == 0
    pool = h.pool(evaluate)
    assert pool["containers"]["busy"] == 4 and pool["cap_holders"] == []


def test_the_longest_idle_workers_go_first_and_no_more_than_needed(h):
    ticks = h.caller.register(tick, FunctionOptions(scaledown_window=60))
    busy_workers(h, ticks, 3)
    workers = h.workers(ticks)
    for seconds, worker in zip((3.0, 2.0, 1.0), workers, strict=True):
        worker.finish()  # idle since now
        h.tick(seconds)
    other = h.caller.register(evaluate_model, FunctionOptions(max_containers=2))
    h.caller.submit(other, range(2))  # 1 free place under the cap, 1 taken
    assert [w.stop for w in workers] == ["graceful", None, None]
    assert h.pool(other)["num_total_runners"] == 2


def test_a_pool_with_inputs_waiting_keeps_its_idle_workers(h):
    ticks = h.caller.register(tick, FunctionOptions(scaledown_window=60))
    idle_workers(h, ticks, 4)
    h.caller.submit(ticks, range(4))  # waiting, not dispatched yet (no worker asked)
    evaluate = h.caller.register(evaluate_model)
    h.caller.submit(evaluate, range(2))
    assert all(w.stop is None for w in h.workers(ticks))
    assert h.pool(evaluate)["status"].startswith("waiting: 4 of 4 workers in use: tick 4")


def test_lowering_max_containers_drains_the_pool_now(h):
    """The defect: a pool above its lowered max waited for the scaledown window."""
    pool = h.caller.register(tick, FunctionOptions(max_containers=4, scaledown_window=60))
    call = h.caller.submit(pool, range(2))
    h.tick(steps=2)
    busy = h.workers(pool)
    assert [len(w.held) for w in busy] == [1, 1]
    h.caller.submit(pool, range(2, 4), call_id=call + "-b")
    h.tick(steps=2)
    for worker in h.workers(pool)[2:]:
        worker.finish()
    h.tick()
    assert h.pool(pool)["containers"] == {
        "waiting": 0,
        "starting": 0,
        "idle": 2,
        "busy": 2,
        "unresponsive": 0,
        "draining": 0,
    }
    h.caller.update_autoscaler(pool, max_containers=1)
    model = h.pool(pool)
    assert model["containers"] == {
        "waiting": 0,
        "starting": 0,
        "idle": 0,
        "busy": 1,
        "unresponsive": 0,
        "draining": 3,
    }
    assert "draining to 1 (max_containers)" in model["status"]
    assert "max_containers 4 -> 1 (set by update_autoscaler)" in events(h, pool)
    h.tick()
    assert len(h.workers(pool)) == 2  # the idle ones are gone; one busy finishes first
    stopping = [w for w in busy if w.stop == "graceful"]
    assert len(stopping) == 1 and stopping[0].shutdown
    stopping[0].finish()  # its current input is not lost
    h.tick()
    assert h.pool(pool)["num_total_runners"] == 1 and len(h.workers(pool)) == 1
    assert len(h.caller.outputs[call]) == 1


def test_registering_again_applies_explicit_settings_the_latest_winning(h):
    """The defect: re-running ``@app.function(max_containers=4)`` kept a max set before
    from the sidebar."""
    pool = h.caller.register(tick, FunctionOptions(max_containers=4))
    h.plane.api.update_autoscaler(pool, {"max_containers": 8})  # the sidebar
    assert h.pool(pool)["settings"]["max_containers"] == 8
    assert h.caller.register(tick, FunctionOptions(max_containers=4)) == pool
    assert h.pool(pool)["settings"]["max_containers"] == 4
    assert events(h, pool) == [
        "registered with max_containers=4",
        "max_containers 4 -> 8 (set by the REST API)",
        "max_containers 8 -> 4 (set by registering the function again)",
    ]
    h.caller.update_autoscaler(pool, scaledown_window=5)
    h.caller.register(tick)  # no explicit setting: nothing changes
    settings = h.pool(pool)["settings"]
    assert (settings["max_containers"], settings["scaledown_window"]) == (4, 5)
    assert len(events(h, pool)) == 4


def test_a_pool_is_its_function_and_worker_shape_or_a_with_options_variant(h):
    plain = h.caller.register(tick, FunctionOptions(max_containers=2))
    assert h.caller.register(tick, FunctionOptions(min_containers=1)) == plain
    assert h.caller.register(tick, FunctionOptions(timeout=30)) != plain
    assert h.caller.register(tick, FunctionOptions(memory=512)) != plain
    variant = h.caller.register(tick, FunctionOptions(max_containers=2, variant=True))
    assert variant != plain
    assert h.caller.register(tick, FunctionOptions(max_containers=3, variant=True)) != variant


def test_the_event_log_is_bounded(h):
    pool = h.caller.register(tick)
    for n in range(1, 120):
        h.caller.update_autoscaler(pool, max_containers=n)
    log = events(h, pool)
    assert len(log) == 50 and log[-1] == "max_containers 118 -> 119 (set by update_autoscaler)"
