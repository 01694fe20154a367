"""The control plane's decisions about nested calls, against fake workers and a fake clock:
the call graph, cancellation down it, slots lent while an input waits on its children, and
a deadlock where they cannot be lent. (On real workers: ``test_nested_calls.py``.)"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fakes import Harness

import nbscale
from nbscale._pickling import add_input
from nbscale_runtime import protocol
from nbscale_runtime.serialization import PayloadWriter
from nbscale_server.nesting import DEADLOCK_GRACE
from nbscale_server.options import FunctionOptions


def square(x):
    return x * x


@pytest.fixture
def manual() -> Iterator[Harness]:
    harness = Harness(auto=False, max_workers_total=4)
    yield harness
    harness.close()


def submit_child(h: Harness, pool: str, call_id: str, parent: tuple[str, int], n: int) -> str:
    """A call made by the input ``parent`` (as code on a worker makes it)."""
    writer = PayloadWriter()
    items = [[i, *add_input(writer, i, (i,), {}), 0] for i in range(n)]
    msg = protocol.SubmitInputs(0, call_id, pool, "map", items, n, parent=list(parent))
    h.caller.request(msg, writer.frames())
    return call_id


def calls(h: Harness) -> dict[str, dict]:
    return {c["id"]: dict(c) for c in h.plane.api.list_calls()}


def test_a_nested_call_records_its_parent_and_is_cancelled_with_it(manual):
    h = manual
    pool = h.caller.register(square, FunctionOptions(max_containers=2))
    parent = h.caller.submit(pool, [1], kind="spawn")
    child = submit_child(h, pool, "fc-child", (parent, 0), 3)
    grandchild = submit_child(h, pool, "fc-grandchild", (child, 1), 1)
    listed = calls(h)
    assert listed[child]["parent"] == {"call_id": parent, "index": 0}
    assert listed[parent]["children"] == [child]
    assert listed[child]["children"] == [grandchild]
    assert listed[parent]["parent"] is None
    h.plane.api.cancel_call(parent)
    listed = calls(h)
    assert listed[child]["cancelled"] and listed[grandchild]["cancelled"]
    assert h.pool(pool)["backlog"] == 0


def test_a_lent_worker_gives_back_what_it_held_and_counts_out_of_max_containers(manual):
    h = manual
    pool = h.caller.register(square, FunctionOptions(max_containers=1))
    call = h.caller.submit(pool, range(3))
    [first] = h.workers(pool)
    first.register()
    first.ask(3)
    assert len(first.held) >= 2  # running one, holding the next
    running = first.held[0]
    first.send(protocol.LendSlot(first.worker_id, [list(running[:3])]))
    assert first.held == [running]  # the rest went back to the queue
    h.tick()
    assert len(h.workers(pool)) == 2  # another runs in its place: max_containers=1 still
    second = h.workers(pool)[1]
    second.register()
    second.ask(1)
    assert len(second.held) == 1
    first.ask(1)
    assert first.held == [running]  # lent: it is sent nothing
    first.send(protocol.Rejoin(first.worker_id))
    first.finish()
    second.finish()
    h.tick(61.0, steps=2)  # past the scaledown window: back to one worker at most
    assert len(h.workers(pool)) <= 1
    assert sorted(h.caller.values(call)) == [0, 1]


def test_a_pool_whose_unlendable_slots_all_wait_on_itself_fails_the_waiting_calls(manual):
    h = manual
    pool = h.caller.register(square, FunctionOptions(max_containers=1, max_inputs=2))
    parent = h.caller.submit(pool, [1, 2])
    [worker] = h.workers(pool)
    worker.register()
    worker.ask(2)
    assert len(worker.held) == 2  # both slots run an input
    child = submit_child(h, pool, "fc-child", (parent, 0), 1)
    other = submit_child(h, pool, "fc-other", (parent, 1), 1)
    h.tick()
    assert child not in h.caller.outputs  # not yet: a worker that can lend does so at once
    h.tick(DEADLOCK_GRACE)
    for call_id in (child, other):
        [error] = h.caller.values(call_id).values()
        assert isinstance(error, nbscale.DeadlockError)
        assert "deadlock" in str(error) and "max_containers=1" in str(error)
    assert h.pool(pool)["backlog"] == 0


def test_no_deadlock_while_a_slot_is_free_or_a_parent_waits_on_another_pool(manual):
    h = manual
    pool = h.caller.register(square, FunctionOptions(max_containers=1, max_inputs=2))
    elsewhere = h.caller.register(square, FunctionOptions(max_containers=1), name="other")
    parent = h.caller.submit(pool, [1, 2])
    [worker] = h.workers(pool)
    worker.register()
    worker.ask(2)
    child = submit_child(h, pool, "fc-child", (parent, 0), 1)
    submit_child(h, elsewhere, "fc-elsewhere", (parent, 1), 1)
    h.tick()
    h.tick(DEADLOCK_GRACE)
    assert child not in h.caller.outputs  # still waiting: the other pool may free a slot
    assert h.pool(pool)["backlog"] == 1
