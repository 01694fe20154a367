"""The REST and WebSocket API of the Jupyter server extension, on pytest-jupyter's server.

The control plane runs on the test's event loop (the server's); this process's nbscale
client talks to it from worker threads (``asyncio.to_thread``) while the tests await.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import time
from collections.abc import Awaitable, Callable
from typing import Any

import jsonschema
import pytest
import tornado.httpclient
import tornado.websocket

import nbscale
from nbscale_server.schema import schema

_API_SCHEMA = schema()

app = nbscale.App("test-server-api")


@app.function(max_containers=2, scaledown_window=30)
def slow(x):
    os.write(2, f"slow input {x}\n".encode())  # below the per-input capture: to the log
    time.sleep(0.4)
    return x * 10


@app.function(max_containers=2, scaledown_window=30)
def sleepy(x):
    time.sleep(20)
    return x


@app.function(max_containers=1, scaledown_window=30)
def fails_on_two(x):
    if x == 2:
        raise ValueError("two")
    return x


@app.function(scaledown_window=30)
def idle(x):
    return x


@app.function(max_containers=2, scaledown_window=30)
def brief(x):
    time.sleep(0.005)
    return x


async def _json(fetch: Any, *parts: str, **kwargs: Any) -> Any:
    response = await fetch("nbscale", "api", *parts, **kwargs)
    return json.loads(response.body)


def conforms(value: Any, model: str) -> Any:
    """``value`` as models.py declares ``model`` (its TypeScript name: "IPool"), no more, no
    less: the sidebar's types are generated from it."""
    ref = {"$defs": _API_SCHEMA["$defs"], "$ref": f"#/$defs/{model}"}
    jsonschema.validate(value, ref, cls=jsonschema.Draft202012Validator)
    return value


async def _status_of(fetch: Any, *parts: str, **kwargs: Any) -> tuple[int, dict[str, Any]]:
    with pytest.raises(tornado.httpclient.HTTPClientError) as info:
        await fetch("nbscale", "api", *parts, **kwargs)
    body = info.value.response.body if info.value.response else b"{}"
    return info.value.code, json.loads(body or b"{}")


async def eventually(check: Callable[[], Awaitable[Any]], timeout: float = 30.0) -> Any:
    """Await ``check()`` until it returns something true, and return that."""
    deadline = time.monotonic() + timeout
    while True:
        result = await check()
        if result:
            return result
        if time.monotonic() > deadline:
            pytest.fail(f"condition not met within {timeout} s")
        await asyncio.sleep(0.05)


async def _register(fn: Any) -> str:
    """Create ``fn``'s pool without running anything (its stats register it)."""
    await asyncio.to_thread(fn.get_current_stats)
    return next(p.pool_id for p in _plane().records.pools.values() if p.name == fn.name)


_current: dict[str, Any] = {}


def _plane() -> Any:
    return _current["ext"].control_plane


@pytest.fixture
def ext(nbscale_ext: Any) -> Any:
    _current["ext"] = nbscale_ext
    yield nbscale_ext
    _current.clear()


ROUTES = [
    ("GET", ("status",)),
    ("GET", ("pools",)),
    ("GET", ("pools", "pl-x")),
    ("PATCH", ("pools", "pl-x")),
    ("DELETE", ("pools", "pl-x")),
    ("GET", ("calls",)),
    ("GET", ("calls", "fc-x")),
    ("DELETE", ("calls", "fc-x")),
    ("GET", ("containers", "wk-x", "logs")),
]


async def test_every_route_refuses_requests_without_a_token(jp_fetch, jp_ws_fetch, ext):
    for method, parts in ROUTES:
        body = "{}" if method == "PATCH" else None
        code, _ = await _status_of(
            jp_fetch, *parts, method=method, body=body, headers={"Authorization": ""}
        )
        assert code in (401, 403), (method, parts)
    with pytest.raises(tornado.httpclient.HTTPClientError) as info:
        await jp_ws_fetch("nbscale", "api", "events", headers={"Authorization": ""})
    assert info.value.code in (401, 403)


async def test_until_the_server_loop_starts_it_the_api_says_it_is_not_running(jp_fetch):
    code, error = await _status_of(jp_fetch, "pools")
    assert code == 503 and "not running" in error["message"]


async def test_status_says_the_version_and_what_runs_workers_and_why(jp_fetch, ext):
    status = await _json(jp_fetch, "status")
    assert status == {
        "version": nbscale.__version__,
        "launcher": "process",
        "launcher_reason": "launcher=process",  # jp_server_config's setting
    }


async def test_unknown_ids_are_404_with_a_message(jp_fetch, ext):
    for method, parts in ROUTES[2:]:
        if len(parts) == 1:
            continue
        body = "{}" if method == "PATCH" else None
        code, error = await _status_of(jp_fetch, *parts, method=method, body=body)
        assert code == 404, (method, parts)
        assert "x" in conforms(error, "IError")["message"] and error["reason"] == "Not Found"


