"""What workers say of themselves: ``register`` (checked against their callers' versions,
then sent their function), ``heartbeat`` (GPU stats; a pong now and then), ``started`` (a
suspect input confirmed before it runs) and ``goodbye`` (a clean exit, a function that did
not load, a class whose ``@enter`` raised). The fleet launches, stops and forgets them."""

from __future__ import annotations

import time
from typing import Any

from nbscale_runtime import protocol
from nbscale_runtime.protocol import (
    ERROR_VERSION_MISMATCH,
    STATUS_ENTER_FAILED,
    STATUS_INIT_FAILED,
    STATUS_REJECTED,
)

from .compatibility import incompatibilities
from .delivery import Delivery
from .errors import rejection
from .fleet import Fleet
from .outbox import Outbox
from .pool import Records, WorkerState
from .settings import ControlPlaneConfig

MAX_ENTER_FAILURES = 3  # starts in a row whose @enter raised before a pool is broken


class WorkerEvents:
    def __init__(
        self,
        records: Records,
        outbox: Outbox,
        delivery: Delivery,
        fleet: Fleet,
        config: ControlPlaneConfig,
    ) -> None:
        self.records = records
        self.outbox = outbox
        self.delivery = delivery
        self.fleet = fleet
        self.config = config

    def on_register(
        self, w: WorkerState, msg: protocol.Register, payload: list[Any], now: float
    ) -> None:
        pool = self.records.pools[w.pool_id]
        self.fleet.started(w, now)
        w.registered(now, msg.pid, msg.python, msg.gpus)
        pool.autoscaler.reset_launch_failures()
        self.outbox.emit("container-started", pool.pool_id, container_id=w.worker_id)
        problems = incompatibilities(
            msg.protocol_version, msg.python, msg.cloudpickle, pool.client_versions
        )
        if problems:
            message = (
                f"worker {w.worker_id} of {pool.name} cannot run code pickled by this caller: "
                + "; ".join(problems)
                + ". Use a worker environment with the same versions."
            )
            pool.note(message, time.time())
            record = rejection(ERROR_VERSION_MISMATCH, message)
            self.delivery.settling.break_pool(pool, STATUS_REJECTED, record)
            self.fleet.stop_worker(w, graceful=False)
            return
        fdef = protocol.FunctionDef(
            function_id=pool.function_id,
            sys_path=pool.sys_path,
            timeout=pool.timeout,
            max_inputs=pool.slots,
            is_async=pool.options.is_async,
        )
        self.outbox.send_worker(w.worker_id, fdef, [pool.function])

    def on_heartbeat(
        self, w: WorkerState, msg: protocol.Heartbeat, payload: list[Any], now: float
    ) -> None:
        w.stats = msg.stats  # GPU utilisation and memory, when the worker has GPUs
        if w.register_path is None:  # its own word is all we know of what it runs
            seen = w.reported_running
            w.reported_running = {(c, i, a): seen.get((c, i, a), now) for c, i, a in msg.running}
        # We are still here. A pong now and then is enough for a worker to know it (it exits
        # after heartbeat_timeout without a word); one per heartbeat was a send per worker
        # per second, the main cost of an idle worker.
        if w.ponged_at is None or now - w.ponged_at >= self.config.heartbeat_timeout / 4:
            w.ponged_at = now
            self.outbox.send_worker(w.worker_id, protocol.Pong())

    def on_started(
        self, w: WorkerState, msg: protocol.Started, payload: list[Any], now: float
    ) -> None:
        """A worker without a register starts a suspect input: note it, then let it run."""
        queue = self.records.pools[w.pool_id].queue
        queue.confirm(w.worker_id, msg.call_id, msg.index, msg.attempt)
        self.outbox.send_worker(w.worker_id, protocol.Proceed())

    def on_goodbye(
        self, w: WorkerState, msg: protocol.Goodbye, payload: list[Any], now: float
    ) -> None:
        w.clean_exit = True
        w.drain()
        if msg.reason == "init-failed":
            pool = self.records.pools[w.pool_id]
            pool.note(f"worker {w.worker_id} could not load the function", time.time())
            # a zmq.Frame (containers) or bytes (the Unix socket of local workers)
            self.delivery.settling.break_pool(pool, STATUS_INIT_FAILED, bytes(payload[0]))
        elif msg.reason == "enter-failed":
            self._enter_failed(w, bytes(payload[0]))

    def _enter_failed(self, w: WorkerState, record: bytes) -> None:
        """A class's ``@enter`` raised on ``w``: another worker tries, and after
        ``MAX_ENTER_FAILURES`` such starts in a row the pool is broken with that error (its
        waiting inputs fail with the ``@enter`` traceback) rather than crash-looping."""
        pool = self.records.pools[w.pool_id]
        pool.enter_failures += 1
        pool.note(  # the error itself reaches the callers (never unpickled here)
            f"worker {w.worker_id}: its @enter raised ({pool.enter_failures} of "
            f"{MAX_ENTER_FAILURES} starts in a row before the pool is broken)",
            time.time(),
        )
        if pool.enter_failures >= MAX_ENTER_FAILURES:
            self.delivery.settling.break_pool(pool, STATUS_ENTER_FAILED, record)
