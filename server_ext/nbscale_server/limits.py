"""Admission limits for inputs: a pure decision, with Modal's defaults.

Submissions are admitted whole or not at all. ``.remote()`` and ``.spawn()`` over a limit are
refused with the limit's name; a ``.map()`` chunk that does not fit is sent again later (it is
throttled, and never fails for its size).

A map's in-flight window counts inputs, except that small ones count a fraction: while every
input of a map has travelled in runs whose pickles average at most ``SMALL_INPUT_BYTES``
(``small_inputs``), ``SMALL_INPUTS_PER_SLOT`` of them take one place of the window. A window of
1,000 then holds 4,000 such inputs (at most 4 MiB of pickles), enough to keep the workers fed
between round trips, where 1,000 trivial ones left them idle; the function's pending inputs
count them alike for that map's admission (or the bigger window would be throttled there).
The client and the control plane judge it from the same submit-inputs rows, so they count the
same way; a map that sends one bigger input is counted one by one from then on
(``map_limits``).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from typing import Any

from nbscale_runtime.protocol import SUBMIT_COUNT, SUBMIT_WHERE


@dataclass(frozen=True, slots=True)
class Limits:
    max_pending_inputs: int = 2_000  # per function, not yet on a worker
    max_total_inputs: int = 25_000  # per function, pending + running
    max_inputs_in_flight_per_map: int = 1_000  # per .map() call, sent and not yet returned
    max_pending_spawn_inputs: int = 1_000_000  # per function, from .spawn()/.spawn_map()


SMALL_INPUT_BYTES = 1024  # average pickle of a run's inputs, at most, for them to be small
SMALL_INPUTS_PER_SLOT = 4  # small inputs that take one place of a map's in-flight window


def small_inputs(rows: Iterable[Sequence[Any]]) -> bool:
    """Whether submit-inputs ``rows`` hold small inputs only: runs (one input alone is
    never small) whose pickles average at most ``SMALL_INPUT_BYTES``."""
    return all(
        (count := row[SUBMIT_COUNT]) > 0 and row[SUBMIT_WHERE][1] <= count * SMALL_INPUT_BYTES
        for row in rows
    )


def map_limits(limits: Limits, small: bool) -> Limits:
    """The limits a map's submissions meet: while all it sent were small, its window and
    the function's pending inputs hold ``SMALL_INPUTS_PER_SLOT`` times as many."""
    if not small:
        return limits
    return replace(
        limits,
        max_inputs_in_flight_per_map=limits.max_inputs_in_flight_per_map * SMALL_INPUTS_PER_SLOT,
        max_pending_inputs=limits.max_pending_inputs * SMALL_INPUTS_PER_SLOT,
    )


@dataclass(frozen=True, slots=True)
class Admission:
    accepted: int
    limit: str | None = None  # the limit that refused or throttled the rest


def describe(limit: str, limits: Limits, small: bool = False) -> str:
    """``limit`` as a user reads it; ``small``: for a map of small inputs (``map_limits``)."""
    value = getattr(limits, limit)
    text = {
        "max_pending_inputs": f"{value:,} pending inputs per function",
        "max_total_inputs": f"{value:,} pending + running inputs per function",
        "max_inputs_in_flight_per_map": f"{value:,} inputs in flight per map",
        "max_pending_spawn_inputs": f"{value:,} pending spawned inputs per function",
    }[limit]
    if small and limit in ("max_pending_inputs", "max_inputs_in_flight_per_map"):
        text += f" ({getattr(map_limits(limits, True), limit):,} small ones)"
    return text


def admit(
    limits: Limits,
    kind: str,
    n: int,
    *,
    pending: int,
    running: int,
    spawn_pending: int,
    call_in_flight: int,
    small: bool = False,
) -> Admission:
    """How many of ``n`` new inputs of a call of ``kind`` ("map", "remote", "spawn") fit;
    ``small``: all the map's inputs so far, these included, were small (``small_inputs``)."""
    if kind == "map":
        limits = map_limits(limits, small)
    if kind == "spawn":
        room = {"max_pending_spawn_inputs": limits.max_pending_spawn_inputs - spawn_pending}
    else:
        room = {
            "max_pending_inputs": limits.max_pending_inputs - pending,
            "max_total_inputs": limits.max_total_inputs - pending - running,
        }
        if kind == "map":
            room["max_inputs_in_flight_per_map"] = (
                limits.max_inputs_in_flight_per_map - call_in_flight
            )
    tightest = min(room, key=lambda name: room[name])
    if room[tightest] >= n:
        return Admission(n)
    return Admission(0, tightest)
