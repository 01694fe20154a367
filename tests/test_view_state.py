"""The view of a map, headless: the progress model driven by events in many random orders,
and the state the notebook display sends (``application/vnd.nbscale.map+json``), its HTML
and its text. Every refresh must show counts that add up, a percentage only when the total
is known, cancelled inputs as cancelled, and at most ``slots`` running inputs per worker."""

from __future__ import annotations

import json
import random
import re
from typing import Any

import pytest

from nbscale._progress import CallProgress, Snapshot
from nbscale._views import render
from nbscale._views.html import map_html, map_text
from nbscale._views.live import CallInfo, Outcome, outcome_of
from nbscale._views.state import MIME, map_state
from nbscale.exceptions import CallCancelledError, CallDetachedError

CALL = CallInfo("fc-1b61edf8a9c000000003", "server", "1b61edf8-aaaa")


def ended(index: int, status: str, worker: str = "wk-1", attempt: int = 1) -> tuple[Any, ...]:
    value: Any = index * 2 if status == "done" else ValueError(f"bad {index}")
    if status == "cancelled":
        value = CallCancelledError("f: the call was cancelled")
    tb = "Traceback ...\nValueError: bad\n" if status == "failed" else ""
    took = 0.0 if status == "cancelled" else 0.0012  # as the control plane cancels them
    return (index, status, value, worker, attempt, took, f"printed by {index}\n", tb)


def check(snap: Snapshot, slots: int, workers: dict[str, list[int]]) -> None:
    """What must hold of every refresh."""
    c = snap.counts
    states = (c.done, c.failed, c.cancelled, c.running, c.pending)
    assert all(n >= 0 for n in states), c
    assert c.of == (c.total if c.total is not None else c.submitted), c
    assert c.running <= sum(min(slots, len(held)) for held in workers.values()), c
    percent = render.percent(c)
    if c.total is None:
        assert percent is None and snap.eta is None
    else:
        assert percent == pytest.approx(100 * (c.done + c.failed) / c.total if c.total else 100)
    state = map_state(snap, None, CALL)
    assert state["counts"]["done"] + state["counts"]["failed"] == c.done + c.failed
    assert json.loads(json.dumps(state)) == state  # plain JSON, as the display sends it
    assert map_html(state) and map_text(state)


def simulate(rng: random.Random, n: int, known: bool, slots: int) -> CallProgress:
    """A map of ``n`` inputs on up to three workers, its events in a random order that a
    real map could produce: sent in chunks, handed to workers, started, retried, finished."""
    progress = CallProgress("f", n if known else None, slots=slots, kept=5)
    unsent = list(range(n))
    waiting: list[int] = []  # sent, not on a worker
    workers: dict[str, list[int]] = {}  # the inputs each worker holds, in order
    while unsent or waiting or any(workers.values()):
        move = rng.random()
        if unsent and move < 0.2:
            k = rng.randint(1, 7)
            chunk, unsent = unsent[:k], unsent[k:]
            waiting += chunk
            progress.sent(len(chunk), None)
        elif waiting and move < 0.45:
            worker = rng.choice(["wk-1", "wk-2", "wk-3"])
            k = rng.randint(1, 4)
            taken, waiting = waiting[:k], waiting[k:]
            workers.setdefault(worker, []).extend(taken)
            progress.dispatched(worker, taken)
        elif any(workers.values()) and move < 0.55:
            worker = rng.choice([w for w, held in workers.items() if held])
            progress.started(workers[worker][0], 1, 1000.0, "some output\n")
        elif any(workers.values()) and move < 0.6:  # an attempt failed: it waits again
            worker = rng.choice([w for w, held in workers.items() if held])
            index = workers[worker].pop(0)
            waiting.append(index)
            progress.retrying(index, 1, "error")
        elif any(workers.values()):
            worker = rng.choice([w for w, held in workers.items() if held])
            index = workers[worker].pop(0)
            status = rng.choice(["done", "done", "done", "failed", "cancelled"])
            progress.finished([ended(index, status, worker)])
        check(progress.snapshot(), slots, workers)
    progress.close(n)
    return progress


