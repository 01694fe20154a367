"""Every call style, end to end, on real worker subprocesses."""

from __future__ import annotations

import asyncio
import os
import time

import pytest
from conftest import fresh_python_stdout, wait_until

import nbscale

app = nbscale.App("test-calls")


@app.function(max_containers=2, scaledown_window=5)
def square(x):
    return x * x


@app.function(max_containers=2, scaledown_window=5)
def add(a, b, scale=1):
    return (a + b) * scale


@app.function(max_containers=2, min_containers=2, scaledown_window=5)
def slow_then_fast(x):
    time.sleep(0.3 if x == 0 else 0.0)
    return x


@app.function(max_containers=2, scaledown_window=5)
def pid(_=None):
    return os.getpid()


@app.function(max_containers=1, scaledown_window=5)
def shout(x):
    print(f"hello {x}")
    return x


def test_map_returns_results_in_input_order():
    assert list(square.map(range(100))) == [x * x for x in range(100)]


def test_map_runs_on_other_processes():
    pids = set(pid.map(range(20)))
    assert os.getpid() not in pids


def test_remote_returns_the_value():
    assert square.remote(3) == 9
    assert add.remote(1, 2, scale=10) == 30


def test_local_runs_here():
    assert pid.local() == os.getpid()
    assert pid.get_raw_f()() == os.getpid()  # Modal's name for the undecorated function


def test_map_with_several_iterables_and_kwargs():
    assert list(add.map([1, 2, 3], [10, 20, 30], kwargs={"scale": 2})) == [22, 44, 66]


def test_starmap_unpacks_tuples():
    assert list(add.starmap([(1, 2), (3, 4)])) == [3, 7]


def test_unordered_map_yields_in_completion_order():
    assert slow_then_fast.remote(1) == 1
    wait_until(lambda: slow_then_fast.get_current_stats().containers["idle"] == 2)
    results = list(slow_then_fast.map(range(6), order_outputs=False))
    assert sorted(results) == list(range(6))
    # the slow input finishes after the fast ones run by the other worker
    assert results.index(0) > results.index(5)


def test_empty_map_returns_nothing_quickly():
    start = time.monotonic()
    assert list(square.map([])) == []
    assert time.monotonic() - start < 5


def test_for_each_runs_every_input(tmp_path):
    @app.function(max_containers=2, scaledown_window=5)
    def touch(name):
        (tmp_path / str(name)).write_text("x")

    assert touch.for_each(range(5)) is None
    assert sorted(p.name for p in tmp_path.iterdir()) == ["0", "1", "2", "3", "4"]


def test_spawn_returns_a_handle_to_get_the_result_later():
    call = square.spawn(7)
    assert isinstance(call, nbscale.FunctionCall)
    assert call.object_id.startswith("fc-")
    assert call.get(timeout=30) == 49
    assert call.num_inputs() == 1


def test_spawn_map_returns_a_handle_with_indexed_results():
    call = square.spawn_map(range(10))
    assert call.num_inputs() == 10
    assert call.get(timeout=30, index=4) == 16
    assert list(call.iter()) == [x * x for x in range(10)]
    assert list(call.iter(start=8)) == [64, 81]


def test_a_bad_index_or_one_past_the_calls_inputs_is_refused_at_once():
    call = square.spawn_map(range(10))
    assert call.get(timeout=30, index=9) == 81
    for bad in (-1, "x", 1.5, True):
        with pytest.raises(nbscale.InvalidError, match="must be an int >= 0"):
            call.get(timeout=30, index=bad)
        with pytest.raises(nbscale.InvalidError, match="must be an int >= 0"):
            list(call.iter(start=bad))
    with pytest.raises(nbscale.InvalidError, match="end must be >= start"):
        list(call.iter(start=3, end=2))
    no_input = f"{call.object_id} has 10 inputs: there is no input 10"
    with pytest.raises(nbscale.InvalidError, match=no_input):
        call.get(index=10)  # it raised TimeoutError("input 10 not done in None s")
    assert list(call.iter(start=8, end=200)) == [64, 81]  # a range is cut at the end, as a slice


def test_the_control_plane_refuses_a_get_outputs_of_a_bad_range():
    from nbscale._client import get_client
    from nbscale._loop import get_loop
    from nbscale_runtime import protocol

    call = square.spawn_map(range(3))
    assert call.get(timeout=30, index=2) == 4

    async def ask(start: object, end: object) -> None:
        client = await get_client()
        await client.request(protocol.GetOutputs(0, call.object_id, start, end, 0))

    for start, end in ((-1, 0), ("x", None), (2, 1), (0, -5), (True, 1)):
        with pytest.raises(nbscale.InvalidError, match="asked for by index"):
            get_loop().run(ask(start, end))


