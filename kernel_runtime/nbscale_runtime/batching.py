"""Dynamic batching on the worker (``@nbscale.batched(max_batch_size=, wait_ms=)``).

Callers send single inputs; the worker asks for up to ``max_batch_size`` of them at once (its
slots), groups the queued inputs of one batched function (or one method of a class) into a
batch when it is full or when its oldest input has waited ``wait_ms``, and calls the function
once with lists: one list per argument, each input's value at its place. The function
returns a list as long as the batch; each input gets its element. When the batch raises,
each of its inputs fails with that exception.

The batch runs on the worker's main thread, each input in a register slot of its own, so
that a worker lost in the middle of a batch blames exactly the inputs of that batch.
"""

from __future__ import annotations

import collections
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from . import capture
from .protocol import STATUS_CANCELLED, STATUS_ERROR, STATUS_OK
from .serialization import load
from .service import ClassService, call, run_alone, target

if TYPE_CHECKING:
    from .intake import _Input
    from .worker import Worker

BatchSettings = tuple[int, int]  # (max_batch_size, wait_ms)
ATTRIBUTE = "__nbscale_batched__"  # on a function: its BatchSettings


def settings_of(fn: Any) -> dict[Any, BatchSettings]:
    """The batched entries of a loaded function, by the key ``key_of`` gives an input: the
    method name for a class, None for a function; empty when nothing is batched."""
    if isinstance(fn, ClassService):
        return dict(fn.batched)
    found = getattr(fn, ATTRIBUTE, None)
    return {None: tuple(found)} if found else {}  # type: ignore[dict-item]


def call_batch(
    func: Callable[..., Any], inputs: list[tuple[tuple[Any, ...], dict[str, Any]]]
) -> list[Any]:
    """Call ``func`` once with the inputs' arguments as lists; its results, one per input."""
    arity = {len(args) for args, _ in inputs}
    names = {tuple(sorted(kwargs)) for _, kwargs in inputs}
    if len(arity) > 1 or len(names) > 1:
        raise TypeError(
            f"the inputs of a batch of {func.__qualname__} must all pass the same arguments "
            "(by position and by name)"
        )
    columns = [list(column) for column in zip(*(args for args, _ in inputs), strict=True)]
    keywords = {name: [kwargs[name] for _, kwargs in inputs] for name in next(iter(names))}
    results = func(*columns, **keywords)
    if hasattr(results, "__await__"):
        results = run_alone(results)
    if not isinstance(results, list) or len(results) != len(inputs):
        got = f"a list of {len(results)}" if isinstance(results, list) else type(results).__name__
        raise TypeError(
            f"@batched {func.__qualname__} must return a list of {len(inputs)} results "
            f"(one per input of the batch), got {got}"
        )
    return results


class Batcher:
    """Groups a worker's queued inputs into batches and runs them (on the main thread)."""

    def __init__(self, worker: Worker, settings: dict[Any, BatchSettings]) -> None:
        self.worker = worker
        self.settings = settings

    def key_of(self, item: _Input) -> Any:
        """The batch an input belongs to (its method's name for a class); loads its
        arguments, which are kept for its run."""
        if item.loaded is None:
            item.loaded = load(item.data, item.buffers)
        return item.loaded[0][0] if isinstance(self.worker.fn, ClassService) else None

    def run_some(self) -> float | None:
        """Run what is ready; the seconds until the oldest waiting batch is due, if one
        waits for more inputs."""
        w = self.worker
        while w.queue and not w.stop_now:
            head = w.queue[0]
            if head.call_id in w.cancelled:
                w.queue.popleft()
                continue
            key = self.key_of(head)
            if key not in self.settings:  # a method that is not batched: alone
                self.run([w.queue.popleft()], batched=False)
                continue
            size, wait_ms = self.settings[key]
            batch = [i for i in w.queue if i.call_id not in w.cancelled and self.key_of(i) == key]
            due = head.arrived + wait_ms / 1000 - time.monotonic()
            if len(batch) < size and due > 0 and not w.draining:
                return due
            batch = batch[:size]
            taken = {id(i) for i in batch}
            w.queue = collections.deque(i for i in w.queue if id(i) not in taken)
            self.run(batch, batched=True)
        return None

    def run(self, batch: list[_Input], batched: bool) -> None:
        w = self.worker
        started = time.monotonic()
        for slot, item in enumerate(batch):
            w.running[item.key] = (started, item.attempt, slot)
            w.slot_writers[slot][0](item.call_id, item.index, item.attempt, started)
        w.inline_key = batch[0].key
        token = capture.start(batch[0].call_id, batch[0].index)
        try:
            if batched:
                inputs = [self._arguments(i) for i in batch]
                func, _ = target(w.fn, inputs[0][0])
                if isinstance(w.fn, ClassService):  # less the method's name
                    inputs = [(args[1:], kwargs) for args, kwargs in inputs]
                results = call_batch(func, inputs)
            else:
                args, kwargs = self._arguments(batch[0])
                results = [call(w.fn, args, kwargs, lambda v: w.yielded(batch[0], v))]
            statuses = [STATUS_OK] * len(batch)
        except BaseException as exc:
            from .intake import InputCancelled

            status = STATUS_CANCELLED if isinstance(exc, InputCancelled) else STATUS_ERROR
            results, statuses = [exc] * len(batch), [status] * len(batch)
        finally:
            for slot, item in enumerate(batch):
                w.slot_writers[slot][1]()
                w.running.pop(item.key, None)
            w.inline_key = None
            printed = capture.finish(token)
        seconds = (time.monotonic() - started) / len(batch)
        for n, (item, status, result) in enumerate(zip(batch, statuses, results, strict=True)):
            w.record(item, status, result, seconds, printed if n == 0 else ("", ""))

    def _arguments(self, item: _Input) -> tuple[tuple[Any, ...], dict[str, Any]]:
        if item.loaded is None:
            item.loaded = load(item.data, item.buffers)
        return item.loaded  # type: ignore[no-any-return]
