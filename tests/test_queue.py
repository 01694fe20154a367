"""QueueCore: the pure input-queue state machine (no I/O, a fake clock of plain floats)."""

from __future__ import annotations

import pytest

from nbscale_runtime.protocol import (
    STATUS_CANCELLED,
    STATUS_ERROR,
    STATUS_INIT_FAILED,
    STATUS_LOST,
    STATUS_OK,
    STATUS_SERIALIZATION,
    STATUS_TIMEOUT,
)
from nbscale_server.losses import MAX_INFRASTRUCTURE_LOSSES
from nbscale_server.queue import InputRecord, QueueCore, RetryPolicy


def rec(call_id: str, index: int, *, spawned: bool = False) -> InputRecord:
    return InputRecord(call_id, index, data=f"{call_id}/{index}".encode(), spawned=spawned)


def keys(records: list[InputRecord]) -> list[tuple[str, int]]:
    return [r.key for r in records]


def queue_with(
    n: int, call_id: str = "a", retries: RetryPolicy | None = None, *, spawned: bool = False
) -> QueueCore:
    q = QueueCore(retries)
    q.submit([rec(call_id, i, spawned=spawned) for i in range(n)])
    return q


# --- submit / take ------------------------------------------------------------------------


def test_take_is_fifo_and_assigns_first_attempt() -> None:
    q = queue_with(5)
    assert (q.num_pending, q.num_running) == (5, 0)

    first = q.take("w1", 2)
    assert keys(first) == [("a", 0), ("a", 1)]
    assert [(r.attempt, r.worker_id) for r in first] == [(1, "w1"), (1, "w1")]
    assert (q.num_pending, q.num_running) == (3, 2)

    rest = q.take("w2", 10)
    assert keys(rest) == [("a", 2), ("a", 3), ("a", 4)]
    assert all(r.attempt == 1 and r.worker_id == "w2" for r in rest)
    assert (q.num_pending, q.num_running) == (0, 5)
    assert (q.running_on("w1"), q.running_on("w2"), q.running_on("nobody")) == (2, 3, 0)
    assert q.take("w3", 4) == []


def test_submissions_from_several_calls_keep_arrival_order() -> None:
    q = QueueCore()
    q.submit([rec("a", 0), rec("a", 1)])
    q.submit([rec("b", 0)])
    q.submit([rec("a", 2)])
    assert keys(q.take("w", 4)) == [("a", 0), ("a", 1), ("b", 0), ("a", 2)]


# --- reports ------------------------------------------------------------------------------


def test_ok_report_is_final_and_reported_once() -> None:
    q = queue_with(1, retries=RetryPolicy(max_retries=3))
    [r] = q.take("w", 1)

    outcome = q.report("w", "a", 0, 1, STATUS_OK, now=5.0)
    assert outcome is not None
    assert outcome.record is r
    assert (outcome.status, outcome.final) == (STATUS_OK, True)
    assert r.worker_id is None
    assert (q.num_pending, q.num_running) == (0, 0)

    assert q.report("w", "a", 0, 1, STATUS_OK, now=6.0) is None


def test_error_with_retries_left_is_requeued_only_after_the_delay() -> None:
    q = queue_with(1, retries=RetryPolicy(max_retries=2, initial_delay=3.0))
    q.take("w", 1)

    outcome = q.report("w", "a", 0, 1, STATUS_ERROR, now=10.0)
    assert outcome is not None
    assert (outcome.status, outcome.final) == (STATUS_ERROR, False)
    assert (q.num_pending, q.num_running) == (1, 0)  # a delayed retry counts as pending
    assert q.next_retry_at() == 13.0

    assert q.take("w", 1) == []  # still waiting for its delay
    assert q.release_delayed(12.999) == 0
    assert q.take("w", 1) == []
    assert q.release_delayed(13.0) == 1
    assert q.next_retry_at() is None

    [again] = q.take("w2", 1)
    assert again.key == ("a", 0)
    assert (again.attempt, again.worker_id) == (2, "w2")


