"""A map's chunk pickled for the wire (pure): small inputs as runs of at most 64 KiB, in
order, read back as the worker reads them; an input that will not pickle named."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest

from nbscale._chunks import _RUN_MAX_BYTES, ChunkSizes, pull
from nbscale.exceptions import SerializationError
from nbscale_runtime.packed_inputs import load_inputs
from nbscale_runtime.protocol import (
    SUBMIT_COUNT,
    SUBMIT_INDEX,
    SUBMIT_SIZES,
    SUBMIT_WHERE,
    row_count,
)
from nbscale_runtime.serialization import split_payload
from nbscale_server.limits import Limits


def pairs(values: list[object]) -> list[tuple[tuple[object, ...], dict[str, object]]]:
    return [((v,), {}) for v in values]


def read_back(items: list[list[int]], frames: list[object]) -> list[object]:
    parts = split_payload(frames, [i[SUBMIT_WHERE] for i in items])
    out: list[object] = []
    for item, (data, bufs) in zip(items, parts, strict=True):
        count, packed = row_count(item[SUBMIT_COUNT]), item[SUBMIT_COUNT] and not item[SUBMIT_SIZES]
        out += [args[0] for args, _ in load_inputs(data, bufs, 0, count, packed)]
    return out


def test_small_inputs_go_as_one_run() -> None:
    items, frames, exhausted, taken, _ = pull(iter(pairs(list(range(300)))), 10, 256, runs=True)
    assert (len(items), items[0][SUBMIT_INDEX], items[0][SUBMIT_COUNT], taken) == (1, 10, 256, 256)
    assert not exhausted
    assert read_back(items, frames) == list(range(256))


def test_a_big_chunk_is_cut_into_runs_that_fit() -> None:
    values = [b"x" * 200 + i.to_bytes(4, "big") for i in range(1000)]
    items, frames, exhausted, taken, _ = pull(iter(pairs(values)), 0, 4096, runs=True)
    assert exhausted and taken == 1000 and len(items) > 1
    assert all(item[SUBMIT_WHERE][1] <= _RUN_MAX_BYTES for item in items)
    starts = [item[SUBMIT_INDEX] for item in items]
    counts = [row_count(item[SUBMIT_COUNT]) for item in items]
    assert starts == [sum(counts[:k]) for k in range(len(counts))]  # contiguous, in order
    assert read_back(items, frames) == values


def test_an_input_that_will_not_pickle_is_named() -> None:
    with pytest.raises(SerializationError, match="argument 0 of input 7"):
        pull(iter(pairs([1, 2, threading.Lock()])), 5, 10, runs=True)


def test_the_first_chunk_of_bigger_inputs_is_cut_to_what_their_window_admits() -> None:
    values = [b"x" * 4000 + i.to_bytes(4, "big") for i in range(600)]
    inputs = iter(pairs(values))
    items, frames, exhausted, taken, left = pull(inputs, 0, 600, runs=True, most_if_big=250)
    assert not exhausted and taken == 250 and read_back(items, frames) == values[:250]
    assert [args[0] for args, _ in left] == values[250:]  # taken from the iterator, not lost
    items, _, _, taken, left = pull(iter(pairs(list(range(600)))), 0, 600, True, 250)
    assert taken == 600 and not left  # small ones: the whole chunk


def test_chunks_grow_past_a_window_of_big_inputs_only_while_small() -> None:
    sizes = ChunkSizes(Limits(), "map")
    while sizes.size < sizes.max_size:
        sizes.sent_whole(sizes.size)
    assert sizes.size == 2_000  # half the window of 4,000 small inputs
    sizes.became_big()
    assert sizes.size == sizes.max_size == 500  # half the window of 1,000


def slowly(
    values: list[object], seconds: float
) -> Iterator[tuple[tuple[object, ...], dict[str, object]]]:
    for pair in pairs(values):
        time.sleep(seconds)
        yield pair


def test_a_slow_iterator_is_pulled_for_about_the_budget_not_for_a_whole_chunk() -> None:
    """Its first inputs go while it makes the next (a sleep only gets longer: bounds hold)."""
    inputs = slowly(list(range(100)), 0.010)  # each input past the 5 ms budget alone
    items, frames, exhausted, taken, _ = pull(inputs, 0, 256, runs=True)
    assert (taken, exhausted, read_back(items, frames)) == (1, False, [0])
    inputs = slowly(list(range(100)), 0.002)
    items, frames, exhausted, taken, _ = pull(inputs, 0, 256, runs=True)
    assert 1 < taken < 10 and not exhausted  # the clock read after 1, 2, 4 ... inputs
    assert read_back(items, frames) == list(range(taken))
    assert [args[0] for args, _ in inputs] == list(range(taken, 100))  # none lost


@pytest.mark.parametrize(("count", "n"), [(0, 5), (3, 5), (5, 5), (6, 5), (300, 256), (7, 0)])
def test_a_pull_says_whether_the_iterator_ran_out(count: int, n: int) -> None:
    inputs = iter(pairs(list(range(count))))
    items, frames, exhausted, taken, _ = pull(inputs, 0, n, runs=True)
    assert taken == min(count, n) and read_back(items, frames) == list(range(taken))
    assert exhausted == (count < n)  # found out only by pulling past its end
