"""The control plane's own decisions, against fake workers and a fake clock (``fakes.py``):
scaling, the scaledown window, launch failures, lost and silent workers, retries,
cancellation. No process, no socket, no sleep: the real suites (test_scaling, test_failures,
test_server_api, ...) show the same on real workers."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from fakes import FakeWorker, Harness

import nbscale
from nbscale_runtime import protocol
from nbscale_server.limits import Limits
from nbscale_server.options import FunctionOptions
from nbscale_server.queue import RetryPolicy


def square(x: int) -> int:
    return x * x


def fail_on_two(x: int) -> int:
    if x == 2:
        raise ValueError("two")
    return x


@pytest.fixture
def h() -> Iterator[Harness]:
    harness = Harness(max_workers_total=4)
    yield harness
    harness.close()


@pytest.fixture
def manual() -> Iterator[Harness]:
    """A harness whose workers do only what the test tells them."""
    harness = Harness(auto=False)
    yield harness
    harness.close()


def containers(h: Harness, pool_id: str) -> dict[str, int]:
    return dict(h.pool(pool_id)["containers"])


def run_all(h: Harness, call_id: str, total: int, rounds: int = 50) -> dict[int, Any]:
    """Let the workers run every input they get until the call has ``total`` outputs."""
    for _ in range(rounds):
        h.tick()
        for worker in h.workers():
            if worker.held:
                worker.finish()
        if len(h.caller.outputs[call_id]) >= total:
            return h.caller.values(call_id)
    raise AssertionError(f"{call_id}: {h.caller.values(call_id)} after {rounds} rounds")


# --- scaling --------------------------------------------------------------------------------


def test_scales_up_to_max_containers_then_to_zero_after_the_scaledown_window(h):
    pool = h.caller.register(square, FunctionOptions(max_containers=3, scaledown_window=10))
    call = h.caller.submit(pool, range(6))
    assert containers(h, pool)["starting"] == 3  # at once, capped by max_containers
    h.tick()
    assert containers(h, pool)["busy"] == 3
    assert run_all(h, call, 6) == {i: i * i for i in range(6)}
    assert containers(h, pool)["idle"] == 3
    h.tick(9.0)
    assert containers(h, pool)["idle"] == 3  # within the window: kept warm
    h.tick(1.5)
    assert containers(h, pool)["draining"] == 3
    assert h.pool(pool)["status"] == "scaling down to 0"
    h.tick()
    assert h.workers(pool) == [] and h.pool(pool)["num_total_runners"] == 0


def test_min_containers_stay_warm_and_buffer_containers_are_added_under_load(h):
    options = FunctionOptions(min_containers=1, buffer_containers=1, scaledown_window=5)
    pool = h.caller.register(square, options)
    h.tick(steps=2)  # launched, then registered
    assert containers(h, pool)["idle"] == 1  # min_containers, without any work
    call = h.caller.submit(pool, range(2))
    h.tick()
    assert h.pool(pool)["num_total_runners"] == 3  # 2 inputs, 1 slot each, + 1 buffer
    run_all(h, call, 2)
    h.tick(60.0, steps=2)
    assert h.pool(pool)["num_total_runners"] == 1


def test_the_total_cap_holds_every_pool(h):
    pool = h.caller.register(square)
    h.caller.submit(pool, range(10))
    assert h.pool(pool)["num_total_runners"] == 4
    h.tick()
    assert h.pool(pool)["status"] == "waiting: 4 of 4 workers in use: square 4 busy"


# --- launch failures ------------------------------------------------------------------------


def test_launch_failures_back_off_then_fail_the_waiting_inputs(h):
    h.launcher.fail_next(3, "image nbscale/worker:x is not on this Docker host")
    pool = h.caller.register(square)
    call = h.caller.submit(pool, range(2))
    assert "retrying in 1 s" in h.pool(pool)["status"]
    h.tick(0.9)
    assert h.launcher.workers == {} and h.caller.outputs[call] == []  # backing off
    h.tick(0.2)
    assert "retrying in 2 s" in h.pool(pool)["status"]
    h.tick(2.1)
    errors = list(h.caller.values(call).values())
    assert len(errors) == 2 and all(isinstance(e, nbscale.LaunchError) for e in errors)
    assert "3 workers in a row failed to start" in str(errors[0])
    assert "is not on this Docker host" in str(errors[0])


def test_registering_again_after_failed_launches_starts_afresh(h):
    """Launch failures are counted once, by the autoscaler: registering the function again
    forgets them all, its backoff included."""
    h.launcher.fail_next(3)
    pool = h.caller.register(square)
    failed = h.caller.submit(pool, [1])
    h.tick(1.1)
    h.tick(2.1)
    assert isinstance(h.caller.values(failed)[0], nbscale.LaunchError)
    h.caller.register(square)
    call = h.caller.submit(pool, [2])
    assert len(h.launcher.workers) == 1  # launched at once: no backoff left over
    assert run_all(h, call, 1) == {0: 4}
    h.launcher.fail_next(1)
    h.caller.submit(pool, [3, 4])  # one more worker wanted; its launch fails
    assert "retrying in 1 s" in h.pool(pool)["status"]  # counted from one again


def test_a_worker_that_never_registers_is_killed_and_counted_as_a_failed_launch():
    h = Harness(auto=False, startup_timeout=60.0)
    try:
        pool = h.caller.register(square)
        h.caller.submit(pool, [1])
        [worker] = h.workers()
        h.tick(59.0)
        assert worker.stop is None
        h.tick(2.0)
        assert worker.stop == "kill"
        worker.die(-9)
        h.tick()
        status = h.pool(pool)["status"]
        assert "was killed by SIGKILL before registering" in status
        assert "retrying in 1 s" in status
    finally:
        h.close()


# --- lost and silent workers ----------------------------------------------------------------


def test_a_lost_worker_fails_the_input_it_ran_and_requeues_those_it_only_held(h):
    pool = h.caller.register(square, FunctionOptions(max_containers=1))
    call = h.caller.submit(pool, range(6))
    h.tick()
    [worker] = h.workers(pool)
    worker.ask(2)  # prefetch: it holds three, runs the first
    assert [held[1] for held in worker.held] == [0, 1, 2]
    worker.crash()  # input 0 kills its own worker
    h.tick()
    lost = h.caller.values(call)[0]
    assert isinstance(lost, nbscale.WorkerLostError)
    assert "was killed by SIGKILL while running input 0 (attempt 1; counted against" in str(lost)
    values = run_all(h, call, 6)
    assert [values[i] for i in range(1, 6)] == [1, 4, 9, 16, 25]
    assert {out.attempt for out in h.caller.outputs[call][1:]} == {1}  # not counted


def test_a_silent_worker_running_an_input_is_unresponsive_until_the_input_times_out():
    """Silent (user code holding the GIL) but alive and within its input's timeout: shown
    unresponsive and left alone; past the timeout, the input times out from outside (the
    worker cannot enforce it) and the worker is killed."""
    h = Harness(heartbeat_timeout=15.0)
    try:
        retries = RetryPolicy(1, initial_delay=0.0)
        options = FunctionOptions(max_containers=1, timeout=40, retries=retries)
        pool = h.caller.register(square, options)
        call = h.caller.submit(pool, [7])
        h.tick()
        [stuck] = h.workers(pool)
        stuck.hang()
        h.tick(14.0)
        assert containers(h, pool)["busy"] == 1
        h.tick(2.0)
        assert containers(h, pool)["unresponsive"] == 1 and stuck.stop is None
        event = h.pool(pool)["events"][-1]["message"]
        assert "unresponsive for 16 s while running input 0" in event
        h.tick(20.0)
        assert stuck.stop is None  # 36 s into a 40 s timeout: still left alone
        h.tick(5.0)
        assert stuck.stop == "kill"
        stuck.hung = False  # the kill reaches it
        assert run_all(h, call, 1) == {0: 49}
        assert h.caller.outputs[call][0].attempt == 2
        retrying = [p.retrying for p in h.caller.progress if p.retrying]
        assert retrying == [[[0, 1, protocol.STATUS_TIMEOUT]]]
    finally:
        h.close()


def test_an_unresponsive_worker_that_speaks_again_is_busy_and_keeps_its_input(h):
    pool = h.caller.register(square, FunctionOptions(max_containers=1, timeout=120))
    call = h.caller.submit(pool, [3])
    h.tick()
    [worker] = h.workers(pool)
    worker.hang()
    h.tick(16.0)
    assert containers(h, pool)["unresponsive"] == 1
    worker.hung = False
    h.tick()  # its heartbeat
    assert containers(h, pool)["busy"] == 1
    worker.finish()
    assert h.caller.values(call) == {0: 9}


def test_a_silent_worker_running_nothing_is_killed_and_its_queued_inputs_requeued(h):
    pool = h.caller.register(square, FunctionOptions(max_containers=1))
    call = h.caller.submit(pool, range(3))
    h.tick()
    [frozen] = h.workers(pool)
    frozen.ask(2)
    frozen.hang(between_inputs=True)
    h.tick(16.0)
    assert frozen.stop == "kill"
    assert "missed its heartbeats for 16 s with no input running" in str(h.pool(pool)["events"])
    frozen.hung = False
    assert run_all(h, call, 3) == {0: 0, 1: 1, 2: 4}
    assert {out.attempt for out in h.caller.outputs[call]} == {1}  # nobody's fault


# --- errors and retries ---------------------------------------------------------------------


def test_an_error_on_a_worker_reaches_the_caller_as_its_own_type(h):
    pool = h.caller.register(square, FunctionOptions(max_containers=1))
    call = h.caller.submit(pool, [3])
    h.tick(steps=2)
    [worker] = h.workers(pool)
    worker.finish(error=KeyError("gone"))
    [out] = h.caller.outputs[call]
    assert isinstance(out.value, KeyError) and out.attempt == 1 and not out.ok
    assert (h.pool(pool)["failed"], h.pool(pool)["done"]) == (1, 0)


def test_a_failed_input_is_retried_after_its_delay_not_before(h):
    options = FunctionOptions(retries=RetryPolicy(max_retries=1, initial_delay=2.0))
    pool = h.caller.register(fail_on_two, options)
    call = h.caller.submit(pool, [2])
    h.tick()
    [worker] = h.workers(pool)
    worker.finish()
    h.tick(1.5)
    assert worker.held == [] and h.caller.outputs[call] == []
    h.tick(0.6)
    assert [held[2] for held in worker.held] == [2]  # attempt 2
    worker.finish()
    [out] = h.caller.outputs[call]
    assert isinstance(out.value, ValueError) and out.attempt == 2


# --- cancellation ---------------------------------------------------------------------------


def test_cancelling_drops_pending_inputs_and_tells_the_workers(h):
    pool = h.caller.register(square, FunctionOptions(max_containers=1, scaledown_window=5))
    call = h.caller.submit(pool, range(5))
    h.tick()
    [worker] = h.workers(pool)
    assert len(worker.held) == 1
    h.caller.cancel(call)
    assert worker.cancelled == [call] and worker.held == []
    assert h.pool(pool)["backlog"] == 0
    h.tick()  # the worker reports its running input cancelled: idle from now
    h.tick(6.0, steps=2)
    assert h.workers(pool) == []
    assert h.caller.outputs[call] == []  # the caller cancelled: nothing more to tell it


def test_cancelling_from_the_rest_api_ends_the_callers_inputs(h):
    pool = h.caller.register(square, FunctionOptions(max_containers=1))
    call = h.caller.submit(pool, range(3))
    h.tick()
    h.plane.api.cancel_call(call)
    errors = h.caller.values(call)
    assert sorted(errors) == [0, 1, 2]
    assert all(isinstance(e, nbscale.CallCancelledError) for e in errors.values())


def test_a_spawned_calls_wait_for_outputs_ends_at_its_timeout(h):
    pool = h.caller.register(square, FunctionOptions(max_containers=1))
    call = h.caller.submit(pool, [3], kind="spawn")
    rid = h.caller.send(protocol.GetOutputs(0, call, 0, 1, 5.0))
    h.tick(4.0)
    assert h.caller.answer(rid) is None  # waiting
    h.tick(1.5)
    reply = h.caller.answer(rid)
    assert reply is not None and reply.value["items"] == [] and not reply.value["finished"]


# --- versions -------------------------------------------------------------------------------


def test_a_worker_of_another_python_breaks_the_pool_until_registered_again(manual):
    h = manual
    pool = h.caller.register(square, FunctionOptions(max_containers=1))
    call = h.caller.submit(pool, [1, 2])
    [worker] = h.workers()
    worker.register(python="3.8.10")
    errors = list(h.caller.values(call).values())
    assert len(errors) == 2 and isinstance(errors[0], nbscale.VersionMismatchError)
    assert "Python 3.8.10 on the worker" in str(errors[0])
    assert worker.stop == "kill"
    late = h.caller.submit(pool, [3])
    assert isinstance(h.caller.values(late)[0], nbscale.VersionMismatchError)
    h.tick()  # the killed worker exits
    h.caller.register(square, FunctionOptions(max_containers=1))  # a fresh chance
    again = h.caller.submit(pool, [4])
    assert h.caller.outputs[again] == []
    [fresh] = h.workers()
    assert fresh is not worker


# --- broken pools ---------------------------------------------------------------------------


def a_retry_waiting(h: Harness, max_containers: int) -> tuple[str, str, FakeWorker]:
    """A pool whose first worker failed input 0 (its retry waits 5 s), input 1 pending;
    returns the pool, the call and that worker."""
    retries = RetryPolicy(max_retries=1, initial_delay=5.0)
    pool = h.caller.register(
        fail_on_two, FunctionOptions(max_containers=max_containers, retries=retries)
    )
    call = h.caller.submit(pool, [2, 5])
    worker = h.workers(pool)[0]
    worker.register()
    worker.ask(1)
    worker.finish()  # x=2 raises
    assert h.pool(pool)["backlog"] == 2  # the retry and input 1
    return pool, call, worker


def test_a_broken_pool_fails_every_waiting_input_once_delayed_retries_included(manual):
    pool, call, first = a_retry_waiting(manual, max_containers=2)
    second = manual.workers(pool)[1]
    second.register(python="3.8.10")  # cannot run this caller's pickles: the pool breaks
    outcomes = manual.caller.values(call)
    assert sorted(outcomes) == [0, 1]
    assert all(isinstance(e, nbscale.VersionMismatchError) for e in outcomes.values())
    assert manual.pool(pool)["backlog"] == 0
    first.ask(1)
    manual.tick(6.0)
    assert first.held == []  # the retry was dropped with the rest
    assert len(manual.caller.outputs[call]) == 2  # each input's outcome reported once


def test_a_broken_pool_gives_back_its_pending_spawns_room():
    h = Harness(auto=False, limits=Limits(max_pending_spawn_inputs=5))
    try:
        pool = h.caller.register(square, FunctionOptions(max_containers=1))
        spawned = h.caller.submit(pool, range(5), kind="spawn")
        [worker] = h.workers(pool)
        worker.register(python="3.8.10")
        assert h.plane.delivery.call(spawned).failed == 5  # all failed, stored
        h.tick()
        h.caller.register(square, FunctionOptions(max_containers=1))  # a fresh chance
        h.caller.submit(pool, range(5), kind="spawn")  # room for 5 pending spawns again
        assert h.pool(pool)["backlog"] == 5
    finally:
        h.close()


def test_launch_failures_fail_delayed_retries_too(manual):
    pool, call, worker = a_retry_waiting(manual, max_containers=1)
    worker.die(1)  # the worker goes; every relaunch fails
    manual.launcher.fail_next(3, "no such image")
    manual.tick()
    manual.tick(1.1)
    manual.tick(2.1)
    outcomes = manual.caller.values(call)
    assert sorted(outcomes) == [0, 1]
    assert all(isinstance(e, nbscale.LaunchError) for e in outcomes.values())
    assert manual.pool(pool)["backlog"] == 0
