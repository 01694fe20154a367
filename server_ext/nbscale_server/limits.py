"""Admission limits for inputs: a pure decision, with Modal's defaults.

Submissions are admitted whole or not at all. ``.remote()`` and ``.spawn()`` over a limit are
refused with the limit's name; a ``.map()`` chunk that does not fit is sent again later (it is
throttled, and never fails for its size).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Limits:
    max_pending_inputs: int = 2_000  # per function, not yet on a worker
    max_total_inputs: int = 25_000  # per function, pending + running
    max_inputs_in_flight_per_map: int = 1_000  # per .map() call, sent and not yet returned
    max_pending_spawn_inputs: int = 1_000_000  # per function, from .spawn()/.spawn_map()


@dataclass(frozen=True, slots=True)
class Admission:
    accepted: int
    limit: str | None = None  # the limit that refused or throttled the rest


def describe(limit: str, limits: Limits) -> str:
    value = getattr(limits, limit)
    return {
        "max_pending_inputs": f"{value:,} pending inputs per function",
        "max_total_inputs": f"{value:,} pending + running inputs per function",
        "max_inputs_in_flight_per_map": f"{value:,} inputs in flight per map",
        "max_pending_spawn_inputs": f"{value:,} pending spawned inputs per function",
    }[limit]


def admit(
    limits: Limits,
    kind: str,
    n: int,
    *,
    pending: int,
    running: int,
    spawn_pending: int,
    call_in_flight: int,
) -> Admission:
    """How many of ``n`` new inputs of a call of ``kind`` ("map", "remote", "spawn") fit."""
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
