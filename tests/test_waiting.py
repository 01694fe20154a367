"""Waiting is not failing: the control plane's decisions about workers that wait in a
scheduler's queue (a pending Slurm job), against fake workers and a fake clock
(``fakes.py``). The real cluster shows the same in test_slurm_calls.py and
test_slurm_server.py.

A waiting worker is launched (the autoscaler and the total cap count it, so no flood of
jobs is submitted) but serves nothing (it keeps no pool from being blamed for failed
launches, and is the first to go when a pool shrinks); its startup timeout counts from when
it runs, and its wait is bounded by the pending timeout."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import jsonschema
import pytest
from fakes import FakeWorker, Harness

import nbscale
from nbscale._views.render import pool_line, pools_text
from nbscale_server.options import FunctionOptions
from nbscale_server.schema import schema


def square(x: int) -> int:
    return x * x


@pytest.fixture
def h() -> Iterator[Harness]:
    harness = Harness(max_workers_total=4, startup_timeout=10.0, pending_timeout=600.0)
    yield harness
    harness.close()


def containers(h: Harness, pool_id: str) -> dict[str, int]:
    return dict(h.pool(pool_id)["containers"])


def serve(h: Harness, rounds: int = 5) -> None:
    """Let the workers run every input they hold, ``rounds`` times."""
    for _ in range(rounds):
        h.tick()
        for worker in h.workers():
            if worker.held and not worker.queued:
                worker.finish()


def one_queued(h: Harness, pool_id: str) -> FakeWorker:
    (worker,) = [w for w in h.workers(pool_id) if w.queued]
    return worker


def conforms(model: Any, name: str) -> None:
    """``model`` is what models.py declares (and the sidebar's types say)."""
    api = schema()
    jsonschema.validate(model, {"$defs": api["$defs"], "$ref": f"#/$defs/{name}"})


def test_a_queued_worker_waits_with_its_reason_and_outlives_the_startup_timeout(h):
    h.launcher.queue_next(1, "Resources")
    pool = h.caller.register(square, FunctionOptions(max_containers=1))
    call = h.caller.submit(pool, range(3))
    h.tick()
    model = h.pool(pool)
    conforms(model, "IPool")
    assert model["containers"] == dict(
        waiting=1, starting=0, idle=0, busy=0, unresponsive=0, draining=0
    )
    assert model["num_total_runners"] == 1
    (worker,) = model["workers"]
    assert (worker["state"], worker["waiting_reason"]) == ("waiting", "Resources")
    assert model["status"].endswith("; 1 waiting for resources (reason: Resources)")
    assert "(1 waiting for resources, 0 starting, 0 busy, 0 idle)" in pool_line(model, None)
    assert "1 waiting for resources (reason: Resources)" in pools_text([model])
    for _ in range(6):
        h.tick(10.0)  # six startup timeouts: waiting is not failing
    queued = one_queued(h, pool)
    assert queued.stop is None and len(h.launcher.workers) == 1  # no second job
    assert h.caller.outputs[call] == []
    queued.run()  # resources found: it runs, registers and serves
    serve(h)
    assert h.caller.values(call) == {0: 0, 1: 1, 2: 4}
    assert h.pool(pool)["workers"][0]["waiting_reason"] is None
    events = [e["message"] for e in h.pool(pool)["events"]]
    assert any("started after 60 s waiting (Resources)" in e for e in events)


def test_the_startup_timeout_counts_from_when_the_job_runs():
    h = Harness(auto=False, startup_timeout=10.0)
    try:
        h.launcher.queue_next(1)
        pool = h.caller.register(square)
        h.caller.submit(pool, [1])
        h.tick(100.0)
        worker = one_queued(h, pool)
        worker.run()
        h.tick()  # the fleet sees it run
        h.tick(9.0)
        assert worker.stop is None and containers(h, pool)["starting"] == 1
        h.tick(2.0)  # running 11 s and not registered: killed, a failed launch
        assert worker.stop == "kill"
        h.tick()
        assert h.plane.records.pools[pool].autoscaler.launch_failures == 1
    finally:
        h.close()


def test_waiting_workers_count_as_launched_so_no_flood_is_submitted(h):
    h.launcher.queue_next(100)
    pool = h.caller.register(square)
    h.caller.submit(pool, range(10))
    for _ in range(20):
        h.tick(1.0)
    assert len(h.launcher.workers) == 4  # the total cap, once: each job waits its turn
    model = h.pool(pool)
    assert model["containers"]["waiting"] == 4
    assert model["status"].startswith("waiting: 4 of 4 workers in use: square 4 waiting")
    assert model["cap_holders"][0]["waiting"] == 4


def test_the_pending_timeout_cancels_the_job_and_fails_the_inputs_naming_the_reason():
    h = Harness(pending_timeout=60.0)
    try:
        h.launcher.queue_next(1, "QOSMaxJobsPerUserLimit")
        pool = h.caller.register(square, FunctionOptions(max_containers=1))
        call = h.caller.submit(pool, [1, 2])
        h.tick(59.0)
        worker = one_queued(h, pool)
        assert h.caller.outputs[call] == []
        h.tick(2.0)
        assert worker.stop == "kill"  # cancelled in the queue
        errors = list(h.caller.values(call).values())
        assert len(errors) == 2 and all(isinstance(e, nbscale.LaunchError) for e in errors)
        message = str(errors[0])
        assert "waited 60 s for resources without starting" in message
        assert "QOSMaxJobsPerUserLimit" in message and "pending_timeout" in message
        h.tick(steps=3)  # it leaves; its exit is not counted as a second failure
        assert worker.exit_code is not None and h.workers(pool) == []
        assert h.plane.records.pools[pool].autoscaler.launch_failures == 1
    finally:
        h.close()


def test_the_pending_timeout_fails_nothing_while_other_workers_serve(h):
    pool = h.caller.register(square, FunctionOptions(max_containers=2))
    first_call = h.caller.submit(pool, [1])
    h.tick()
    h.launcher.queue_next(1)
    call = h.caller.submit(pool, range(2, 6))
    h.tick()
    queued = one_queued(h, pool)
    h.tick(601.0)
    assert queued.stop == "kill"
    assert not any(isinstance(v, Exception) for v in h.caller.values(call).values())
    serve(h, rounds=10)
    assert h.caller.values(first_call) == {0: 1}
    assert h.caller.values(call) == {0: 4, 1: 9, 2: 16, 3: 25}  # by the worker that runs


def test_waiting_workers_do_not_keep_a_pool_from_failing_its_launches(h):
    """Failed launches fail the waiting inputs unless a worker serves them: one queued for
    resources serves nothing."""
    h.launcher.queue_next(1)
    pool = h.caller.register(square, FunctionOptions(max_containers=4))
    call = h.caller.submit(pool, [0])
    h.tick()
    queued = one_queued(h, pool)
    h.launcher.fail_next(3, "sbatch: error: Batch job submission failed")
    h.caller.submit(pool, [1, 2], call_id=call, start=1)
    for _ in range(4):
        h.tick(5.0)
    errors = h.caller.values(call)
    assert set(errors) == {0, 1, 2}
    assert all(isinstance(e, nbscale.LaunchError) for e in errors.values())
    assert "Batch job submission failed" in str(errors[2])
    h.tick()
    assert queued.stop is not None  # nothing left to do: no longer needed in the queue


def test_a_pool_that_shrinks_stops_its_waiting_workers_first(h):
    pool = h.caller.register(square, FunctionOptions(max_containers=3, scaledown_window=60))
    h.caller.submit(pool, [1, 2])
    h.tick()
    h.launcher.queue_next(1)
    call = h.caller.submit(pool, [3])
    h.tick()
    queued = one_queued(h, pool)
    h.caller.update_autoscaler(pool, max_containers=2)
    h.tick()
    assert queued.stop == "graceful" and all(w.stop is None for w in h.workers(pool) if w.held)
    serve(h)
    assert h.caller.values(call) == {0: 9}


def test_waiting_workers_no_longer_needed_go_at_once_idle_ones_after_the_window(h):
    pool = h.caller.register(square, FunctionOptions(max_containers=2, scaledown_window=60))
    h.caller.submit(pool, [1])
    h.tick()
    h.launcher.queue_next(1)
    call = h.caller.submit(pool, [2])
    h.tick()
    queued = one_queued(h, pool)
    serve(h)  # the running worker does both inputs
    assert h.caller.values(call) == {0: 4}
    assert queued.stop is not None  # not warm: no reason to keep its place in the queue
    h.tick(steps=2)
    assert containers(h, pool) == dict(
        waiting=0, starting=0, idle=1, busy=0, unresponsive=0, draining=0
    )


def test_a_job_queued_a_moment_without_a_reason_leaves_no_note(h):
    """Every Slurm job is queued for a moment before it runs: that is shown, but only a wait
    the scheduler explained is worth a line in the pool's event log."""
    h.launcher.queue_next(1, None)
    pool = h.caller.register(square)
    call = h.caller.submit(pool, [3])
    h.tick()
    assert h.pool(pool)["status"].endswith("; 1 waiting for resources")
    one_queued(h, pool).run()
    serve(h)
    assert h.caller.values(call) == {0: 9}
    assert not any("started after" in e["message"] for e in h.pool(pool)["events"])


def test_a_job_cancelled_while_queued_shows_no_exit_code(h):
    """A queued job the pool no longer needs is cancelled. Its "stopped" event (the
    sidebar's "wk-… stopped (exit N)") has no exit code: it never ran, and Slurm's -15 for
    the cancel read as a failure."""
    events: list[dict[str, Any]] = []
    h.plane.outbox.subscribe(events.append)
    h.launcher.queue_next(1, "Resources")
    pool = h.caller.register(square, FunctionOptions(max_containers=1, scaledown_window=5))
    call = h.caller.submit(pool, [1])
    h.tick()
    queued = one_queued(h, pool)
    h.caller.cancel(call)
    for _ in range(4):
        h.tick(3.0)
    assert queued.exit_code == -15  # what the launcher reports for a cancelled job
    stopped = [e for e in events if e["type"] == "container-stopped"]
    assert [(e["container_id"], e["exit_code"]) for e in stopped] == [(queued.worker_id, None)]
