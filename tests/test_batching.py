"""``@nbscale.batched`` on real worker processes: callers pass single inputs, the function
gets lists of up to ``max_batch_size`` (or what came within ``wait_ms``), and each caller
gets its own element back."""

from __future__ import annotations

import os

import pytest

import nbscale

app = nbscale.App("test-batching")


@app.function(max_containers=1, scaledown_window=5)
@nbscale.batched(max_batch_size=8, wait_ms=2000)
def double(xs: list[int]) -> list[tuple[int, int]]:
    return [(2 * x, len(xs)) for x in xs]


@app.function(max_containers=1, scaledown_window=5)
@nbscale.batched(max_batch_size=8, wait_ms=100)
def add(xs: list[int], ys: list[int]) -> list[int]:
    return [x + y for x, y in zip(xs, ys, strict=True)]


@app.function(max_containers=1, scaledown_window=5)
@nbscale.batched(max_batch_size=4, wait_ms=2000)
def picky(xs: list[int]) -> list[int]:
    if 3 in xs:
        raise ValueError(f"cannot take 3 (batch {sorted(xs)})")
    return xs


@app.function(max_containers=1, scaledown_window=5)
@nbscale.batched(max_batch_size=4, wait_ms=10)
def short(xs: list[int]) -> list[int]:
    return xs[:-1]


@app.cls(max_containers=1, scaledown_window=5)
class Embedder:
    @nbscale.enter()
    def load(self):
        self.scale = 3
        self.pid = os.getpid()

    @nbscale.batched(max_batch_size=5, wait_ms=2000)
    def embed(self, xs):
        return [(x * self.scale, len(xs)) for x in xs]

    @nbscale.method()
    def whoami(self):
        return self.pid


def test_a_map_is_run_in_batches_of_max_batch_size() -> None:
    results = list(double.map(range(40)))
    assert [value for value, _ in results] == [2 * x for x in range(40)]
    sizes = [size for _, size in results]
    assert max(sizes) == 8  # inputs grouped, up to the size
    assert all(1 <= size <= 8 for size in sizes)
    assert sizes.count(8) >= 8  # most of the 40 went in full batches


def test_a_single_call_runs_once_wait_ms_has_passed() -> None:
    assert add.remote(1, 2) == 3
    assert list(add.map([1, 2, 3], [10, 20, 30])) == [11, 22, 33]


def test_a_batchs_exception_fails_each_of_its_inputs() -> None:
    results = list(picky.map([0, 1, 2, 3], return_exceptions=True))
    assert all(isinstance(r, ValueError) for r in results)
    assert all("cannot take 3 (batch [0, 1, 2, 3])" in str(r) for r in results)
    assert list(picky.map([4, 5])) == [4, 5]  # other batches are not blamed


def test_a_result_list_of_the_wrong_length_is_a_clear_error() -> None:
    with pytest.raises(TypeError, match="must return a list of 1 results"):
        short.remote(1)


def test_a_batched_method_of_a_class() -> None:
    embedder = Embedder()
    results = list(embedder.embed.map(range(10)))
    assert [v for v, _ in results] == [3 * x for x in range(10)]
    assert max(size for _, size in results) == 5
    assert embedder.whoami.remote() != os.getpid()


def test_bad_settings_are_refused() -> None:
    with pytest.raises(nbscale.InvalidError, match="max_batch_size"):
        nbscale.batched(max_batch_size=0, wait_ms=10)
    with pytest.raises(nbscale.InvalidError, match="wait_ms"):
        nbscale.batched(max_batch_size=2, wait_ms=-1)
    with pytest.raises(nbscale.InvalidError, match="default"):

        @nbscale.batched(max_batch_size=2, wait_ms=1)
        def with_default(xs, ys=None):
            return xs
