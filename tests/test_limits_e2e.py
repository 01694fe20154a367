"""Queue limits on a real control plane: direct calls are refused, maps are throttled."""

from __future__ import annotations

import time

import pytest
from conftest import wait_until

import nbscale

app = nbscale.App("test-limits")


@app.function(max_containers=1, scaledown_window=5)
def nap(seconds):
    time.sleep(seconds)
    return seconds


def test_remote_over_the_pending_limit_is_refused_with_the_limit_named(fresh_plane):
    fresh_plane(NBSCALE_MAX_PENDING_INPUTS="2")
    call = nap.spawn_map([3.0] * 3)  # one runs on the only worker, two wait
    wait_until(lambda: nap.get_current_stats().num_running_inputs == 1)
    assert nap.get_current_stats().backlog == 2
    with pytest.raises(nbscale.ResourceExhaustedError, match="2 pending inputs per function"):
        nap.remote(0.0)
    call.cancel()


def test_remote_is_refused_when_the_function_is_full(fresh_plane):
    fresh_plane(NBSCALE_MAX_TOTAL_INPUTS="2")
    call = nap.spawn_map([3.0] * 2)
    wait_until(lambda: nap.get_current_stats().num_running_inputs >= 1)
    with pytest.raises(nbscale.ResourceExhaustedError, match="2 pending \\+ running") as info:
        nap.remote(0.0)
    assert info.value.limit == "max_total_inputs"
    call.cancel()


def test_map_over_the_limits_is_throttled_and_completes(fresh_plane):
    fresh_plane(NBSCALE_MAX_PENDING_INPUTS="5", NBSCALE_MAX_INPUTS_IN_FLIGHT_PER_MAP="4")
    fast = nap.with_options(max_containers=2)
    assert list(fast.map([0.01] * 40)) == [0.01] * 40


def test_map_under_a_pending_limit_smaller_than_its_chunks_completes(fresh_plane):
    fresh_plane(NBSCALE_MAX_PENDING_INPUTS="4")
    fast = nap.with_options(max_containers=2)
    assert list(fast.map([0.0] * 24)) == [0.0] * 24