async def test_bad_input_is_400_never_500(jp_fetch, ext):
    pool_id = await _register(idle)
    bad_bodies = [
        "not json",
        "[1, 2]",
        json.dumps({"max_replicas": 3}),
        json.dumps({"min_containers": -1}),
        json.dumps({"min_containers": "2"}),
        json.dumps({"min_containers": 5, "max_containers": 2}),
        json.dumps({"scaledown_window": 0}),
        json.dumps({"max_containers": 10**30}),  # digits JavaScript's numbers would lose
        "[" * 100_000 + "]" * 100_000,  # nested past the JSON parser's recursion limit
    ]
    for body in bad_bodies:
        code, error = await _status_of(jp_fetch, "pools", pool_id, method="PATCH", body=body)
        assert code == 400, body
        assert error["message"], body
    spawned = await asyncio.to_thread(idle.spawn, 1)
    for params in ({"start": "-1"}, {"limit": "abc"}, {"limit": "0"}, {"limit": "100000"}):
        code, _ = await _status_of(jp_fetch, "calls", spawned.object_id, params=params)
        assert code == 400, params
    assert (await _json(jp_fetch, "pools", pool_id))["settings"]["min_containers"] == 0


async def test_non_finite_numbers_are_400_and_every_answer_is_strict_json(jp_fetch, ext):
    pool_id = await _register(idle)
    for body in ('{"scaledown_window": NaN}', '{"scaledown_window": Infinity}'):
        code, error = await _status_of(jp_fetch, "pools", pool_id, method="PATCH", body=body)
        assert code == 400 and ("NaN" in error["message"] or "Infinity" in error["message"])
    response = await jp_fetch("nbscale", "api", "pools")
    pools = json.loads(response.body, parse_constant=lambda name: pytest.fail(name))
    assert next(p for p in pools if p["id"] == pool_id)["settings"]["scaledown_window"] == 30
    for params in ({"before": "abc"}, {"limit": "0"}, {"before": "-1"}):
        code, _ = await _status_of(jp_fetch, "calls", params=params)
        assert code == 400, params


async def test_a_running_map_is_reported_by_pools_calls_and_logs(jp_fetch, ext):
    results = asyncio.ensure_future(asyncio.to_thread(lambda: list(slow.map(range(12)))))

    async def busy_pool() -> Any:
        pools = await _json(jp_fetch, "pools")
        pool = next((p for p in pools if p["function"] == "slow"), None)
        if pool and pool["backlog"] > 0 and pool["containers"]["busy"] > 0:
            return pool
        return None

    pool = conforms(await eventually(busy_pool), "IPool")
    assert pool["settings"]["max_containers"] == 2
    assert pool["num_running_inputs"] >= 1 and pool["gpus"] == []
    assert set(pool["containers"]) == {
        "waiting",
        "starting",
        "idle",
        "busy",
        "unresponsive",
        "draining",
    }

    calls = await _json(jp_fetch, "calls")
    call = conforms(next(c for c in calls if c["pool_id"] == pool["id"]), "ICall")
    assert call["kind"] == "map" and call["function"] == "slow"
    detail = conforms(await _json(jp_fetch, "calls", call["id"]), "ICallDetail")
    statuses = {i["status"] for i in detail["inputs"]}
    assert "running" in statuses
    running = next(i for i in detail["inputs"] if i["status"] == "running")
    assert running["worker_id"].startswith("wk-") and running["attempt"] == 1
    assert detail["pending"] + detail["running"] <= detail["submitted"]

    async def logged() -> Any:
        logs = await _json(jp_fetch, "containers", running["worker_id"], "logs")
        return logs if "slow input" in logs["logs"] else None

    logs = conforms(await eventually(logged), "ILogs")
    assert logs["pool_id"] == pool["id"] and logs["tail"] == 200
    # written below Python (os.write): the text as it is, with no time nor input
    [line] = [line for line in logs["lines"] if line["text"].startswith("slow input")][:1]
    assert line["time"] is None and line["index"] is None

    assert await results == [x * 10 for x in range(12)]
    # following the log from the cursor: only what came since, nothing twice
    since = await _json(
        jp_fetch, "containers", running["worker_id"], "logs", params={"after": logs["cursor"]}
    )
    conforms(since, "ILogs")
    before = {line["text"] for line in logs["lines"] if "slow input" in line["text"]}
    after = {line["text"] for line in since["lines"] if "slow input" in line["text"]}
    assert after and not before & after and since["cursor"] > logs["cursor"]
    code, error = await _status_of(
        jp_fetch, "containers", running["worker_id"], "logs", params={"after": "-1"}
    )
    assert code == 400 and "after must be in 0.." in error["message"]
    done = await _json(jp_fetch, "pools", pool["id"])
    assert done["done"] >= 12 and done["backlog"] == 0