def test_function_call_from_id_finds_the_call():
    call = square.spawn(5)
    again = nbscale.FunctionCall.from_id(call.object_id)
    assert again.get(timeout=30) == 25


def test_get_with_short_timeout_raises_timeout_error():
    @app.function(max_containers=1, scaledown_window=5)
    def sleepy(x):
        time.sleep(5)
        return x

    call = sleepy.spawn(1)
    try:
        start = time.monotonic()
        try:
            call.get(timeout=0.2)
        except TimeoutError:
            pass
        else:
            raise AssertionError("expected TimeoutError")
        assert time.monotonic() - start < 3
    finally:
        call.cancel()


def test_stdout_of_each_input_is_printed_with_its_index(capsys):
    list(shout.map(range(3)))
    out = capsys.readouterr().out
    for i in range(3):
        assert f"[{i}] hello {i}" in out


def test_with_options_gets_its_own_pool():
    variant = square.with_options(max_containers=1)
    assert variant.remote(4) == 16
    assert variant.get_current_stats().num_total_runners <= 1
    assert square.get_current_stats().num_total_runners >= 0
    assert variant._pools != square._pools


def test_stats_print_as_the_pools_figures_with_its_workers_apart():
    """A notebook printing its stats sees the pool's figures, not a dict per worker."""
    assert square.remote(3) == 9
    stats = square.get_current_stats()
    assert stats.workers and all(w["id"] not in repr(stats) for w in stats.workers)
    # (a worker draining from an earlier test is listed, not counted among the runners)
    figures = f"backlog={stats.backlog}, num_total_runners={stats.num_total_runners}"
    assert repr(stats).startswith(f"FunctionStats({figures}, ")
    assert "containers={" in repr(stats) and "workers" not in repr(stats)


def test_aio_twins_of_every_call():
    async def main():
        assert await square.remote.aio(6) == 36
        assert [x async for x in square.map.aio(range(4))] == [0, 1, 4, 9]
        assert await square.map.aio([2, 3]) == [4, 9]
        assert await add.starmap.aio([(1, 1)]) == [2]
        assert await square.for_each.aio(range(3)) is None
        call = await square.spawn.aio(8)
        assert await call.get.aio(timeout=30) == 64
        many = await square.spawn_map.aio(range(3))
        assert await many.num_inputs.aio() == 3
        found = await nbscale.FunctionCall.from_id.aio(many.object_id)
        assert await found.get.aio(timeout=30, index=2) == 4
        assert [x async for x in found.iter.aio(start=1)] == [1, 4]
        stats = await square.get_current_stats.aio()
        assert stats.backlog == 0
        settings = await square.update_autoscaler.aio(scaledown_window=5)
        assert settings["scaledown_window"] == 5

    asyncio.run(main())


def test_bare_decorator_works():
    @app.function
    def plain(x):
        return x + 1

    assert plain.remote(1) == 2


def test_works_from_python_dash_c():
    code = (
        "import nbscale\n"
        "app = nbscale.App('c')\n"
        "f = app.function(max_containers=2)(lambda x: x * 3)\n"
        "print(list(f.map(range(4))), f.remote(5))\n"
    )
    assert fresh_python_stdout(code).strip() == "[0, 3, 6, 9] 15"


def test_globals_changed_between_calls_reach_the_workers():
    """As when a notebook cell changes what a function uses: a rebound number (its pickle is
    reused until then) and a dict changed in place (pickled again on every call)."""
    code = (
        "import nbscale\n"
        "app = nbscale.App('g')\n"
        "FACTOR, TABLE = 3, {'bias': 1}\n"
        "@app.function\n"
        "def offset(x):\n"
        "    return x + FACTOR\n"
        "@app.function\n"
        "def scale(x):\n"
        "    return x * FACTOR * TABLE['bias']\n"
        "before = offset.remote(1), offset.remote(1), scale.remote(2)\n"
        "FACTOR = 5\n"
        "TABLE['bias'] = 10\n"
        "print(*before, offset.remote(1), scale.remote(2))\n"
    )
    assert fresh_python_stdout(code).split() == ["4", "4", "6", "6", "100"]
