"""The one background event loop of this process, and the bridges into it.

All of nbscale's I/O runs as coroutines on a daemon thread's loop. Blocking calls submit a
coroutine there and wait, which works the same from a script and from a Jupyter cell whose own
loop is running (nothing is nested). ``.aio`` calls await the same coroutine from the caller's
loop. Written once, exposed twice.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import functools
import os
import selectors
import sys
import threading
import time
import weakref
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


# Calls whose outcome must not vanish unseen: what to do should their caller stop waiting
# once they have finished (see ``if_abandoned``).
_abandoned_hooks: weakref.WeakKeyDictionary[asyncio.Task[Any], Callable[[], None]] = (
    weakref.WeakKeyDictionary()
)


def if_abandoned(callback: Callable[[], None]) -> None:
    """In a call's coroutine, on the loop: run ``callback`` there should the caller stop
    waiting (Ctrl-C, a cancelled ``.aio`` call) after the call finished, so that its
    outcome reaches nobody; e.g. to give back the items a ``Queue.get`` took."""
    task = asyncio.current_task()
    if task is not None:
        _abandoned_hooks[task] = callback


def _stop_waiting(task: asyncio.Task[Any]) -> None:
    """On the loop: the caller of ``task`` stopped waiting for it."""
    if not task.done():
        task.cancel()
        return
    hook = _abandoned_hooks.pop(task, None)
    if hook is not None and not task.cancelled() and task.exception() is None:
        hook()


class _PollingSelector(selectors.DefaultSelector):  # type: ignore[misc,valid-type]
    """The loop's selector, which polls for up to ``busy_poll_s`` before it sleeps while a
    thread waits on a single call (``BusyPolling``). A worker's reply comes 60-150 us after
    the loop sends its input; polled for, it is read without a wake-up of the loop thread
    (15-40 us on a 2-vCPU VM). Each poll lets go of the GIL."""

    def __init__(self) -> None:
        super().__init__()
        self.waits = 0  # blocked single calls (touched on the loop only)
        self.busy_poll_s = 0.0  # the last one's setting

    def select(self, timeout: float | None = None) -> list[tuple[Any, int]]:
        if self.waits and timeout != 0 and self.busy_poll_s > 0:
            budget = self.busy_poll_s if timeout is None else min(self.busy_poll_s, timeout)
            deadline = time.perf_counter() + budget
            while time.perf_counter() < deadline:
                ready = super().select(0)
                if ready:
                    return ready
            if timeout is not None:
                timeout = max(0.0, timeout - budget)
        return super().select(timeout)


class BusyPolling:
    """On nbscale's loop, around a blocked thread's wait for a single call's reply: the
    loop polls for it (``busy_poll_us``) rather than sleeping at once."""

    __slots__ = ("_selector",)

    def __init__(self, busy_poll_us: int) -> None:
        loop_thread = _instance
        self._selector = None
        if busy_poll_us > 0 and loop_thread and asyncio.get_running_loop() is loop_thread.loop:
            self._selector = loop_thread.selector
            self._selector.busy_poll_s = busy_poll_us / 1e6

    def __enter__(self) -> None:
        if self._selector is not None:
            self._selector.waits += 1

    def __exit__(self, *exc: object) -> None:
        if self._selector is not None:
            self._selector.waits -= 1


class LoopThread:
    def __init__(self) -> None:
        self.selector = _PollingSelector()
        self.loop: asyncio.AbstractEventLoop = asyncio.SelectorEventLoop(self.selector)
        self.pid = os.getpid()
        self.thread = threading.Thread(target=self._run, name="nbscale-loop", daemon=True)
        # run_aio's batches: calls handed in, and outcomes waiting for their caller's loop
        self._lock = threading.Lock()
        self._inbox: list[_Handed] = []
        self._inbox_woken = False
        self._outboxes: dict[asyncio.AbstractEventLoop, list[_Handed]] = {}
        self.thread.start()

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()

    def in_loop(self) -> bool:
        return threading.get_ident() == self.thread.ident

    def submit(self, coro: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    def run(
        self, coro: Coroutine[Any, Any, T], on_interrupt: Any = None, lend_slot: bool = True
    ) -> T:
        """Run ``coro`` on the loop and block until it is done.

        On KeyboardInterrupt (Ctrl-C, or "interrupt kernel" in Jupyter) the coroutine is
        cancelled and ``on_interrupt`` (a coroutine function) runs before the interrupt
        propagates, so that remote work is cancelled too. On a worker, a call that blocks
        lends the worker's slot unless ``lend_slot`` is false (see ``on_block``)."""
        __tracebackhide__ = hidden()  # IPython leaves this frame out of tracebacks
        if self.in_loop():
            coro.close()
            raise RuntimeError("blocking nbscale call made from nbscale's own loop")
        blocked = Blocked(coro)
        done = blocked.done
        tasks: list[asyncio.Task[None]] = []
        self.loop.call_soon_threadsafe(
            lambda: tasks.append(self.loop.create_task(_settle(coro, blocked)))
        )
        rejoin = None
        try:
            finished = done.acquire(timeout=_LEND_AFTER)
            if not finished and on_block is not None and lend_slot:
                rejoin = on_block()
            # Wake up now and then: a KeyboardInterrupt raised by a signal that landed on
            # another thread (or by ``_thread.interrupt_main``) is only seen between waits.
            while not finished:
                finished = done.acquire(timeout=0.2)
        except BaseException as exc:  # Ctrl-C, or on a worker, this input cancelled
            self.loop.call_soon_threadsafe(lambda: _stop_waiting(tasks[0]))  # created by now
            if on_interrupt is not None and isinstance(exc, KeyboardInterrupt):
                self.submit(on_interrupt()).result(timeout=10)
            raise
        finally:
            if rejoin is not None:
                rejoin()
        ok, value = blocked.outcome[0]
        if not ok:
            raise value
        return value

    async def run_aio(self, coro: Coroutine[Any, Any, T]) -> T:
        """Await ``coro`` (which must run on this loop) from any loop. Calls made together
        (``asyncio.gather`` of many ``.aio`` calls) cross between the loops together: one
        wake-up each way per batch, not two per call."""
        __tracebackhide__ = hidden()
        if self.in_loop():
            return await coro
        caller = asyncio.get_running_loop()
        answer: asyncio.Future[T] = caller.create_future()
        handed = _Handed(coro, answer, caller)
        with self._lock:
            self._inbox.append(handed)
            wake, self._inbox_woken = not self._inbox_woken, True
        if wake:
            self.loop.call_soon_threadsafe(self._take_inbox)
        try:
            return await answer
        except asyncio.CancelledError:
            self.loop.call_soon_threadsafe(handed.cancel)
            raise

    def _take_inbox(self) -> None:
        with self._lock:
            inbox, self._inbox = self._inbox, []
            self._inbox_woken = False
        for handed in inbox:
            if handed.cancelled:
                handed.coro.close()
                continue
            handed.task = self.loop.create_task(handed.coro)
            handed.task.add_done_callback(functools.partial(self._answer, handed))

    def _answer(self, handed: _Handed, task: asyncio.Task[Any]) -> None:
        """On this loop: ``task`` is done; its outcome goes to its caller's loop."""
        caller = handed.caller
        with self._lock:
            box = self._outboxes.setdefault(caller, [])
            box.append(handed)
            wake = len(box) == 1
        if wake:
            try:
                caller.call_soon_threadsafe(self._give_answers, caller)
            except RuntimeError:  # the caller's loop is closed: nobody waits any more
                with self._lock:
                    self._outboxes.pop(caller, None)

    def _give_answers(self, caller: asyncio.AbstractEventLoop) -> None:
        """On the caller's loop: hand the finished calls' outcomes to their awaiters."""
        with self._lock:
            box = self._outboxes.pop(caller, [])
        for handed in box:
            task, answer = handed.task, handed.answer
            assert task is not None
            if task.cancelled():
                if not answer.cancelled():
                    answer.cancel()
                continue
            error = task.exception()  # retrieved even when nobody waits any more
            if answer.cancelled():
                continue
            if error is not None:
                answer.set_exception(error)
            else:
                answer.set_result(task.result())


