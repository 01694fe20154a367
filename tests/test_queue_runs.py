"""QueueCore with runs: a map's chunk queued as one record, split only where its inputs part
ways (a worker takes fewer, one is reported apart, a lost worker ran one, a lent slot gives
the rest back). Counts are of inputs, never of records."""

from __future__ import annotations

from typing import Any

import pytest

from nbscale_runtime.protocol import STATUS_ERROR, STATUS_LOST, STATUS_OK
from nbscale_runtime.serialization import PayloadWriter, load_run
from nbscale_server.delivery import _run_sizes
from nbscale_server.errors import RequestError
from nbscale_server.queue import InputRecord, QueueCore, RetryPolicy


def run(call_id: str, index: int, count: int) -> InputRecord:
    return InputRecord(call_id, index, data=b"run", count=count, skip=0)


def spans(records: list[InputRecord]) -> list[tuple[int, int, int]]:
    """(first index, count, skip) of each record."""
    return [(r.index, r.count, r.skip) for r in records]


def test_a_run_is_taken_whole_or_split_to_what_a_worker_asks_for() -> None:
    q = QueueCore()
    q.submit([run("a", 0, 256), run("a", 256, 4)])
    assert (q.num_pending, q.num_ready, len(q.pending)) == (260, 260, 2)

    first = q.take("w1", 100)
    assert spans(first) == [(0, 100, 0)]
    assert (q.num_pending, q.num_running, q.running_on("w1")) == (160, 100, 100)

    second = q.take("w2", 1000)
    assert spans(second) == [(100, 156, 100), (256, 4, 0)]  # the rest shares the pickle
    assert all(r.data == b"run" and r.attempt == 1 for r in second)
    assert (q.num_pending, q.num_running, q.running_on("w2")) == (0, 260, 160)


def test_a_run_reported_ok_whole_is_one_outcome_of_its_inputs() -> None:
    q = QueueCore()
    q.submit([run("a", 0, 50)])
    q.take("w", 50)
    outcome = q.report("w", "a", 0, 1, STATUS_OK, now=0.0, count=50)
    assert outcome is not None and outcome.final
    assert spans([outcome.record]) == [(0, 50, 0)]
    assert (q.num_running, q.running_on("w")) == (0, 0)


def test_an_input_reported_apart_is_carved_out_and_retried_alone() -> None:
    """Input 5 of a run of 10 fails: the inputs before it arrived as one run row, it is
    retried on its own (its own attempt count), those after it are still held."""
    q = QueueCore(RetryPolicy(max_retries=1, initial_delay=0.0))
    q.submit([run("a", 0, 10)])
    q.take("w", 10)
    assert q.report("w", "a", 0, 1, STATUS_OK, now=0.0, count=5) is not None
    failed = q.report("w", "a", 5, 1, STATUS_ERROR, now=0.0)
    assert failed is not None and not failed.final
    assert (q.num_pending, q.running_on("w")) == (1, 4)
    [retry] = q.take("w2", 10)
    assert spans([retry]) == [(5, 1, 5)] and retry.attempt == 2
    after = q.report("w", "a", 6, 1, STATUS_OK, now=0.0, count=4)
    assert after is not None and spans([after.record]) == [(6, 4, 6)]
    assert q.running_on("w") == 0


def test_a_stale_report_of_a_run_is_dropped() -> None:
    q = QueueCore()
    q.submit([run("a", 0, 10)])
    q.take("w", 10)
    assert q.report("w", "a", 0, 2, STATUS_OK, now=0.0, count=10) is None  # wrong attempt
    assert q.report("w", "a", 5, 1, STATUS_OK, now=0.0, count=10) is None  # past its end
    assert q.report("other", "a", 0, 1, STATUS_OK, now=0.0, count=10) is None
    assert q.running_on("w") == 10


