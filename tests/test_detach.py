"""Detaching a running map from its caller (the view's Detach button): the blocking map stops
waiting with ``CallDetachedError``, the call runs on with its results kept on the control
plane, and ``FunctionCall.from_id(...)`` gives exactly the results the caller did not get.
On real workers, through the embedded control plane and through a Jupyter server's REST API."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import pytest
from conftest import detach_running_map_when

import nbscale
from nbscale import _client
from nbscale._loop import get_loop
from nbscale_server.errors import RequestError

app = nbscale.App("test-detach")


@app.function(max_containers=2, scaledown_window=10)
def slow_square(x: int) -> int:
    time.sleep(0.05)
    return x * x


@pytest.mark.parametrize("ordered", [True, False])
def test_a_detached_map_stops_waiting_and_from_id_gives_the_rest(ordered):
    n = 40
    got: list[int] = []
    started = time.monotonic()
    thread = detach_running_map_when(lambda: time.monotonic() - started > 0.5)
    with pytest.raises(nbscale.CallDetachedError) as caught:
        for value in slow_square.map(range(n), order_outputs=ordered):
            got.append(value)
    thread.join()
    error = caught.value
    assert 0 < len(got) < n, got
    assert error.call_id.startswith("fc-")
    assert error.resume == f'nbscale.FunctionCall.from_id("{error.call_id}").iter()'
    assert error.resume in str(error) and f"detached after {len(got)} of {n} results" in str(error)
    call = nbscale.FunctionCall.from_id(error.call_id)
    rest = list(call.iter())
    assert sorted(got + rest) == [x * x for x in range(n)]  # nothing lost, nothing twice
    if ordered:
        assert got + rest == [x * x for x in range(n)]
        with pytest.raises(nbscale.InvalidError, match="went to its caller"):
            call.get(index=0, timeout=5)
        assert call.get(index=n - 1, timeout=5) == (n - 1) ** 2


@app.function(max_containers=2, scaledown_window=10)
def triple(x: int) -> int:
    return 3 * x


def triple_detached_after(results: int, inputs: Any) -> tuple[list[int], nbscale.FunctionCall]:
    """``triple.map(inputs)`` detached once ``results`` came: those, and the call."""
    got: list[int] = []
    thread = detach_running_map_when(lambda: len(got) >= results)
    with pytest.raises(nbscale.CallDetachedError) as caught:
        for value in triple.map(inputs):
            got.append(value)
    thread.join()
    return got, nbscale.FunctionCall.from_id(caught.value.call_id)


def test_from_id_gives_the_inputs_the_caller_sends_after_the_detach():
    # Detached after 300 results of 20,000, while the caller still pulls its inputs: iter()
    # follows the call's total, not the count sent when it began.
    n = 20_000
    got, call = triple_detached_after(300, iter(range(n)))
    assert got + list(call.iter()) == [3 * x for x in range(n)]


def test_a_detached_maps_failing_inputs_end_it_with_those_before(capfd):
    def inputs():
        yield from range(15_000)
        raise ValueError("input 15000 is bad")

    got, call = triple_detached_after(300, inputs())
    rest = get_loop().run(asyncio.wait_for(_collect(call), 60))  # never waits for more
    assert got + rest == [3 * x for x in range(15_000)]
    assert call.num_inputs() == 15_000
    assert (
        f"the inputs of detached map {call.object_id} failed after 15,000 "
        "(ValueError: input 15000 is bad); it ends with those"
    ) in capfd.readouterr().err


def test_a_get_past_a_detached_maps_inputs_is_refused_once_its_caller_has_sent_them():
    def slowly():
        for x in range(40):
            time.sleep(0.02)
            yield x

    _, call = triple_detached_after(3, slowly())
    # Asked while the kernel still sends inputs (total unknown): refused once it is known.
    with pytest.raises(nbscale.InvalidError, match="has 40 inputs: there is no input 40"):
        call.get(index=40, timeout=60)
    assert call.get(index=39, timeout=60) == 117


async def _collect(call: nbscale.FunctionCall) -> list[Any]:
    return [value async for value in call.iter_on_loop()]


def test_only_a_running_map_detaches(fresh_plane):
    spawned = slow_square.spawn(3)
    assert spawned.get(timeout=30) == 9
    plane = _client._client.control_plane if _client._client is not None else None
    assert plane is not None

    async def detach(call_id: str) -> Any:
        return plane.api.detach_call(call_id)

    with pytest.raises(RequestError, match="is a spawn call: only maps detach"):
        get_loop().run(detach(spawned.object_id))
    with pytest.raises(RequestError, match="no function call fc-nothing"):
        get_loop().run(detach("fc-nothing"))


# --- through a Jupyter server ---------------------------------------------------------------


async def test_the_rest_api_detaches_a_kernels_map(nbscale_ext, jp_fetch):
    n = 60
    got: list[int] = []
    outcome: dict[str, Any] = {}

    def consume() -> None:
        try:
            for value in slow_square.map(range(n)):
                got.append(value)
        except nbscale.CallDetachedError as exc:
            outcome["error"] = exc

    task = asyncio.ensure_future(asyncio.to_thread(consume))
    plane = nbscale_ext.control_plane
    for _ in range(200):
        calls = [c for c in plane.delivery.calls.values() if c.kind == "map" and c.reported]
        if calls:
            break
        await asyncio.sleep(0.05)
    [call] = calls
    response = await jp_fetch(
        "nbscale", "api", "calls", call.call_id, "detach", method="POST", body=""
    )
    model = json.loads(response.body)
    assert model["id"] == call.call_id and model["detached"] and not model["cancelled"]
    await task
    error = outcome["error"]
    assert error.call_id == call.call_id
    rest = await asyncio.to_thread(lambda: list(nbscale.FunctionCall.from_id(call.call_id).iter()))
    assert got + rest == [x * x for x in range(n)]
    listed = json.loads((await jp_fetch("nbscale", "api", "calls", call.call_id)).body)
    assert listed["detached"] and listed["finished"]
