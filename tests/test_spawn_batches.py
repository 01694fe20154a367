"""Spawns by the batch (``spawn-calls``) and results read by the batch (``get-first-outputs``),
against the real control plane with fake workers and a fake clock."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from fakes import Harness, RequestRefused

from nbscale._pickling import add_input
from nbscale_runtime import protocol
from nbscale_runtime.serialization import PayloadWriter
from nbscale_server.limits import Limits
from nbscale_server.options import FunctionOptions


def square(x: int) -> int:
    return x * x


@pytest.fixture
def h() -> Iterator[Harness]:
    harness = Harness(max_workers_total=4, limits=Limits(max_pending_spawn_inputs=3))
    yield harness
    harness.close()


def spawn_rows(ids_and_args: list[tuple[str, int]]) -> tuple[list[list[Any]], list[Any]]:
    writer = PayloadWriter()
    rows = [[call_id, *add_input(writer, 0, (x,), {})] for call_id, x in ids_and_args]
    return rows, writer.frames()


def test_a_batch_of_spawns_is_answered_once_each_a_call_of_its_own(h: Harness) -> None:
    pool = h.caller.register(square, FunctionOptions(max_containers=1))
    rows, frames = spawn_rows([("fc-a", 2), ("fc-b", 3)])
    value = h.caller.request(protocol.SpawnCalls(0, pool, rows), frames)
    assert value == {"refused": []}
    for _ in range(4):  # the worker starts, asks, runs what it got
        h.tick()
        for worker in h.workers(pool):
            worker.finish(want=1)
    got = h.caller.request(protocol.GetFirstOutputs(0, ["fc-a", "fc-b", "fc-nope"]))
    assert got["calls"][:2] == [[1, "square", 300.0, False], [1, "square", 300.0, False]]
    assert got["calls"][2][0] == "NotFoundError"
    for call_id, want in (("fc-a", 4), ("fc-b", 9)):
        call = h.plane.delivery.call(call_id)
        assert (call.kind, call.total, call.finished) == ("spawn", 1, True)
        outputs = h.caller.request(protocol.GetOutputs(0, call_id, 0, 1, 0))
        assert len(outputs["items"]) == 1 and outputs["done"] == 1, want


def test_rows_over_the_spawn_limit_or_of_a_known_call_are_refused_alone(h: Harness) -> None:
    pool = h.caller.register(square, FunctionOptions(max_containers=1))
    h.caller.submit(pool, [1], kind="spawn", call_id="fc-old")
    rows, frames = spawn_rows([("fc-old", 0), ("fc-1", 1), ("fc-2", 2), ("fc-3", 3)])
    value = h.caller.request(protocol.SpawnCalls(0, pool, rows), frames)
    refused = {row: kind for row, kind, _, _ in value["refused"]}
    assert refused == {0: "InvalidError", 3: "ResourceExhaustedError"}
    assert [h.plane.delivery.call(c).submitted for c in ("fc-1", "fc-2")] == [1, 1]
    assert "fc-3" not in h.plane.delivery.calls
    assert h.pool(pool)["backlog"] == 3  # fc-old's input and two of the batch


def test_a_pending_spawn_reads_as_not_settled_yet() -> None:
    h = Harness(auto=False)
    try:
        pool = h.caller.register(square, FunctionOptions(max_containers=1))
        rows, frames = spawn_rows([("fc-x", 5)])
        h.caller.request(protocol.SpawnCalls(0, pool, rows), frames)
        assert h.caller.request(protocol.GetFirstOutputs(0, ["fc-x"]))["calls"] == [None]
    finally:
        h.close()


@pytest.mark.parametrize("rows", [[["fc-a", 0, 1]], [[7, 0, 1, 0]], [["fc-a", -1, 1, 0]], "x"])
def test_malformed_spawn_rows_are_refused(h: Harness, rows: Any) -> None:
    pool = h.caller.register(square, FunctionOptions(max_containers=1))
    with pytest.raises(RequestRefused, match="spawn-calls rows"):
        h.caller.request(protocol.SpawnCalls(0, pool, rows), [b""])


def test_a_batch_the_store_could_not_keep_is_refused_and_cancelled_rows_refused_before_alone(
    h: Harness,
) -> None:
    pool = h.caller.register(square, FunctionOptions(max_containers=1))
    h.caller.submit(pool, [1], kind="spawn", call_id="fc-old")
    store = h.plane.delivery.store
    batches: list[list[str]] = []

    def disk_full(pool: Any, calls: Any, then: Any) -> None:
        batches.append([call.call_id for call, _ in calls])
        then("database or disk is full: /data/nbscale.db")

    store.spawned = disk_full  # type: ignore[method-assign]
    rows, frames = spawn_rows([("fc-a", 1), ("fc-old", 0), ("fc-b", 2)])
    value = h.caller.request(protocol.SpawnCalls(0, pool, rows), frames)
    assert batches == [["fc-a", "fc-b"]]  # one write for the batch, the bad row not in it
    refused = [(row, kind) for row, kind, _, _ in value["refused"]]
    assert refused == [(0, "ControlPlaneError"), (1, "InvalidError"), (2, "ControlPlaneError")]
    message = value["refused"][2][2]
    assert "/data/nbscale.db" in message and "fc-b was cancelled" in message
    assert h.plane.delivery.call("fc-a").cancelled and h.plane.delivery.call("fc-b").cancelled
    assert not h.plane.delivery.call("fc-old").cancelled
    assert h.pool(pool)["backlog"] + h.pool(pool)["num_running_inputs"] == 1  # fc-old's alone