def test_a_lost_worker_blames_only_the_input_of_a_run_it_was_running() -> None:
    """Exact blame inside a run: the worker had run 0-2 (outputs not sent yet), died in 3;
    3 alone loses an attempt, the rest go back untouched, still as runs."""
    q = QueueCore()
    q.submit([run("a", 0, 8)])
    q.take("w", 8)
    [lost] = q.worker_gone("w", now=1.0, running={("a", 3, 1)})
    assert (spans([lost.record]), lost.status, lost.final) == ([(3, 1, 3)], STATUS_LOST, True)
    again = q.take("w2", 100)
    assert spans(again) == [(0, 3, 0), (4, 4, 4)]
    assert [r.attempt for r in again] == [1, 1]  # untouched
    assert q.num_running == 7


def test_a_worker_without_a_register_makes_each_input_of_its_runs_a_suspect() -> None:
    q = QueueCore()
    q.submit([run("a", 0, 3)])
    q.take("w", 3)
    assert q.worker_gone("w", now=1.0, running=None) == []
    assert (q.num_pending, q.suspects_pending, len(q.pending)) == (3, 3, 3)
    assert spans(q.take("w2", 100)) == [(0, 1, 0)]  # alone
    assert q.take("w2", 100) == []


def test_a_lent_slot_gives_back_the_rest_of_the_run_around_the_running_input() -> None:
    q = QueueCore()
    q.submit([run("a", 0, 6)])
    q.take("w", 6)
    back = q.give_back("w", {("a", 2)})
    assert spans(back) == [(0, 2, 0), (3, 3, 3)]
    assert [r.attempt for r in back] == [0, 0]
    assert (q.running_on("w"), q.num_pending) == (1, 5)
    assert list(q.held_inputs("w")) == [("a", 2)]


def test_cancel_and_failing_pending_count_inputs_and_give_each_input() -> None:
    q = QueueCore()
    q.submit([run("a", 0, 5), run("b", 0, 4)])
    q.take("w", 2)
    assert q.cancel("a") == {"w"}
    assert (q.num_pending, q.num_running) == (4, 0)
    failed = q.fail_pending()
    assert [(r.call_id, r.index, r.count) for r in failed] == [("b", i, 1) for i in range(4)]
    assert q.num_pending == 0


def test_status_pages_see_each_input_of_a_run() -> None:
    q = QueueCore()
    q.submit([run("a", 0, 4)])
    q.take("w", 1)
    pending, running = q.inputs_of("a")
    assert [r.index for r in pending] == [1, 2, 3]
    assert [(r.index, r.worker_id) for r in running] == [(0, "w")]


def test_a_piece_of_a_run_goes_to_a_worker_with_its_own_pickles_only() -> None:
    writer = PayloadWriter()
    (_, length, _), sizes = writer.add_run([((n,), {}) for n in range(10)])
    whole = bytes(writer.frames()[0])[:length]
    record = InputRecord("a", 0, data=whole, count=10, skip=0, sizes=sizes)
    middle = record.split(3)
    last = middle.split(7)

    pieces = [r.piece() for r in (record, middle, last)]
    assert [skip for _, _, skip in pieces] == [0, 0, 0]  # nothing for the worker to skip
    assert [len(data) for data, _, _ in pieces] == [sum(sizes[:3]), sum(sizes[3:7]), sum(sizes[7:])]
    records = (record, middle, last)
    loaded = [
        load_run(data, [], 0, r.count) for r, (data, _, _) in zip(records, pieces, strict=True)
    ]
    assert [args for values in loaded for args, _ in values] == [(n,) for n in range(10)]
    assert middle.skip == 3  # the queue's own bookkeeping is unchanged


@pytest.mark.parametrize(
    "sizes",
    [[5, 5, 5], [5, 5], [5, 14, True], [5, 15, 0], [-5, 15, 10], [5.0, 10, 5], [5, 10, 5, 0], None],
)
def test_a_submitted_run_whose_sizes_do_not_cut_it_is_refused(sizes: Any) -> None:
    row = [0, 0, 20, 0, 3, sizes]  # a run of 3 inputs in 20 bytes (SUBMIT_*)
    with pytest.raises(RequestError, match="the run at input 0 has bad sizes"):
        _run_sizes(row)
    assert _run_sizes([0, 0, 20, 0, 3, [5, 10, 5]]) == [5, 10, 5]
