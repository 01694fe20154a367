"""Packed runs of results (``nbscale_runtime/packed.py``): a run of plain scalars travels as
one pickled list, which the caller loads in one go and the control plane cuts into each
result's own pickle by its opcodes, never unpickling; any other run still travels as pickles
back to back. Pure: no process."""

from __future__ import annotations

import pickle
from typing import Any

import pytest

from nbscale._outcomes import Values, decode_run
from nbscale_runtime.packed import cut_packed, dump_packed, is_packed, load_results
from nbscale_runtime.protocol import OUT_COUNT, OUT_INDEX, OUT_SIZES, OUT_STATUS, STATUS_OK
from nbscale_runtime.runs import Segment
from nbscale_runtime.serialization import PayloadWriter, split_payload
from nbscale_server.outputs import apart

SHARED = "the same str object, pickled once then named by its memo index"
SCALARS: list[Any] = [
    0, 1, 255, 256, 65_535, 65_536, -1, -(2**31), 2**31, 10**30, -(10**300),
    0.0, -2.5, float("inf"), True, False, None,
    "", "é", "x" * 255, "y" * 256, SHARED, SHARED, b"", b"\x00", b"z" * 300, SHARED,
    "big" * 30_000, b"B" * 100_000,  # past pickle's 64 KiB frames
]  # fmt: skip


def _segment_rows(results: list[Any]) -> tuple[list[list[Any]], Any]:
    """The outputs rows a worker sends for ``results`` of a run, and its payload."""
    seg = Segment("fc-1", 1, 10, 10 + len(results))
    seg.results.extend(results)
    writer = PayloadWriter()
    rows = seg.rows(writer, "wk-1")
    return rows, writer.frames()


@pytest.mark.parametrize("values", [SCALARS, list(range(2_500)), [7, 8]])
def test_a_packed_list_is_cut_into_each_values_own_pickle(values: list[Any]) -> None:
    data = dump_packed(values)
    assert data is not None
    assert load_results(data, [], len(values)) == values
    cuts = cut_packed(data, len(values))
    assert [pickle.loads(cut) for cut in cuts] == values


def test_only_runs_of_exact_scalars_are_packed() -> None:
    class Name(str):
        pass

    assert dump_packed([1, 2.0, "a", b"b", None, True]) is not None
    for other in ([1, (2,)], [1, [2]], [1, {2: 3}], ["a", Name("b")], [1, 2j]):
        assert dump_packed(other) is None


@pytest.mark.parametrize(
    "data",
    [
        pickle.dumps([1, (2,)], protocol=5),  # a tuple: not a scalar
        pickle.dumps({1: 2, 3: 4}, protocol=5),  # not a list
        pickle.dumps([1, [2, 3]], protocol=5),  # a nested list
        pickle.dumps([1, 2], protocol=5)[:-2] + b".",  # its list never closed
        pickle.dumps([1, 2], protocol=5)[:-1],  # no STOP
        pickle.dumps([1, 2], protocol=4)[:2] + pickle.dumps([1, 2], protocol=5)[2:],
        b"\x80\x05]\x94(h\x00h\x00e.",  # the list inside itself
        b"\x80\x05]\x94(\x8c\xffabce.",  # a string longer than the pickle
        b"",
    ],
)
def test_anything_but_a_packed_list_is_refused_not_cut(data: bytes) -> None:
    with pytest.raises(ValueError):
        cut_packed(data, 2)


def test_a_packed_run_of_another_count_is_refused() -> None:
    data = dump_packed([1, 2, 3])
    assert data is not None
    with pytest.raises(ValueError, match="of 4 results holds 3"):
        cut_packed(data, 4)
    with pytest.raises(ValueError, match="of 4 results"):
        load_results(data, [], 4)


def test_a_workers_run_of_scalars_goes_as_one_packed_row() -> None:
    results = [3 * x for x in range(500)]
    [row], frames = _segment_rows(results)
    assert row[OUT_COUNT] == 500 and row[OUT_SIZES] == [] and row[OUT_STATUS] == STATUS_OK
    assert is_packed(row[OUT_COUNT], row[OUT_SIZES])
    [(data, bufs)] = split_payload(frames, [row[4:7]])
    assert Values(row, data, "f").load() == results
    outs = decode_run(row, data, "f")  # a map's with a live view, Values.outputs
    assert [(o.index, o.ok, o.value) for o in outs] == [
        (10 + k, True, v) for k, v in enumerate(results)
    ]
    kept = apart((row, data, bufs))  # as the store keeps them: one entry per input
    assert [e[0][OUT_INDEX] for e in kept] == list(range(10, 510))
    assert all(e[0][OUT_COUNT] == 0 and e[0][OUT_SIZES] == [] for e in kept)
    assert [pickle.loads(e[1]) for e in kept] == results


def test_a_workers_run_of_other_results_goes_back_to_back_with_sizes() -> None:
    results = [(x, "t") for x in range(300)]
    [row], frames = _segment_rows(results)
    assert row[OUT_COUNT] == 300 and len(row[OUT_SIZES]) == 300
    assert not is_packed(row[OUT_COUNT], row[OUT_SIZES])
    [(data, bufs)] = split_payload(frames, [row[4:7]])
    assert Values(row, data, "f").load() == results
    assert [pickle.loads(e[1]) for e in apart((row, data, bufs))] == results
