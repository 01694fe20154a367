"""Who is blamed when a worker dies, and launch storms, decided by the real control plane
against fake workers and a fake clock (``fakes.py``). The same on real processes and
containers: ``test_failures_blame.py``, ``test_docker_failures.py``."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fakes import Harness

import nbscale
from nbscale_server.losses import MAX_INFRASTRUCTURE_LOSSES
from nbscale_server.options import FunctionOptions
from nbscale_server.queue import RetryPolicy


def square(x: int) -> int:
    return x * x


@pytest.fixture(params=["one by one", "a packed run"])
def h(request: pytest.FixtureRequest) -> Iterator[Harness]:
    """A harness whose caller submits inputs one by one, or as one packed run (as a map's
    client does): the queue then cuts the run wherever its inputs part ways."""
    harness = Harness(max_workers_total=4)
    harness.caller.packed = request.param == "a packed run"
    yield harness
    harness.close()


def one_worker_holding(h: Harness, n: int, retries: int = 0) -> tuple[str, str]:
    """A pool of one worker that holds the first half of a map of ``n`` inputs (a guided
    batch); returns (pool, call)."""
    options = FunctionOptions(max_containers=1, retries=RetryPolicy(retries, initial_delay=0.0))
    pool = h.caller.register(square, options)
    call = h.caller.submit(pool, range(n))
    h.tick()
    [worker] = h.workers(pool)
    worker.ask(n)
    assert [held[1] for held in worker.held] == list(range(n // 2))
    return pool, call


def finish_everything(h: Harness, call: str, total: int) -> dict[int, object]:
    for _ in range(20):
        h.tick()
        for worker in h.workers():
            worker.finish()
        if len(h.caller.outputs[call]) >= total:
            break
    return h.caller.values(call)


def test_only_the_input_running_when_its_worker_crashed_is_blamed(h):
    """The defect: inputs 1 and 3 were blamed (dispatched first), though they had finished
    and their outputs were still in the worker's batch, and input 5 went back untouched."""
    pool, call = one_worker_holding(h, 12)  # it holds inputs 0 to 5
    [worker] = h.workers(pool)
    worker.finish(2)  # 0 and 1: their outputs arrived
    worker.finish(2, send=False)  # 2 and 3 done, still in the batch
    worker.crash()  # input 4 kills its own worker; 5 waits behind it
    h.tick()
    lost = h.caller.values(call)[4]
    assert isinstance(lost, nbscale.WorkerLostError)
    assert "while running input 4 (attempt 1; counted against" in str(lost)
    values = finish_everything(h, call, 12)
    assert {i: v for i, v in values.items() if i != 4} == {i: i * i for i in range(12) if i != 4}
    attempts = {out.index: out.attempt for out in h.caller.outputs[call]}
    assert attempts == {i: 1 for i in range(12)}  # nobody else's attempt was counted
    assert len(h.launcher.workers) == 2  # one crash, one replacement


def test_a_crash_blames_every_input_running_on_a_concurrent_worker_and_no_other(h):
    options = FunctionOptions(max_containers=1, max_inputs=3)
    pool = h.caller.register(square, options)
    call = h.caller.submit(pool, range(5))
    h.tick(steps=2)
    [worker] = h.workers(pool)
    worker.finish(1, want=1)  # 0 done; 1, 2 and 3 run
    worker.crash(11)  # SIGSEGV: a fault of the code that ran
    h.tick()
    lost = sorted(i for i, v in h.caller.values(call).items() if isinstance(v, Exception))
    assert lost == [1, 2, 3]
    assert finish_everything(h, call, 5)[4] == 16
    assert [out.attempt for out in h.caller.outputs[call] if out.index == 4] == [1]


def test_an_outside_kill_is_not_counted_against_retries(h):
    pool, call = one_worker_holding(h, 4, retries=0)  # it holds inputs 0 and 1
    [worker] = h.workers(pool)
    worker.die(-9)  # kill -9 from outside while input 0 runs
    h.tick()
    assert h.caller.outputs[call] == []  # no retries, yet nothing failed
    assert "infrastructure's loss" in h.pool(pool)["events"][-2]["message"]
    values = finish_everything(h, call, 4)
    assert values == {0: 0, 1: 1, 2: 4, 3: 9}
    attempts = {out.index: out.attempt for out in h.caller.outputs[call]}
    assert attempts == {0: 2, 1: 1, 2: 1, 3: 1}


