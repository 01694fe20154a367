"""The control plane's short paths for one input (a ``.remote()``'s): admitted and
dispatched without a chunk's bookkeeping (``Delivery._submit_lone``, ``_dispatch_lone``),
its lone output settled without a batch's grouping (``Settling._on_lone_output``,
``_deliver_one``). Each test runs twice against fake workers and a fake clock
(``fakes.py``): with the short paths, and with them routed to the general ones; the caller,
the workers and the pool's model must see the same, right, outcome both ways. The real
``.remote()`` is exercised by test_remote_lane, test_failures and the rest."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from fakes import FakeCaller, Harness, RequestRefused

import nbscale
from nbscale_runtime import protocol
from nbscale_server.delivery import Delivery
from nbscale_server.limits import Limits
from nbscale_server.options import FunctionOptions
from nbscale_server.queue import RetryPolicy
from nbscale_server.settling import Settling


def square(x: int) -> int:
    return x * x


def fail_on_two(x: int) -> int:
    if x == 2:
        raise ValueError("two")
    return x


taken: list[str] = []  # the short paths that ran, in the test running now


@pytest.fixture(params=["short", "general"])
def paths(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Each test twice: with the short paths (noted in ``taken``), and with them routed to
    the general ones."""
    taken.clear()
    if request.param == "short":
        for owner, name in ((Delivery, "_submit_lone"), (Settling, "_on_lone_output")):
            monkeypatch.setattr(owner, name, noting(getattr(owner, name), name))
    else:
        monkeypatch.setattr(Delivery, "_submit_lone", lambda self, *args: None)
        monkeypatch.setattr(Delivery, "_dispatch_lone", Delivery._dispatch_batches)
        monkeypatch.setattr(Settling, "_on_lone_output", Settling._on_batch)
        monkeypatch.setattr(
            Settling,
            "_deliver_one",
            lambda self, pool, settled, whole: self._deliver_all(pool, [settled], whole),
        )
    return str(request.param)


def noting(method: Callable[..., Any], name: str) -> Callable[..., Any]:
    def noted(*args: Any) -> Any:
        result = method(*args)
        if result is not None:
            taken.append(name)
        return result

    return noted


@contextlib.contextmanager
def harness(**config: Any) -> Iterator[Harness]:
    h = Harness(**config)
    try:
        yield h
    finally:
        h.close()


@pytest.fixture
def h(paths: str) -> Iterator[Harness]:
    with harness(max_workers_total=4) as h:
        yield h


def remote(caller: FakeCaller, pool_id: str, x: Any) -> str:
    return caller.submit(pool_id, [x], kind="remote")


def seen(h: Harness, pool_id: str) -> dict[str, Any]:
    """What a user (or the sidebar) sees of the pool."""
    model = h.pool(pool_id)
    return {k: model[k] for k in ("done", "failed", "backlog", "num_running_inputs", "containers")}


def test_remotes_go_to_the_least_loaded_worker_that_asked(h, paths):
    pool = h.caller.register(square, FunctionOptions(min_containers=2, max_containers=2))
    h.tick(steps=2)
    first, second = h.workers(pool)
    assert first.asked and second.asked
    a = remote(h.caller, pool, 3)
    b = remote(h.caller, pool, 4)  # the first holds one now: the second takes this one
    assert [held[:2] for held in first.held] == [(a, 0)]
    assert [held[:2] for held in second.held] == [(b, 0)]
    second.finish(want=1)
    first.finish(want=1)
    assert h.caller.values(a) == {0: 9} and h.caller.values(b) == {0: 16}
    c = remote(h.caller, pool, 5)  # both idle again: the first in launch order
    assert [held[:2] for held in first.held] == [(c, 0)] and second.held == []
    first.finish()
    assert h.caller.values(c) == {0: 25}
    assert seen(h, pool)["done"] == 3 and seen(h, pool)["backlog"] == 0
    if paths == "short":  # the short paths ran (each admission, each output)
        assert taken.count("_submit_lone") == 3 and taken.count("_on_lone_output") == 3
    listed = {m["id"]: m for m in h.plane.api.list_calls()}
    for call in (a, b, c):  # finished, as the sidebar lists them
        assert listed[call]["kind"] == "remote" and listed[call]["finished"]
        assert (listed[call]["total"], listed[call]["done"], listed[call]["failed"]) == (1, 1, 0)