@pytest.mark.parametrize("seed", range(200))
def test_counts_add_up_at_every_refresh_whatever_the_order_of_events(seed):
    rng = random.Random(seed)
    n = rng.randint(0, 60)
    slots = rng.choice([1, 1, 2, 4])
    progress = simulate(rng, n, known=rng.random() < 0.5, slots=slots)
    snap = progress.snapshot()
    c = snap.counts
    assert c.total == n and c.completed == n and c.running == c.pending == 0
    assert snap.finished and snap.eta is None  # no ETA once it ended
    assert render.percent(c) == pytest.approx(100 * (c.done + c.failed) / n if n else 100)
    assert "ETA" not in render.counts_line(snap)


def test_a_total_known_beforehand_gives_a_percentage_and_an_eta_from_the_start():
    progress = CallProgress("f", 2000)
    progress.sent(256, None)
    progress.dispatched("wk-1", list(range(10)))
    progress.finished([ended(i, "done") for i in range(10)])
    snap = progress.snapshot()
    assert snap.counts.total == 2000 and snap.counts.pending == 1990
    assert render.percent(snap.counts) == pytest.approx(0.5)
    assert snap.eta is not None and snap.eta > 0
    assert render.counts_line(snap).startswith("10/2,000 done · 0 running · 1,990 pending · ")
    unknown = CallProgress("g")  # a generator: no len(), no total= given
    unknown.sent(256, None)
    unknown.finished([ended(0, "done")])
    snap = unknown.snapshot()
    assert render.percent(snap.counts) is None and snap.eta is None
    assert render.counts_line(snap).startswith("1 done · 0 running · 255 pending · ")
    state = map_state(snap, None, CALL)
    assert state["percent"] is None and "%" not in map_html(state)


def test_a_worker_runs_its_slots_and_queues_the_rest():
    progress = CallProgress("f", 100, slots=1)
    progress.sent(100, None)
    progress.dispatched("wk-1", list(range(11)))  # a worker prefetches short inputs
    snap = progress.snapshot()
    assert (snap.counts.running, snap.counts.pending) == (1, 99)  # not "11 running"
    assert [r.status for r in snap.rows[:3]] == ["running", "queued", "queued"]
    progress.finished([ended(0, "done")])
    snap = progress.snapshot()
    assert snap.rows[0].index == 1 and snap.rows[0].status == "running"


def test_cancelled_inputs_are_cancelled_never_failed():
    progress = CallProgress("f", 400)
    progress.sent(400, None)
    progress.dispatched("wk-1", list(range(29)))
    progress.finished([ended(i, "done") for i in range(29)])
    # cancelled from the sidebar: the control plane ends the unfinished inputs
    progress.finished([ended(i, "cancelled") for i in range(29, 100)])
    progress.close(cancelled=True)
    snap = progress.snapshot()
    c = snap.counts
    assert (c.done, c.failed, c.cancelled, c.pending) == (29, 0, 371, 0)
    outcome = outcome_of(CallCancelledError("f: the call was cancelled"), c.failed)
    state = map_state(snap, None, CALL, outcome)
    assert state["status"] == "cancelled" and state["final"]
    assert state["summary"] == (
        f"f: 400 inputs · 29 done · 371 cancelled in {render.duration(snap.elapsed)} "
        f"({render._rate(snap.rate)}) · cancelled"
    )
    assert "failed" not in map_html(state)
    # the bar says how much ran: 29 of 400, not 100 %; a cancelled input never ran, so
    # it has no time
    assert state["percent"] == pytest.approx(100 * 29 / 400) and ">7%<" in map_html(state)
    [row] = [r for r in state["rows"] if r["index"] == 99]
    assert row["status"] == "cancelled" and row["time"] == "" and row["duration"] is None


def test_durations_have_a_precision_that_fits():
    assert [render.duration(s) for s in (0.000085, 0.0012, 0.0042, 0.12, 1.5, 12.4, 200)] == [
        "85 µs",
        "1.2 ms",
        "4.2 ms",
        "120 ms",
        "1.5 s",
        "12 s",
        "3 min 20 s",
    ]