def test_retry_policy_delay_is_exponential_and_capped() -> None:
    policy = RetryPolicy(max_retries=10, backoff_coefficient=2.0, initial_delay=1.5, max_delay=10)
    assert [policy.delay(n) for n in range(1, 7)] == [1.5, 3.0, 6.0, 10, 10, 10]
    assert RetryPolicy(backoff_coefficient=3.0, initial_delay=1.0).delay(3) == 9.0


def test_queue_waits_the_growing_capped_delay_between_attempts() -> None:
    q = queue_with(1, retries=RetryPolicy(max_retries=5, initial_delay=1.0, max_delay=5.0))
    now = 100.0
    waits = []
    for attempt in range(1, 6):
        [r] = q.take("w", 1)
        assert r.attempt == attempt
        outcome = q.report("w", "a", 0, attempt, STATUS_ERROR, now)
        assert outcome is not None and not outcome.final
        retry_at = q.next_retry_at()
        assert retry_at is not None
        waits.append(retry_at - now)
        assert q.release_delayed(retry_at - 0.01) == 0
        assert q.release_delayed(retry_at) == 1
        now = retry_at + 0.5
    assert waits == [1.0, 2.0, 4.0, 5.0, 5.0]


def test_zero_delay_retry_goes_to_the_front_at_once() -> None:
    q = queue_with(3, retries=RetryPolicy(max_retries=1, initial_delay=0.0))
    q.take("w", 1)
    outcome = q.report("w", "a", 0, 1, STATUS_TIMEOUT, now=0.0)
    assert outcome is not None and not outcome.final
    assert q.next_retry_at() is None
    assert keys(q.take("w", 3)) == [("a", 0), ("a", 1), ("a", 2)]


def test_retries_exhausted_is_a_final_failure() -> None:
    q = queue_with(1, retries=RetryPolicy(max_retries=1, initial_delay=1.0))
    q.take("w", 1)
    first = q.report("w", "a", 0, 1, STATUS_ERROR, now=0.0)
    assert first is not None and not first.final
    q.release_delayed(1.0)
    [r] = q.take("w", 1)
    assert r.attempt == 2

    last = q.report("w", "a", 0, 2, STATUS_ERROR, now=2.0)
    assert last is not None
    assert (last.status, last.final, last.record.attempt) == (STATUS_ERROR, True, 2)
    assert (q.num_pending, q.num_running) == (0, 0)
    assert q.next_retry_at() is None


def test_no_retries_by_default() -> None:
    q = queue_with(1)
    q.take("w", 1)
    outcome = q.report("w", "a", 0, 1, STATUS_ERROR, now=0.0)
    assert outcome is not None and outcome.final
    assert q.num_pending == 0


@pytest.mark.parametrize(
    ("status", "retried"),
    [
        (STATUS_ERROR, True),
        (STATUS_TIMEOUT, True),
        (STATUS_LOST, True),
        (STATUS_INIT_FAILED, False),
        (STATUS_SERIALIZATION, False),
    ],
)
def test_which_statuses_are_retried(status: str, retried: bool) -> None:
    q = queue_with(1, retries=RetryPolicy(max_retries=3))
    q.take("w", 1)
    outcome = q.report("w", "a", 0, 1, status, now=0.0)
    assert outcome is not None
    assert (outcome.status, outcome.final) == (status, not retried)
    assert q.num_pending == (1 if retried else 0)


def test_cancelled_status_report_is_dropped() -> None:
    q = queue_with(1, retries=RetryPolicy(max_retries=3))
    q.take("w", 1)
    assert q.report("w", "a", 0, 1, STATUS_CANCELLED, now=0.0) is None
    assert (q.num_pending, q.num_running) == (0, 0)


# --- stale reports ------------------------------------------------------------------------


def test_report_for_wrong_attempt_is_stale_and_keeps_the_input_running() -> None:
    q = queue_with(1)
    q.take("w", 1)
    assert q.report("w", "a", 0, 2, STATUS_OK, now=0.0) is None
    assert q.report("w", "a", 0, 0, STATUS_OK, now=0.0) is None
    assert q.num_running == 1
    outcome = q.report("w", "a", 0, 1, STATUS_OK, now=0.0)
    assert outcome is not None and outcome.final


