"""The worker: dials the control plane, loads one function, runs the inputs it is sent.

Two sockets, two threads:

- the main thread owns the *data* socket: it registers, receives the function definition and
  batches of inputs, runs them (inline for plain sync functions, on a thread pool for
  ``@concurrent`` sync functions, on an asyncio loop thread for async ones) and sends back
  batches of outputs;
- the *pulse* thread owns a second socket: it sends heartbeats, receives cancellations and
  shutdown requests (which must get through while user code holds the main thread), enforces
  the per-attempt timeout and exits when the control plane is gone (``pulse.py``).

Each input's start and end are stored in the worker's register (``register.py``), which the
control plane reads when the worker dies or goes silent: that is how it knows exactly which
inputs were running, while outputs travel in batches.

A stuck input cannot be interrupted safely, so on timeout the pulse thread reports it and ends
the process: the control plane replaces the worker and requeues its other inputs. While user
code holds the GIL the pulse thread cannot run at all; then the control plane enforces the
timeout from outside, from the register.
"""

from __future__ import annotations

import collections
import concurrent.futures
import contextlib
import math
import os
import signal
import sys
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import cloudpickle
import zmq

if TYPE_CHECKING:
    import asyncio

from . import batching, capture, nested, protocol
from .nvml import GpuMonitor
from .protocol import (
    RUN_ATTEMPT,
    RUN_CALL_ID,
    RUN_COUNT,
    RUN_INDEX,
    RUN_SKIP,
    RUN_WHERE,
    STATUS_CANCELLED,
    STATUS_ERROR,
    STATUS_OK,
    STATUS_YIELD,
)
from .pulse import Pulse
from .register import RegisterWriter
from .runs import Segment, run_segment
from .sending import FLUSH_INTERVAL, flush, maybe_flush
from .serialization import dump_exception, load, load_run, split_payload
from .service import ClassService, call, call_async, is_generator, run_alone
from .worker_config import WorkerConfig

# Work a worker asks for ahead of what it runs now, in seconds of estimated run time: enough
# to hide a round trip to the control plane, small enough to keep the load balanced.
_PREFETCH_SECONDS = 0.01
_MAX_PREFETCH = 1000
# Inputs shorter than this keep one more queued per slot, so the next starts without a round
# trip; one that waits behind another waits at most this long.
_ONE_AHEAD_BELOW = 0.1
_PROCEED_WAIT = 10.0  # seconds to wait for the control plane to note an input's start


# Set in a worker's environment (to its id), and so in its children's: ``nbscale.is_local()``
# reads it.
WORKER_ID_ENV = "NBSCALE_WORKER_ID"


class InputCancelled(BaseException):
    """Raised inside a running input when its call is cancelled."""


@dataclass(slots=True)
class _Input:
    call_id: str
    index: int
    attempt: int
    data: Any
    buffers: list[Any]
    arrived: float = 0.0  # monotonic, when it reached this worker
    loaded: Any = None  # its (args, kwargs), once unpickled ahead of its run (batching)
    count: int = 0  # > 0: a run of inputs ``index`` .. ``index + count`` (``runs.py``)
    skip: int = 0  # a run's first element in the list ``data`` holds

    @property
    def key(self) -> tuple[str, int]:
        return (self.call_id, self.index)

    def args(self) -> Any:
        """Its (args, kwargs); a run's, a list of them."""
        if self.loaded is None:
            if self.count:
                self.loaded = load_run(self.data, self.buffers, self.skip, self.count)
            else:
                self.loaded = load(self.data, self.buffers)
        return self.loaded


