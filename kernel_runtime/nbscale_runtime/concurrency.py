"""Inputs of ``@concurrent`` sync functions, run on a thread pool, and of async functions,
run on an asyncio loop thread: up to the worker's slots at once, each in a register slot of
its own; they end on their thread, which wakes the main thread to send their outcomes."""

from __future__ import annotations

import os
import time
from typing import TYPE_CHECKING, Any

from . import capture, intake
from .intake import _Input
from .protocol import STATUS_CANCELLED, STATUS_ERROR, STATUS_OK
from .service import call, call_async

if TYPE_CHECKING:
    from .worker import Worker


def start(w: Worker, item: _Input) -> None:
    if item.call_id in w.cancelled:
        return
    if w.confirm_first and item.key in w.confirm_first:
        intake.confirm_start(w, item)
    slot = w.free_slots.pop()
    started = time.monotonic()
    w.running[item.key] = (started, item.attempt, slot)
    w.slot_writers[slot][0](item.call_id, item.index, item.attempt, started)
    if w.mode == "async":
        assert w.async_loop is not None
        import asyncio

        fut = asyncio.run_coroutine_threadsafe(_run_async(w, item), w.async_loop)
        w.async_tasks[item.key] = fut
    else:
        assert w.executor is not None
        fut = w.executor.submit(_run_threaded, w, item)
    fut.add_done_callback(lambda _f: os.write(w.wake_w, b"x"))


def _run_threaded(w: Worker, item: _Input) -> None:
    started = time.perf_counter()
    token = capture.start(item.call_id, item.index)
    try:
        args, kwargs = item.args()
        result: Any = call(w.fn, args, kwargs, lambda value: w.yielded(item, value))
        status = STATUS_OK
    except BaseException as exc:
        result, status = exc, STATUS_ERROR
    printed = capture.finish(token)
    _finish(w, item, status, result, time.perf_counter() - started, printed)


async def _run_async(w: Worker, item: _Input) -> None:
    import asyncio

    started = time.perf_counter()
    token = capture.start(item.call_id, item.index)
    try:
        args, kwargs = item.args()
        emit = lambda value: w.yielded(item, value)  # noqa: E731
        result: Any = await call_async(w.fn, args, kwargs, emit)
        status = STATUS_OK
    except asyncio.CancelledError:
        result, status = None, STATUS_CANCELLED
    except BaseException as exc:
        result, status = exc, STATUS_ERROR
    printed = capture.finish(token)
    _finish(w, item, status, result, time.perf_counter() - started, printed)


def _finish(
    w: Worker, item: _Input, status: str, result: Any, seconds: float, printed: tuple[str, str]
) -> None:
    # Runs on a pool thread or the asyncio thread: deque and list appends are thread-safe,
    # and the main thread only sends what is in ``done``.
    entry = w.running.pop(item.key, None)
    if entry is not None:
        w.slot_writers[entry[2]][1]()
        w.free_slots.append(entry[2])
    w.async_tasks.pop(item.key, None)
    w.record(item, status, result, seconds, printed)
