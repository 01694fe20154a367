"""``@app.cls`` end to end on real worker processes: ``@enter`` once per container,
``@exit`` when it stops, a pool per parameter set, methods called every way, a failing or
slow ``@enter``; and the context ids an input sees."""

from __future__ import annotations

import asyncio
import os
import time
import traceback
from pathlib import Path

import pytest
from conftest import wait_until

import nbscale

app = nbscale.App("test-classes")


def _lines(path: Path) -> list[str]:
    return path.read_text().split() if path.exists() else []


@app.cls(max_containers=3, scaledown_window=2)
class Model:
    """Its @enter "loads a model" and logs each load; @exit logs each stop."""

    log_dir: str = nbscale.parameter()
    size: str = nbscale.parameter(default="small")

    @nbscale.enter()
    def load(self):
        self.loads = getattr(self, "loads", 0) + 1
        self.weights = {"small": 2, "large": 10}[self.size]
        with open(os.path.join(self.log_dir, "enter.log"), "a") as f:
            f.write(f"{os.getpid()}\n")

    @nbscale.method()
    def predict(self, x):
        time.sleep(0.005)  # long enough that a map spreads over several workers
        return x * self.weights, os.getpid(), self.loads

    @nbscale.method()
    def describe(self):
        return self.size, os.getpid()

    @nbscale.exit()
    def unload(self):
        with open(os.path.join(self.log_dir, "exit.log"), "a") as f:
            f.write(f"{os.getpid()}\n")


def test_enter_runs_exactly_once_per_container_across_200_inputs(tmp_path: Path) -> None:
    results = list(Model(log_dir=str(tmp_path)).predict.map(range(200)))
    assert [value for value, _, _ in results] == [2 * x for x in range(200)]
    pids = {pid for _, pid, _ in results}
    assert os.getpid() not in pids
    assert {loads for _, _, loads in results} == {1}  # no container loaded twice
    entered = _lines(tmp_path / "enter.log")
    assert sorted(entered) == sorted(str(p) for p in set(entered))  # once per container
    assert {str(p) for p in pids} <= set(entered)


def test_exit_runs_when_the_pool_scales_down(tmp_path: Path) -> None:
    model = Model(log_dir=str(tmp_path))
    pids = {pid for _, pid, _ in model.predict.map(range(50))}
    # scaledown_window=2: the idle workers are stopped, each running its @exit first
    wait_until(lambda: {str(p) for p in pids} <= set(_lines(tmp_path / "exit.log")), timeout=30)
    assert sorted(_lines(tmp_path / "exit.log")) == sorted(_lines(tmp_path / "enter.log"))


def test_each_parameter_set_gets_a_pool_of_its_own(tmp_path: Path) -> None:
    small = Model(log_dir=str(tmp_path), size="small")
    large = Model(log_dir=str(tmp_path), size="large")
    small_results = list(small.predict.map(range(20)))
    large_results = list(large.predict.map(range(20)))
    assert [v for v, _, _ in small_results] == [2 * x for x in range(20)]
    assert [v for v, _, _ in large_results] == [10 * x for x in range(20)]
    assert not {p for _, p, _ in small_results} & {p for _, p, _ in large_results}
    assert small.predict.get_current_stats().num_total_runners >= 1
    assert Model(log_dir=str(tmp_path), size="small") is small  # the same set: the same object


def test_the_methods_of_one_parameter_set_share_its_workers(tmp_path: Path) -> None:
    model = Model.with_options(max_containers=1)(log_dir=str(tmp_path))
    _, pid, _ = model.predict.remote(1)
    assert model.describe.remote() == ("small", pid)
    assert _lines(tmp_path / "enter.log") == [str(pid)]


def test_methods_are_called_every_way(tmp_path: Path) -> None:
    model = Model(log_dir=str(tmp_path))
    assert model.predict.remote(3)[0] == 6
    assert model.predict.spawn(4).get(timeout=30)[0] == 8
    assert [r[0] for r in model.predict.starmap([(1,), (2,)])] == [2, 4]

    async def both() -> tuple[object, list[object]]:
        one = await model.predict.remote.aio(5)
        many = [r async for r in model.predict.map.aio([6, 7])]
        return one, many

    one, many = asyncio.run(both())
    assert one[0] == 10  # type: ignore[index]
    assert [r[0] for r in many] == [12, 14]  # type: ignore[index]