def test_report_from_unknown_or_other_worker_is_stale() -> None:
    q = queue_with(2)
    q.take("w1", 1)
    q.take("w2", 1)
    assert q.report("ghost", "a", 0, 1, STATUS_OK, now=0.0) is None
    assert q.report("w2", "a", 0, 1, STATUS_OK, now=0.0) is None  # a0 runs on w1
    assert q.report("w1", "a", 7, 1, STATUS_OK, now=0.0) is None  # no such index
    assert q.report("w1", "zzz", 0, 1, STATUS_OK, now=0.0) is None  # no such call
    assert (q.running_on("w1"), q.running_on("w2")) == (1, 1)


def test_report_after_worker_gone_is_stale_so_each_input_is_reported_once() -> None:
    q = queue_with(1)  # no retries: the loss is final
    q.take("w", 1)
    [lost] = q.worker_gone("w", now=1.0, running={("a", 0, 1)})
    assert (lost.record.key, lost.status, lost.final) == (("a", 0), STATUS_LOST, True)
    assert q.report("w", "a", 0, 1, STATUS_OK, now=2.0) is None
    assert q.report("w", "a", 0, 1, STATUS_ERROR, now=2.0) is None


def test_late_report_from_lost_worker_after_retry_went_elsewhere_is_stale() -> None:
    q = queue_with(1, retries=RetryPolicy(max_retries=1, initial_delay=1.0))
    q.take("w1", 1)
    [lost] = q.worker_gone("w1", now=0.0, running={("a", 0, 1)})
    assert not lost.final
    q.release_delayed(1.0)
    [r] = q.take("w2", 1)
    assert r.attempt == 2

    assert q.report("w1", "a", 0, 1, STATUS_OK, now=2.0) is None
    assert q.report("w1", "a", 0, 2, STATUS_OK, now=2.0) is None  # right attempt, wrong worker
    outcome = q.report("w2", "a", 0, 2, STATUS_OK, now=2.0)
    assert outcome is not None and outcome.final


# --- worker_gone --------------------------------------------------------------------------


def test_worker_gone_penalises_only_the_input_it_ran_and_requeues_the_rest_at_front() -> None:
    q = QueueCore(RetryPolicy(max_retries=2, initial_delay=5.0))
    q.submit([rec("a", i) for i in range(3)])
    q.submit([rec("b", 0)])
    taken = q.take("w1", 3)
    assert keys(taken) == [("a", 0), ("a", 1), ("a", 2)]
    assert q.num_pending == 1  # b0

    outcomes = q.worker_gone("w1", now=10.0, running={("a", 0, 1)})
    assert [(o.record.key, o.status, o.final) for o in outcomes] == [(("a", 0), STATUS_LOST, False)]
    assert q.next_retry_at() == 15.0  # the penalised one waits for its retry delay
    assert (q.num_pending, q.num_running, q.running_on("w1")) == (4, 0, 0)

    # a1, a2 go back in front of b0, in their order, and their attempt did not count.
    again = q.take("w2", 10)
    assert keys(again) == [("a", 1), ("a", 2), ("b", 0)]
    assert [r.attempt for r in again] == [1, 1, 1]

    q.release_delayed(15.0)
    [a0] = q.take("w2", 1)
    assert (a0.key, a0.attempt) == (("a", 0), 2)


def test_worker_gone_unstarted_inputs_keep_attempt_across_earlier_retries() -> None:
    q = queue_with(2, retries=RetryPolicy(max_retries=3, initial_delay=0.0))
    q.take("w1", 1)
    q.report("w1", "a", 0, 1, STATUS_ERROR, now=0.0)  # a0 back at the front, attempt 1 used
    taken = q.take("w2", 2)
    assert [(r.key, r.attempt) for r in taken] == [(("a", 0), 2), (("a", 1), 1)]

    assert q.worker_gone("w2", now=1.0, running=()) == []
    again = q.take("w3", 2)
    assert [(r.key, r.attempt) for r in again] == [(("a", 0), 2), (("a", 1), 1)]


