"""The worker: dials the control plane, loads one function, runs the inputs it is sent.

Two sockets, two threads:

- the main thread owns the *data* socket: it registers, receives the function definition and
  batches of inputs (asked for and queued by ``intake.py``), runs them (inline for plain sync
  functions, runs of inputs by ``runs.py``; on a thread pool for ``@concurrent`` sync
  functions, on an asyncio loop thread for async ones: ``concurrency.py``) and sends back
  batches of outputs (``sending.py``);
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
from typing import TYPE_CHECKING, Any

import cloudpickle

if TYPE_CHECKING:
    import asyncio

from . import batching, capture, concurrency, intake, nested, protocol
from .intake import InputCancelled, _Input
from .nvml import GpuMonitor
from .protocol import STATUS_CANCELLED, STATUS_ERROR, STATUS_OK, STATUS_YIELD
from .pulse import Pulse
from .register import RegisterWriter
from .runs import Segment, run_segment
from .sending import FLUSH_INTERVAL, flush, maybe_flush
from .serialization import dump_exception, load
from .service import ClassService, call, is_generator, run_alone
from .spare import wait_for_config
from .worker_config import WORKER_ID_ENV, WorkerConfig

_POLLIN = 1  # select.POLLIN and zmq.POLLIN alike


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
        # while the main thread is in an inline input's own code (not in nbscale's): the
        # pulse's nudge may then send the outputs finished before it (``_on_signal``)
        self.in_user_code = False
        self.flushing = False  # a flush is under way (it must not be entered twice)
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
        signal.signal(signal.SIGUSR1, self._on_signal)
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
        # Leaving as asked: a SIGTERM sent with the request (Docker's stop) must not kill the
        # interpreter as it finalizes (Python's handlers are undone then, SIG_IGN is kept),
        # which turned a clean scale-down into exit 143.
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        return 0

    def _serve(self) -> None:
        poller = self.data.poller()
        poller.register(self.data.pollable, _POLLIN)
        poller.register(self.wake_r, _POLLIN)
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
            intake.ask_for_inputs(self)
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

    def _on_signal(self, signum: int, frame: Any) -> None:
        """SIGUSR1 from the pulse thread, while an inline input runs: its call was cancelled
        (then it ends here), or outputs that finished before it still wait to be sent (a
        long input after quick ones): they go now, not when it ends."""
        if self.inline_key is not None and self.inline_key[0] in self.cancelled:
            raise InputCancelled()
        if self.in_user_code and self.done and not self.flushing:
            with contextlib.suppress(OSError):  # the control plane is gone: the loop sees it
                flush(self)

    # --- messages -------------------------------------------------------------------------

    def _send(self, msg: protocol.Message, payload: list[Any] | tuple[Any, ...] = ()) -> None:
        self.data.send(protocol.encode(msg, payload))

    def _receive_all(self) -> bool:
        """Handle every message that arrived; whether one was ``proceed``."""
        proceed = False
        for frames in self.data.receive():
            msg, payload = protocol.decode(frames)
            if isinstance(msg, protocol.RunInputs):
                intake.accept_inputs(self, msg, payload)
            elif isinstance(msg, protocol.FunctionDef):
                self._load_function(msg, payload)
            elif isinstance(msg, protocol.Shutdown):
                self.draining = True
            elif isinstance(msg, protocol.Proceed):
                proceed = True
            elif isinstance(msg, protocol.SlotLent):
                intake.drop_taken(self, msg.taken)
        return proceed

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
            concurrency.start(self, self.queue.popleft())

    def _run_segment(self, run: _Input, deadline: float) -> None:
        """Run a run of inputs of a plain function at full speed (``runs.py``); what is
        left of it when it stops early goes back to the front of the queue."""
        if run.call_id in self.cancelled:
            return
        if self.confirm_first and run.key in self.confirm_first:
            intake.confirm_start(self, run)
        values = run.args()
        at, end = run_segment(
            self, run.call_id, run.attempt, run.index, values, deadline, run.packed
        )
        if at < end:
            first = at - run.index
            rest = _Input(run.call_id, at, run.attempt, run.data, run.buffers, run.arrived)
            rest.loaded, rest.count = values[first : end - run.index], end - at
            rest.skip, rest.packed = run.skip + first, run.packed
            self.queue.appendleft(rest)
            self.run_extra += rest.count - 1

    def _run_inline(self, item: _Input) -> None:
        if item.call_id in self.cancelled:
            return
        key = item.key
        if self.confirm_first and key in self.confirm_first:
            intake.confirm_start(self, item)
        # monotonic, not perf_counter: the register's clock is the host's (one call for both)
        started = time.monotonic()
        self.running[key] = (started, item.attempt, 0)
        start_slot, finish_slot = self.slot_writers[0]
        start_slot(item.call_id, item.index, item.attempt, started)
        self.inline_key = key
        token = capture.start(item.call_id, item.index)
        try:
            args, kwargs = item.args()
            self.in_user_code = True
            result: Any = call(self.fn, args, kwargs, lambda value: self.yielded(item, value))
            status = STATUS_OK
        except InputCancelled:
            result, status = None, STATUS_CANCELLED
        except BaseException as exc:
            result, status = exc, STATUS_ERROR
        finally:
            self.in_user_code = False
            finish_slot()
            self.inline_key = None
            printed = capture.finish(token)
            del self.running[key]
        self.record(item, status, result, time.monotonic() - started, printed)

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
    parser.add_argument(
        "--wait",
        type=float,
        default=None,
        metavar="SECONDS",
        help="wait for the config file to appear (a warm spare container); exit 0 once the "
        "'alive' file beside it is more than SECONDS old: its control plane is gone",
    )
    args = parser.parse_args(argv)
    if args.wait is None:
        return serve(WorkerConfig.from_file(args.config))
    with contextlib.suppress(ImportError):  # what its first connect needs, loaded while idle
        from . import zmq_link  # noqa: F401
    cfg = wait_for_config(args.config, args.wait)
    return 0 if cfg is None else serve(cfg)


def serve(cfg: WorkerConfig) -> int:
    """Be the worker ``cfg`` describes (spawned by ``main``, or forked by ``zygote.py``)."""
    os.environ.update(cfg.env or {})
    os.environ[WORKER_ID_ENV] = cfg.worker_id
    return Worker(cfg).run()


__all__ = ["WORKER_ID_ENV", "InputCancelled", "Worker", "WorkerConfig", "main", "serve"]
