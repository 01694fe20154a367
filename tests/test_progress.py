"""The progress model a live view reads, fed by a real map on real workers."""

from __future__ import annotations

import time

import nbscale
from nbscale._map_results import MapResults, zip_inputs
from nbscale._progress import MAX_RECENT_ROWS, CallProgress

app = nbscale.App("test-progress")
retry_once = nbscale.Retries(max_retries=1, backoff_coefficient=1.0, initial_delay=0.0)


@app.function(max_containers=2, scaledown_window=5, retries=retry_once)
def sometimes(x):
    time.sleep(0.01)
    if x % 10 == 3:
        raise ValueError(f"bad {x}")
    print(f"ok {x}")
    return x


class RecordingProgress(CallProgress):
    """Remembers which workers the control plane said took inputs (whatever the timing)."""

    def __init__(self, function: str) -> None:
        super().__init__(function)
        self.workers_seen: set[str] = set()

    def dispatched(self, worker_id: str, indices: list[int]) -> None:
        self.workers_seen.add(worker_id)
        super().dispatched(worker_id, indices)


def test_progress_counts_rows_and_retries_of_a_real_map():
    progress = RecordingProgress("sometimes")
    results = MapResults(sometimes, zip_inputs((range(100),), None), True, True, progress)
    for _ in results:
        pass
    seen_running = progress.workers_seen
    assert progress.total == 100
    assert (progress.done, progress.failed) == (90, 10)
    assert progress.retries == 10  # each failing input was tried twice
    assert progress.completed == 100 and progress.pending == 0
    assert all(w.startswith("wk-") for w in seen_running) and seen_running
    failures = sorted(row.index for row in progress.failures)  # in the order they failed
    assert failures == [3, 13, 23, 33, 43, 53, 63, 73, 83, 93]
    assert all(row.summary == f"ValueError('bad {row.index}')" for row in progress.failures)
    assert len(progress.recent) == MAX_RECENT_ROWS  # bounded, not one row per input
    assert progress.stdout_of(99) == "ok 99\n"
    assert progress.rate > 0 and progress.eta == 0
