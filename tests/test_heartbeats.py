"""The control plane's answers to heartbeats, against fake workers and a fake clock
(``fakes.py``): enough for a worker to know its control plane is there, not one per
heartbeat (at 1,000 workers, a send per worker per second was the main idle cost: see
bench/README.md, W8). Real workers that exit when their control plane is gone:
``test_lost_workers.py``."""

from __future__ import annotations

import itertools
from typing import Any

from fakes import Harness

from nbscale_runtime import protocol
from nbscale_server.options import FunctionOptions


def square(x: int) -> int:
    return x * x


def pongs_sent(h: Harness) -> list[float]:
    """The times (by the fake clock) of every pong the control plane sends from now on."""
    times: list[float] = []
    wire: Any = h.plane.outbox.workers
    forward = wire.send

    def send(frames: list[Any]) -> None:
        if isinstance(protocol.decode(frames[1:])[0], protocol.Pong):
            times.append(h.clock.now)
        forward(frames)

    wire.send = send
    return times


def test_pongs_reach_a_worker_well_within_its_timeout_but_not_per_heartbeat() -> None:
    timeout = 8.0  # the worker exits after this long without a word
    h = Harness(heartbeat_timeout=timeout)
    try:
        pongs = pongs_sent(h)
        pool = h.caller.register(square, FunctionOptions(min_containers=1))
        h.tick(steps=2)  # launched, then registered and heartbeating
        assert h.pool(pool)["containers"]["idle"] == 1
        beats = 40
        for _ in range(beats):
            h.tick(1.0)  # a heartbeat a second, each tick
        assert h.pool(pool)["containers"]["idle"] == 1  # heard, and not killed
        gaps = [b - a for a, b in itertools.pairwise(pongs)]
        assert pongs and max(gaps) <= timeout / 4 + 1.0  # well within its timeout
        assert len(pongs) <= beats / (timeout / 4) + 2  # not one per heartbeat
    finally:
        h.close()


def test_every_heartbeat_is_answered_when_the_timeout_is_short() -> None:
    h = Harness(heartbeat_timeout=2.0)  # a pong every 0.5 s at most: each 1 s beat gets one
    try:
        pongs = pongs_sent(h)
        h.caller.register(square, FunctionOptions(min_containers=1))
        h.tick(steps=2)
        before = len(pongs)
        for _ in range(10):
            h.tick(1.0)
        assert len(pongs) - before == 10
    finally:
        h.close()
