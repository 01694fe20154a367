"""``.map()`` is lazy and streams: bounded client memory for huge inputs."""

from __future__ import annotations

import itertools
import threading
import time

import pytest

import nbscale
from nbscale_server.limits import SMALL_INPUTS_PER_SLOT

app = nbscale.App("test-streaming")


@app.function(max_containers=2, scaledown_window=5)
def inc(x):
    return x + 1


@app.function(max_containers=2, scaledown_window=5)
def length(x):
    return len(x)


@pytest.mark.slow
def test_map_of_100000_inputs_pulls_its_iterator_only_as_far_as_the_window():
    pulled = 0

    def inputs():
        nonlocal pulled
        for i in range(100_000):
            pulled = i + 1
            yield i

    # small inputs (ints): the window holds SMALL_INPUTS_PER_SLOT of them per place
    window = nbscale.status()["limits"]["max_inputs_in_flight_per_map"] * SMALL_INPUTS_PER_SLOT
    ahead = 0
    total = 0
    for consumed, value in enumerate(inc.map(inputs()), start=1):
        assert value == consumed  # in order, nothing lost or repeated
        ahead = max(ahead, pulled - consumed)
        total = consumed
    assert total == 100_000
    # Never more than the window ahead of the consumer, plus the chunk being pickled and the
    # batch of results just handed over (at most another window): bounded, whatever the size.
    assert ahead <= 2 * window + 256


def test_a_map_whose_inputs_outgrow_small_ones_loses_none_and_stays_bounded():
    # 6,000 small inputs fill the bigger window of small ones; the chunk where 4 KiB ones
    # begin must be cut to what the window of big ones admits, or it would wait forever
    values = ["s" * (i % 50) for i in range(6_000)] + ["b" * (4_096 + i) for i in range(1_500)]
    pulled = 0
    window = nbscale.status()["limits"]["max_inputs_in_flight_per_map"]

    def inputs():
        nonlocal pulled
        for value in values:
            pulled += 1
            yield value

    ahead_after_big = 0
    results = []
    for consumed, value in enumerate(length.map(inputs()), start=1):
        results.append(value)
        if consumed > 7_000:  # well into the big ones: the window of big ones holds
            ahead_after_big = max(ahead_after_big, pulled - consumed)
    assert results == [len(v) for v in values]
    assert ahead_after_big <= 2 * window + 256


def test_map_does_not_start_until_iterated():
    pulled = []

    def inputs():
        for i in range(3):
            pulled.append(i)
            yield i

    results = inc.map(inputs())
    time.sleep(0.3)
    assert pulled == []
    assert list(results) == [1, 2, 3]


def test_results_stream_while_later_inputs_are_still_produced():
    def slow_inputs():
        for i in itertools.count():
            if i == 5:
                return
            yield i
            time.sleep(0.3)

    start = time.monotonic()
    first = next(iter(inc.map(slow_inputs())))
    assert first == 1
    assert time.monotonic() - start < 1.2  # did not wait for the whole iterator (1.5 s)


@app.function(max_containers=1, scaledown_window=5)
def waits_at_six(x, gate):
    import os
    import time

    while x == 6 and not os.path.exists(gate):
        time.sleep(0.02)
    return x


def test_quick_results_are_not_held_back_by_a_long_input_after_them(tmp_path):
    """One worker runs a run of inputs in turn and sends their outputs a few milliseconds'
    worth at a time; those that finished just before a long input go out while it runs,
    not when it ends (they waited for input 6 here: for as long as it ran)."""
    gate = tmp_path / "gate"
    opener = threading.Timer(30, gate.touch)  # ends input 6 whatever happens
    opener.start()
    got: list[int] = []
    try:
        results = waits_at_six.map(range(12), kwargs={"gate": str(gate)}, order_outputs=False)
        for value in results:
            got.append(value)
            if sorted(got) == list(range(6)):
                break
        assert not gate.exists(), "0..5 came only once input 6 ended"
        gate.touch()
        assert sorted(got + list(results)) == list(range(12))
    finally:
        opener.cancel()
        gate.touch()
