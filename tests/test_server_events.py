"""The events feed: changes coalesced per interval, nothing sent when nothing moved."""

from __future__ import annotations

import asyncio
import json
import shutil
import time
from collections.abc import Iterator

import pytest
from fakes import FakeLauncher

from nbscale_server.calls import CallState
from nbscale_server.control_plane import ControlPlane
from nbscale_server.events import EventHub
from nbscale_server.options import FunctionOptions
from nbscale_server.pool import Pool

VERSIONS = {"python": "3.11.0", "cloudpickle": "3.0.0"}


class RecordingSink:
    def __init__(self) -> None:
        self.messages: list[dict] = []
        self.closed = False

    def send_text(self, text: str) -> None:
        self.messages.append(json.loads(text))

    def close(self) -> None:
        self.closed = True


@pytest.fixture
def plane() -> Iterator[ControlPlane]:
    """A control plane that is never started: its records, without sockets or workers (a
    fake launcher, closed after: the default one would start processes for nothing)."""
    cp = ControlPlane(launcher=FakeLauncher())
    pool = Pool.create("fn-1", "f", b"", FunctionOptions(), [], VERSIONS, None)
    cp.records.pools[pool.pool_id] = pool
    cp.delivery.calls["fc-1"] = CallState("fc-1", pool.pool_id, "map", b"owner", submitted=10)
    yield cp
    cp.launcher.close()
    shutil.rmtree(cp.dir, ignore_errors=True)
    cp.ctx.term()


async def test_changes_hold_only_what_moved(plane):
    hub = EventHub(plane.api, interval=60)
    sink = RecordingSink()
    hub.add(sink)
    [snapshot] = sink.messages
    assert snapshot["type"] == "snapshot"
    assert [c["id"] for c in snapshot["calls"]] == ["fc-1"]
    assert hub.changes() is None

    pool = next(iter(plane.records.pools.values()))
    plane.delivery.calls["fc-1"].reported = 4
    pool.done = 4
    changes = hub.changes()
    assert [c["done"] for c in changes["calls"]] == [4]
    assert [p["done"] for p in changes["pools"]] == [4]
    assert hub.changes() is None

    del plane.delivery.calls["fc-1"]
    plane.outbox.emit("pool-stopped", pool.pool_id)
    changes = hub.changes()
    assert changes["calls_removed"] == ["fc-1"]
    assert changes["events"] == [{"type": "pool-stopped", "pool_id": pool.pool_id}]

    hub.close()
    assert sink.closed and plane.outbox.subscribers == 0


async def test_a_burst_of_changes_is_one_message_per_interval(plane):
    hub = EventHub(plane.api, interval=0.05)
    sink = RecordingSink()
    hub.add(sink)
    call = plane.delivery.calls["fc-1"]
    started = time.monotonic()
    while time.monotonic() - started < 0.5:
        call.reported += 1
        await asyncio.sleep(0.001)
    hub.remove(sink)
    changes = sink.messages[1:]
    assert 3 <= len(changes) <= 0.5 / 0.05 + 1
    done = [m["calls"][0]["done"] for m in changes]
    assert done == sorted(done) and done[-1] <= call.reported


async def test_events_beyond_the_cap_are_counted_not_sent(plane):
    hub = EventHub(plane.api, interval=60, max_events=3)
    hub.add(RecordingSink())
    for _ in range(5):
        plane.outbox.emit("container-starting", "pl-x", container_id="wk-x")
    changes = hub.changes()
    assert len(changes["events"]) == 3 and changes["events_dropped"] == 2
    hub.close()


async def test_a_hundred_thousand_calls_are_not_one_message(plane):
    """The first message lists the newest calls only; older ones are paged through REST."""
    pool_id = next(iter(plane.records.pools))
    calls = plane.delivery.calls
    for i in range(2, 100_002):
        calls[f"fc-{i}"] = CallState(f"fc-{i}", pool_id, "spawn", b"owner", seq=i)
    hub = EventHub(plane.api, interval=60)
    sink = RecordingSink()
    hub.add(sink)
    [snapshot] = sink.messages
    assert len(json.dumps(snapshot)) < 500_000
    assert snapshot["calls_more"] is True
    assert [c["id"] for c in snapshot["calls"][:2]] == ["fc-100001", "fc-100000"]
    assert len(snapshot["calls"]) == 500
    page = plane.api.list_calls(500, snapshot["calls"][-1]["seq"])
    assert page[0]["id"] == "fc-99501" and len(page) == 500
    calls["fc-100001"].reported = 1
    changes = hub.changes()
    assert [c["id"] for c in changes["calls"]] == ["fc-100001"]
    hub.close()


async def test_warm_spares_are_in_the_snapshot_and_sent_again_when_they_change(plane):
    spares = ["nbscale-wk-1"]
    plane.launcher.spares = lambda: list(spares)  # as Docker's, with docker_spares
    hub = EventHub(plane.api, interval=60)
    sink = RecordingSink()
    hub.add(sink)
    assert sink.messages[0]["spares"] == ["nbscale-wk-1"]
    assert hub.changes() is None  # nothing moved
    spares[:] = []  # a worker took it
    message = hub.changes()
    assert message is not None and message["spares"] == [] and message["pools"] == []
    spares[:] = ["nbscale-wk-2"]
    hub.add(RecordingSink())  # a second listener's snapshot leaves the first's changes due
    assert hub.changes()["spares"] == ["nbscale-wk-2"]
    assert hub.changes() is None
