"""Live views of real maps on real workers: the widget's models while and after a map runs,
the text bar, the throttling of updates, the progress setting, and the pools monitor."""

from __future__ import annotations

import asyncio
import io
import itertools
import re
import sys
import time
import types
from collections.abc import Iterator
from typing import Any

import comm
import pytest
from comm.base_comm import BaseComm
from conftest import wait_until

import nbscale
from nbscale._map_results import MapResults, zip_inputs
from nbscale._progress import CallProgress
from nbscale._views import choice, render
from nbscale._views.live import REFRESH_INTERVAL
from nbscale._views.text import StatusLine, TextBar
from nbscale._views.widget import MapWidget

app = nbscale.App("test-views")


@app.function(max_containers=2, scaledown_window=10)
def slow(x):
    time.sleep(0.05)
    if x % 10 == 3:
        raise ValueError(f"bad {x}")
    print(f"ok {x}")
    return x * 2


@app.function(max_containers=2, scaledown_window=10)
def fast(x):
    return x


@app.function(max_containers=1, scaledown_window=10)
def sleepy(seconds):
    time.sleep(seconds)
    return seconds


class RecordingView:
    """A MapView that keeps what it was told."""

    def __init__(self) -> None:
        self.shown = 0
        self.draws: list[tuple[float, int, dict[str, Any] | None]] = []
        self.outcome: str | None = "not finished"

    def show(self, progress: CallProgress) -> None:
        self.shown += 1

    def draw(self, progress: CallProgress, pool: Any) -> None:
        self.draws.append((time.monotonic(), progress.completed, pool))

    def finish(self, progress: CallProgress, pool: Any, outcome: str | None) -> None:
        self.outcome = outcome


@pytest.fixture
def comm_messages(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, Any]]:
    """Every message the widgets send to the front end, as (type, data)."""
    sent: list[tuple[str, Any]] = []

    class Recording(BaseComm):
        def publish_msg(self, msg_type: str, data: Any = None, *args: Any, **kw: Any) -> None:
            sent.append((msg_type, data))

    monkeypatch.setattr(comm, "create_comm", lambda *a, **kw: Recording(*a, **kw))
    return sent


@pytest.fixture
def progress_setting() -> Iterator[None]:
    yield
    nbscale.config(progress=None)


def _map(fn: nbscale.Function, n: int, view: Any, return_exceptions: bool = True) -> MapResults:
    progress = CallProgress(fn.name)
    return MapResults(fn, zip_inputs((range(n),), None), True, return_exceptions, progress, view)


def _indices(table_html: str, status: str) -> list[int]:
    return [int(i) for i in re.findall(rf"data-index='(\d+)' data-status='{status}'", table_html)]


def test_widget_models_follow_a_real_map_and_keep_its_failures(comm_messages, capsys):
    view = MapWidget()
    snapshots = []
    results = []
    for value in _map(slow, 40, view):
        results.append(value)
        snapshots.append((view.bar.value, view.bar.max, view.pool.value, view.table.value))
    assert len(results) == 40
    # while it ran: partial counts, a pool with containers, rows running on workers
    assert any(0 < value < 40 and top == 40 for value, top, _, _ in snapshots)
    assert any("pool: " in pool and "containers" in pool for _, _, pool, _ in snapshots)
    assert any(_indices(table, "running") for *_, table in snapshots)
    # after: every count, the failures in the table, the summary line displayed
    assert (view.bar.value, view.bar.max, view.bar.bar_style) == (40, 40, "danger")
    assert "36/40 done · 4 failed" in view.counts.value
    assert sorted(_indices(view.table.value, "failed")) == [3, 13, 23, 33]
    assert "ValueError(&#x27;bad 13&#x27;)" in view.table.value
    done_rows = _indices(view.table.value, "done")
    assert len(done_rows) == 20 and 39 in done_rows  # the latest results, not all 36
    assert "pool: 2 containers" in view.pool.value and "2 idle" in view.pool.value
    assert "slow: 40 inputs · 36 done · 4 failed" in view.title.value
    assert "slow: 40 inputs · 36 done · 4 failed" in capsys.readouterr().out
    # an input's stdout on demand
    view.index.value = 39
    view.stdout_button.click()
    assert "ok 39" in view.stdout.value
    view.show_stdout(1000)
    assert "not kept" in view.stdout.value
    # the bundle a notebook saves carries a text fallback besides the widget view
    bundle = view._repr_mimebundle_()
    assert "application/vnd.jupyter.widget-view+json" in bundle
    assert bundle["text/plain"].startswith("slow: 40 inputs")
    assert any(t == "comm_msg" for t, _ in comm_messages)


def test_a_map_of_20000_fast_inputs_sends_a_bounded_number_of_widget_updates(comm_messages):
    view = MapWidget()
    opened = len(comm_messages)
    started = time.monotonic()
    assert sum(1 for _ in _map(fast, 20_000, view)) == 20_000
    elapsed = time.monotonic() - started
    updates = [m for t, m in comm_messages[opened:] if t == "comm_msg"]
    # six models at most change per redraw, and redraws come at most every REFRESH_INTERVAL
    bound = 6 * (elapsed / REFRESH_INTERVAL + 3)
    assert len(updates) <= bound, (len(updates), elapsed)
    assert view.bar.value == 20_000
    assert "20,000/20,000 done" in view.counts.value


