"""How many inputs a worker asks for ahead of what it runs (pure: ``intake.more_wanted``)."""

from __future__ import annotations

from collections import deque
from types import SimpleNamespace
from typing import Any

from nbscale_runtime.intake import more_wanted


def worker(avg_seconds: float | None, slots: int = 1) -> Any:
    return SimpleNamespace(
        fn=object(),
        draining=False,
        queue=deque(),
        run_extra=0,
        running={},
        demand=0,
        slots=slots,
        avg_seconds=avg_seconds,
    )


def test_short_inputs_are_asked_for_ten_milliseconds_ahead():
    w = worker(avg_seconds=1e-3)
    assert more_wanted(w) == 1 + 10  # its slot, and 10 ms of 1 ms inputs
    assert w.demand == 11  # counted as asked for: not asked again meanwhile
    assert more_wanted(w) == 0


def test_inputs_under_a_microsecond_are_asked_for_by_the_thousands():
    """Packed noop inputs take ~0.3 us. Capped at 1,000 ahead, a worker held one batch of
    the control plane's and waited a round trip for the next (Docker W1 0.8x of processes)."""
    assert more_wanted(worker(avg_seconds=0.3e-6)) == 1 + 10_000


def test_nothing_measured_asks_for_its_slots():
    assert more_wanted(worker(avg_seconds=None, slots=4)) == 4