async def test_patch_and_delete_a_pool_with_events_pushed(jp_fetch, jp_ws_fetch, ext):
    pool_id = await _register(idle)
    ws = await jp_ws_fetch("nbscale", "api", "events")
    try:
        snapshot = conforms(json.loads(await ws.read_message()), "ISnapshotMessage")
        assert snapshot["type"] == "snapshot"
        assert pool_id in [p["id"] for p in snapshot["pools"]]

        pool = await _json(
            jp_fetch,
            "pools",
            pool_id,
            method="PATCH",
            body=json.dumps({"min_containers": 1, "scaledown_window": 5}),
        )
        assert pool["settings"]["min_containers"] == 1
        assert pool["settings"]["scaledown_window"] == 5

        seen: list[str] = []

        async def started() -> bool:
            message = json.loads(await asyncio.wait_for(ws.read_message(), 10))
            assert conforms(message, "IChangesMessage")["type"] == "changes"
            seen.extend(e["type"] for e in message["events"] if e["pool_id"] == pool_id)
            return "container-started" in seen

        await eventually(started)
        assert seen[:3] == ["pool-updated", "container-starting", "container-started"]

        stopped = conforms(await _json(jp_fetch, "pools", pool_id, method="DELETE"), "IPool")
        assert stopped["stopped"] and stopped["status"] == "stopped"

        stopped_ids: list[str] = []

        async def gone() -> bool:
            message = json.loads(await asyncio.wait_for(ws.read_message(), 10))
            events = [e for e in message["events"] if e["pool_id"] == pool_id]
            seen.extend(e["type"] for e in events)
            stopped_ids.extend(
                e["container_id"] for e in events if e["type"] == "container-stopped"
            )
            return bool(stopped_ids)

        await eventually(gone)
        assert "pool-stopped" in seen and "container-stopping" in seen
        pool = await _json(jp_fetch, "pools", pool_id)
        assert pool["workers"] == [] and pool["stopped"]
        # the logs of a worker that is gone stay readable for a while
        logs = await _json(jp_fetch, "containers", stopped_ids[0], "logs")
        assert logs["container_id"] == stopped_ids[0] and logs["pool_id"] == pool_id
        # called again, a stopped pool scales up as usual
        assert await asyncio.to_thread(idle.remote, 7) == 7
        assert not (await _json(jp_fetch, "pools", pool_id))["stopped"]
    finally:
        ws.close()


async def test_events_are_coalesced_to_a_few_messages_a_second(jp_fetch, jp_ws_fetch, ext):
    ws = await jp_ws_fetch("nbscale", "api", "events")
    try:
        await ws.read_message()  # the snapshot
        started = time.monotonic()
        results = asyncio.ensure_future(asyncio.to_thread(lambda: list(brief.map(range(400)))))
        messages = []
        while not results.done() or len(messages) == 0:
            with contextlib.suppress(TimeoutError):
                messages.append(json.loads(await asyncio.wait_for(ws.read_message(), 1)))
        elapsed = time.monotonic() - started
        assert len(await results) == 400
        assert len(messages) <= 4 * elapsed + 2  # events_interval is 0.25 s
        done = [c["done"] for m in messages for c in m["calls"]]
        assert done == sorted(done) and done, "call progress is pushed"
    finally:
        ws.close()


async def _sleepy_aio() -> list[int]:
    return [x async for x in sleepy.map.aio(range(2))]


@pytest.mark.parametrize(
    "run_map",
    [lambda: list(sleepy.map(range(2))), lambda: asyncio.run(_sleepy_aio())],
    ids=["map", "map.aio"],
)
async def test_delete_a_call_cancels_the_map_waiting_in_its_caller(jp_fetch, ext, run_map):
    outcome = asyncio.ensure_future(asyncio.to_thread(run_map))

    async def running_call() -> Any:
        calls = await _json(jp_fetch, "calls")
        return next((c for c in calls if c["function"] == "sleepy"), None)

    call = await eventually(running_call)
    cancelled = await _json(jp_fetch, "calls", call["id"], method="DELETE")
    assert cancelled["cancelled"] and cancelled["finished"]
    with pytest.raises(nbscale.CallCancelledError):
        await asyncio.wait_for(outcome, 10)
    # listed a while longer, finished, so views show how it ended
    [listed] = [c for c in await _json(jp_fetch, "calls") if c["id"] == call["id"]]
    assert listed["cancelled"] and listed["finished"]


async def test_a_spawned_call_reports_each_input(jp_fetch, ext):
    call = await asyncio.to_thread(fails_on_two.spawn_map, range(4))

    async def finished() -> Any:
        detail = await _json(jp_fetch, "calls", call.object_id)
        return detail if detail["finished"] else None

    detail = conforms(await eventually(finished), "ICallDetail")
    assert detail["kind"] == "spawn" and detail["total"] == 4
    assert [i["status"] for i in detail["inputs"]] == ["done", "done", "failed", "done"]
    page = await _json(jp_fetch, "calls", call.object_id, params={"start": "1", "limit": "2"})
    assert [i["index"] for i in page["inputs"]] == [1, 2] and page["start"] == 1
    assert call.object_id in [c["id"] for c in await _json(jp_fetch, "calls")]
