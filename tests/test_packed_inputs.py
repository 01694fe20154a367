"""Packed runs of inputs (``nbscale_runtime/packed_inputs.py``): a map's chunk whose inputs
are each one plain value and no keyword travels as one pickled list; the control plane cuts
it wherever its inputs part ways (a piece for a worker, each input's own pickle to keep) by
where its values lie, never unpickling; any other chunk still goes as pickles back to back.
Pure: no process (the control plane's decisions on packed runs against fake workers are in
``test_blame.py``, on real workers in ``test_packed_maps.py``)."""

from __future__ import annotations

import enum
import pickle
from typing import Any

import pytest

from nbscale._chunks import _RUN_MAX_BYTES, OneArgument, pull
from nbscale_runtime.packed_inputs import Layout, dump_values, load_inputs, load_values, values_of
from nbscale_runtime.protocol import SUBMIT_COUNT, SUBMIT_SIZES, SUBMIT_WHERE
from nbscale_runtime.serialization import split_payload
from nbscale_server.input_record import InputRecord

SHARED = "a string that recurs: pickled again each time, never named by a memo index"
SCALARS: list[Any] = [
    0, 1, 255, 256, 65_535, 65_536, -1, -(2**31), 2**31, 10**30, -(10**300),
    0.0, -2.5, float("inf"), True, False, None, 1, 0,
    "", "é", "x" * 255, "y" * 256, SHARED, SHARED, b"", b"\x00", b"z" * 300, SHARED,
]  # fmt: skip
SMALL: list[Any] = [0, 1, 300, 70_000, -5, True, None, 2.5, "ab", b"c", False]
# Three of pickle's batches of a thousand values, the first one ending among SCALARS; under
# 64 KiB, as a chunk's packed run is.
VALUES = [*(SMALL * 90)[:985], *SCALARS, *(SMALL * 130)[: 2_345 - 985 - len(SCALARS)]]
# Ints of one size in the first two batches (BININT2), of two in the last (one BININT2, then
# BININT): the control plane reads a batch of values of one fixed size at once
UNIFORM = list(range(63_535, 65_536)) + list(range(65_536, 65_880))


def typed(values: list[Any]) -> list[tuple[type, Any]]:
    """``values`` with their types: True == 1, yet an int must not come back a bool."""
    return [(type(v), v) for v in values]


def pairs(values: list[Any]) -> list[tuple[tuple[Any, ...], dict[str, Any]]]:
    return [((v,), {}) for v in values]


def test_a_packed_run_loads_back_with_each_values_type() -> None:
    data = dump_values(VALUES)
    assert data is not None
    assert typed(load_values(data, 0, len(VALUES))) == typed(VALUES)
    assert load_inputs(data, [], 10, 3, packed=True) == pairs(VALUES[10:13])


@pytest.mark.parametrize(
    ("skip", "count"),
    [
        (0, 2_345),  # the whole run: its bytes as they are
        (0, 1),
        (1, 2_344),
        (999, 2),  # across the first batch's end
        (1_000, 1),  # the first of a batch
        (999, 1),  # the last of a batch
        (998, 1_003),  # a whole batch and a bit either side
        (1_000, 1_000),  # exactly one batch
        (2_344, 1),
        (500, 1_500),
    ],
)
@pytest.mark.parametrize("values", [VALUES, UNIFORM], ids=["mixed", "uniform"])
def test_a_packed_run_is_cut_anywhere_into_a_run_of_its_own(
    values: list[Any], skip: int, count: int
) -> None:
    data = dump_values(values)
    assert data is not None
    layout = Layout(data, len(values))
    piece = layout.piece(data, skip, count)
    assert typed(load_values(piece, 0, count)) == typed(values[skip : skip + count])
    assert len(piece) <= len(data)


@pytest.mark.parametrize("values", [VALUES, UNIFORM], ids=["mixed", "uniform"])
def test_each_input_of_a_packed_run_is_cut_into_its_own_pickle(values: list[Any]) -> None:
    data = dump_values(values)
    assert data is not None
    cuts = Layout(data, len(values)).apart(data, 0, len(values))
    loaded = [pickle.loads(cut) for cut in cuts]
    assert loaded == pairs(values)
    assert [type(args[0]) for args, _ in loaded] == [type(v) for v in values]


def test_only_inputs_of_one_plain_value_each_are_packed() -> None:
    class Name(str):
        pass

    class Colour(enum.IntEnum):
        RED = 1

    assert values_of(pairs([1, 2.0, "a", b"b", None, True])) == [1, 2.0, "a", b"b", None, True]
    for other in (
        [((1,), {}), ((2,), {"k": 3})],  # a keyword
        [((1,), {}), ((2, 3), {})],  # two arguments
        [((1,), {}), ((), {})],  # none
        pairs([1, (2,)]),
        pairs([1, [2]]),
        pairs(["a", Name("b")]),
        pairs([1, Colour.RED]),
        pairs([1, 2j]),
        pairs([1]),  # one input is never a run
    ):
        assert values_of(other) is None, other


