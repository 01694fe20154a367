"""`with app.run():` on real worker processes: it stops the pools its app used and cancels
what it spawned when it ends; a detached run needs a Jupyter server's control plane.
`FunctionCall.gather`, `is_local()` on a worker, and `include_source` sending a module of
yours by value."""

from __future__ import annotations

import asyncio
import sys
import threading
import time
from pathlib import Path

import pytest

import nbscale
from nbscale._pools import pools

app = nbscale.App("test-app-run")


@app.function(scaledown_window=60)
def square(x: int) -> int:
    return x * x


@app.function()
def slow(x: float) -> float:
    time.sleep(x)
    return x


@app.function()
def fails(x: int) -> int:
    raise KeyError(f"no {x}")


@app.function()
def where() -> bool:
    return nbscale.is_local()


def stopped(function: str) -> bool:
    [pool] = [p for p in pools() if p["function"] == function]
    return pool["stopped"]


def test_leaving_the_run_stops_the_pools_it_used_and_cancels_its_spawned_calls():
    other = nbscale.App("test-app-run-other")
    outside = other.function(scaledown_window=60, name="outside")(lambda x: -x)
    assert outside.remote(1) == -1
    with app.run() as running:
        assert running is app and app.running is not None
        assert square.remote(3) == 9
        call = slow.spawn(30)
    assert app.running is None
    assert stopped("square") and stopped("slow")
    assert not stopped("outside")  # another app's pool is not this run's
    with pytest.raises(nbscale.CallCancelledError):
        call.get(timeout=30)
    assert square.remote(4) == 16  # a stopped pool starts again when called


def test_a_run_scopes_the_functions_of_the_apps_it_includes():
    stage = nbscale.App("test-app-run-stage", tags={"team": "ml"})
    negate = stage.function(scaledown_window=60, name="negate")(lambda x: -x)
    parent = nbscale.App("test-app-run-parent")
    assert parent.include(stage) is parent and parent.tags == {"team": "ml"}
    assert parent.registered_functions["negate"] is negate
    with parent.run():
        assert negate.remote(2) == -2
        assert stage.running is parent.running is not None
    assert stopped("negate") and stage.running is None
    with pytest.raises(nbscale.InvalidError, match="includes"):
        stage.include(parent)


def test_with_concurrency_is_a_variant_whose_workers_take_several_inputs():
    variant = slow.with_concurrency(max_inputs=4)
    assert (variant.options.max_inputs, variant.options.variant) == (4, True)
    assert slow.options.max_inputs == 1
    assert list(variant.map([0.1] * 4)) == [0.1] * 4
    headroom = variant.get_current_stats().input_headroom  # its idle workers take four each
    assert headroom > 0 and headroom % 4 == 0


def test_an_interrupted_run_stops_its_pools_too():
    with pytest.raises(KeyError), app.run():
        square.remote(5)
        raise KeyError("the script failed")
    assert stopped("square")


async def test_async_with_app_run():
    async with app.run():
        assert await square.remote.aio(6) == 36
    assert await asyncio.to_thread(stopped, "square")


def test_a_detached_run_needs_the_servers_control_plane():
    needs_server = pytest.raises(nbscale.InvalidError, match="needs the Jupyter server's")
    with needs_server, app.run(detach=True):
        pass
    assert app.running is None
    with app.run(), pytest.raises(nbscale.InvalidError, match="running already"), app.run():
        pass


def test_gather_returns_the_results_in_order():
    calls = [square.spawn(i) for i in range(6)]
    assert nbscale.FunctionCall.gather(*calls) == [i * i for i in range(6)]
    assert asyncio.run(nbscale.FunctionCall.gather.aio(*calls[:2])) == [0, 1]
    assert nbscale.FunctionCall.gather() == []


def test_gather_raises_the_first_failure():
    calls = [square.spawn(2), fails.spawn(7)]
    with pytest.raises(KeyError, match="no 7"):
        nbscale.FunctionCall.gather(*calls)


def test_spawns_in_flight_together_are_calls_of_their_own_and_fail_alone():
    async def spawn_all() -> list[object]:
        spawns = [square.spawn.aio(i) for i in range(300)]
        spawns.insert(7, square.spawn.aio(threading.Lock()))  # cannot be pickled
        return await asyncio.gather(*spawns, return_exceptions=True)

    calls = asyncio.run(spawn_all())
    bad = calls.pop(7)
    assert isinstance(bad, nbscale.SerializationError), bad
    assert len({c.object_id for c in calls}) == 300  # type: ignore[union-attr]
    assert nbscale.FunctionCall.gather(*calls) == [i * i for i in range(300)]  # type: ignore[arg-type]


def test_more_spawns_in_flight_than_a_batch_holds_each_get_their_own_call():
    async def spawn_all() -> list[nbscale.FunctionCall]:
        return await asyncio.gather(*[square.spawn.aio(i) for i in range(1100)])

    calls = asyncio.run(spawn_all())  # three batches of at most 512 cross together
    assert len({c.object_id for c in calls}) == 1100
    assert nbscale.FunctionCall.gather(*calls) == [i * i for i in range(1100)]


def test_a_spawn_cancelled_while_gathered_leaves_the_others_alone():
    async def main() -> list[object]:
        tasks = [asyncio.ensure_future(square.spawn.aio(i)) for i in range(3)]
        await asyncio.sleep(0)  # each has joined its loop turn's batch, not sent yet
        tasks[1].cancel()
        return await asyncio.gather(*tasks, return_exceptions=True)

    first, cancelled, last = asyncio.run(main())
    assert isinstance(cancelled, asyncio.CancelledError)
    assert nbscale.FunctionCall.gather(first, last) == [0, 4]  # type: ignore[arg-type]


def test_gather_over_many_calls_mixes_stored_results_and_waits():
    done = [square.spawn(i) for i in range(1500)]  # more than one request's worth
    done[-1].get(timeout=60)
    later = slow.spawn(0.5)
    calls = [*done[:700], later, *done[700:]]
    assert nbscale.FunctionCall.gather(*calls) == [i * i for i in range(700)] + [0.5] + [
        i * i for i in range(700, 1500)
    ]


def test_is_local_is_false_on_a_worker():
    assert nbscale.is_local()
    assert where.remote() is False


MODULE = """
def triple(x):
    return 3 * x
"""


@pytest.mark.parametrize("include_source", [True, False])
def test_include_source_sends_a_module_of_yours_by_value(
    include_source: bool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    name = f"mine_{include_source}".lower()
    (tmp_path / f"{name}.py").write_text(MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    module = __import__(name)
    ported = nbscale.App("ported", include_source=include_source)
    triple = ported.function(module.triple)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p != str(tmp_path)])
    # workers get this process's sys.path: the module can only travel with the function
    if include_source:
        assert triple.remote(5) == 15
    else:
        with pytest.raises(Exception, match=f"No module named '{name}'"):
            triple.remote(5)
    sys.modules.pop(name)
