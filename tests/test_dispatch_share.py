"""How many inputs the control plane hands one worker at a time (pure)."""

from __future__ import annotations

from nbscale_server.options import FunctionOptions
from nbscale_server.pool import Pool


def pool(seconds_per_input: float | None = None, **options) -> Pool:
    p = Pool.create("fn-test", "f", b"", FunctionOptions(**options), [], {}, None)
    if seconds_per_input is not None:
        p.observe_durations(seconds_per_input * 10, 10)
    return p


def test_guided_shares_shrink_as_the_work_runs_out():
    p = pool()  # nothing measured yet
    assert [p.share(pending, live=2) for pending in (400, 100, 8, 1)] == [100, 25, 2, 1]


def test_short_inputs_travel_a_millisecond_of_work_per_message():
    p = pool(seconds_per_input=10e-6)
    assert p.share(pending=256, live=2) == 100  # 1 ms of 10 us inputs
    assert p.share(pending=100_000, live=2) == 25_000  # guided share, above the floor


def test_a_batch_never_keeps_work_from_another_worker():
    """Six short inputs and two workers: three each, never all six on one."""
    assert pool(seconds_per_input=1e-6).share(pending=6, live=2) == 3


def test_a_tail_under_one_batch_goes_whole_to_a_worker_when_no_other_is_idle():
    """Halving it at each request would send 1,000 inputs of 1 us in ten messages."""
    p = pool(seconds_per_input=10e-6)
    assert p.share(pending=100, live=2, others_idle=False) == 100  # 1 ms of work: all
    assert p.share(pending=150, live=2, others_idle=False) == 75  # more: halves, as ever
    assert p.share(pending=100, live=2) == 50  # another worker is idle: shared
    assert pool(seconds_per_input=1e-3).share(pending=6, live=2, others_idle=False) == 2


def test_long_inputs_and_concurrent_slots():
    assert pool(seconds_per_input=2.0).share(pending=3, live=2) == 1
    assert pool(seconds_per_input=2.0, max_inputs=8).share(pending=3, live=2) == 8


def test_the_estimate_follows_the_inputs_as_they_change():
    p = pool(seconds_per_input=1e-6)
    for _ in range(20):
        p.observe_durations(0.5, 1)  # inputs became slow
    assert p.share(pending=40, live=4) == 5


def test_inputs_under_a_microsecond_still_travel_a_millisecond_of_work():
    """Packed noop inputs take ~0.3 us: capped at 1,000 a batch was 0.3 ms of work, and each
    worker waited a round trip per batch (Docker W1 0.8x of processes)."""
    p = pool(seconds_per_input=0.2e-6)
    assert p.share(pending=6000, live=2) == 3000  # an even split, not 1,000
