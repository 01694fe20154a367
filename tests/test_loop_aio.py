"""``.aio`` calls cross to nbscale's loop and back in batches (``LoopThread.run_aio``): each
gets its own outcome, a cancelled caller cancels its call there (or, when the call had
finished, runs what it asked for should its outcome reach nobody), and callers on several
loops at once are each answered on their own loop."""

from __future__ import annotations

import asyncio
import threading

import pytest

from nbscale._loop import get_loop, if_abandoned


async def echo(x: int) -> tuple[int, bool]:
    await asyncio.sleep(0)
    if x == 13:
        raise KeyError(x)
    return x, get_loop().in_loop()


def test_calls_gathered_each_get_their_own_outcome() -> None:
    async def main() -> list[object]:
        calls = [get_loop().run_aio(echo(x)) for x in range(500)]
        return await asyncio.gather(*calls, return_exceptions=True)

    outcomes = asyncio.run(main())
    assert isinstance(outcomes.pop(13), KeyError)
    assert outcomes == [(x, True) for x in range(500) if x != 13]


def test_a_cancelled_caller_cancels_its_call_on_the_loop() -> None:
    started, stopped = threading.Event(), threading.Event()

    async def forever() -> None:
        started.set()
        try:
            await asyncio.sleep(3600)
        finally:
            stopped.set()

    async def main() -> None:
        call = asyncio.ensure_future(get_loop().run_aio(forever()))
        await asyncio.get_running_loop().run_in_executor(None, started.wait, 10)
        call.cancel()
        with pytest.raises(asyncio.CancelledError):
            await call

    asyncio.run(main())
    assert stopped.wait(10)


def test_callers_on_several_loops_at_once_are_answered_on_their_own() -> None:
    results: dict[int, list[object]] = {}

    def caller(k: int) -> None:
        async def main() -> list[object]:
            return list(
                await asyncio.gather(*(get_loop().run_aio(echo(k * 1000 + x)) for x in range(200)))
            )

        results[k] = asyncio.run(main())

    threads = [threading.Thread(target=caller, args=(k,)) for k in range(1, 4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert {k: [r[0] for r in v] for k, v in results.items()} == {  # type: ignore[index]
        k: [k * 1000 + x for x in range(200)] for k in range(1, 4)
    }


def test_a_caller_that_stops_waiting_after_the_call_finished_runs_its_abandoned_hook() -> None:
    # Queue.get gives its items back this way when they would otherwise reach nobody
    def call_then(cancel: bool) -> bool:
        finished, abandoned = threading.Event(), threading.Event()

        async def call() -> int:
            if_abandoned(abandoned.set)
            finished.set()
            return 1

        async def main() -> None:
            caller = asyncio.ensure_future(get_loop().run_aio(call()))
            await asyncio.sleep(0)  # handed to nbscale's loop
            assert finished.wait(5)  # done there; this loop, blocked, has not seen it yet
            if not cancel:
                assert await caller == 1
                return
            caller.cancel()
            with pytest.raises(asyncio.CancelledError):
                await caller

        asyncio.run(main())
        return abandoned.wait(5 if cancel else 0.5)

    assert call_then(cancel=True)
    assert not call_then(cancel=False)
