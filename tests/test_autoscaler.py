"""AutoscalerCore: the pure scaling decision (a fake clock of plain floats)."""

from __future__ import annotations

from typing import Any

import pytest

from nbscale_server.autoscaler import (
    MAX_LAUNCH_FAILURES,
    AutoscalerCore,
    AutoscalerSettings,
    CapHolder,
    LaunchWorkers,
    OtherPool,
    PoolLoad,
    StopWorkers,
    WorkerView,
    reclaim,
)

NO_LOAD = PoolLoad(pending=0, running=0)


def idle(worker_id: str, since: float) -> WorkerView:
    return WorkerView(worker_id, "idle", idle_since=since)


def core(**settings: Any) -> AutoscalerCore:
    return AutoscalerCore(AutoscalerSettings(**settings))


# --- settings -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "bad",
    [
        {"min_containers": -1},
        {"buffer_containers": -1},
        {"max_containers": 0},
        {"max_containers": -3},
        {"min_containers": 3, "max_containers": 2},
        {"scaledown_window": 0},
        {"scaledown_window": -5.0},
        {"scaledown_window": "60"},
        {"scaledown_window": None},
        {"min_containers": True},
        {"buffer_containers": False},
        {"max_containers": True},
        {"scaledown_window": True},
        {"min_containers": 1.0},
        {"buffer_containers": "2"},
        {"max_containers": 100_001},
        {"min_containers": 10**30, "max_containers": None},
        {"buffer_containers": 100_001},
    ],
)
def test_invalid_settings_are_rejected(bad: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        AutoscalerSettings(**bad)


def test_valid_settings_and_defaults() -> None:
    s = AutoscalerSettings()
    assert s.as_dict() == {
        "min_containers": 0,
        "max_containers": None,
        "buffer_containers": 0,
        "scaledown_window": 60.0,
    }
    s = AutoscalerSettings(min_containers=2, max_containers=2, scaledown_window=1)
    assert (s.min_containers, s.max_containers, s.scaledown_window) == (2, 2, 1)
    assert AutoscalerSettings(max_containers=100_000).max_containers == 100_000


def test_min_above_max_message_names_both() -> None:
    with pytest.raises(ValueError, match=r"min_containers \(3\).*max_containers \(2\)"):
        AutoscalerSettings(min_containers=3, max_containers=2)


def test_updated_applies_changes_and_none_keeps_value() -> None:
    s = AutoscalerSettings(min_containers=1, max_containers=5, scaledown_window=30.0)
    new = s.updated({"max_containers": 8, "min_containers": None, "scaledown_window": None})
    assert new.as_dict() == {
        "min_containers": 1,
        "max_containers": 8,
        "buffer_containers": 0,
        "scaledown_window": 30.0,
    }
    assert s.max_containers == 5  # the original is untouched
    assert s.updated({}) == s


def test_updated_with_unknown_key_raises() -> None:
    s = AutoscalerSettings()
    with pytest.raises(ValueError, match="bogus"):
        s.updated({"bogus": 1, "min_containers": 1})


def test_updated_validates_the_result() -> None:
    s = AutoscalerSettings(max_containers=2)
    with pytest.raises(ValueError, match="cannot exceed"):
        s.updated({"min_containers": 3})
    with pytest.raises(ValueError):
        s.updated({"scaledown_window": True})


# --- scaling up ---------------------------------------------------------------------------


def test_scale_to_zero_by_default() -> None:
    a = core()
    assert a.desired(NO_LOAD) == 0
    assert a.decide(0.0, NO_LOAD, []) == []
    assert a.status == "idle"


def test_a_pool_whose_workers_all_wait_on_nested_calls_says_so_not_idle() -> None:
    a = core()
    lent = WorkerView("w1", "lent", idle_since=None)
    assert a.decide(0.0, NO_LOAD, [lent]) == []  # its input runs on: nothing to launch
    assert a.status == "1 waiting on nested calls"


def test_scale_up_at_once_to_ceil_load_over_slots_plus_buffer() -> None:
    a = core(buffer_containers=2)
    load = PoolLoad(pending=7, running=3, slots_per_worker=4)  # ceil(10 / 4) = 3
    assert a.desired(load) == 5
    [launch] = a.decide(0.0, load, [])
    assert isinstance(launch, LaunchWorkers)
    assert launch.count == 5
    assert "7 pending" in launch.reason and "3 running" in launch.reason
    assert "5" in a.status


def test_starting_and_busy_workers_count_toward_desired() -> None:
    a = core()
    load = PoolLoad(pending=4, running=2)
    workers = [WorkerView("s", "starting"), WorkerView("b1", "busy"), WorkerView("b2", "busy")]
    assert a.decide(0.0, load, workers) == [LaunchWorkers(3, "4 pending, 2 running")]
    workers += [WorkerView(f"s{i}", "starting") for i in range(3)]
    assert a.decide(0.0, load, workers) == []


def test_slots_per_worker_zero_is_treated_as_one() -> None:
    assert core().desired(PoolLoad(pending=3, running=0, slots_per_worker=0)) == 3


def test_scale_up_capped_by_max_containers() -> None:
    a = core(max_containers=4, buffer_containers=2)
    load = PoolLoad(pending=100, running=0)
    assert a.desired(load) == 4
    [launch] = a.decide(0.0, load, [WorkerView("w", "busy")])
    assert isinstance(launch, LaunchWorkers)
    assert launch.count == 3


def test_scale_up_capped_by_room() -> None:
    a = AutoscalerCore(AutoscalerSettings(), total_cap=10)
    load = PoolLoad(pending=6, running=0)
    [launch] = a.decide(0.0, load, [], room=2)
    assert isinstance(launch, LaunchWorkers)
    assert launch.count == 2

    assert a.decide(0.0, load, [], room=0) == []
    assert "total cap of 10" in a.status


def test_min_containers_kept_with_no_load() -> None:
    a = core(min_containers=2, scaledown_window=10.0)
    assert a.decide(0.0, NO_LOAD, []) == [LaunchWorkers(2, "0 pending, 0 running")]
    workers = [idle("w1", 0.0), idle("w2", 1.0)]
    assert a.decide(1_000.0, NO_LOAD, workers) == []
    assert a.status == "steady"


def test_buffer_only_under_load() -> None:
    a = core(min_containers=1, buffer_containers=3)
    assert a.desired(NO_LOAD) == 1
    assert a.desired(PoolLoad(pending=1, running=0)) == 4
    assert a.desired(PoolLoad(pending=0, running=2)) == 5


# --- scaling down -------------------------------------------------------------------------


def test_scaledown_only_after_the_window_oldest_idle_first() -> None:
    a = core(scaledown_window=60.0)
    workers = [idle("w20", 20.0), idle("w5", 5.0), idle("w10", 10.0)]
    assert a.decide(64.9, NO_LOAD, workers) == []

    [stop] = a.decide(65.0, NO_LOAD, workers)
    assert isinstance(stop, StopWorkers)
    assert stop.worker_ids == ("w5",)
    assert "60" in stop.reason

    [stop] = a.decide(200.0, NO_LOAD, workers)
    assert isinstance(stop, StopWorkers)
    assert stop.worker_ids == ("w5", "w10", "w20")
    assert "0" in a.status


def test_scaledown_never_below_desired() -> None:
    a = core(min_containers=1, scaledown_window=10.0)
    workers = [idle("c", 3.0), idle("a", 1.0), idle("b", 2.0)]
    [stop] = a.decide(100.0, NO_LOAD, workers)
    assert isinstance(stop, StopWorkers)
    assert stop.worker_ids == ("a", "b")

    load = PoolLoad(pending=0, running=2)  # two busy elsewhere -> want 2 with 3 live
    workers = [WorkerView("x", "busy"), WorkerView("y", "busy"), idle("z", 0.0)]
    [stop] = a.decide(100.0, load, workers)
    assert isinstance(stop, StopWorkers)
    assert stop.worker_ids == ("z",)
    workers = [WorkerView("x", "busy"), idle("y", 0.0), idle("z", 1.0)]
    [stop] = a.decide(100.0, load, workers)
    assert isinstance(stop, StopWorkers)
    assert stop.worker_ids == ("y",)


def test_busy_and_starting_workers_are_never_stopped() -> None:
    a = core(scaledown_window=1.0)
    workers = [
        WorkerView("b", "busy"),
        WorkerView("s", "starting"),
        idle("i", 0.0),
        WorkerView("never-idle", "idle", idle_since=None),
    ]
    [stop] = a.decide(1_000.0, NO_LOAD, workers)
    assert isinstance(stop, StopWorkers)
    assert stop.worker_ids == ("i",)


def test_draining_workers_are_not_counted_or_stopped_again() -> None:
    a = core(scaledown_window=1.0)
    load = PoolLoad(pending=2, running=0)
    draining = [WorkerView("d1", "draining"), WorkerView("d2", "draining", idle_since=0.0)]
    assert a.decide(100.0, load, draining) == [LaunchWorkers(2, "2 pending, 0 running")]
    assert a.decide(100.0, NO_LOAD, draining) == []
    assert a.status == "idle"


# --- launch failures ----------------------------------------------------------------------


def test_launch_failure_backoff_doubles_and_caps_at_30s() -> None:
    a = core()
    delays = [a.launch_failed(float(t), "boom") for t in range(8)]
    assert delays == [1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0, 30.0]


def test_no_launch_during_backoff_and_status_says_why() -> None:
    a = core()
    load = PoolLoad(pending=3, running=0)
    assert a.launch_failed(100.0, "image not found") == 1.0
    assert a.decide(100.5, load, []) == []
    assert "launch failed" in a.status
    assert "image not found" in a.status
    assert "1 s" in a.status

    assert a.decide(101.0, load, []) == [LaunchWorkers(3, "3 pending, 0 running")]

    assert a.launch_failed(101.0, "again") == 2.0
    assert a.decide(102.9, load, []) == []
    assert "again" in a.status and "2 s" in a.status
    assert a.decide(103.0, load, []) != []


def test_the_launch_failure_budget_is_counted_here_once() -> None:
    a = core()
    for t in range(MAX_LAUNCH_FAILURES - 1):
        a.launch_failed(float(t), "x")
    assert a.launch_failures == MAX_LAUNCH_FAILURES - 1 and not a.out_of_launches
    a.launch_failed(10.0, "x")
    assert a.out_of_launches
    a.reset_launch_failures()
    assert a.launch_failures == 0 and not a.out_of_launches


def test_reset_launch_failures_resets_the_backoff() -> None:
    a = core()
    for t in range(4):
        a.launch_failed(float(t), "x")
    a.reset_launch_failures()
    load = PoolLoad(pending=1, running=0)
    assert a.decide(3.5, load, []) == [LaunchWorkers(1, "1 pending, 0 running")]
    assert a.launch_failed(10.0, "y") == 1.0


def test_backoff_does_not_block_scaledown() -> None:
    a = core(scaledown_window=5.0)
    a.launch_failed(100.0, "x")
    [stop] = a.decide(100.5, NO_LOAD, [idle("w", 1.0)])
    assert isinstance(stop, StopWorkers)
    assert stop.worker_ids == ("w",)


# --- a lowered max, the total cap, reclaiming ---------------------------------------------


def test_above_a_lowered_max_the_surplus_stops_now_starting_then_idle_then_busy() -> None:
    a = core(max_containers=2, scaledown_window=60.0)
    workers = [
        WorkerView("busy", "busy"),
        idle("idle-new", 99.0),
        WorkerView("starting", "starting"),
        idle("idle-old", 10.0),
        WorkerView("gone", "draining"),
    ]
    [stop] = a.decide(100.0, PoolLoad(pending=0, running=1), workers)
    assert isinstance(stop, StopWorkers)
    assert stop.worker_ids == ("starting", "idle-old")  # not waiting for the window
    assert a.status == "draining to 2 (max_containers)"
    [stop] = core(max_containers=1).decide(100.0, NO_LOAD, [WorkerView("b", "busy")] * 2)
    assert stop.worker_ids == ("b",)  # a busy one too: it finishes its input first


def test_the_status_names_who_holds_the_total_cap() -> None:
    a = AutoscalerCore(AutoscalerSettings(max_containers=4), total_cap=4)
    holders = [CapHolder("pl-1", "evaluate_model", 0, 0, 3), CapHolder("pl-2", "tick", 0, 1, 0)]
    load = PoolLoad(pending=5, running=3)
    assert a.decide(0.0, load, [WorkerView("w", "busy")] * 3, room=0, holders=holders) == []
    assert a.status == "waiting: 4 of 4 workers in use: evaluate_model 3 busy, tick 1 idle"
    assert a.decide(0.0, load, [WorkerView("w", "busy")] * 3, room=0) == []
    assert a.status == "waiting: the total cap of 4 workers is reached"


def _other(desired: int, *workers: WorkerView, waiting: bool = False) -> OtherPool:
    return OtherPool(desired, waiting, list(workers))


def test_reclaim_takes_surplus_before_warm_workers_and_the_longest_idle_first() -> None:
    others = [
        _other(1, idle("warm", 1.0)),  # kept by min_containers: last
        _other(0, idle("late", 50.0), idle("early", 20.0), WorkerView("b", "busy")),
    ]
    assert reclaim(others, 1) == ["early"]
    assert reclaim(others, 2) == ["early", "late"]
    assert reclaim(others, 9) == ["early", "late", "warm"]  # never the busy one


def test_reclaim_spares_pools_with_inputs_waiting_and_draining_workers() -> None:
    others = [
        _other(0, idle("about-to-work", 1.0), waiting=True),
        _other(0, WorkerView("d", "draining", 1.0)),
    ]
    assert reclaim(others, 3) == []
