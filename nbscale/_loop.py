"""The one background event loop of this process, and the bridges into it.

All of nbscale's I/O runs as coroutines on a daemon thread's loop. Blocking calls submit a
coroutine there and wait, which works the same from a script and from a Jupyter cell whose own
loop is running (nothing is nested). ``.aio`` calls await the same coroutine from the caller's
loop. Written once, exposed twice.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import threading
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from ._tracebacks import hidden

T = TypeVar("T")

_lock = threading.Lock()
_instance: LoopThread | None = None
# On a worker: lends the worker's slot while a blocking call waits, and returns what
# rejoins (or None where it cannot lend); see ``_nested.py``.
on_block: Callable[[], Callable[[], None] | None] | None = None
_LEND_AFTER = 0.05  # seconds a call blocks before its worker lends its slot


class LoopThread:
    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.pid = os.getpid()
        self.thread = threading.Thread(target=self._run, name="nbscale-loop", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()

    def in_loop(self) -> bool:
        return threading.get_ident() == self.thread.ident

    def submit(self, coro: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    def run(self, coro: Coroutine[Any, Any, T], on_interrupt: Any = None) -> T:
        """Run ``coro`` on the loop and block until it is done.

        On KeyboardInterrupt (Ctrl-C, or "interrupt kernel" in Jupyter) the coroutine is
        cancelled and ``on_interrupt`` (a coroutine function) runs before the interrupt
        propagates, so that remote work is cancelled too."""
        __tracebackhide__ = hidden()  # IPython leaves this frame out of tracebacks
        if self.in_loop():
            coro.close()
            raise RuntimeError("blocking nbscale call made from nbscale's own loop")
        # A bare lock released by the coroutine's last step, rather than a concurrent
        # Future: one loop turn and a condition variable less per call (~10 us).
        done = threading.Lock()
        done.acquire()
        outcome: list[Any] = []
        tasks: list[asyncio.Task[None]] = []
        self.loop.call_soon_threadsafe(
            lambda: tasks.append(self.loop.create_task(_settle(coro, outcome, done)))
        )
        rejoin = None
        try:
            finished = done.acquire(timeout=_LEND_AFTER)
            if not finished and on_block is not None:
                rejoin = on_block()
            # Wake up now and then: a KeyboardInterrupt raised by a signal that landed on
            # another thread (or by ``_thread.interrupt_main``) is only seen between waits.
            while not finished:
                finished = done.acquire(timeout=0.2)
        except BaseException as exc:  # Ctrl-C, or on a worker, this input cancelled
            self.loop.call_soon_threadsafe(lambda: tasks[0].cancel())  # created by now
            if on_interrupt is not None and isinstance(exc, KeyboardInterrupt):
                self.submit(on_interrupt()).result(timeout=10)
            raise
        finally:
            if rejoin is not None:
                rejoin()
        ok, value = outcome[0]
        if not ok:
            raise value
        return value

    async def run_aio(self, coro: Coroutine[Any, Any, T]) -> T:
        """Await ``coro`` (which must run on this loop) from any loop."""
        __tracebackhide__ = hidden()
        if self.in_loop():
            return await coro
        return await asyncio.wrap_future(self.submit(coro))


async def _settle(coro: Coroutine[Any, Any, Any], outcome: list[Any], done: Any) -> None:
    """Run ``coro``, keep ``(ok, result or exception)`` in ``outcome``, release ``done``."""
    __tracebackhide__ = hidden()
    try:
        outcome.append((True, await coro))
    except BaseException as exc:  # handed to the waiting thread, which raises it
        outcome.append((False, exc))
    finally:
        done.release()


def get_loop() -> LoopThread:
    global _instance
    with _lock:
        if _instance is None or _instance.pid != os.getpid():
            _instance = LoopThread()
        return _instance


def loop_running() -> bool:
    """Whether an asyncio event loop runs in this thread (a Jupyter kernel's does)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True