def test_worker_gone_with_clean_exit_penalises_nobody() -> None:
    q = queue_with(3, retries=RetryPolicy(max_retries=0))
    q.take("w", 2)
    assert q.worker_gone("w", now=0.0, running=()) == []
    assert (q.num_pending, q.num_running) == (3, 0)
    assert keys(q.take("w2", 3)) == [("a", 0), ("a", 1), ("a", 2)]


def test_worker_gone_for_unknown_worker_is_a_no_op() -> None:
    q = queue_with(2)
    q.take("w", 1)
    assert q.worker_gone("ghost", now=0.0, running={("a", 0, 1)}) == []
    assert (q.num_pending, q.num_running) == (1, 1)


def test_worker_gone_skips_inputs_already_reported() -> None:
    q = queue_with(3)
    q.take("w", 3)
    q.report("w", "a", 0, 1, STATUS_OK, now=0.0)
    outcomes = q.worker_gone("w", now=1.0, running={("a", 0, 1), ("a", 1, 1)})
    assert [o.record.key for o in outcomes] == [("a", 1)]
    assert keys(q.take("w2", 5)) == [("a", 2)]


def test_worker_gone_blames_the_input_it_ran_wherever_it_stands_in_dispatch_order() -> None:
    """The defect: the first inputs dispatched were blamed, though the worker had finished
    them (their outputs still in its batch) and died running a later one."""
    q = queue_with(6)
    q.take("w", 6)
    for index in (0, 1):  # their outputs arrived
        q.report("w", "a", index, 1, STATUS_OK, now=0.0)
    [lost] = q.worker_gone("w", now=1.0, running={("a", 4, 1)})
    assert (lost.record.key, lost.final) == (("a", 4), True)
    assert keys(q.take("w2", 10)) == [("a", 2), ("a", 3), ("a", 5)]  # untouched: attempt 1
    assert [r.attempt for r in q.running["w2"].values()] == [1, 1, 1]


def test_a_running_entry_of_an_older_attempt_blames_nobody() -> None:
    q = queue_with(1, retries=RetryPolicy(max_retries=1, initial_delay=0.0))
    q.take("w1", 1)
    q.report("w1", "a", 0, 1, STATUS_ERROR, now=0.0)
    q.take("w2", 1)  # attempt 2
    assert q.worker_gone("w2", now=1.0, running={("a", 0, 1)}) == []
    assert [r.attempt for r in q.take("w3", 1)] == [2]


def test_infrastructure_losses_are_free_and_retried_at_once_until_too_many_in_a_row() -> None:
    q = queue_with(1, retries=RetryPolicy(max_retries=0))  # no retries for the user
    for attempt in (1, 2):
        [r] = q.take(f"w{attempt}", 1)
        assert r.attempt == attempt
        [lost] = q.worker_gone(f"w{attempt}", 0.0, {("a", 0, attempt)}, infrastructure=True)
        assert not lost.final and lost.status == STATUS_LOST
        assert q.num_pending == 1 and q.next_retry_at() is None  # at once, no backoff
    q.take("w3", 1)
    [lost] = q.worker_gone("w3", 0.0, {("a", 0, 3)}, infrastructure=True)
    assert lost.final and lost.record.infrastructure_streak == MAX_INFRASTRUCTURE_LOSSES


def test_a_generator_that_yielded_is_never_retried_not_even_for_the_infrastructure() -> None:
    q = queue_with(2)
    first, second = q.take("w1", 2)
    first.yielded = True  # its values reached the caller: a retry would replay them
    running = {("a", 0, 1), ("a", 1, 1)}
    lost, retried = q.worker_gone("w1", 0.0, running, infrastructure=True)
    assert (lost.record, lost.final, lost.status) == (first, True, STATUS_LOST)
    assert (retried.record, retried.final) == (second, False)  # it yielded nothing yet
    assert keys(q.take("w2", 2)) == [("a", 1)]


def test_a_user_failure_after_infrastructure_losses_is_charged_once_and_ends_the_streak() -> None:
    q = queue_with(1, retries=RetryPolicy(max_retries=1, initial_delay=0.0))
    q.take("w1", 1)
    q.worker_gone("w1", 0.0, {("a", 0, 1)}, infrastructure=True)
    q.take("w2", 1)
    retried = q.report("w2", "a", 0, 2, STATUS_ERROR, now=0.0)
    assert retried is not None and not retried.final  # 1 charged of 1 allowed retry
    assert retried.record.infrastructure_streak == 0
    q.take("w3", 1)
    final = q.report("w3", "a", 0, 3, STATUS_ERROR, now=0.0)
    assert final is not None and final.final and final.record.charged == 2


