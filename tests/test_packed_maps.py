"""Maps of plain values on real worker processes: their chunks travel packed (one pickled
list, ``packed_inputs.py``), are cut by the control plane where their inputs part ways (two
workers, a worker killed mid-run, a retry), and every input still gets exactly its own
result, with its own type; chunks with an input of another shape go as before."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from typing import Any

import pytest

import nbscale
from nbscale_runtime.packed_inputs import Layout

app = nbscale.App("test-packed-maps")


@app.function(max_containers=2, min_containers=2, scaledown_window=5)
def typed(*args: Any, **kwargs: Any) -> tuple[Any, ...]:
    """What it was called with, and the types: a bool must not arrive as an int."""
    return tuple((type(a).__name__, a) for a in args) + tuple(sorted(kwargs.items()))


@app.function(max_containers=2, min_containers=2, retries=0, scaledown_window=5)
def crashes_once_at(tagged: str) -> str:
    """Kills its worker at input "...#2500" the first time (its marker file then exists)."""
    path, x = tagged.rsplit("#", 1)
    if x == "2500" and not os.path.exists(path):
        open(path, "w").close()
        os.kill(os.getpid(), signal.SIGKILL)
    return x


@pytest.fixture
def packed_runs(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[int]]:
    """The count of every packed run the (embedded) control plane took in."""
    counts: list[int] = []
    read = Layout.__init__

    def spy(self: Layout, data: Any, count: int) -> None:
        read(self, data, count)
        counts.append(count)

    monkeypatch.setattr(Layout, "__init__", spy)
    yield counts


def expected(values: list[Any]) -> list[tuple[Any, ...]]:
    return [((type(v).__name__, v),) for v in values]


PLAIN: list[Any] = [True, 1, False, 0, None, 2**100, -(2**70), 2.5, "é" * 300, b"\x00" * 300, ""]


def test_a_map_of_plain_values_travels_packed_and_each_keeps_its_type(packed_runs) -> None:
    values = [PLAIN[i % len(PLAIN)] if i % 7 else i for i in range(6000)]
    assert list(typed.map(values)) == expected(values)
    assert sum(packed_runs) == len(values)


def test_chunks_with_inputs_of_another_shape_go_as_before(packed_runs) -> None:
    values = [(1,), [2], 3, 4]  # a tuple and a list: not plain values
    assert list(typed.map(values)) == expected(values)
    two = [(("int", 1), ("int", 3)), (("int", 2), ("int", 4))]
    assert list(typed.map([1, 2], [3, 4])) == two
    keyword = [(("int", 1), ("k", 5)), (("int", 2), ("k", 5))]
    assert list(typed.map([1, 2], kwargs={"k": 5})) == keyword
    assert packed_runs == []
    assert list(typed.map([5, 6])) == expected([5, 6])  # and the next map of plain values is
    assert packed_runs == [2]


@pytest.mark.parametrize("retries", [0, 1])
def test_a_packed_run_cut_by_a_worker_killed_mid_run_blames_exactly_its_input(
    tmp_path, retries, packed_runs
) -> None:
    fn = crashes_once_at.with_options(retries=nbscale.Retries(retries, initial_delay=0.0))
    n = 5000
    tagged = [f"{tmp_path / 'crashed'}#{x}" for x in range(n)]
    results = list(fn.map(tagged, return_exceptions=True))
    assert sum(packed_runs) == n  # the input that crashed was in a packed run
    if retries:
        assert results == [str(x) for x in range(n)]
    else:
        error = results[2500]
        assert isinstance(error, nbscale.WorkerLostError) and error.index == 2500
        assert results[:2500] + results[2501:] == [str(x) for x in range(n) if x != 2500]


def test_spawn_map_of_packed_runs_reads_each_input_back(packed_runs) -> None:
    values = [PLAIN[i % len(PLAIN)] if i % 5 else i for i in range(3000)]
    call = typed.spawn_map(values)
    assert list(call.iter()) == expected(values)
    assert sum(packed_runs) == len(values)
    for index in (0, 1, 255, 256, 1234, 2999):
        assert call.get(index=index, timeout=30) == expected([values[index]])[0]