class _Handed:
    """A coroutine handed to the loop by ``run_aio``, and where its outcome goes."""

    __slots__ = ("answer", "caller", "cancelled", "coro", "task")

    def __init__(
        self,
        coro: Coroutine[Any, Any, Any],
        answer: asyncio.Future[Any],
        caller: asyncio.AbstractEventLoop,
    ) -> None:
        self.coro = coro
        self.answer = answer
        self.caller = caller
        self.cancelled = False
        self.task: asyncio.Task[Any] | None = None

    def cancel(self) -> None:
        """On the loop: the caller stopped waiting; cancel the call (or never start it)."""
        self.cancelled = True
        if self.task is not None:
            _stop_waiting(self.task)


class Blocked:
    """A thread blocked on a call's coroutine, and the outcome it waits for: handed over
    once, when the coroutine ends or earlier (``answer``).

    A bare lock released on the loop, rather than a concurrent Future: one loop turn and a
    condition variable less per call (~10 us)."""

    __slots__ = ("coro", "done", "outcome")

    def __init__(self, coro: Coroutine[Any, Any, Any]) -> None:
        self.coro = coro
        self.done = threading.Lock()
        self.done.acquire()
        self.outcome: list[tuple[bool, Any]] = []

    def answer(self, ok: bool, value: Any) -> None:
        """On the loop: the call's result (``ok``) or exception; an answer given before
        this one stands."""
        if not self.outcome:
            self.outcome.append((ok, value))
            self.done.release()


_blocked: contextvars.ContextVar[Blocked | None] = contextvars.ContextVar(
    "nbscale_blocked", default=None
)


def blocked_caller() -> Blocked | None:
    """Called by a call's coroutine itself: the thread blocked on it, to which it may answer
    before it ends, while it tidies up (a result straight from the handler that got it:
    the caller wakes a loop turn sooner, and runs on while the loop finishes). None for an
    ``.aio`` call, and for a coroutine that another one awaits."""
    blocked = _blocked.get()
    if blocked is None or getattr(blocked.coro, "cr_frame", None) is not sys._getframe(1):
        return None
    return blocked


async def _settle(coro: Coroutine[Any, Any, Any], blocked: Blocked) -> None:
    """Run ``coro``, and hand its ``(ok, result or exception)`` to the blocked thread."""
    __tracebackhide__ = hidden()
    _blocked.set(blocked)  # in this task's context only
    try:
        blocked.answer(True, await coro)
    except BaseException as exc:  # handed to the waiting thread, which raises it
        blocked.answer(False, exc)


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