@pytest.mark.parametrize(
    ("data", "count"),
    [
        (pickle.dumps([SHARED, SHARED], protocol=5), 2),  # the memo: a value names another's
        (pickle.dumps([1, (2,)], protocol=5), 2),  # a tuple: not a plain value
        (pickle.dumps([1, [2, 3]], protocol=5), 2),  # a nested list
        (pickle.dumps({1: 2, 3: 4}, protocol=5), 2),  # not a list
        (dump_values([1, 2]), 3),  # another count
        (dump_values([1, 2]), 1),  # one input is never a run
        (dump_values([1, 2]), "2"),
        ((dump_values([1, 2]) or b"")[:-2] + b".", 2),  # its list never closed
        ((dump_values([1, 2]) or b"")[:-1], 2),  # no STOP
        (b"\x80\x05](\x8c\xffabce.", 1),  # a string longer than the pickle
        (b"\x80\x05](K\x01K\x02e(e.", 2),  # a batch where pickle makes none
        (pickle.dumps(list(range(1_001)), protocol=4), 1_001),  # another protocol
        (pickle.dumps(["x" * 70_000, 1], protocol=5), 2),  # more than one frame
        (b"", 2),
    ],
)
def test_anything_but_a_packed_run_is_refused_not_cut(data: Any, count: Any) -> None:
    with pytest.raises(ValueError):
        Layout(data, count)


def test_a_chunk_of_plain_values_goes_as_one_packed_run() -> None:
    items, frames, _, taken, _ = pull(iter(pairs(VALUES)), 7, 4096, runs=True)
    assert taken == len(VALUES) and len(items) == 1
    [item] = items
    assert item[SUBMIT_COUNT] == len(VALUES) and item[SUBMIT_SIZES] == []  # packed
    [(data, _)] = split_payload(frames, [item[SUBMIT_WHERE]])
    assert typed(load_values(data, 0, len(VALUES))) == typed(VALUES)


def test_a_maps_values_are_pulled_as_they_are_and_packed() -> None:
    inputs = OneArgument(iter(VALUES))
    assert next(inputs) == ((VALUES[0],), {})  # still (args, kwargs) to whoever iterates
    items, frames, _, taken, _ = pull(inputs, 1, 4096, runs=True)
    assert taken == len(VALUES) - 1 and [item[SUBMIT_SIZES] for item in items] == [[]]
    [(data, _)] = split_payload(frames, [items[0][SUBMIT_WHERE]])
    assert typed(load_values(data, 0, taken)) == typed(VALUES[1:])


def test_a_maps_values_that_are_not_all_plain_go_back_to_back_as_pairs() -> None:
    values: list[Any] = [1, (2,), "3"]
    items, frames, exhausted, _, _ = pull(OneArgument(values), 0, 4096, runs=True)
    assert exhausted and [len(item[SUBMIT_SIZES]) for item in items] == [3]
    [(data, bufs)] = split_payload(frames, [items[0][SUBMIT_WHERE]])
    assert load_inputs(data, bufs, 0, 3, packed=False) == pairs(values)


def test_a_maps_big_values_beyond_the_first_chunks_window_are_left_as_pairs() -> None:
    values = [f"{i:04}" + "x" * 4000 for i in range(600)]
    items, frames, exhausted, taken, left = pull(OneArgument(values), 0, 600, True, 250)
    assert not exhausted and taken == 250 and left == pairs(values[250:])
    parts = split_payload(frames, [item[SUBMIT_WHERE] for item in items])
    got = [
        v
        for item, (data, _) in zip(items, parts, strict=True)
        for v in load_values(data, 0, item[SUBMIT_COUNT])
    ]
    assert got == values[:250]


def test_a_chunk_with_one_input_of_another_shape_goes_back_to_back() -> None:
    inputs = [*pairs(list(range(50))), ((1, 2), {}), *pairs(list(range(50)))]
    items, frames, _, _, _ = pull(iter(inputs), 0, 4096, runs=True)
    assert [(item[SUBMIT_COUNT], len(item[SUBMIT_SIZES])) for item in items] == [(101, 101)]
    [(data, bufs)] = split_payload(frames, [items[0][SUBMIT_WHERE]])
    assert load_inputs(data, bufs, 0, 101, packed=False) == inputs


def test_a_packed_chunk_over_64_kib_is_halved_and_a_value_too_big_goes_alone() -> None:
    values: list[Any] = [f"{i:05}" + "x" * 195 for i in range(1_000)] + ["y" * 70_000]
    items, frames, _, _, _ = pull(iter(pairs(values)), 0, 4096, runs=True)
    parts = split_payload(frames, [item[SUBMIT_WHERE] for item in items])
    assert len(items) > 2
    assert all(item[SUBMIT_WHERE][1] <= _RUN_MAX_BYTES for item in items[:-1])
    assert items[-1][SUBMIT_COUNT] == 0  # the last value, on its own
    got: list[Any] = []
    for item, (data, _) in zip(items, parts, strict=True):
        if item[SUBMIT_COUNT]:
            got += load_values(data, 0, item[SUBMIT_COUNT])
        else:
            args, _ = pickle.loads(data)
            got += args
    assert got == values


def test_the_queues_pieces_of_a_packed_run_go_with_their_own_values_only() -> None:
    data = dump_values(VALUES)
    assert data is not None
    record = InputRecord("a", 0, data, count=len(VALUES), skip=0, layout=Layout(data, 2_345))
    middle = record.split(1_000)
    last = middle.split(1_500)
    lone = next(iter(middle.singles()))
    for r in (record, middle, last, lone):
        piece, _, skip = r.piece()
        assert skip == 0
        assert typed(load_values(piece, 0, r.count)) == typed(VALUES[r.index : r.end])
    assert [pickle.loads(one.data) for one in last.apart()] == pairs(VALUES[1_500:])
    assert [one.skip for one in last.apart()] == [-1] * 845  # kept as single inputs