def test_a_worker_that_cannot_say_what_it_ran_leaves_suspects_that_run_alone() -> None:
    q = queue_with(4)
    q.take("w1", 3)
    assert q.worker_gone("w1", 0.0, running=None) == []  # nobody blamed on a guess
    [suspect] = q.take("w2", 10)  # alone, though it asked for more
    assert (suspect.key, suspect.suspect, suspect.attempt) == (("a", 0), True, 1)
    assert q.take("w2", 10) == []  # nothing else while it runs a suspect
    assert keys(q.take("w3", 1)) == [("a", 1)]  # the next suspect, alone on another
    assert q.confirm("w2", "a", 0, 1)
    [lost] = q.worker_gone("w2", 1.0, running=None)  # it said it started it: blamed
    assert (lost.record.key, lost.final) == (("a", 0), True)
    outcome = q.report("w3", "a", 1, 1, STATUS_OK, now=2.0)
    assert outcome is not None and not outcome.record.suspect
    assert keys(q.take("w3", 10)) == [("a", 2)]  # still a suspect: alone
    q.report("w3", "a", 2, 1, STATUS_OK, now=2.0)
    assert keys(q.take("w3", 10)) == [("a", 3)]  # not a suspect: with whatever follows


def test_a_suspect_lost_to_the_infrastructure_is_free_and_stays_alone() -> None:
    q = queue_with(2, retries=RetryPolicy(max_retries=0))
    q.take("w1", 2)
    q.worker_gone("w1", 0.0, running=None, infrastructure=True)  # a SIGKILL it cannot explain
    q.take("w2", 1)
    q.confirm("w2", "a", 0, 1)
    [lost] = q.worker_gone("w2", 1.0, running=None, infrastructure=True)
    assert not lost.final and lost.record.charged == 0  # free
    assert keys(q.take("w3", 10)) == [("a", 0)]  # still alone, until it ends


def test_cancelling_a_suspects_call_frees_its_worker() -> None:
    q = QueueCore()
    q.submit([rec("a", 0), rec("b", 0)])
    q.take("w1", 2)
    q.worker_gone("w1", 0.0, running=None)
    q.take("w2", 1)  # suspect a0, alone
    q.cancel("a")
    assert keys(q.take("w2", 10)) == [("b", 0)]


# --- cancel -------------------------------------------------------------------------------


def test_cancel_drops_pending_delayed_and_running_inputs_of_the_call() -> None:
    q = QueueCore(RetryPolicy(max_retries=1, initial_delay=10.0))
    q.submit([rec("a", i) for i in range(5)])
    q.submit([rec("b", i) for i in range(3)])
    q.take("w1", 2)  # a0, a1
    q.take("w2", 1)  # a2
    q.take("w3", 1)  # a3
    q.report("w3", "a", 3, 1, STATUS_ERROR, now=0.0)  # a3 delayed
    q.take("w3", 2)  # a4, b0
    q.take("w4", 1)  # b1
    assert (q.num_pending, q.num_running) == (2, 6)  # delayed a3 + b2; a0 a1 a2 a4 b0 b1
    assert q.next_retry_at() == 10.0

    busy = q.cancel("a")
    assert busy == {"w1", "w2", "w3"}
    assert (q.num_pending, q.num_running) == (1, 2)  # b2; b0, b1
    assert (q.running_on("w1"), q.running_on("w2"), q.running_on("w3")) == (0, 0, 1)
    assert q.next_retry_at() is None
    assert q.release_delayed(1_000.0) == 0

    for worker, index in [("w1", 0), ("w1", 1), ("w2", 2), ("w3", 4)]:
        assert q.report(worker, "a", index, 1, STATUS_OK, now=1.0) is None
        assert q.report(worker, "a", index, 1, STATUS_ERROR, now=1.0) is None
    assert q.worker_gone("w1", now=2.0, running={("a", 0, 1)}) == []

    assert keys(q.take("w5", 10)) == [("b", 2)]
    outcome = q.report("w3", "b", 0, 1, STATUS_OK, now=2.0)
    assert outcome is not None and outcome.final