def test_an_input_the_infrastructure_keeps_losing_fails_naming_it(h):
    pool = h.caller.register(square, FunctionOptions(max_containers=1))
    call = h.caller.submit(pool, [3])
    for _ in range(MAX_INFRASTRUCTURE_LOSSES):
        h.tick(steps=2)
        [worker] = h.workers(pool)
        assert worker.held
        worker.die(-15)  # SIGTERM from outside, each time
        h.tick()
    [lost] = h.caller.values(call).values()
    assert isinstance(lost, nbscale.WorkerLostError)
    message = str(lost)
    assert "was killed by SIGTERM while running input 0" in message
    assert f"lost to the infrastructure {MAX_INFRASTRUCTURE_LOSSES} time(s) in a row" in message
    assert "not counted against the function's retries" in message


@pytest.mark.parametrize("packed", [False, True])
def test_a_worker_without_a_register_turns_its_inputs_into_suspects_run_alone(packed):
    """A worker that shares no files with the control plane (a cluster node) cannot say
    exactly what it ran when it died: its inputs become suspects, each run alone on a worker
    that confirms it starts it, so the next death blames exactly the culprit."""
    h = Harness(register=False)
    h.caller.packed = packed
    try:
        pool, call = one_worker_holding(h, 6)  # it holds inputs 0, 1 and 2
        [first] = h.workers(pool)
        first.crash(11)  # SIGSEGV while running one of them, which it cannot say
        h.tick(steps=3)
        assert h.caller.outputs[call] == []  # nobody blamed on a guess
        [second] = h.workers(pool)
        assert [held[1] for held in second.held] == [0]  # a suspect, alone
        second.crash(11)  # it confirmed it started input 0: exactly that one is blamed
        h.tick()
        lost = h.caller.values(call)[0]
        assert isinstance(lost, nbscale.WorkerLostError) and "input 0" in str(lost)
        h.tick(steps=3)
        [third] = h.workers(pool)
        assert [held[1] for held in third.held] == [1]  # the next suspect, alone
        values = finish_everything(h, call, 6)
        assert {i: v for i, v in values.items() if i} == {i: i * i for i in range(1, 6)}
        assert len(h.launcher.workers) == 3
    finally:
        h.close()


def test_a_silent_worker_without_a_register_times_out_by_its_heartbeats():
    h = Harness(register=False, heartbeat_timeout=15.0)
    try:
        pool = h.caller.register(square, FunctionOptions(max_containers=1, timeout=30))
        call = h.caller.submit(pool, [4])
        h.tick(steps=2)
        [worker] = h.workers(pool)
        h.tick()  # its heartbeat: input 0 runs
        worker.hang()
        h.tick(16.0)
        assert h.pool(pool)["containers"]["unresponsive"] == 1
        h.tick(15.0)
        assert worker.stop == "kill"
        assert isinstance(h.caller.values(call)[0], nbscale.FunctionTimeoutError)
    finally:
        h.close()


# --- launch storms --------------------------------------------------------------------------


def test_workers_killed_before_registering_are_retried_and_the_backlog_waits(h):
    """The defect: three workers killed from outside before they registered failed the whole
    backlog with LaunchError, inputs that never ran included."""
    pool = h.caller.register(square, FunctionOptions(max_containers=1))
    call = h.caller.submit(pool, range(4))
    for delay in (1.0, 2.0, 4.0, 8.0):
        [worker] = h.workers(pool)
        worker.die(-9)  # before its first step: it never registered
        h.tick()
        assert f"retrying in {delay:g} s" in h.pool(pool)["status"]
        h.tick(delay)
    assert h.caller.outputs[call] == []  # nothing failed
    assert finish_everything(h, call, 4) == {i: i * i for i in range(4)}


def test_workers_that_fail_to_start_the_same_way_fail_the_backlog_after_three(h):
    pool = h.caller.register(square, FunctionOptions(max_containers=1))
    call = h.caller.submit(pool, range(2))
    for delay in (1.0, 2.0, 4.0):
        [worker] = h.workers(pool)
        worker.log.append("ModuleNotFoundError: No module named 'torch'")
        worker.die(1)  # exits with an error before registering, each time
        h.tick()
        h.tick(delay)
    errors = list(h.caller.values(call).values())
    assert len(errors) == 2 and all(isinstance(e, nbscale.LaunchError) for e in errors)
    assert "3 workers in a row failed to start" in str(errors[0])
    assert "No module named 'torch'" in str(errors[0])
