"""Generator functions on real worker processes: ``remote_gen`` streams each value as the
worker yields it, an exception comes after the values yielded before it, and what cannot
work with a generator is refused up front."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path

import pytest
from conftest import wait_until

import nbscale

app = nbscale.App("test-generators")


@app.function(max_containers=1, scaledown_window=5)
def count_after_go(go: str, n: int):
    """Yields 0, then the rest only once the caller has seen 0 (it creates ``go``)."""
    yield 0
    deadline = time.monotonic() + 60
    while not os.path.exists(go):
        if time.monotonic() > deadline:
            raise RuntimeError("the first value never reached the caller")
        time.sleep(0.01)
    yield from range(1, n)


@app.function(max_containers=1, scaledown_window=5)
def yields_then_waits(pid_file: str, n: int):
    """Yields ``n`` values, says its pid, then waits (to be killed from outside)."""
    yield from range(n)
    Path(pid_file).write_text(str(os.getpid()))
    time.sleep(120)
    yield n


@app.function(max_containers=1, scaledown_window=5)
def fails_after(k: int):
    yield from range(k)
    raise ValueError(f"failed after {k} values")


@app.function(max_containers=1, scaledown_window=5)
async def async_count(n: int):
    for i in range(n):
        await asyncio.sleep(0)
        yield i


@app.cls(max_containers=1, scaledown_window=5)
class Tokenizer:
    @nbscale.enter()
    def load(self):
        self.vocabulary = {"a": 1, "b": 2}

    @nbscale.method()
    def tokens(self, text):
        for word in text.split():
            yield self.vocabulary[word]


def test_remote_gen_streams_1000_values_the_first_before_the_generator_ends(
    tmp_path: Path,
) -> None:
    go = tmp_path / "go"
    values = []
    for value in count_after_go.remote_gen(str(go), 1000):
        if not values:
            go.touch()  # the generator is waiting for this: it has not ended
        values.append(value)
    assert values == list(range(1000))


def test_a_generators_exception_arrives_after_its_values() -> None:
    values = []
    with pytest.raises(ValueError, match="failed after 3 values"):
        for value in fails_after.remote_gen(3):
            values.append(value)
    assert values == [0, 1, 2]


def test_a_generator_whose_worker_is_killed_from_outside_fails_and_replays_nothing(
    tmp_path: Path,
) -> None:
    """An outside kill is the infrastructure's loss, which a plain function retries for
    free; a generator that yielded is not retried: its values would come twice."""
    pid_file = tmp_path / "pid"
    values = []
    with pytest.raises(nbscale.WorkerLostError) as lost:
        for value in yields_then_waits.remote_gen(str(pid_file), 3):
            values.append(value)
            if value == 2:
                wait_until(lambda: pid_file.exists() and pid_file.read_text(), timeout=30)
                os.kill(int(pid_file.read_text()), signal.SIGKILL)  # an operator's kill -9
    assert values == [0, 1, 2]
    message = str(lost.value)
    assert "lost to the infrastructure" in message
    assert "a generator is not retried once it has yielded values" in message


def test_async_for_over_remote_gen_aio_and_async_generators() -> None:
    async def collect() -> list[int]:
        return [v async for v in async_count.remote_gen.aio(5)]

    assert asyncio.run(collect()) == [0, 1, 2, 3, 4]
    assert list(async_count.remote_gen(3)) == [0, 1, 2]


def test_a_generator_method_of_a_class() -> None:
    assert list(Tokenizer().tokens.remote_gen("a b a")) == [1, 2, 1]


def test_breaking_out_early_stops_the_generator() -> None:
    for value in fails_after.remote_gen(1000):
        assert value == 0
        break
    values = []
    with pytest.raises(ValueError):  # the pool serves the next call
        values.extend(fails_after.remote_gen(2))
    assert values == [0, 1]


def test_what_cannot_stream_is_refused_up_front() -> None:
    with pytest.raises(nbscale.InvalidError, match=r"remote_gen"):
        fails_after.remote(3)
    for call in (
        lambda: fails_after.spawn(3),
        lambda: fails_after.map([1, 2]),
        lambda: fails_after.for_each([1, 2]),
    ):
        with pytest.raises(nbscale.InvalidError, match="generator function"):
            call()
    with pytest.raises(nbscale.InvalidError, match="cannot be retried"):

        @app.function(retries=2)
        def retried(n):
            yield n


def test_remote_gen_on_a_plain_function_is_refused() -> None:
    @app.function
    def plain(x):
        return x

    with pytest.raises(nbscale.InvalidError, match=r"not a generator function: use \.remote"):
        plain.remote_gen(1)