def test_a_remote_waits_behind_the_inputs_queued_before_it(h, paths):
    pool = h.caller.register(square, FunctionOptions(max_containers=1))
    call = h.caller.submit(pool, [1, 2, 3])
    h.tick()
    [worker] = h.workers(pool)
    one = remote(h.caller, pool, 10)
    assert [held[1] for held in worker.held] == [0]  # the map's first; the rest wait
    order = []
    for _ in range(6):
        if worker.held:
            order += [held[0] for held in worker.held]
            worker.finish(want=1)
    assert order == [call, call, call, one]
    assert h.caller.values(one) == {0: 100}
    assert seen(h, pool)["done"] == 4


def test_a_failed_remote_is_retried_and_its_retry_reported(paths):
    with harness(max_workers_total=4) as h:
        options = FunctionOptions(max_containers=1, retries=RetryPolicy(1, initial_delay=0.0))
        pool = h.caller.register(fail_on_two, options)
        call = remote(h.caller, pool, 2)
        h.tick(steps=2)
        [worker] = h.workers(pool)
        worker.finish(want=1)
        assert [held[2] for held in worker.held] == [2]  # attempt 2, on the same worker
        worker.finish(want=1)
        [out] = h.caller.outputs[call]
        assert isinstance(out.value, ValueError) and out.attempt == 2
        retrying = [p.retrying for p in h.caller.progress if p.retrying]
        assert retrying == [[[0, 1, protocol.STATUS_ERROR]]]
        assert (seen(h, pool)["failed"], seen(h, pool)["done"]) == (1, 0)


def test_a_worker_dying_under_a_remote_blames_that_input_only(h, paths):
    pool = h.caller.register(square, FunctionOptions(min_containers=2, max_containers=2))
    h.tick(steps=2)
    first, second = h.workers(pool)
    doomed = remote(h.caller, pool, 3)
    fine = remote(h.caller, pool, 4)
    first.crash()
    h.tick()
    [lost] = h.caller.outputs[doomed]
    assert isinstance(lost.value, nbscale.WorkerLostError)
    assert "while running input 0" in str(lost.value)
    second.finish()
    assert h.caller.values(fine) == {0: 16}


def test_a_remote_cancelled_while_it_runs_tells_its_worker(h, paths):
    pool = h.caller.register(square, FunctionOptions(min_containers=1, max_containers=1))
    h.tick(steps=2)
    [worker] = h.workers(pool)
    call = remote(h.caller, pool, 3)
    assert len(worker.held) == 1
    h.caller.cancel(call)
    assert worker.cancelled == [call] and worker.held == []
    h.tick()
    assert h.caller.outputs[call] == [] and seen(h, pool)["num_running_inputs"] == 0


def test_a_remote_over_the_pending_limit_is_refused(paths):
    with harness(limits=Limits(max_pending_inputs=2)) as h:
        pool = h.caller.register(square, FunctionOptions(max_containers=1))
        h.caller.submit(pool, [1, 2])  # no worker yet: both pending
        with pytest.raises(RequestRefused, match="pending inputs"):
            remote(h.caller, pool, 3)
        assert seen(h, pool)["backlog"] == 2


def test_a_remote_to_a_broken_pool_fails_at_once(paths):
    with harness(auto=False) as h:
        pool = h.caller.register(square, FunctionOptions(max_containers=1))
        first = remote(h.caller, pool, 3)  # no worker yet: it starts one
        [worker] = h.workers(pool)
        worker.register(python="3.8.10")  # another Python: the pool breaks
        late = remote(h.caller, pool, 4)
        for call in (first, late):
            [out] = h.caller.outputs[call]
            assert isinstance(out.value, nbscale.VersionMismatchError)
        assert seen(h, pool)["backlog"] == 0


def test_a_remote_with_nobody_asking_waits_then_runs(h, paths):
    pool = h.caller.register(square, FunctionOptions(max_containers=1))
    call = remote(h.caller, pool, 6)  # no worker yet: it starts one
    assert seen(h, pool)["backlog"] == 1
    h.tick(steps=2)
    [worker] = h.workers(pool)
    worker.finish()
    assert h.caller.values(call) == {0: 36}
