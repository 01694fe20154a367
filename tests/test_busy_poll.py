"""While a thread waits on a ``.remote()`` call, nbscale's loop polls its sockets for up to
``busy_poll_us`` before it sleeps (``_loop._PollingSelector``): the reply is read without a
wake-up. It must never poll when told not to, never poll past its waits, and never turn a
sleep into a spin (an empty answer before the timeout would make the loop poll again)."""

from __future__ import annotations

import _thread
import asyncio
import selectors
import socket
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from conftest import wait_until

import nbscale
from nbscale import _client, _config, _loop


def test_after_polling_the_selector_sleeps_out_its_timeout() -> None:
    selector = _loop._PollingSelector()
    a, b = socket.socketpair()
    try:
        selector.register(a, selectors.EVENT_READ)
        selector.waits, selector.busy_poll_s = 1, 0.0002
        start = time.perf_counter()
        assert selector.select(0.05) == []
        assert time.perf_counter() - start >= 0.045  # not back after the 0.2 ms of polling
        b.send(b"x")
        [(key, events)] = selector.select(None)  # polled for: there at once
        assert key.fileobj is a and events == selectors.EVENT_READ
        selector.waits = 0
        assert len(selector.select(1.0)) == 1  # not polling: an ordinary select
    finally:
        selector.close()
        a.close()
        b.close()


@pytest.fixture
def polls(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[int]]:
    """How many times the loop's selector asks the kernel without waiting (``select(0)``)."""
    count = [0]
    inner = selectors.DefaultSelector.select

    def select(self: Any, timeout: float | None = None) -> Any:
        if timeout == 0:
            count[0] += 1
        return inner(self, timeout)

    monkeypatch.setattr(selectors.DefaultSelector, "select", select)
    yield count


@pytest.fixture(autouse=True)
def _busy_poll_as_usual(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setattr(_config, "_fresh_reads", {})  # what the environment says now
    yield
    _config._runtime.pop("busy_poll_us", None)


app = nbscale.App("test-busy-poll")


@app.function(min_containers=1, scaledown_window=5)
def noop(x: int) -> int:
    return x


@app.function(scaledown_window=5)
def fails(x: int) -> int:
    raise ValueError(f"bad input {x}")


@app.function(scaledown_window=5)
def slow(x: int) -> int:
    time.sleep(x)
    return x


def test_a_blocked_remote_call_is_polled_for_unless_told_not_to(polls: list[int]) -> None:
    f = noop
    assert f.remote(0) == 0  # the worker is up
    selector = _loop.get_loop().selector

    def polls_per_call(busy_poll_us: int) -> float:
        nbscale.config(busy_poll_us=busy_poll_us)
        before = polls[0]
        assert [f.remote(x) for x in range(50)] == list(range(50))
        wait_until(lambda: selector.waits == 0)  # nothing left polling once answered
        return (polls[0] - before) / 50

    off, on = polls_per_call(0), polls_per_call(150)
    assert off < 5  # the loop's own turns with callbacks ready
    assert on > 3 * off + 5, (off, on)


def test_nothing_polls_after_a_failed_call_or_an_aio_call() -> None:
    f, g = noop, fails
    selector = _loop.get_loop().selector
    with pytest.raises(ValueError, match="bad input 3"):
        g.remote(3)
    wait_until(lambda: selector.waits == 0)

    async def main() -> int:
        return int(await f.remote.aio(4))

    assert asyncio.run(main()) == 4
    wait_until(lambda: selector.waits == 0)


def test_nothing_polls_after_an_interrupted_call() -> None:
    slow.remote(0)
    selector = _loop.get_loop().selector
    timer = threading.Timer(0.5, _thread.interrupt_main)
    timer.start()
    with pytest.raises(KeyboardInterrupt):
        slow.remote(5)
    wait_until(lambda: selector.waits == 0)
    assert slow.remote(0) == 0


def test_many_threads_waiting_at_once_each_get_their_own_result() -> None:
    with ThreadPoolExecutor(16) as pool:
        assert list(pool.map(noop.remote, range(400))) == list(range(400))
    wait_until(lambda: _loop.get_loop().selector.waits == 0)


def test_a_bad_value_is_refused_naming_the_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    f = noop
    monkeypatch.setenv("NBSCALE_BUSY_POLL_US", "-5")
    with pytest.raises(nbscale.exceptions.InvalidError, match="busy_poll_us"):
        f.remote(1)
    client = _loop.get_loop().run(_client.get_client())
    assert not client.handlers and not client.lost_handlers  # nothing of the call kept
