"""``f.remote(...)`` on its own lane (``nbscale/_remote.py``), without the map engine: what
a single call promises still holds, and its result reaches the blocked caller straight from
the handler of the output (``_loop.Blocked``), only the caller's own."""

from __future__ import annotations

import _thread
import asyncio
import threading
import time
from pathlib import Path

import pytest
from conftest import wait_until

import nbscale
from nbscale import _client
from nbscale._loop import get_loop

app = nbscale.App("test-remote-lane")


@app.function(max_containers=1, scaledown_window=5)
def sleep_then_write(path: str, seconds: float) -> str:
    time.sleep(seconds)
    Path(path).write_text("finished")
    return path


@app.function(max_containers=1, scaledown_window=5)
def shout(x: int) -> int:
    print(f"shouting {x}")
    if x < 0:
        raise ValueError(f"negative: {x}")
    return x * 10


def _no_call_left() -> bool:
    client = get_loop().run(_client.get_client())
    return not client.handlers and not client.lost_handlers


def test_a_keyboard_interrupt_in_a_blocking_remote_cancels_its_input(tmp_path):
    marker = tmp_path / "written"
    sleep_then_write.remote(str(tmp_path / "warm"), 0)
    timer = threading.Timer(1.0, _thread.interrupt_main)
    timer.start()
    start = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        sleep_then_write.remote(str(marker), 4)
    assert time.monotonic() - start < 4  # the interrupt is not held up by the input
    wait_until(lambda: sleep_then_write.get_current_stats().num_running_inputs == 0, timeout=10)
    time.sleep(4)
    assert not marker.exists()  # the input was stopped, not left to run to its end
    assert _no_call_left()


def test_a_cancelled_remote_aio_cancels_its_input(tmp_path):
    marker = tmp_path / "written"
    sleep_then_write.remote(str(tmp_path / "warm"), 0)

    async def impatient() -> None:
        await asyncio.wait_for(sleep_then_write.remote.aio(str(marker), 4), timeout=1.0)

    with pytest.raises(TimeoutError):
        asyncio.run(impatient())
    wait_until(lambda: sleep_then_write.get_current_stats().num_running_inputs == 0, timeout=10)
    time.sleep(4)
    assert not marker.exists()
    assert _no_call_left()


def test_results_errors_and_printed_output_reach_the_blocked_caller(capsys):
    for x in range(20):  # answered from the output's handler, one after the other
        assert shout.remote(x) == x * 10
    with pytest.raises(ValueError, match="negative: -1") as info:
        shout.remote(-1)
    assert "shout" in [frame.name for frame in info.traceback]  # the remote frames
    out = capsys.readouterr().out
    assert "shouting 19" in out and "shouting -1" in out
    assert out.count("shouting 3\n") == 1  # printed once, not again as the coroutine ends
    assert _no_call_left()


def test_a_call_that_awaits_a_remote_gets_its_own_result_not_the_remote_s():
    async def outer() -> str:
        inner = await shout.remote.aio(4)  # must not answer the thread blocked on outer
        await asyncio.sleep(0.05)
        return f"outer after {inner}"

    assert get_loop().run(outer()) == "outer after 40"
    results = get_loop().run(_gathered())
    assert results == [0, 10, 20]


async def _gathered() -> list[int]:
    return list(await asyncio.gather(*(shout.remote.aio(x) for x in range(3))))