def test_cancel_of_call_with_nothing_running_returns_no_workers() -> None:
    q = queue_with(3)
    assert q.cancel("a") == set()
    assert q.num_pending == 0
    assert q.take("w", 3) == []
    assert q.cancel("never-submitted") == set()


def test_cancelled_inputs_of_lost_worker_are_not_requeued_or_reported() -> None:
    q = QueueCore(RetryPolicy(max_retries=3))
    q.submit([rec("a", 0), rec("b", 0)])
    q.take("w", 2)
    q.cancel("a")
    outcomes = q.worker_gone("w", now=0.0, running={("a", 0, 1), ("b", 0, 1)})
    assert [o.record.key for o in outcomes] == [("b", 0)]
    q.release_delayed(100.0)
    assert keys(q.take("w2", 5)) == [("b", 0)]


# --- spawn_pending ------------------------------------------------------------------------


def test_spawn_pending_counts_spawned_inputs_not_yet_on_a_worker() -> None:
    q = QueueCore()
    q.submit([rec("s", i, spawned=True) for i in range(3)])
    q.submit([rec("m", 0), rec("m", 1)])
    q.submit([rec("t", i, spawned=True) for i in range(4)])
    assert q.spawn_pending == 7

    q.take("w1", 2)  # s0, s1
    assert q.spawn_pending == 5
    q.take("w2", 3)  # s2, m0, m1
    assert q.spawn_pending == 4
    q.take("w3", 1)  # t0
    assert q.spawn_pending == 3

    q.cancel("s")  # nothing of s is pending any more
    assert q.spawn_pending == 3
    q.cancel("t")  # drops t1..t3
    assert q.spawn_pending == 0
    assert q.num_pending == 0
    assert q.take("w4", 10) == []
    assert q.spawn_pending == 0


def test_spawn_pending_through_cancel_of_partly_taken_call() -> None:
    q = QueueCore()
    q.submit([rec("s", i, spawned=True) for i in range(5)])
    q.submit([rec("m", 0)])
    q.take("w", 2)
    assert q.spawn_pending == 3
    assert q.cancel("s") == {"w"}
    assert q.spawn_pending == 0
    assert keys(q.take("w", 10)) == [("m", 0)]
    assert q.spawn_pending == 0


def test_spawn_pending_stays_right_through_a_retry() -> None:
    q = queue_with(1, retries=RetryPolicy(max_retries=1, initial_delay=1.0), spawned=True)
    q.take("w", 1)
    q.report("w", "a", 0, 1, STATUS_ERROR, now=0.0)
    q.release_delayed(1.0)
    q.take("w", 1)
    assert q.spawn_pending == 0


def test_spawn_pending_counts_inputs_requeued_by_worker_gone() -> None:
    q = queue_with(3, spawned=True)
    q.take("w", 3)
    q.worker_gone("w", now=0.0, running={("a", 0, 1)})
    assert q.num_pending == 2
    assert q.spawn_pending == 2


def test_fail_pending_takes_every_waiting_input_with_its_counts() -> None:
    q = queue_with(5, retries=RetryPolicy(max_retries=1, initial_delay=3.0), spawned=True)
    q.take("w", 1)
    q.report("w", "a", 0, 1, STATUS_ERROR, now=0.0)  # its retry waits 3 s
    [running] = q.take("w", 1)
    assert (q.num_pending, q.spawn_pending, q.next_retry_at()) == (4, 4, 3.0)
    failed = q.fail_pending()
    assert keys(failed) == [("a", 2), ("a", 3), ("a", 4), ("a", 0)]
    assert (q.num_pending, q.spawn_pending, q.next_retry_at()) == (0, 0, None)
    assert q.release_delayed(10.0) == 0  # the retry is gone with the rest
    assert q.running_on("w") == 1 and running.key == ("a", 1)  # running inputs stay
