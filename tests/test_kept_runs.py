"""Outputs the control plane keeps (spawn_map, a detached map) that came back as runs: each
input's result is read back on its own through ``FunctionCall``, on real workers through the
embedded control plane. The control plane cuts a run by its values' sizes, or a packed run
of scalars by its opcodes, and never unpickles them (``outputs.apart``,
``InputRecord.apart``)."""

from __future__ import annotations

import time
from typing import Any

import pytest
from conftest import detach_running_map_when

import nbscale
from nbscale_runtime.packed import is_packed
from nbscale_runtime.protocol import OUT_COUNT, OUT_SIZES
from nbscale_server.spawned import SpawnedCalls

app = nbscale.App("test-kept-runs")


@app.function(max_containers=2, scaledown_window=10)
def triple(x: int) -> int:
    return 3 * x


@app.function(max_containers=2, scaledown_window=10)
def triple_boxed(x: int) -> list[int]:
    return [3 * x]


# A function, what its result for x is, and whether a run of its results travels packed.
SHAPES = {
    "scalars, packed": (triple, lambda x: 3 * x, True),
    "lists, back to back": (triple_boxed, lambda x: [3 * x], False),
}


@pytest.fixture(params=list(SHAPES))
def shape(request: pytest.FixtureRequest) -> tuple[Any, Any, bool]:
    return SHAPES[request.param]


@pytest.fixture
def kept_counts(monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, bool]]:
    """The ``count`` of every outputs row the control plane keeps (0: one input's row), and
    whether it was packed."""
    counts: list[tuple[int, bool]] = []
    settled, returned = SpawnedCalls.settled, SpawnedCalls.returned

    def seen(item: list[Any]) -> tuple[int, bool]:
        return item[OUT_COUNT], is_packed(item[OUT_COUNT], item[OUT_SIZES])

    def spy_settled(self: SpawnedCalls, call: Any, item: list[Any], *rest: Any) -> None:
        counts.append(seen(item))
        settled(self, call, item, *rest)

    def spy_returned(self: SpawnedCalls, call: Any, delivered: Any, given_back: Any) -> None:
        counts.extend(seen(item) for item, _, _ in given_back)
        returned(self, call, delivered, given_back)

    monkeypatch.setattr(SpawnedCalls, "settled", spy_settled)
    monkeypatch.setattr(SpawnedCalls, "returned", spy_returned)
    return counts


def test_spawn_map_results_that_came_as_runs_are_read_back_one_by_one(kept_counts, shape):
    fn, result, packed = shape
    n = 3000
    call = fn.spawn_map(range(n))
    assert list(call.iter()) == [result(x) for x in range(n)]
    assert max(c for c, p in kept_counts if p == packed) > 1, "no run of outputs was kept"
    for index in (0, 1, 255, 256, 1234, n - 1):  # first, inside and at the edges of runs
        assert call.get(index=index, timeout=30) == result(index)
    assert list(call.iter(start=1000, end=1003)) == [result(x) for x in (1000, 1001, 1002)]


@pytest.mark.parametrize("ordered", [True, False])
def test_a_detached_maps_runs_are_kept_per_input(kept_counts, ordered, shape):
    fn, result, packed = shape
    n = 20_000
    got: list[Any] = []
    thread = detach_running_map_when(lambda: len(got) >= 300)
    with pytest.raises(nbscale.CallDetachedError) as caught:
        for value in fn.map(range(n), order_outputs=ordered):
            got.append(value)
            if len(got) >= 300 and thread.is_alive():
                time.sleep(0.01)  # a slow consumer until the detach: runs pile up behind it
    thread.join()
    assert 300 <= len(got) < n
    assert max(c for c, p in kept_counts if p == packed) > 1, "no run of outputs was kept"
    call = nbscale.FunctionCall.from_id(caught.value.call_id)
    rest = list(call.iter())
    expected = [result(x) for x in range(n)]
    assert sorted(got + rest) == expected  # nothing lost, nothing twice
    if ordered:
        assert got + rest == expected
        with pytest.raises(nbscale.InvalidError, match="went to its caller"):
            call.get(index=len(got) - 1, timeout=5)
    index_of = {repr(r): x for x, r in enumerate(expected)}
    missing = sorted(set(range(n)) - {index_of[repr(v)] for v in got})
    for index in (missing[0], missing[len(missing) // 2], missing[-1]):
        assert call.get(index=index, timeout=30) == result(index)
