"""Admission limits: Modal's defaults, whole-or-nothing admission, readable descriptions."""

from __future__ import annotations

import pytest

from nbscale_server.limits import (
    SMALL_INPUT_BYTES,
    Admission,
    Limits,
    admit,
    describe,
    small_inputs,
)

DEFAULTS = Limits()


def admit_default(kind: str, n: int, **counts: int) -> Admission:
    base = {"pending": 0, "running": 0, "spawn_pending": 0, "call_in_flight": 0}
    return admit(DEFAULTS, kind, n, **(base | counts))


def test_modal_defaults() -> None:
    assert DEFAULTS.max_pending_inputs == 2_000
    assert DEFAULTS.max_total_inputs == 25_000
    assert DEFAULTS.max_inputs_in_flight_per_map == 1_000
    assert DEFAULTS.max_pending_spawn_inputs == 1_000_000


@pytest.mark.parametrize("kind", ["remote", "map"])
def test_under_the_limits_everything_is_accepted(kind: str) -> None:
    assert admit_default(kind, 10, pending=100, running=100) == Admission(10, None)


def test_remote_fits_exactly_up_to_the_pending_limit() -> None:
    assert admit_default("remote", 1, pending=1_999) == Admission(1)
    assert admit_default("remote", 2_000) == Admission(2_000)


@pytest.mark.parametrize(("pending", "n"), [(2_000, 1), (1_999, 2), (0, 2_001)])
def test_remote_over_pending_limit_is_refused_whole(pending: int, n: int) -> None:
    assert admit_default("remote", n, pending=pending) == Admission(0, "max_pending_inputs")


def test_remote_over_total_limit_is_refused_whole() -> None:
    result = admit_default("remote", 600, pending=100, running=24_500)
    assert result == Admission(0, "max_total_inputs")
    assert admit_default("remote", 400, pending=100, running=24_500) == Admission(400)


def test_tightest_limit_is_named() -> None:
    # Over both: 1,900 pending leaves room for 100; 24,950 total leaves room for 50.
    result = admit_default("remote", 200, pending=1_900, running=23_050)
    assert result == Admission(0, "max_total_inputs")
    result = admit_default("remote", 200, pending=1_990, running=0)
    assert result == Admission(0, "max_pending_inputs")


def test_map_over_its_in_flight_limit_is_throttled() -> None:
    result = admit_default("map", 100, call_in_flight=950)
    assert result == Admission(0, "max_inputs_in_flight_per_map")
    assert admit_default("map", 50, call_in_flight=950) == Admission(50)


def test_in_flight_per_map_does_not_apply_to_remote() -> None:
    assert admit_default("remote", 100, call_in_flight=950) == Admission(100)


def test_map_is_still_bound_by_function_limits() -> None:
    result = admit_default("map", 10, pending=1_995)
    assert result == Admission(0, "max_pending_inputs")


def test_spawn_is_limited_only_by_the_spawn_backlog() -> None:
    busy = {"pending": 50_000, "running": 50_000, "call_in_flight": 10_000}
    assert admit_default("spawn", 5_000, **busy) == Admission(5_000)
    assert admit_default("spawn", 10, spawn_pending=999_990, **busy) == Admission(10)
    result = admit_default("spawn", 11, spawn_pending=999_990, **busy)
    assert result == Admission(0, "max_pending_spawn_inputs")


def test_custom_limits_are_used() -> None:
    limits = Limits(max_pending_inputs=5, max_total_inputs=8)
    counts = {"running": 0, "spawn_pending": 0, "call_in_flight": 0}
    assert admit(limits, "remote", 5, pending=0, **counts) == Admission(5)
    assert admit(limits, "remote", 6, pending=0, **counts) == Admission(0, "max_pending_inputs")
    result = admit(limits, "remote", 3, pending=0, running=6, spawn_pending=0, call_in_flight=0)
    assert result == Admission(0, "max_total_inputs")


@pytest.mark.parametrize(
    ("limit", "number", "words"),
    [
        ("max_pending_inputs", "2,000", "pending inputs per function"),
        ("max_total_inputs", "25,000", "pending + running inputs per function"),
        ("max_inputs_in_flight_per_map", "1,000", "inputs in flight per map"),
        ("max_pending_spawn_inputs", "1,000,000", "pending spawned inputs per function"),
    ],
)
def test_describe_defaults(limit: str, number: str, words: str) -> None:
    text = describe(limit, DEFAULTS)
    assert text == f"{number} {words}"


def test_describe_uses_the_given_limits() -> None:
    text = describe("max_pending_inputs", Limits(max_pending_inputs=1_234_567))
    assert "1,234,567" in text
    assert "pending" in text


def test_a_map_of_small_inputs_holds_four_times_as_many_in_flight_and_pending() -> None:
    assert admit_default("map", 1_000, call_in_flight=3_001, small=True) == Admission(
        0, "max_inputs_in_flight_per_map"
    )
    assert admit_default("map", 1_000, call_in_flight=3_000, small=True) == Admission(1_000)
    assert admit_default("map", 1_000, pending=7_000, small=True) == Admission(1_000)
    assert admit_default("map", 1_000, pending=7_001, small=True) == Admission(
        0, "max_pending_inputs"
    )
    # the same counts for a map that sent a bigger input, and for .remote(): one by one
    assert admit_default("map", 100, call_in_flight=950) == Admission(
        0, "max_inputs_in_flight_per_map"
    )
    assert admit_default("remote", 1, pending=2_000, small=True) == Admission(
        0, "max_pending_inputs"
    )


def test_small_inputs_are_runs_averaging_a_kibibyte_or_less() -> None:
    def row(count: int, nbytes: int) -> list[object]:  # a submit-inputs row (SUBMIT_*)
        return [0, 0, nbytes, 0, count, []]

    assert small_inputs([row(500, 20 * 500), row(2, 2 * SMALL_INPUT_BYTES)])
    assert not small_inputs([row(500, 20 * 500), row(2, 2 * SMALL_INPUT_BYTES + 1)])
    assert not small_inputs([row(0, 10)])  # one input alone (a big one, or one of a .remote())


def test_a_small_maps_limit_says_how_many_small_inputs_it_holds() -> None:
    assert describe("max_pending_inputs", DEFAULTS, small=True) == (
        "2,000 pending inputs per function (8,000 small ones)"
    )
    assert describe("max_total_inputs", DEFAULTS, small=True) == (
        "25,000 pending + running inputs per function"
    )