def test_the_view_redraws_while_no_result_arrives():
    view = RecordingView()
    assert list(_map(sleepy, 1, view)) == [0]  # warm the worker
    view = RecordingView()
    results = MapResults(sleepy, zip_inputs(([1.2],), None), True, False, None, view)
    assert list(results) == [1.2]
    waiting = [t for t, done, _ in view.draws if done == 0]
    assert len(waiting) >= 3  # woken at REFRESH_INTERVAL while the one input ran
    gaps = [b - a for a, b in itertools.pairwise(waiting)]
    assert all(gap >= REFRESH_INTERVAL * 0.9 for gap in gaps)
    assert view.shown == 1 and view.outcome is None
    assert view.draws[-1][2] is not None and view.draws[-1][2]["containers"]["idle"] == 1


def test_a_map_stopped_early_or_failing_says_so():
    view = RecordingView()
    it = iter(_map(slow, 30, view))
    next(it)
    it.close()
    assert view.outcome is not None and view.outcome.startswith("stopped early")
    view = RecordingView()
    with pytest.raises(ValueError, match="bad 3"):
        list(_map(slow, 10, view, return_exceptions=False))
    assert view.outcome == "stopped by ValueError"


def test_the_widget_says_which_limit_throttles_the_map(fresh_plane):
    fresh_plane(NBSCALE_MAX_PENDING_INPUTS="4")
    backlog = sleepy.spawn_map([0.3] * 6)  # one runs, five wait: over the limit of 4
    wait_until(lambda: sleepy.get_current_stats().backlog >= 4)

    class PoolLines(MapWidget):
        lines: list[str] = []

        def draw(self, progress: CallProgress, pool: Any) -> None:
            super().draw(progress, pool)
            self.lines.append(self.pool.value)

    view = PoolLines()
    results = MapResults(sleepy, zip_inputs(([0.0, 0.0],), None), True, False, None, view)
    assert list(results) == [0.0, 0.0]  # held back until the backlog drained, then done
    throttled = [line for line in view.lines if "throttled by the limit of" in line]
    assert throttled and "4 pending inputs per function" in throttled[0]
    assert "throttled" not in view.lines[-1]
    assert backlog.get(timeout=10, index=5) == 0.3


def test_the_text_bar_on_stderr(progress_setting, capsys):
    nbscale.config(progress="text")
    assert list(slow.map(range(40), return_exceptions=True))[:3] == [0, 2, 4]  # over 1 s
    err = capsys.readouterr().err
    assert "\r" not in err  # not a terminal: a line per update
    assert err.startswith("slow: starting\n") and "\nslow [" in err and "% · " in err
    assert "slow: 40 inputs · 36 done · 4 failed in " in err.splitlines()[-1]
    stream = io.StringIO()
    bar = TextBar(stream)
    progress = CallProgress("f", total=10, submitted=10, done=5)
    bar.draw(progress, None)
    line = stream.getvalue()
    assert line.startswith("f [##########..........]  50% · 5/10 done · ") and line.endswith("\n")
    assert "\r" not in line


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_on_a_terminal_the_status_line_is_redrawn_in_place_and_never_wraps(monkeypatch):
    line = StatusLine(Terminal())
    monkeypatch.setattr(line, "_columns", lambda: 30)  # a terminal 30 columns wide
    line.update("building worker image")
    line.update("a much longer line that would wrap on a terminal of 30 columns")
    line.update("short")
    line.finish("done: the line that stays, whatever its length")
    out = line.stream.getvalue()
    assert out == (
        "\rbuilding worker image"
        "\ra much longer line that woul…"  # 29 columns: cut, never wrapped
        "\rshort"
        + " " * 24  # what was longer is blanked out
        + "\rdone: the line that stays, whatever its length\n"
    )


def test_piped_status_lines_come_a_few_a_second_and_the_last_one_is_never_held_back():
    stream = io.StringIO()
    line = StatusLine(stream, interval=0.3)
    for i in range(100):  # a burst: the first is written, the rest wait for the interval
        line.update(f"step {i}")
    line.update("step 99")  # unchanged: nothing new to say
    assert stream.getvalue() == "step 0\n"
    wait_until(lambda: stream.getvalue() == "step 0\nstep 99\n", timeout=5)  # the timer's
    time.sleep(0.4)
    assert stream.getvalue() == "step 0\nstep 99\n"  # and only once
    line.update("step 100")
    line.update("step 101")
    line.finish("finished")  # the summary replaces what was waiting
    assert stream.getvalue().splitlines() == ["step 0", "step 99", "step 100", "finished"]