def test_local_runs_enter_here_once(tmp_path: Path) -> None:
    model = Model(log_dir=str(tmp_path), size="large")
    assert model.predict.local(2) == (20, os.getpid(), 1)
    assert model.predict.local(3) == (30, os.getpid(), 1)
    assert _lines(tmp_path / "enter.log") == [str(os.getpid())]


@app.cls(scaledown_window=2)
class Broken:
    log_dir: str = nbscale.parameter()

    @nbscale.enter()
    def load_weights(self):
        with open(os.path.join(self.log_dir, "enter.log"), "a") as f:
            f.write(f"{os.getpid()}\n")
        raise FileNotFoundError("weights.bin is missing")

    @nbscale.method()
    def predict(self, x):
        return x


def test_an_enter_that_raises_fails_the_inputs_with_its_traceback(tmp_path: Path) -> None:
    broken = Broken(log_dir=str(tmp_path))
    with pytest.raises(FileNotFoundError, match=r"weights\.bin is missing") as info:
        broken.predict.remote(1)
    text = "".join(traceback.format_exception(info.value))
    assert "load_weights" in text  # the @enter's own frame
    assert any("@enter" in note for note in info.value.__notes__)
    # no silent crash loop: 3 starts tried, then the pool is broken with that error
    assert len(_lines(tmp_path / "enter.log")) == 3
    results = list(broken.predict.map(range(3), return_exceptions=True))
    assert all(isinstance(r, FileNotFoundError) for r in results)
    assert len(_lines(tmp_path / "enter.log")) == 3


@app.cls(startup_timeout=1, scaledown_window=2)
class SlowToStart:
    @nbscale.enter()
    def load(self):
        time.sleep(60)

    @nbscale.method()
    def predict(self, x):
        return x


def test_an_enter_that_outlives_startup_timeout_fails_within_it() -> None:
    start = time.monotonic()
    with pytest.raises(TimeoutError, match="startup_timeout of 1 s"):
        SlowToStart().predict.remote(1)
    assert time.monotonic() - start < 30  # 3 starts of about 1 s, not 3 minutes


@app.cls(max_containers=1, scaledown_window=2)
class AsyncModel:
    @nbscale.enter()
    async def load(self):
        await asyncio.sleep(0.01)
        self.ready = asyncio.Event()
        self.ready.set()
        self.table = {"a": 1}

    @nbscale.method()
    async def lookup(self, key):
        await self.ready.wait()  # an object of the loop @enter ran on
        return self.table[key]


def test_async_enter_and_methods() -> None:
    assert AsyncModel().lookup.remote("a") == 1
    assert list(AsyncModel().lookup.map(["a", "a"])) == [1, 1]


def test_parameters_are_checked_at_the_call(tmp_path: Path) -> None:
    with pytest.raises(nbscale.InvalidError, match="needs its parameter 'log_dir'"):
        Model()
    with pytest.raises(nbscale.InvalidError, match="no parameter colour"):
        Model(log_dir="x", colour="red")
    with pytest.raises(nbscale.InvalidError, match="'size' must be a str"):
        Model(log_dir="x", size=3)
    with pytest.raises(AttributeError, match="no remote method 'load'"):
        Model(log_dir="x").load  # noqa: B018
    with pytest.raises(nbscale.InvalidError, match="no method to call remotely"):

        @app.cls
        class Nothing:
            def helper(self):
                return 1


@app.function(max_containers=2, scaledown_window=2)
def whereami(_: int) -> tuple[str | None, str | None, bool]:
    return nbscale.current_input_id(), nbscale.current_function_call_id(), nbscale.is_local()


def test_context_ids_inside_and_outside_a_worker() -> None:
    assert nbscale.current_input_id() is None
    assert nbscale.current_function_call_id() is None
    assert nbscale.is_local()
    results = list(whereami.map(range(5)))
    input_ids = [r[0] for r in results]
    assert len(set(input_ids)) == 5 and all(i and i.startswith("in-") for i in input_ids)
    assert len({r[1] for r in results}) == 1 and not any(r[2] for r in results)
    call = whereami.spawn(0)
    assert call.get(timeout=30)[1] == call.object_id
