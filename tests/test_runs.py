"""Runs on real worker processes: a map's small inputs travel, queue and run as runs, and
every input still gets its own outcome: its result, its exception, what it printed, its
retries, and arguments of its own (never an object shared with another input)."""

from __future__ import annotations

import os

import nbscale

app = nbscale.App("test-runs")


@app.function(max_containers=2, min_containers=2, scaledown_window=5)
def mixed(x: int) -> int:
    if x % 97 == 5:
        print(f"failing {x}")
        raise ValueError(f"bad input {x}")
    if x % 113 == 7:
        print(f"hello from {x}")
    return x * 2


@app.function(max_containers=2, scaledown_window=5)
def appends(items: list[int]) -> int:
    items.append(1)
    return len(items)


@app.function(max_containers=1, retries=nbscale.Retries(1, initial_delay=0.0), scaledown_window=5)
def fails_once_at(path: str, x: int) -> int:
    if x == 150 and not os.path.exists(path):
        open(path, "w").close()
        raise RuntimeError("first attempt of 150")
    return x


def _rebuilt_on_workers_only(x: int) -> int:
    if "NBSCALE_WORKER_ID" not in os.environ:
        raise ImportError("this result only unpickles on a worker")
    return x


class OnlyOnWorkers:
    """A result whose pickle loads on a worker and fails in the caller."""

    def __init__(self, x: int) -> None:
        self.x = x

    def __reduce__(self) -> tuple[object, tuple[int]]:
        return (_rebuilt_on_workers_only, (self.x,))


@app.function(max_containers=1, scaledown_window=5)
def sometimes_unloadable(x: int) -> object:
    return OnlyOnWorkers(x) if x == 42 else x


def expected(x: int) -> object:
    return ValueError if x % 97 == 5 else x * 2


def test_each_input_of_a_run_has_its_own_result_exception_and_output(capsys) -> None:
    n = 2_000
    results = list(mixed.map(range(n), return_exceptions=True))
    assert len(results) == n
    for x, got in enumerate(results):
        if x % 97 == 5:
            assert isinstance(got, ValueError) and str(got) == f"bad input {x}"
        else:
            assert got == x * 2
    printed = capsys.readouterr().out.splitlines()
    wanted = [f"[{x}] hello from {x}" for x in range(n) if x % 113 == 7 and x % 97 != 5]
    assert [line for line in printed if "hello from" in line] == wanted
    failing = [f"[{x}] failing {x}" for x in range(n) if x % 97 == 5]
    assert [line for line in printed if "failing" in line] == failing  # each its own


def test_unordered_runs_give_every_result_once() -> None:
    results = list(mixed.map(range(1_500), order_outputs=False, return_exceptions=True))
    values = sorted(r for r in results if isinstance(r, int))
    assert values == [x * 2 for x in range(1_500) if x % 97 != 5]
    assert sum(isinstance(r, ValueError) for r in results) == len(
        [x for x in range(1_500) if x % 97 == 5]
    )


def test_an_object_passed_to_several_inputs_arrives_as_a_copy_for_each() -> None:
    shared: list[int] = []
    assert list(appends.map([shared] * 300)) == [1] * 300


def test_an_input_of_a_run_that_fails_is_retried_alone(tmp_path) -> None:
    path = str(tmp_path / "failed-once")
    assert list(fails_once_at.map([path] * 400, range(400))) == list(range(400))
    assert os.path.exists(path)


def test_a_result_of_a_run_that_cannot_be_unpickled_fails_alone() -> None:
    results = list(sometimes_unloadable.map(range(300), return_exceptions=True))
    assert [r for k, r in enumerate(results) if k != 42] == [x for x in range(300) if x != 42]
    failed = results[42]
    assert isinstance(failed, nbscale.exceptions.SerializationError)
    assert "input 42 cannot be unpickled in the caller" in str(failed)