def test_the_widget_says_what_runs_the_workers_and_why(comm_messages):
    view = MapWidget()
    assert list(_map(fast, 3, view)) == [0, 1, 2]
    info = nbscale.status()
    assert info["launcher_reason"] == "launcher=process"  # conftest's setting
    assert view.pool.value.endswith("workers: local processes (launcher=process)</span>")


def test_for_each_and_async_maps_drive_the_view_too(progress_setting, capsys):
    nbscale.config(progress="widget")
    assert fast.for_each(range(5)) is None
    assert "fast: 5 inputs · 5 done" in capsys.readouterr().out

    async def consume() -> list[int]:
        values = [v async for v in fast.map.aio(range(3))]
        await fast.for_each.aio(range(4))
        return values

    assert asyncio.run(consume()) == [0, 1, 2]
    out = capsys.readouterr().out
    assert "fast: 3 inputs · 3 done" in out and "fast: 4 inputs · 4 done" in out


def test_progress_off_adds_nothing_to_a_map(progress_setting):
    nbscale.config(progress="off")
    results = MapResults(fast, zip_inputs((range(100),), None), True, False)
    assert list(results) == list(range(100))
    assert results.progress is None
    assert results.invocation is not None and results.invocation.progress is None


def test_the_progress_setting(monkeypatch, progress_setting):
    assert nbscale.config()["progress"] == "auto"
    monkeypatch.setenv("NBSCALE_PROGRESS", "text")
    assert nbscale.config()["progress"] == "text"
    assert nbscale.config(progress="off")["progress"] == "off"  # over the environment
    assert choice.open_view() is None
    with pytest.raises(nbscale.InvalidError, match="progress"):
        nbscale.config(progress="loud")
    with pytest.raises(nbscale.InvalidError, match="no setting 'colour'"):
        nbscale.config(colour="red")
    nbscale.config(progress=None)
    monkeypatch.setenv("NBSCALE_PROGRESS", "loud")
    with pytest.raises(nbscale.InvalidError, match="NBSCALE_PROGRESS"):
        choice.open_view()
    monkeypatch.delenv("NBSCALE_PROGRESS")


def test_auto_means_widget_in_a_kernel_text_on_a_terminal_else_off(monkeypatch):
    class Stderr(io.StringIO):
        def __init__(self, tty: bool) -> None:
            super().__init__()
            self.tty = tty

        def isatty(self) -> bool:
            return self.tty

    monkeypatch.setattr(sys, "stderr", Stderr(tty=True))
    assert choice.resolve("auto") == "text"
    monkeypatch.setattr(sys, "stderr", Stderr(tty=False))
    assert choice.resolve("auto") == "off"
    kernel_shell = types.SimpleNamespace(kernel=object())
    fake_ipython = types.SimpleNamespace(get_ipython=lambda: kernel_shell)
    monkeypatch.setitem(sys.modules, "IPython", fake_ipython)
    assert choice.resolve("auto") == "widget"
    assert choice.resolve("text") == "text"


def test_render_of_counts_gpus_and_limits():
    progress = CallProgress("f", total=100, submitted=60, done=40, failed=2)
    line = render.counts_line(progress)
    assert line.startswith("40/100 done · 2 failed · 0 running · 18 pending · ")
    assert "ETA" in line
    gpus = [
        {"name": "NVIDIA A100", "utilization": 30},
        {"name": "NVIDIA A100", "utilization": 40},
    ]
    assert render.gpus_text(gpus) == "2 x NVIDIA A100 (35% busy)"
    pool = {
        "containers": {"starting": 1, "busy": 2, "idle": 0, "draining": 0},
        "num_total_runners": 3,
        "backlog": 7,
        "gpus": gpus,
        "status": "scaling up to 3",
    }
    assert render.pool_line(pool, "1,000 inputs in flight per map") == (  # type: ignore[arg-type]
        "pool: 3 containers (1 starting, 2 busy, 0 idle) · 7 waiting · "
        "GPUs: 2 x NVIDIA A100 (35% busy) · throttled by the limit of 1,000 inputs in flight "
        "per map · scaling up to 3"
    )
    assert render.duration(125) == "2 min 5 s"


def test_monitor_shows_every_pool_until_stopped(comm_messages, capsys):
    assert fast.remote(1) == 1
    assert slow.remote(1) == 2
    monitor = nbscale.monitor(interval=0.1)
    try:
        wait_until(lambda: monitor.refreshes >= 3)
        assert "<td style='padding:0 8px;font-family:monospace'>fast</td>" in monitor.table.value
        assert "slow" in monitor.table.value
        assert "2 pools" in monitor.header.value or len(monitor.pools) >= 2
        assert monitor.running
    finally:
        monitor.stop()
    assert not monitor.running
    count = monitor.refreshes
    time.sleep(0.3)
    assert monitor.refreshes == count
    assert "fast" in monitor._repr_mimebundle_()["text/plain"]
    # a monitor stops by itself when its control plane is shut down (it never starts one)
    monitor = nbscale.monitor(interval=0.1)
    nbscale.shutdown()
    wait_until(lambda: not monitor.running)
    assert "shut down" in monitor.header.value