class Worker:
    def __init__(self, cfg: WorkerConfig) -> None:
        self.cfg = cfg
        self.data = cfg.connect(cfg.worker_id)
        self.fn: Any = None
        self.function_id: str | None = None
        self.timeout = 300.0
        self.slots = 1
        self.mode = "inline"  # "inline" | "threads" | "async"
        self.queue: collections.deque[_Input] = collections.deque()
        self.run_extra = 0  # inputs of the runs in ``queue`` beyond their first (inline only)
        self.plain = False  # a plain function, run inline: runs of inputs go at full speed
        self.segment: Segment | None = None  # the run of results being made now
        # key -> (monotonic start, attempt, register slot); read by the pulse thread
        self.running: dict[tuple[str, int], tuple[float, int, int]] = {}
        self.register = RegisterWriter(cfg.register_path)
        self.slot_writers = [self.register.slot(0)]  # (start, finish) of each slot
        self.free_slots: list[int] = [0]
        self.inline_key: tuple[str, int] | None = None
        self.cancelled: set[str] = set()
        self.confirm_first: set[tuple[str, int]] = set()  # say "started", then run
        self.demand = 0  # inputs asked for and not yet received
        self.avg_seconds: float | None = None
        # (input, status, result, seconds, (stdout, stderr)), or a run's results, to send
        self.done: collections.deque[tuple[_Input, str, Any, float, tuple[str, str]] | Segment] = (
            collections.deque()
        )
        self.batcher: batching.Batcher | None = None
        self.batch_due: float | None = None  # seconds until a waiting batch is due
        self.starting_until: float | None = None  # monotonic deadline of a class's @enter
        self.draining = False
        self.stop_now = False
        self.slot_lent = False  # the control plane took the slot back (``nested.py``)
        self.exiting_until: float | None = None  # while a class's @exit runs: its deadline
        self.last_flush = time.perf_counter()
        self.wake_r, self.wake_w = os.pipe()
        self.executor: concurrent.futures.Executor | None = None
        self.async_loop: asyncio.AbstractEventLoop | None = None
        self.async_tasks: dict[tuple[str, int], concurrent.futures.Future[Any]] = {}
        self.main_thread = threading.get_ident()
        self.gpu_monitor = GpuMonitor()  # no-op without NVML or GPUs
        self.max_result = None if cfg.max_result_mib is None else cfg.max_result_mib << 20

    # --- lifecycle ------------------------------------------------------------------------

    def run(self) -> int:
        capture.install()
        nested.install(self)  # for code of ours that calls functions: they reach us
        self.register.watch_self_signals()
        signal.signal(signal.SIGTERM, self._on_sigterm)
        signal.signal(signal.SIGUSR1, self._on_cancel_signal)
        self._send(
            protocol.Register(
                worker_id=self.cfg.worker_id,
                pool_id=self.cfg.pool_id,
                protocol_version=protocol.PROTOCOL_VERSION,
                python=".".join(map(str, sys.version_info[:3])),
                cloudpickle=cloudpickle.__version__,
                pid=os.getpid(),
                gpus=self.gpu_monitor.inventory(),
            )
        )
        Pulse(self).start()
        with contextlib.suppress(ConnectionError):  # the control plane closed us: it is gone
            self._serve()
        return 0

    def _serve(self) -> None:
        poller = zmq.Poller()
        poller.register(self.data.pollable, zmq.POLLIN)
        poller.register(self.wake_r, zmq.POLLIN)
        while not self.stop_now:
            if self.draining and not self.running and not self.done:
                break
            events = dict(poller.poll(self._poll_ms()))
            if self.wake_r in events:
                os.read(self.wake_r, 4096)
            if self.data.pollable in events:
                self._receive_all()
            self._run_some()
            maybe_flush(self)
            self._ask_for_inputs()
        flush(self)
        if isinstance(self.fn, ClassService):  # scaled down, stopped or SIGTERM: its @exit
            if self.cfg.exit_grace is not None:  # the pulse thread ends us past it
                self.exiting_until = time.monotonic() + self.cfg.exit_grace
            self.fn.stop(self._run_coroutine)
        self._send(protocol.Goodbye(self.cfg.worker_id, "drained"))
        self.data.close()

    def _poll_ms(self) -> int:
        """How long the loop may wait for a message: not at all when it has work to start
        or outputs to send; until a waiting batch is due; else 100 ms."""
        if self.done:
            return 0
        if self.mode == "batched":
            if self.batch_due is not None:
                return max(1, min(100, math.ceil(self.batch_due * 1000)))
            return 0 if self.queue else 100
        can_start = self.queue and (self.mode == "inline" or len(self.running) < self.slots)
        return 0 if can_start else 100

    def _run_coroutine(self, coro: Any) -> Any:
        """Run an async ``@enter``/``@exit`` to its end: on the worker's loop when it has
        one (so the instance's loop-bound state stays usable by its async methods)."""
        if self.async_loop is None:
            return run_alone(coro)
        import asyncio

        return asyncio.run_coroutine_threadsafe(coro, self.async_loop).result()

    def _on_sigterm(self, signum: int, frame: Any) -> None:
        self.draining = True

    def _on_cancel_signal(self, signum: int, frame: Any) -> None:
        if self.inline_key is not None and self.inline_key[0] in self.cancelled:
            raise InputCancelled()

    # --- messages -------------------------------------------------------------------------

    def _send(self, msg: protocol.Message, payload: list[Any] | tuple[Any, ...] = ()) -> None:
        self.data.send(protocol.encode(msg, payload))

    def _receive_all(self) -> bool:
        """Handle every message that arrived; whether one was ``proceed``."""
        proceed = False
        for frames in self.data.receive():
            msg, payload = protocol.decode(frames)
            if isinstance(msg, protocol.RunInputs):
                self._accept_inputs(msg, payload)
            elif isinstance(msg, protocol.FunctionDef):
                self._load_function(msg, payload)
            elif isinstance(msg, protocol.Shutdown):
                self.draining = True
            elif isinstance(msg, protocol.Proceed):
                proceed = True
            elif isinstance(msg, protocol.SlotLent):
                self._drop_taken(msg.taken)
        return proceed

    def _drop_taken(self, taken: list[list[Any]]) -> None:
        """The control plane took these back while this worker lent its slot: runs of
        inputs this worker queued, and the rest of the run it is in (if any)."""
        keys = {(call_id, index + k) for call_id, index, count in taken for k in range(count)}
        self.queue = collections.deque(i for i in self.queue if i.key not in keys)
        self.run_extra = sum(max(0, i.count - 1) for i in self.queue)
        self.confirm_first -= keys
        if self.segment is not None:
            self.segment.stop_at_taken(keys)
        self.demand = 0
        self.slot_lent = True

    def _confirm_start(self, item: _Input) -> None:
        """Say we start ``item`` and wait until the control plane has noted it: should the
        input kill this worker, it alone is blamed (a worker without a register)."""
        self.confirm_first.discard(item.key)
        flush(self)
        started = protocol.Started(self.cfg.worker_id, item.call_id, item.index, item.attempt)
        self._send(started)
        deadline = time.monotonic() + _PROCEED_WAIT
        while time.monotonic() < deadline:
            if self.data.poll(100) and self._receive_all():
                return

    def _load_function(self, msg: protocol.FunctionDef, payload: list[Any]) -> None:
        for path in msg.sys_path:
            if path not in sys.path and os.path.isdir(path):
                sys.path.append(path)
        self.function_id = msg.function_id  # before loading: the function may call itself
        try:
            self.fn = load(payload[0])
        except BaseException as exc:
            record = dump_exception(exc)
            self._send(protocol.Goodbye(self.cfg.worker_id, "init-failed"), [record])
            self.stop_now = True
            return
        self.timeout = msg.timeout
        self.slots = max(1, msg.max_inputs)
        plain = not isinstance(self.fn, ClassService) and not is_generator(self.fn)
        self.plain = plain and not msg.is_async and self.slots == 1
        batched = batching.settings_of(self.fn)
        if batched:  # its batches run on this thread; a slot per input of the largest
            self.mode = "batched"
            self.plain = False
            self.batcher = batching.Batcher(self, batched)
            self.slots = max(self.slots, *(size for size, _ in batched.values()))
        elif msg.is_async:
            self.mode = "async"
            import asyncio  # here: most workers never need it, and it costs 30 ms to import

            self.async_loop = asyncio.new_event_loop()
            threading.Thread(target=self.async_loop.run_forever, daemon=True).start()
        elif self.slots > 1:
            self.mode = "threads"
            self.executor = concurrent.futures.ThreadPoolExecutor(self.slots)
        self.slot_writers = [self.register.slot(n) for n in range(self.slots)]
        self.free_slots = list(range(self.slots - 1, -1, -1))
        if isinstance(self.fn, ClassService):
            self._enter(self.fn)

    def _enter(self, service: ClassService) -> None:
        """Build the class's instance and run its ``@enter`` hooks before the first input,
        within its startup timeout (the pulse thread ends a worker that outlives it). When
        they raise, the worker leaves saying why; the control plane breaks the pool after
        a few such starts."""
        self.starting_until = time.monotonic() + service.startup_timeout
        try:
            service.start(self._run_coroutine)
        except BaseException as exc:
            record = dump_exception(exc, skip_runtime=True)
            self._send(protocol.Goodbye(self.cfg.worker_id, "enter-failed"), [record])
            self.fn, self.stop_now = None, True  # it asks for nothing and runs nothing
        finally:
            self.starting_until = None

    def _accept_inputs(self, msg: protocol.RunInputs, payload: list[Any]) -> None:
        parts = split_payload(payload, [item[RUN_WHERE] for item in msg.items])
        now = time.monotonic()
        received = 0
        for item, (data, buffers) in zip(msg.items, parts, strict=False):
            call_id, index, attempt = item[RUN_CALL_ID], item[RUN_INDEX], item[RUN_ATTEMPT]
            count = item[RUN_COUNT]
            received += count or 1
            if count and not self.plain:  # run one by one: each an input of its own
                values = load_run(data, buffers, item[RUN_SKIP], count)
                for k, value in enumerate(values):
                    self.queue.append(_Input(call_id, index + k, attempt, data, [], now, value))
            else:
                run = _Input(call_id, index, attempt, data, buffers, now, None, count)
                run.skip = item[RUN_SKIP]
                self.queue.append(run)
                self.run_extra += max(0, count - 1)
            if msg.confirm:
                self.confirm_first.add((call_id, index))
        self.demand = max(0, self.demand - received)

    def _ask_for_inputs(self) -> None:
        want = self._more_wanted()
        if want:
            self._send(protocol.GetInputs(self.cfg.worker_id, want))

    def _more_wanted(self) -> int:
        """How many more inputs to ask for now (counted as asked for)."""
        if self.fn is None or self.draining:
            return 0
        have = len(self.queue) + self.run_extra + len(self.running) + self.demand
        target = self.slots
        # Look ahead only for short inputs, where a round trip per input would cost: a long
        # input queued here behind another could have run on an idle worker instead.
        avg = self.avg_seconds
        if avg is not None and avg < _PREFETCH_SECONDS:
            per_slot = _PREFETCH_SECONDS / max(avg, 1e-7)
            target += min(_MAX_PREFETCH, math.ceil(per_slot * self.slots))
        elif avg is not None and avg < _ONE_AHEAD_BELOW:
            target += self.slots
        if have < target and (self.demand == 0 or have <= target // 2):
            want = target - have
            self.demand += want
            return want
        return 0

    # --- running inputs ---------------------------------------------------------------------

    def _run_some(self) -> None:
        if self.fn is None:
            return
        if self.batcher is not None:
            self.batch_due = self.batcher.run_some()
            return
        if self.mode == "inline":
            deadline = time.perf_counter() + FLUSH_INTERVAL
            while self.queue and not self.stop_now:
                item = self.queue.popleft()
                self.run_extra -= max(0, item.count - 1)
                if item.count:
                    self._run_segment(item, deadline)
                else:
                    self._run_inline(item)
                if time.perf_counter() > deadline:
                    break
            return
        while self.queue and len(self.running) < self.slots:
            self._start_concurrent(self.queue.popleft())

    def _run_segment(self, run: _Input, deadline: float) -> None:
        """Run a run of inputs of a plain function at full speed (``runs.py``); what is
        left of it when it stops early goes back to the front of the queue."""
        if run.call_id in self.cancelled:
            return
        if self.confirm_first and run.key in self.confirm_first:
            self._confirm_start(run)
        values = run.args()
        at, end = run_segment(self, run.call_id, run.attempt, run.index, values, deadline)
        if at < end:
            first = at - run.index
            rest = _Input(run.call_id, at, run.attempt, run.data, run.buffers, run.arrived)
            rest.loaded, rest.count = values[first : end - run.index], end - at
            rest.skip = run.skip + first
            self.queue.appendleft(rest)
            self.run_extra += rest.count - 1

    def _run_inline(self, item: _Input) -> None:
        if item.call_id in self.cancelled:
            return
        key = item.key
        if self.confirm_first and key in self.confirm_first:
            self._confirm_start(item)
        # monotonic, not perf_counter: the register's clock is the host's (one call for both)
        started = time.monotonic()
        self.running[key] = (started, item.attempt, 0)
        start_slot, finish_slot = self.slot_writers[0]
        start_slot(item.call_id, item.index, item.attempt, started)
        self.inline_key = key
        token = capture.start(item.call_id, item.index)
        try:
            args, kwargs = item.args()
            result: Any = call(self.fn, args, kwargs, lambda value: self.yielded(item, value))
            status = STATUS_OK
        except InputCancelled:
            result, status = None, STATUS_CANCELLED
        except BaseException as exc:
            result, status = exc, STATUS_ERROR
        finally:
            finish_slot()
            self.inline_key = None
            printed = capture.finish(token)
            del self.running[key]
        self.record(item, status, result, time.monotonic() - started, printed)

    def _start_concurrent(self, item: _Input) -> None:
        if item.call_id in self.cancelled:
            return
        if self.confirm_first and item.key in self.confirm_first:
            self._confirm_start(item)
        slot = self.free_slots.pop()
        started = time.monotonic()
        self.running[item.key] = (started, item.attempt, slot)
        self.slot_writers[slot][0](item.call_id, item.index, item.attempt, started)
        if self.mode == "async":
            assert self.async_loop is not None
            import asyncio

            fut = asyncio.run_coroutine_threadsafe(self._run_async(item), self.async_loop)
            self.async_tasks[item.key] = fut
        else:
            assert self.executor is not None
            fut = self.executor.submit(self._run_threaded, item)
        fut.add_done_callback(lambda _f: os.write(self.wake_w, b"x"))

    def _run_threaded(self, item: _Input) -> None:
        started = time.perf_counter()
        token = capture.start(item.call_id, item.index)
        try:
            args, kwargs = item.args()
            result: Any = call(self.fn, args, kwargs, lambda value: self.yielded(item, value))
            status = STATUS_OK
        except BaseException as exc:
            result, status = exc, STATUS_ERROR
        printed = capture.finish(token)
        self._finish_concurrent(item, status, result, time.perf_counter() - started, printed)

    async def _run_async(self, item: _Input) -> None:
        import asyncio

        started = time.perf_counter()
        token = capture.start(item.call_id, item.index)
        try:
            args, kwargs = item.args()
            emit = lambda value: self.yielded(item, value)  # noqa: E731
            result: Any = await call_async(self.fn, args, kwargs, emit)
            status = STATUS_OK
        except asyncio.CancelledError:
            result, status = None, STATUS_CANCELLED
        except BaseException as exc:
            result, status = exc, STATUS_ERROR
        printed = capture.finish(token)
        self._finish_concurrent(item, status, result, time.perf_counter() - started, printed)

    def _finish_concurrent(
        self, item: _Input, status: str, result: Any, seconds: float, printed: tuple[str, str]
    ) -> None:
        # Runs on a pool thread or the asyncio thread: deque and list appends are thread-safe,
        # and the main thread only sends what is in ``done``.
        entry = self.running.pop(item.key, None)
        if entry is not None:
            self.slot_writers[entry[2]][1]()
            self.free_slots.append(entry[2])
        self.async_tasks.pop(item.key, None)
        self.record(item, status, result, seconds, printed)

    def record(
        self, item: _Input, status: str, result: Any, seconds: float, printed: tuple[str, str]
    ) -> None:
        """An input ended: its outcome goes out with the next flush."""
        self.avg_seconds = (
            seconds if self.avg_seconds is None else (0.8 * self.avg_seconds + 0.2 * seconds)
        )
        self.done.append((item, status, result, seconds, printed))

    def yielded(self, item: _Input, value: Any) -> None:
        """A generator input yielded ``value``: it goes to the caller now (from the main
        thread, sent at once; from another, the main thread is woken to send it)."""
        self.done.append((item, STATUS_YIELD, value, 0.0, ("", "")))
        if threading.get_ident() == self.main_thread:
            flush(self)
        else:
            os.write(self.wake_w, b"x")

    def cancel_running(self, call_id: str) -> None:
        """Called from the pulse thread when the control plane cancels a call."""
        self.cancelled.add(call_id)
        if self.inline_key is not None and self.inline_key[0] == call_id:
            signal.pthread_kill(self.main_thread, signal.SIGUSR1)
        for key, fut in list(self.async_tasks.items()):
            if key[0] == call_id:
                fut.cancel()


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m nbscale_runtime")
    parser.add_argument("--config", required=True, help="path of the worker's config file")
    args = parser.parse_args(argv)
    return serve(WorkerConfig.from_file(args.config))


def serve(cfg: WorkerConfig) -> int:
    """Be the worker ``cfg`` describes (spawned by ``main``, or forked by ``zygote.py``)."""
    os.environ.update(cfg.env or {})
    os.environ[WORKER_ID_ENV] = cfg.worker_id
    return Worker(cfg).run()


__all__ = ["WORKER_ID_ENV", "InputCancelled", "Worker", "WorkerConfig", "main", "serve"]
