"""A worker's log: each line stamped with its time and input where Python wrote it, read back
by the control plane, and followed from a cursor (a byte offset in a local worker's log file;
Docker's timestamps for containers, in ``test_docker_calls.py``)."""

from __future__ import annotations

import io
import time
from pathlib import Path

import pytest
from conftest import worker_logs

import nbscale
from nbscale_runtime import capture
from nbscale_server.launchers.logs import follow_file, follow_stamped, strip_stamps

app = nbscale.App("test-worker-logs")


@app.function(max_containers=1, scaledown_window=30)
def chatty(x):
    print(f"working on {x}")
    print("two lines\nat once")
    return x


def _stream() -> tuple[io.StringIO, capture._RoutingStream]:
    log = io.StringIO()
    return log, capture._RoutingStream(log, 0)


def test_each_line_of_an_input_names_its_time_and_input_and_reads_back() -> None:
    log, stream = _stream()
    token = capture.start("fc-0123456789ab00000001", 17)
    before = time.time()
    print("first", file=stream)
    stream.write("a line in ")
    stream.write("three pieces")
    stream.write("\nand two\nmore\n")
    captured, _ = capture.finish(token)
    print("outside any input", file=stream)
    # the caller gets the text as printed; the log gets each line stamped once
    assert captured == "first\na line in three pieces\nand two\nmore\n"
    lines = [capture.parse_line(line) for line in log.getvalue().splitlines()]
    assert [line.text for line in lines] == [
        "first",
        "a line in three pieces",
        "and two",
        "more",
        "outside any input",
    ]
    assert [(line.call_id, line.index) for line in lines] == [
        *[("fc-0123456789ab00000001", 17)] * 4,
        (None, None),
    ]
    for line in lines:
        assert line.time is not None and before - 0.002 <= line.time <= time.time() + 0.002


def test_a_line_without_the_prefix_is_kept_whole_and_a_progress_bar_shows_its_last_state():
    plain = capture.parse_line("written by a C library\n")
    assert (plain.time, plain.call_id, plain.index, plain.text) == (
        None,
        None,
        None,
        "written by a C library",
    )
    bar = capture.parse_line("2025-01-02T03:04:05.678Z fc-1#2  10%|#\r 50%|###\r100%|#####\r\n")
    assert bar.text == "100%|#####" and bar.index == 2
    assert bar.time == pytest.approx(1735787045.678)
    empty = capture.parse_line("2025-01-02T03:04:05.678Z -\n")
    assert empty.text == "" and empty.call_id is None and empty.time is not None


def test_a_log_file_is_followed_by_offset_with_whole_lines_only(tmp_path: Path) -> None:
    path = tmp_path / "wk.log"
    path.write_bytes(b"one\ntwo\nthr")
    first = follow_file(str(path), None, 10, complete=False)
    assert first.text == "one\ntwo\n" and first.cursor == 8 and not first.skipped
    with path.open("ab") as f:
        f.write(b"ee\nfour\n")
    second = follow_file(str(path), first.cursor, 10, complete=False)
    assert second.text == "three\nfour\n" and second.cursor == path.stat().st_size
    assert follow_file(str(path), second.cursor, 10, complete=False).text == ""
    # the last lines only, when asked for the tail; a writer gone: its last line counts
    with path.open("ab") as f:
        f.write(b"five, unfinished")
    assert follow_file(str(path), None, 2, complete=True).text == "four\nfive, unfinished"
    # more than asked for since the cursor: the latest, said so
    behind = follow_file(str(path), 0, 2, complete=True)
    assert behind.text == "four\nfive, unfinished" and behind.skipped
    assert follow_file(str(tmp_path / "none.log"), None, 5, complete=False).text == ""


def test_docker_output_is_followed_by_its_timestamps() -> None:
    stamped = (
        "2025-01-02T03:04:05.1Z one\n"
        "2025-01-02T03:04:05.100002Z two\n"
        "2025-01-02T03:04:06.000000001Z three\n"
    )
    tail = follow_stamped(stamped, None, 2)
    assert tail.text == "two\nthree\n" and not tail.skipped
    # the time is in microseconds: exact in a JSON number, and past the line just seen
    one = follow_stamped(stamped, None, 3)
    assert follow_stamped(stamped, 1735787045_100000, 5).text == "two\nthree\n"
    assert follow_stamped(stamped, tail.cursor, 5).text == ""
    assert tail.cursor == one.cursor == 1735787046_000000 < 2**53
    assert follow_stamped(stamped, 0, 1).skipped
    assert strip_stamps(stamped) == "one\ntwo\nthree\n"


@pytest.mark.timeout(60)
def test_a_local_workers_log_is_followed_with_times_and_inputs() -> None:
    assert chatty.remote(1) == 1
    [pool] = [p for p in nbscale.status()["pools"] if p["function"] == "chatty"]
    [worker] = pool["workers"]
    first = worker_logs(worker["id"])
    [line] = [line for line in first["lines"] if line["text"] == "working on 1"]
    assert line["index"] == 0 and line["call_id"].startswith("fc-") and line["time"] > 0
    assert first["cursor"] is not None and not first["skipped"]

    assert list(chatty.map([7, 8])) == [7, 8]
    since = worker_logs(worker["id"], first["cursor"])
    texts = [(line["index"], line["text"]) for line in since["lines"]]
    assert texts == [
        (0, "working on 7"),
        (0, "two lines"),
        (0, "at once"),
        (1, "working on 8"),
        (1, "two lines"),
        (1, "at once"),
    ]
    assert worker_logs(worker["id"], since["cursor"])["lines"] == []
