"""The progress model a live view reads, fed by real maps on real workers: counts,
attempts, retries, tracebacks, and a running input's output streamed from its worker."""

from __future__ import annotations

import sys
import time
from typing import Any

import nbscale
from nbscale._map_results import MapResults, zip_inputs
from nbscale._progress import CallProgress

app = nbscale.App("test-progress")
retry_once = nbscale.Retries(max_retries=1, backoff_coefficient=1.0, initial_delay=0.0)


@app.function(max_containers=2, scaledown_window=5, retries=retry_once)
def sometimes(x):
    time.sleep(0.01)
    if x % 10 == 3:
        raise ValueError(f"bad {x}")
    print(f"ok {x}")
    return x


@app.function(max_containers=1, scaledown_window=5)
def chatty(steps):
    for i in range(steps):
        print(f"step {i}", flush=True)
        print(f"warning {i}", file=sys.stderr)
        time.sleep(0.3)
    return steps


class RecordingProgress(CallProgress):
    """Remembers which workers the control plane said took inputs, and what running inputs
    were heard printing (whatever the timing)."""

    def __init__(self, function: str, total: int | None = None, kept: int = 100) -> None:
        super().__init__(function, total, kept=kept)
        self.workers_seen: set[str] = set()
        self.streamed: list[tuple[int, str, int]] = []  # (index, text, done so far)

    def dispatched(self, worker_id: str, indices: list[int]) -> None:
        self.workers_seen.add(worker_id)
        super().dispatched(worker_id, indices)

    def started(self, index: int, attempt: int, started_at: float, text: str) -> None:
        self.streamed.append((index, text, self.done))
        super().started(index, attempt, started_at, text)


def test_progress_counts_rows_attempts_and_retries_of_a_real_map():
    progress = RecordingProgress("sometimes", kept=20)
    results = MapResults(sometimes, zip_inputs((range(100),), None), True, True, progress)
    for _ in results:
        pass
    snap = progress.snapshot()
    c = snap.counts
    assert c.total == 100 and (c.done, c.failed, c.cancelled) == (90, 10, 0)
    assert c.retries == 10  # each failing input was tried twice
    assert c.running == c.pending == 0 and snap.finished and snap.eta is None
    assert all(w.startswith("wk-") for w in progress.workers_seen) and progress.workers_seen
    failures = [row.index for row in progress.failures]  # in the order they failed
    assert sorted(failures) == [3, 13, 23, 33, 43, 53, 63, 73, 83, 93]
    for row in progress.failures:
        assert row.summary == f"ValueError('bad {row.index}')"
        assert [a.number for a in row.attempts] == [1, 2]
        assert [a.outcome for a in row.attempts] == ["error", "error"]
        assert f"ValueError: bad {row.index}" in row.traceback
        assert "raised remotely in sometimes on worker wk-" in row.traceback
    assert len(progress.recent) == 20  # the latest results (progress_outputs_kept), bounded
    kept = progress.row(99)
    assert kept is not None and kept.output == "ok 99\n" and kept.attempts[0].duration
    assert snap.rate > 0


class QuietView:
    """A map view that shows nothing: a map that has one keeps a progress model."""

    def show(self, snap: Any) -> None:
        pass

    def draw(self, snap: Any, pool: Any, call: Any) -> None:
        pass

    def finish(self, snap: Any, pool: Any, call: Any, outcome: Any) -> None:
        pass


def test_the_outputs_kept_follow_the_setting_and_every_failure_stays(monkeypatch):
    monkeypatch.setenv("NBSCALE_PROGRESS_OUTPUTS_KEPT", "5")
    inputs = zip_inputs((range(40),), None)
    results = MapResults(sometimes, inputs, True, True, None, QuietView())
    assert len(list(results)) == 40
    progress = results.progress
    assert progress is not None
    assert len(progress.recent) == 5  # the latest results' output, as the setting says
    assert all(row.output == f"ok {row.index}\n" for row in progress.recent)
    assert sorted(row.index for row in progress.failures) == [3, 13, 23, 33]


def test_a_running_inputs_output_streams_to_its_view_before_it_ends():
    progress = RecordingProgress("chatty", 1)
    results = MapResults(chatty, zip_inputs(([5],), None), True, False, progress)
    assert list(results) == [5]
    early = [text for index, text, done in progress.streamed if done == 0 and text]
    assert early, progress.streamed  # heard while it ran, not only with its result
    heard = "".join(early)
    assert "step 0\n" in heard and "warning 0\n" in heard  # stdout and stderr
    row = progress.row(0)
    assert row is not None and row.output.count("step") == 5  # then all of it
    assert row.attempts[0].started_at is not None


def test_an_input_amid_a_run_streams_its_output_while_it_runs():
    progress = RecordingProgress("chatty", 3)
    results = MapResults(chatty, zip_inputs(([0, 3, 0],), None), True, False, progress)
    assert list(results) == [0, 3, 0]  # one run of three on the one worker
    early = [text for index, text, done in progress.streamed if index == 1 and done <= 1]
    assert "step 0\n" in "".join(early), progress.streamed  # heard before it ended
