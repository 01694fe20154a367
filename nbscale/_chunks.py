"""A map's inputs, pulled from the caller's iterator a chunk at a time and pickled for the
wire: as runs (their pickles back to back, one submit-inputs row each) when they are small,
else one by one. Runs on a worker thread of the client's loop (pickling takes time)."""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterator
from typing import Any

from nbscale_runtime.serialization import PayloadWriter

from ._pickling import add_input

# A map's chunk travels as one run (``PayloadWriter.add_run``: one row, moved whole, split only
# where its inputs part ways) when it pickles to no more than this: the control plane may
# send a piece of a run with the run's bytes, so big inputs go one by one.
_RUN_MAX_BYTES = 64 * 1024
_PULL_BUDGET = 0.005  # seconds of iterator pulling per chunk, so slow iterators still stream

Inputs = Iterator[tuple[tuple[Any, ...], dict[str, Any]]]


def pull(
    inputs: Inputs, start: int, n: int, runs: bool
) -> tuple[list[list[Any]], list[Any], bool, int]:
    """Take up to ``n`` inputs (or what arrives within the pull budget) and pickle them: as
    one run when ``runs`` and they are small, else one by one. Returns the submit-inputs
    rows, their frames, whether the iterator is exhausted, and how many inputs it took."""
    deadline = time.perf_counter() + _PULL_BUDGET
    clock = time.perf_counter
    taken: list[tuple[tuple[Any, ...], dict[str, Any]]] = []
    exhausted = True
    for pair in itertools.islice(inputs, n):
        taken.append(pair)
        if clock() > deadline:
            exhausted = False
            break
    exhausted = exhausted and len(taken) < n
    writer = PayloadWriter()
    items: list[list[Any]] = []
    if runs and len(taken) > 1:
        try:
            _add_runs(writer, items, taken, start)
            return items, writer.frames(), exhausted, len(taken)
        except Exception:
            pass  # pickled one by one below, to name the input that cannot be
        writer, items = PayloadWriter(), []
    for index, (args, kwargs) in enumerate(taken, start):
        offset, length, nbufs = add_input(writer, index, args, kwargs)
        items.append([index, offset, length, nbufs, 0, []])  # a submit-inputs row (SUBMIT_*)
    return items, writer.frames(), exhausted, len(taken)


def _add_runs(
    writer: PayloadWriter,
    items: list[list[Any]],
    inputs: list[tuple[tuple[Any, ...], dict[str, Any]]],
    start: int,
) -> None:
    """Pickle ``inputs`` as runs of at most ``_RUN_MAX_BYTES`` (halving those that are
    bigger), each a submit-inputs row; an input too big alone goes as one input."""
    (offset, length, nbufs), sizes = writer.add_run(inputs)
    if length <= _RUN_MAX_BYTES and not nbufs:
        items.append([start, offset, length, 0, len(inputs), sizes])
        return
    writer.drop_last(offset, nbufs)
    if len(inputs) == 1:
        args, kwargs = inputs[0]
        items.append([start, *add_input(writer, start, args, kwargs), 0, []])
        return
    half = len(inputs) // 2
    _add_runs(writer, items, inputs[:half], start)
    _add_runs(writer, items, inputs[half:], start + half)
