"""Live views of real maps on real workers: the notebook display's states while and after
a map runs (what the kernel sends the browser), the text bar, the throttling of updates, the
progress setting, and the pools monitor."""

from __future__ import annotations

import asyncio
import io
import itertools
import json
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
from nbscale._progress import CallProgress, Snapshot
from nbscale._views import choice, display, render
from nbscale._views.display import MapDisplay
from nbscale._views.live import REFRESH_INTERVAL, CallInfo, Outcome
from nbscale._views.state import MIME
from nbscale._views.text import StatusLine, TextBar

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
        self.snaps: list[Snapshot] = []
        self.outcome: Outcome | None = None

    def show(self, snap: Snapshot) -> None:
        self.shown += 1

    def draw(self, snap: Snapshot, pool: Any, call: CallInfo) -> None:
        self.draws.append((time.monotonic(), snap.counts.completed, pool))
        self.snaps.append(snap)

    def finish(self, snap: Snapshot, pool: Any, call: CallInfo, outcome: Outcome) -> None:
        self.snaps.append(snap)
        self.outcome = outcome


@pytest.fixture
def published(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, dict[str, Any]]]:
    """What notebook displays publish, as (display id, MIME bundle), in order."""
    sent: list[tuple[str, dict[str, Any]]] = []

    def publish(bundle: dict[str, Any], raw: bool, display_id: str) -> None:
        assert raw
        sent.append((display_id, json.loads(json.dumps(bundle))))  # as it goes on the wire

    monkeypatch.setattr(display, "display", publish)
    monkeypatch.setattr(display, "update_display", publish)
    return sent


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
    progress = CallProgress(fn.name, n, fn.options.max_inputs)
    return MapResults(fn, zip_inputs((range(n),), None), True, return_exceptions, progress, view)


def test_the_display_follows_a_real_map_and_keeps_its_failures(published, capsys):
    view = MapDisplay()
    results = list(_map(slow, 40, view))
    assert len(results) == 40
    ids = {display_id for display_id, _ in published}
    assert ids == {view.display_id}  # one output, updated in place: no second summary
    states = [bundle[MIME] for _, bundle in published]
    # while it ran: partial counts that add up, the percentage of inputs over, the pool
    for state in states[1:-1]:
        c = state["counts"]
        assert c["done"] + c["failed"] + c["cancelled"] + c["running"] + c["pending"] == 40
        assert state["percent"] == pytest.approx(100 * (c["done"] + c["failed"]) / 40)
        assert not state["final"]
    assert any(0 < s["counts"]["done"] < 36 for s in states)
    assert any(s["pool_text"].startswith("pool: ") for s in states)
    assert any(r["status"] == "running" for s in states for r in s["rows"])
    # after: a static summary with every count, the failures and their first lines
    final, bundle = states[-1], published[-1][1]
    assert final["final"] and final["status"] == "failed" and final["eta"] is None
    assert (final["counts"]["done"], final["counts"]["failed"]) == (36, 4)
    assert [f["index"] for f in final["failures"]] == [3, 13, 23, 33]
    assert final["summary"].startswith("slow: 40 inputs · 36 done · 4 failed in ")
    assert bundle["text/plain"] == final["summary"]
    assert "input 13: ValueError(&#x27;bad 13&#x27;)" in bundle["text/html"]
    # the drill-down: a failure's traceback and output, a result's output
    rows = {r["index"]: r for r in final["rows"]}
    assert (
        "raise ValueError" in rows[13]["traceback"]
        and "ValueError: bad 13" in rows[13]["traceback"]
    )
    assert rows[39]["output"] == "ok 39\n" and rows[39]["status"] == "done"
    assert "application/vnd.jupyter.widget-view+json" not in bundle  # nothing to lose
    assert "slow: 40 inputs" not in capsys.readouterr().out  # no second, printed summary


def test_a_map_of_20000_fast_inputs_sends_a_bounded_number_of_small_updates(published):
    view = MapDisplay()
    started = time.monotonic()
    assert sum(1 for _ in _map(fast, 20_000, view)) == 20_000
    elapsed = time.monotonic() - started
    # shown, redrawn at most every REFRESH_INTERVAL (one more as it ends), then the summary
    assert len(published) <= elapsed / REFRESH_INTERVAL + 4, (len(published), elapsed)
    assert max(len(json.dumps(bundle)) for _, bundle in published) < 100_000
    assert published[-1][1][MIME]["counts_text"].startswith("20,000/20,000 done")


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
    assert view.shown == 1 and view.outcome == Outcome("done")
    assert view.draws[-1][2] is not None and view.draws[-1][2]["containers"]["idle"] == 1


def test_a_map_stopped_early_or_failing_says_so_and_counts_the_rest_cancelled():
    view = RecordingView()
    it = iter(_map(slow, 30, view))
    next(it)
    it.close()
    assert view.outcome is not None and view.outcome.status == "stopped"
    assert view.outcome.text == "stopped early (the rest was cancelled)"
    c = view.snaps[-1].counts
    assert c.done + c.failed + c.cancelled == 30 and c.cancelled > 0 and c.pending == 0
    view = RecordingView()
    with pytest.raises(ValueError, match="bad 3"):
        list(_map(slow, 10, view, return_exceptions=False))
    assert view.outcome == Outcome("failed", "stopped by ValueError (the rest was cancelled)")
    c = view.snaps[-1].counts
    assert c.failed == 1 and c.done + c.failed + c.cancelled == 10  # never "9 failed"