def test_the_drill_down_has_attempts_streamed_output_and_tracebacks():
    progress = CallProgress("f", 3, kept=1)
    progress.sent(3, None)
    progress.dispatched("wk-1", [0, 1, 2])
    progress.started(0, 1, progress.started_wall + 0.5, "step 1\n")
    progress.started(0, 1, progress.started_wall + 0.5, "step 2\n")
    running = map_state(progress.snapshot(), None, CALL)["rows"][0]
    assert running["status"] == "running" and running["output"] == "step 1\nstep 2\n"
    assert running["attempts"] == [
        {"number": 1, "worker": "wk-1", "start": 0.5, "duration": None, "outcome": "running"}
    ]
    progress.retrying(0, 1, "lost")
    progress.dispatched("wk-2", [0])
    progress.finished([ended(0, "failed", "wk-2", attempt=2), ended(1, "done"), ended(2, "done")])
    progress.close(3)
    rows = {r["index"]: r for r in map_state(progress.snapshot(), None, CALL)["rows"]}
    failed = rows[0]
    assert [(a["number"], a["worker"], a["outcome"]) for a in failed["attempts"]] == [
        (1, "wk-1", "lost"),
        (2, "wk-2", "error"),
    ]
    assert failed["traceback"].endswith("ValueError: bad\n") and failed["time"] == "1.2 ms"
    assert failed["output"] == "printed by 0\n"  # the whole output, once it ended
    # kept: every failure, and the last ``kept`` other inputs
    assert sorted(rows) == [0, 2] and progress.row(1) is None


def test_the_final_state_is_a_static_summary_with_the_first_failures():
    progress = CallProgress("square", 40)
    progress.sent(40, None)
    progress.dispatched("wk-1", list(range(40)))
    progress.finished([ended(i, "failed" if i % 10 == 3 else "done") for i in range(40)])
    progress.close(40)
    snap = progress.snapshot()
    state = map_state(snap, None, CALL, outcome_of(None, 4))
    assert state["final"] and state["status"] == "failed"
    assert [f["index"] for f in state["failures"]] == [3, 13, 23, 33]
    html = map_html(state)
    assert "square: 40 inputs · 36 done · 4 failed in " in html
    assert "input 13: ValueError(&#x27;bad 13&#x27;)" in html
    assert "width:90.00%" in html and "width:10.00%" in html  # done, failed: the bar
    assert "100%" in html  # and the words
    assert map_text(state).startswith("square: 40 inputs · 36 done · 4 failed in ")
    assert MIME == "application/vnd.nbscale.map+json"


def test_a_detached_map_says_how_to_get_the_rest():
    progress = CallProgress("f", 10)
    progress.sent(10, None)
    progress.finished([ended(i, "done") for i in range(3)])
    error = CallDetachedError(
        "f: detached", CALL.call_id, 'nbscale.FunctionCall.from_id("x").iter()'
    )
    progress.close(cancelled=False)
    outcome = outcome_of(error)
    call = CallInfo(CALL.call_id, "server", None, error.resume)
    state = map_state(progress.snapshot(), None, call, outcome)
    assert state["status"] == "detached" and state["resume"] == error.resume
    assert state["counts"]["cancelled"] == 0 and state["counts"]["pending"] == 7
    assert "FunctionCall.from_id(&quot;x&quot;).iter()" in map_html(state)


def test_the_pool_line_does_not_repeat_the_pools_backlog():
    pool: Any = {
        "containers": {"starting": 1, "busy": 2, "idle": 0, "draining": 0},
        "num_total_runners": 3,
        "backlog": 785,
        "gpus": [{"name": "NVIDIA A100", "utilization": 30}],
        "status": "scaling up to 3",
    }
    line = render.pool_line(pool, "1,000 inputs in flight per map", "workers: local processes")
    assert line == (
        "pool: 3 containers (1 starting, 2 busy, 0 idle) · GPUs: 1 x NVIDIA A100 (30% busy) · "
        "throttled by the limit of 1,000 inputs in flight per map · scaling up to 3 · "
        "workers: local processes"
    )
    assert not re.search(r"\b785\b", line)


def test_the_pool_line_counts_one_container_in_the_singular():
    pool: Any = {
        "containers": {"starting": 0, "busy": 0, "idle": 1, "draining": 0},
        "num_total_runners": 1,
        "gpus": [],
        "status": "scaling down to 1",
    }
    assert render.pool_line(pool, None).startswith("pool: 1 container (0 starting")


def test_states_stay_small_whatever_the_map():
    progress = CallProgress("f", 100_000)
    progress.sent(100_000, None)
    progress.dispatched("wk-1", list(range(1000)))
    huge = "x" * 100_000
    progress.finished(
        [(i, "failed", ValueError("e" * 500), "wk-1", 1, 0.1, huge, huge) for i in range(1000)]
    )
    state = map_state(progress.snapshot(), None, CALL, Outcome("failed"))
    assert len(json.dumps(state)) < 200_000
    assert len(state["rows"]) <= 30