def test_the_view_says_which_limit_throttles_the_map(fresh_plane):
    fresh_plane(NBSCALE_MAX_PENDING_INPUTS="2")
    # one runs, 11 wait: over the limit of 2, and of the 8 small inputs it makes for a map
    backlog = sleepy.spawn_map([0.2] * 12)
    wait_until(lambda: sleepy.get_current_stats().backlog >= 8)
    lines: list[str] = []

    class PoolLines(RecordingView):
        def draw(self, snap: Snapshot, pool: Any, call: CallInfo) -> None:
            lines.append(render.pool_line(pool, snap.throttled_by))

    results = MapResults(sleepy, zip_inputs(([0.0, 0.0],), None), True, False, None, PoolLines())
    assert list(results) == [0.0, 0.0]  # held back until the backlog drained, then done
    throttled = [line for line in lines if "throttled by the limit of" in line]
    assert throttled and "2 pending inputs per function (8 small ones)" in throttled[0]
    assert "throttled" not in lines[-1]
    assert backlog.get(timeout=10, index=11) == 0.2


def test_the_text_bar_on_stderr(progress_setting, capsys):
    nbscale.config(progress="text")
    assert list(slow.map(range(40), return_exceptions=True))[:3] == [0, 2, 4]  # over 1 s
    err = capsys.readouterr().err
    assert "\r" not in err  # not a terminal: a line per update
    assert err.startswith("slow: starting\n") and "\nslow [" in err and "% · " in err
    assert "slow: 40 inputs · 36 done · 4 failed in " in err.splitlines()[-1]
    stream = io.StringIO()
    bar = TextBar(stream)
    progress = CallProgress("f", total=10)
    progress.sent(10, None)
    progress.finished([(i, "done", i, "wk-1", 1, 0.1, "", "") for i in range(5)])
    bar.draw(progress.snapshot(), None, CallInfo())
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


def test_the_view_says_what_runs_the_workers_and_why(published):
    view = MapDisplay()
    assert list(_map(fast, 3, view)) == [0, 1, 2]
    info = nbscale.status()
    assert info["launcher_reason"] == "launcher=process"  # conftest's setting
    assert published[-1][1][MIME]["pool_text"].endswith(
        "workers: local processes (launcher=process)"
    )


def test_for_each_and_async_maps_drive_the_view_too_with_their_totals(progress_setting, published):
    nbscale.config(progress="widget")
    assert fast.for_each(range(5)) is None
    assert published[-1][1][MIME]["summary"].startswith("fast: 5 inputs · 5 done")
    assert published[0][1][MIME]["counts"]["total"] == 5  # len(), known from the start

    async def consume() -> list[int]:
        values = [v async for v in fast.map.aio(range(3))]
        await fast.for_each.aio((x for x in range(4)), total=4)  # no len(): total= says
        return values

    published.clear()
    assert asyncio.run(consume()) == [0, 1, 2]
    summaries = [b[MIME]["summary"] for _, b in published if b[MIME]["final"]]
    assert summaries[0].startswith("fast: 3 inputs · 3 done")
    assert summaries[1].startswith("fast: 4 inputs · 4 done")
    assert all(b[MIME]["counts"]["total"] in (3, 4) for _, b in published)


def test_without_a_known_total_there_is_no_percentage(progress_setting, published):
    nbscale.config(progress="widget")
    assert list(fast.map(x for x in range(50))) == list(range(50))
    unknown = [b[MIME] for _, b in published if b[MIME]["counts"]["total"] is None]
    assert unknown and all(s["percent"] is None and s["eta"] is None for s in unknown)
    assert published[-1][1][MIME]["counts"]["total"] == 50  # known once they ran out


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


def test_render_of_gpus_and_durations():
    gpus = [
        {"name": "NVIDIA A100", "utilization": 30},
        {"name": "NVIDIA A100", "utilization": 40},
    ]
    assert render.gpus_text(gpus) == "2 x NVIDIA A100 (35% busy)"
    assert render.duration(125) == "2 min 5 s"


def test_monitor_shows_every_pool_until_stopped(comm_messages, capsys):
    assert fast.remote(1) == 1
    assert slow.remote(1) == 2
    monitor = nbscale.monitor(interval=0.1)
    try:
        wait_until(lambda: monitor.refreshes >= 3)
        assert "'>fast</td>" in monitor.table.value
        assert "slow" in monitor.table.value
        assert "2 pools" in monitor.header.value or len(monitor.pools) >= 2
        assert monitor.running
    finally:
        monitor.stop()
    assert not monitor.running
    assert monitor.header.value.endswith(" · stopped</span>")  # not read as live figures
    count = monitor.refreshes
    time.sleep(0.3)
    assert monitor.refreshes == count
    assert "fast" in monitor._repr_mimebundle_()["text/plain"]
    # a monitor stops by itself when its control plane is shut down (it never starts one)
    monitor = nbscale.monitor(interval=0.1)
    nbscale.shutdown()
    wait_until(lambda: not monitor.running)
    assert "shut down" in monitor.header.value
