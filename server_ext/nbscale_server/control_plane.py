"""The control plane: a ZeroMQ broker that connects callers to autoscaled worker pools.

It runs on one asyncio loop (the Jupyter server's, or a background thread's when embedded in
a client process). Two ROUTER sockets: one for clients, one for workers. Handlers apply each
message to the pure cores (queue, limits, autoscaler) and carry out what they return; result
bytes pass from workers to callers without being unpickled here.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import logging
import os
import pickle
import shutil
import time
import uuid
from collections import OrderedDict, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, cast

import zmq

from nbscale_runtime import protocol
from nbscale_runtime.protocol import (
    STATUS_INIT_FAILED,
    STATUS_REJECTED,
)
from nbscale_runtime.serialization import pack, split_payload

from . import reports
from .autoscaler import LaunchWorkers, StopWorkers
from .channel import Channel, unbounded
from .launchers import Launcher, LaunchFailed, WorkerHandle, WorkerSpec, make_launcher
from .limits import Limits, admit, describe
from .models import CallDetailModel, CallModel, ChangeEvent, LogsModel, PoolModel
from .pool import MAX_LAUNCH_FAILURES, CallState, Pool, WorkerState, pool_id_for
from .queue import InputRecord, Outcome
from .remote import RemoteWorkers, bind_worker_socket
from .security import KeyPair, WorkerAllowList, private_dir, write_secret_json
from .stream_channel import StreamChannel

_CPUS = os.cpu_count() or 1  # read once: it is a file read, and _room() runs per submission
log = logging.getLogger("nbscale.control_plane")

_TICK = 0.05  # housekeeping period, seconds
_FINISHED_CALLS_KEPT = 50  # finished maps and remotes the API still lists
_GONE_KEPT = 64  # workers that exited whose logs stay reachable through worker_logs()

Deliver = Callable[[protocol.Message, list[Any]], None]
Subscriber = Callable[[ChangeEvent], None]


@dataclass
class ControlPlaneConfig:
    limits: Limits = field(default_factory=Limits)
    max_workers_total: int | None = None  # None: twice the CPUs, at least 4
    heartbeat_interval: float = 1.0
    heartbeat_timeout: float = 15.0
    startup_timeout: float = 60.0
    stop_grace: float = 5.0  # seconds a stopping worker gets to finish its input
    worker_transport: str = "ipc"  # "ipc" (Unix socket, private directory) or "tcp" (CurveZMQ)
    bind_host: str = "127.0.0.1"
    client_endpoint: str | None = None  # default: ipc in the private directory
    python: str | None = None  # the interpreter of process workers; default: this one
    launcher: str = "process"  # "process", "docker", "slurm" or "auto" (docker when it answers)
    docker_network: str = "bridge"  # Docker workers: "bridge" (our own network) or "host"
    remote: RemoteWorkers = field(default_factory=RemoteWorkers)  # Slurm workers: where, how


class RequestError(Exception):
    """A request the control plane refuses; ``kind`` names the client-side exception."""

    def __init__(self, kind: str, message: str, **details: Any) -> None:
        super().__init__(message)
        self.kind = kind
        self.details = details


def _new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def _minor(version: str) -> str:
    return ".".join(version.split(".")[:2])


class ControlPlane:
    def __init__(
        self,
        config: ControlPlaneConfig | None = None,
        launcher: Launcher | None = None,
        ctx: zmq.Context[Any] | None = None,
    ) -> None:
        self.config = config or ControlPlaneConfig()
        self.ctx = ctx or zmq.Context()
        self.dir = private_dir()
        try:
            self.launcher = launcher or make_launcher(
                self.config.launcher,
                self.dir,
                self.config.python,
                self.config.docker_network,
                self.config.remote,
            )
        except LaunchFailed:
            shutil.rmtree(self.dir, ignore_errors=True)
            raise
        self.pools: dict[str, Pool] = {}
        self.calls: dict[str, CallState] = {}
        self.workers: dict[str, WorkerState] = {}
        self.client_versions: dict[bytes, dict[str, str]] = {}
        self.server_keys = KeyPair()
        self.allow_list: WorkerAllowList | None = None
        self._tasks: list[asyncio.Task[Any]] = []
        self._waiting_calls: set[str] = set()  # calls with get-outputs waiting for a deadline
        # finished maps and remotes, kept a while so the API can show how they ended
        self.finished_calls: collections.OrderedDict[str, CallState] = collections.OrderedDict()
        self.local_clients: dict[bytes, Deliver] = {}  # clients in this process, linked direct
        self._wake = asyncio.Event()
        self._closing = False
        self._subscribers: list[Subscriber] = []
        self._gone: OrderedDict[str, WorkerHandle] = OrderedDict()  # recently exited workers
        self.client_endpoint = ""
        self.worker_endpoint = ""

    # --- lifecycle ----------------------------------------------------------------------

    async def start(self) -> None:
        cfg = self.config
        client_sock = unbounded(self.ctx.socket(zmq.ROUTER))
        self.client_endpoint = cfg.client_endpoint or f"ipc://{self.dir}/clients"
        client_sock.bind(self.client_endpoint)
        # Containers cannot share our private directory: their launcher names the address
        # they reach us at (a bridge gateway or loopback), always with CurveZMQ.
        bind_host = self.launcher.worker_bind_host()
        on_worker = self._receiver(self._on_worker)
        self.workers_channel: Channel | StreamChannel
        if cfg.worker_transport == "tcp" or bind_host is not None:
            bind_host = bind_host or cfg.bind_host
            self.allow_list = WorkerAllowList(self.ctx)
            worker_sock = unbounded(self.ctx.socket(zmq.ROUTER))
            worker_sock.curve_server = True
            worker_sock.curve_secretkey = self.server_keys.secret.encode()
            worker_sock.curve_publickey = self.server_keys.public.encode()
            self.worker_endpoint = bind_worker_socket(worker_sock, bind_host)
            self.workers_channel = Channel(worker_sock, on_worker)
        else:  # a Unix socket in the private directory: half the thread wake-ups of ZeroMQ
            path = os.path.join(self.dir, "workers")
            self.worker_endpoint = f"unix://{path}"
            self.workers_channel = StreamChannel(path, on_worker)
        self.clients = Channel(client_sock, self._receiver(self._on_client))
        self._tasks = [asyncio.ensure_future(self._housekeeping())]

    async def stop(self) -> None:
        """Stop every worker (gracefully, then by force) and close the sockets."""
        if self._closing:
            return
        self._closing = True
        for task in self._tasks:
            task.cancel()
        for w in list(self.workers.values()):
            self._send_worker(w.worker_id, protocol.Shutdown("control plane stopping"))
            self.launcher.stop(w.handle, graceful=True)
        deadline = time.monotonic() + self.config.stop_grace
        while any(self.launcher.exit_code(w.handle) is None for w in self.workers.values()):
            if time.monotonic() > deadline:
                for w in self.workers.values():
                    self.launcher.stop(w.handle, graceful=False)
                break
            await asyncio.sleep(0.02)
        self.stop_workers_now()
        self.clients.close()
        self.workers_channel.close()
        if self.allow_list:
            self.allow_list.stop()
        shutil.rmtree(self.dir, ignore_errors=True)

    def stop_workers_now(self) -> None:
        """Kill every worker without waiting: for interpreter exit, when no loop may run."""
        for w in self.workers.values():
            self.launcher.stop(w.handle, graceful=False)
        for w in self.workers.values():
            wait = getattr(self.launcher, "wait", None)
            if wait is not None:
                wait(w.handle, 2.0)
        self.workers.clear()
        self.launcher.close()  # removes what is left: containers, their network

    def connection_info(self) -> dict[str, Any]:
        return {
            "client_endpoint": self.client_endpoint,
            "worker_endpoint": self.worker_endpoint,
            "launcher": self.launcher.name,
            "pid": os.getpid(),
            "limits": dataclasses.asdict(self.config.limits),
            # public by nature: workers need it to verify the server; it grants nothing
            "worker_public_key": self.server_keys.public if self.allow_list else None,
        }

    # --- socket plumbing ----------------------------------------------------------------

    def _receiver(self, handler: Any) -> Any:
        def receive(frames: list[Any]) -> None:
            identity = frames[0] if isinstance(frames[0], bytes) else frames[0].bytes
            try:
                msg, payload = protocol.decode(frames[1:])
            except protocol.ProtocolError as exc:
                log.warning("dropping undecodable message from %r: %s", identity, exc)
                return
            handler(identity, msg, payload)

        return receive

    def _send_worker(self, worker_id: str, msg: protocol.Message, payload: Any = ()) -> None:
        target = worker_id
        if isinstance(msg, (protocol.CancelInputs, protocol.Shutdown)):
            target += ":pulse"  # the pulse thread hears it even while user code runs
        self.workers_channel.send([target.encode(), *protocol.encode(msg, payload)])

    def _send_client(self, identity: bytes, msg: protocol.Message, payload: Any = ()) -> None:
        local = self.local_clients.get(identity)
        if local is not None:
            local(msg, list(payload))
        else:
            self.clients.send([identity, *protocol.encode(msg, payload)])

    def _reply(self, identity: bytes, rid: int, value: Any, payload: Any = ()) -> None:
        self._send_client(identity, protocol.Reply(rid, value), payload)

    def connect_local(self, deliver: Deliver) -> Deliver:
        """Link a client living in this process and on this loop, without sockets: messages
        are handed over as objects, never encoded. Returns the function that sends to us."""
        identity = f"local-{len(self.local_clients)}".encode()

        def to_us(msg: protocol.Message, payload: list[Any]) -> None:
            self._on_client(identity, msg, payload)

        # Both ways, hand over at once: a request is handled within the client's send (its
        # reply resolves the future before the client awaits it, saving two loop turns), and
        # the client's handlers only record what arrived (resolve a future, queue outputs),
        # never calling back into the control plane.
        self.local_clients[identity] = deliver
        return to_us

    # --- client requests ----------------------------------------------------------------

    def _on_client(self, identity: bytes, msg: protocol.Message, payload: list[Any]) -> None:
        handler = getattr(self, "_handle_" + msg.op.replace("-", "_"), None)
        rid = getattr(msg, "rid", 0)
        if handler is None:
            self._send_error(identity, rid, RequestError("InvalidError", f"unknown op {msg.op}"))
            return
        try:
            result = handler(identity, msg, payload)
        except RequestError as exc:
            self._send_error(identity, rid, exc)
            return
        if result is not None:
            value, frames = result
            self._reply(identity, rid, value, frames)

    def _send_error(self, identity: bytes, rid: int, exc: RequestError) -> None:
        self._send_client(identity, protocol.Reply(rid, None, [exc.kind, str(exc), exc.details]))

    def _handle_hello(self, identity: bytes, msg: protocol.Hello, payload: list[Any]) -> Any:
        if msg.protocol_version != protocol.PROTOCOL_VERSION:
            raise RequestError(
                "VersionMismatchError",
                f"client speaks protocol {msg.protocol_version}, the control plane "
                f"{protocol.PROTOCOL_VERSION}: upgrade nbscale on both sides",
            )
        self.client_versions[identity] = {"python": msg.python, "cloudpickle": msg.cloudpickle}
        return self.connection_info(), ()

    def _handle_register_function(
        self, identity: bytes, msg: protocol.RegisterFunction, payload: list[Any]
    ) -> Any:
        versions = self.client_versions.get(identity)
        if versions is None:
            raise RequestError("InvalidError", "say hello first")
        pool_id = pool_id_for(msg.function_id, msg.options)
        pool = self.pools.get(pool_id)
        if pool is None:
            try:
                pool = Pool.create(
                    msg.function_id,
                    msg.name,
                    bytes(payload[0].buffer if hasattr(payload[0], "buffer") else payload[0]),
                    msg.options,
                    msg.sys_path,
                    versions,
                    self._total_cap(),
                )
            except (TypeError, ValueError) as exc:
                raise RequestError("InvalidError", str(exc)) from None
            self.pools[pool_id] = pool
            self._emit("pool-added", pool_id)
        else:
            pool.broken = None  # a caller trying again gets a fresh chance
            pool.launch_failures = 0
        return {"pool_id": pool_id, "launcher": self.launcher.name}, ()

    def _call(self, call_id: str) -> CallState:
        call = self.calls.get(call_id) or self.finished_calls.get(call_id)
        if call is None:
            raise RequestError("NotFoundError", f"no function call {call_id}")
        return call

    def _handle_submit_inputs(
        self, identity: bytes, msg: protocol.SubmitInputs, payload: list[Any]
    ) -> Any:
        call = self.calls.get(msg.call_id)
        if call is None:
            if msg.pool_id not in self.pools:
                raise RequestError("NotFoundError", f"no pool {msg.pool_id}")
            call = CallState(msg.call_id, msg.pool_id, msg.kind, identity)
            call.progress = msg.progress
            self.calls[msg.call_id] = call
        if call.cancelled:
            return {"accepted": 0, "limit": None, "cancelled": True}, ()
        pool = self.pools[call.pool_id]
        limits = self.config.limits
        admission = admit(
            limits,
            call.kind,
            len(msg.items),
            pending=pool.queue.num_pending,
            running=pool.queue.num_running,
            spawn_pending=pool.queue.spawn_pending,
            call_in_flight=call.in_flight,
        )
        if admission.limit and call.kind != "map":
            raise RequestError(
                "ResourceExhaustedError",
                f"{pool.name}: over the limit of {describe(admission.limit, limits)}; "
                "retry later or raise the limit",
                limit=admission.limit,
            )
        accepted = msg.items[: admission.accepted]
        parts = split_payload(payload, [(i[1], i[2], i[3]) for i in accepted])
        spawned = call.kind == "spawn"
        records = [
            InputRecord(call.call_id, item[0], data, bufs, spawned=spawned)
            for item, (data, bufs) in zip(accepted, parts, strict=False)
        ]
        call.submitted += len(records)
        if pool.broken:
            now = time.monotonic()
            self._deliver(
                pool, [(Outcome(r, pool.broken[0], True), pool.broken[1]) for r in records], now
            )
        else:
            pool.queue.submit(records)
            self._dispatch(pool)
            self._autoscale(pool, time.monotonic())
        if msg.total is not None and len(records) == len(msg.items):
            call.total = msg.total
            self._answer_waiters(call)
            self._maybe_finish(call)
        return {"accepted": len(records), "limit": admission.limit}, ()

    def _handle_cancel_call(
        self, identity: bytes, msg: protocol.CancelCall, payload: list[Any]
    ) -> Any:
        cancelled_before = msg.call_id not in self.calls and any(
            msg.call_id in p.queue.cancelled_calls for p in self.pools.values()
        )
        # A caller cancelling a call the REST API cancelled (and forgot) already: nothing to do.
        if not cancelled_before:
            self.cancel_call(msg.call_id, requester=identity)
        return {"cancelled": True}, ()

    def _handle_get_outputs(
        self, identity: bytes, msg: protocol.GetOutputs, payload: list[Any]
    ) -> Any:
        call = self._call(msg.call_id)
        deadline = None if msg.timeout is None else time.monotonic() + msg.timeout
        call.waiters.append((identity, msg.rid, msg.start, msg.end, deadline))
        self._answer_waiters(call)
        if call.waiters:
            self._waiting_calls.add(call.call_id)
        return None  # answered by _answer_waiters, now or later

    def _handle_update_autoscaler(
        self, identity: bytes, msg: protocol.UpdateAutoscaler, payload: list[Any]
    ) -> Any:
        return self.update_autoscaler(msg.pool_id, msg.changes)["settings"], ()

    def _handle_stop_pool(self, identity: bytes, msg: protocol.StopPool, payload: Any) -> Any:
        return self.stop_pool(msg.pool_id), ()

    def _handle_get_call(self, identity: bytes, msg: protocol.GetCall, payload: Any) -> Any:
        return self.call_info(msg.call_id, msg.start, msg.limit), ()

    def _handle_get_logs(self, identity: bytes, msg: protocol.GetLogs, payload: Any) -> Any:
        return self.worker_logs(msg.worker_id, msg.tail), ()

    def _handle_get_stats(self, identity: bytes, msg: protocol.GetStats, payload: list[Any]) -> Any:
        if msg.pool_id is None:
            return {"pools": self.list_pools()}, ()
        return self.pool_info(msg.pool_id), ()

    # --- the public API: the handlers above and the Jupyter server's REST API share it --
    # Each raises RequestError (kind "NotFoundError" or "InvalidError") for a bad request.

    def list_pools(self) -> list[PoolModel]:
        now = time.monotonic()
        return [reports.pool_model(p, now) for p in self.pools.values()]

    def pool_info(self, pool_id: str) -> PoolModel:
        return reports.pool_model(self._pool(pool_id), time.monotonic())

    def update_autoscaler(self, pool_id: str, changes: dict[str, Any]) -> PoolModel:
        """Change a pool's autoscaler settings (None keeps a setting) and act on them now."""
        pool = self._pool(pool_id)
        try:
            pool.autoscaler.settings = pool.autoscaler.settings.updated(changes)
        except (TypeError, ValueError) as exc:
            raise RequestError("InvalidError", str(exc)) from None
        self._emit("pool-updated", pool_id)
        self._autoscale(pool, time.monotonic())
        return self.pool_info(pool_id)

    def stop_pool(self, pool_id: str) -> PoolModel:
        """Cancel the pool's unfinished calls and stop its workers. The pool stays
        registered, idle: the kernels that use it may call it again, and then it scales up
        as usual."""
        pool = self._pool(pool_id)
        for call in [c for c in self.calls.values() if c.pool_id == pool_id and not c.finished]:
            self.cancel_call(call.call_id)
        pool.stopped = True
        pool.autoscaler.status = "stopped"
        for w in list(pool.workers.values()):
            if w.state != "draining":
                self._stop_worker(w, graceful=True)
        self._emit("pool-stopped", pool_id)
        return self.pool_info(pool_id)

    def listed_calls(self) -> dict[str, CallState]:
        """The calls the API lists: those running, then the latest finished maps."""
        return {**self.calls, **self.finished_calls}

    def list_calls(self) -> list[CallModel]:
        return [reports.call_model(c, self.pools[c.pool_id]) for c in self.listed_calls().values()]

    def call_info(self, call_id: str, start: int = 0, limit: int = 1000) -> CallDetailModel:
        call = self._call(call_id)
        return reports.call_detail(call, self.pools[call.pool_id], start, limit)

    def cancel_call(self, call_id: str, requester: bytes | None = None) -> CallModel:
        """Cancel a call's pending and running inputs. When someone other than the caller
        cancels it (the REST API), the caller is told too: each of its unfinished inputs
        ends with ``CallCancelledError``, so a ``.map()`` does not wait forever."""
        call = self._call(call_id)
        pool = self.pools[call.pool_id]
        if call.call_id in self.finished_calls:
            return reports.call_model(call, pool)  # finished already: nothing to cancel
        if requester != call.owner and call.kind != "spawn" and not call.finished:
            self._tell_cancelled(call, pool)
        call.cancelled = True
        for worker_id in pool.queue.cancel(call.call_id):
            self._send_worker(worker_id, protocol.CancelInputs(call.call_id))
        self._answer_waiters(call, force=True)
        self._maybe_finish(call)
        self._emit("call-cancelled", pool.pool_id, call_id=call_id)
        return reports.call_model(call, pool)

    def worker_logs(self, worker_id: str, tail: int = 200) -> LogsModel:
        """The last ``tail`` lines of a worker's output, also for one that exited lately."""
        w = self.workers.get(worker_id)
        handle = w.handle if w is not None else self._gone.get(worker_id)
        if handle is None:
            raise RequestError("NotFoundError", f"no container {worker_id}")
        logs = self.launcher.logs(handle, tail)
        return {"container_id": worker_id, "pool_id": handle.pool_id, "tail": tail, "logs": logs}

    def subscribe(self, callback: Subscriber) -> Callable[[], None]:
        """Call ``callback`` (on this loop) when a pool is added, changed or stopped, a
        worker starts or stops, or a call is cancelled; returns the unsubscribe function.
        Counts (pending, running, done) change too often for events: read them with
        ``list_pools()``/``list_calls()``."""
        self._subscribers.append(callback)
        return lambda: self._subscribers.remove(callback)

    def _emit(self, kind: str, pool_id: str, **details: Any) -> None:
        if not self._subscribers:
            return
        event = cast("ChangeEvent", {"type": kind, "pool_id": pool_id, **details})
        for callback in list(self._subscribers):
            try:
                callback(event)
            except Exception:
                log.exception("an event subscriber failed")

    def _pool(self, pool_id: str) -> Pool:
        pool = self.pools.get(pool_id)
        if pool is None:
            raise RequestError("NotFoundError", f"no pool {pool_id}")
        return pool

    def _tell_cancelled(self, call: CallState, pool: Pool) -> None:
        pending, running = pool.queue.inputs_of(call.call_id)
        if not pending and not running:
            return
        record = pickle.dumps(
            {"kind": "CallCancelledError", "message": f"{pool.name}: the call was cancelled"}
        )
        frames, [(offset, length, nbufs)] = pack([(record, ())])
        items = [
            [r.call_id, r.index, r.attempt, STATUS_REJECTED, offset, length, nbufs, 0.0, "", ""]
            for r in pending + running
        ]
        self._send_client(call.owner, protocol.Outputs(items), frames)

    # --- worker messages ----------------------------------------------------------------

    def _on_worker(self, identity: bytes, msg: protocol.Message, payload: list[Any]) -> None:
        now = time.monotonic()
        worker_id = getattr(msg, "worker_id", None)
        if isinstance(msg, protocol.Outputs):
            self._on_outputs(msg, payload, now)
            return
        w = self.workers.get(worker_id or "")
        if w is None:
            log.warning("message %s from unknown worker %r", msg.op, identity)
            return
        w.last_seen = now
        if isinstance(msg, protocol.Register):
            self._on_register(w, msg, now)
        elif isinstance(msg, protocol.GetInputs):
            w.want += msg.want
            self._dispatch(self.pools[w.pool_id])
        elif isinstance(msg, protocol.Heartbeat):
            w.stats = msg.stats  # GPU utilisation and memory, when the worker has GPUs
        elif isinstance(msg, protocol.Goodbye):
            w.clean_exit = True
            w.state = "draining"
            if msg.reason == "init-failed":
                self._break_pool(
                    self.pools[w.pool_id], STATUS_INIT_FAILED, bytes(payload[0].buffer), now
                )

    def _on_register(self, w: WorkerState, msg: protocol.Register, now: float) -> None:
        pool = self.pools[w.pool_id]
        w.registered_at = now
        w.pid = msg.pid
        w.python = msg.python
        w.gpus = msg.gpus
        w.state, w.idle_since = "idle", now
        pool.launch_failures = 0
        pool.autoscaler.launch_succeeded()
        self._emit("container-started", pool.pool_id, container_id=w.worker_id)
        client = pool.client_versions
        problems = []
        if msg.protocol_version != protocol.PROTOCOL_VERSION:
            problems.append(f"protocol {msg.protocol_version} != {protocol.PROTOCOL_VERSION}")
        if _minor(msg.python) != _minor(client["python"]):
            problems.append(f"Python {msg.python} on the worker, {client['python']} in the caller")
        if _minor(msg.cloudpickle) != _minor(client["cloudpickle"]):
            problems.append(
                f"cloudpickle {msg.cloudpickle} on the worker, {client['cloudpickle']} "
                "in the caller"
            )
        if problems:
            message = (
                f"worker {w.worker_id} of {pool.name} cannot run code pickled by this caller: "
                + "; ".join(problems)
                + ". Use a worker environment with the same versions."
            )
            record = pickle.dumps({"kind": "VersionMismatchError", "message": message})
            self._break_pool(pool, STATUS_REJECTED, record, now)
            self._stop_worker(w, graceful=False)
            return
        fdef = protocol.FunctionDef(
            function_id=pool.function_id,
            sys_path=pool.sys_path,
            timeout=pool.timeout,
            max_inputs=pool.slots,
            is_async=bool(pool.options.get("is_async")),
        )
        self._send_worker(w.worker_id, fdef, [pool.function])

    def _on_outputs(self, msg: protocol.Outputs, payload: list[Any], now: float) -> None:
        if not msg.items:
            return
        parts = split_payload(payload, [(i[4], i[5], i[6]) for i in msg.items])
        settled: dict[str, list[tuple[Outcome, Any, list[Any], list[Any]]]] = defaultdict(list)
        touched: set[str] = set()
        sender = self.workers.get(msg.items[0][8])
        if sender is not None:
            seconds = sum(item[7] for item in msg.items)
            self.pools[sender.pool_id].observe_durations(seconds, len(msg.items))
        for item, (data, bufs) in zip(msg.items, parts, strict=False):
            call_id, index, attempt, status, *_, worker_id, _stdout = item
            w = self.workers.get(worker_id)
            if w is None:
                continue
            w.last_seen = now
            pool = self.pools[w.pool_id]
            touched.add(w.worker_id)
            outcome = pool.queue.report(worker_id, call_id, index, attempt, status, now)
            if outcome is None:
                continue
            if outcome.final:
                settled[pool.pool_id].append((outcome, data, bufs, item))
            else:
                self._report_retries([outcome])
        # Usually the whole batch is final and for one caller: forward it as it came.
        whole = (msg.items, payload) if len(settled) == 1 else None
        for pool_id, outcomes in settled.items():
            self._deliver_items(self.pools[pool_id], outcomes, now, whole)
        if msg.want and sender is not None:  # the worker's next request, riding along
            sender.want += msg.want
        for worker_id in touched:
            w = self.workers[worker_id]
            self._update_idle(w, now)
            self._dispatch(self.pools[w.pool_id])

    # --- decisions carried out ----------------------------------------------------------

    def _update_idle(self, w: WorkerState, now: float) -> None:
        if w.state in ("starting", "draining"):
            return
        busy = self.pools[w.pool_id].queue.running_on(w.worker_id) > 0
        if busy:
            w.state, w.idle_since = "busy", None
        elif w.state != "idle":
            w.state, w.idle_since = "idle", now

    def _dispatch(self, pool: Pool) -> None:
        """Hand pending inputs to workers that asked for them, in guided-size batches."""
        queue = pool.queue
        if not queue.pending:
            return
        ready = [w for w in pool.workers.values() if w.want > 0 and w.state in ("idle", "busy")]
        if not ready:
            return
        ready.sort(key=lambda w: queue.running_on(w.worker_id))  # least loaded first
        live = sum(1 for w in pool.workers.values() if w.state in ("idle", "busy", "starting"))
        share = pool.share(len(queue.pending), live)  # one split of what is pending now
        for w in ready:
            if not queue.pending:
                break
            room = share - queue.running_on(w.worker_id)
            if room <= 0:
                continue
            records = queue.take(w.worker_id, min(w.want, room))
            if not records:
                continue
            w.want -= len(records)
            w.state, w.idle_since = "busy", None
            frames, addresses = pack([(r.data, r.buffers) for r in records])
            items = [
                [r.call_id, r.index, r.attempt, *where]
                for r, where in zip(records, addresses, strict=True)
            ]
            self._send_worker(w.worker_id, protocol.RunInputs(items), frames)
            self._report_running(w.worker_id, records)

    def _report_running(self, worker_id: str, records: list[InputRecord]) -> None:
        """Tell callers that asked for progress which of their inputs this worker took."""
        by_call: dict[str, list[int]] = {}
        for r in records:
            call = self.calls.get(r.call_id)
            if call is not None and call.progress:
                by_call.setdefault(r.call_id, []).append(r.index)
        for call_id, indices in by_call.items():
            msg = protocol.Progress(call_id, [[worker_id, indices]], [])
            self._send_client(self.calls[call_id].owner, msg)

    def _report_retries(self, outcomes: list[Outcome]) -> None:
        for o in outcomes:
            call = self.calls.get(o.record.call_id)
            if call is not None and call.progress and not o.final:
                retry = [[o.record.index, o.record.attempt, o.status]]
                self._send_client(call.owner, protocol.Progress(call.call_id, [], retry))

    def _deliver(self, pool: Pool, outcomes: list[tuple[Outcome, bytes]], now: float) -> None:
        """Deliver control-plane-made outcomes (lost, rejected, ...) with their payloads."""
        rows: list[tuple[Outcome, Any, list[Any], list[Any]]] = []
        for outcome, data in outcomes:
            r = outcome.record
            item = [
                r.call_id,
                r.index,
                r.attempt,
                outcome.status,
                0,
                0,
                0,
                0.0,
                r.worker_id or "",
                "",
            ]
            rows.append((outcome, data, [], item))
        self._deliver_items(pool, rows, now)

    def _deliver_items(
        self,
        pool: Pool,
        rows: list[tuple[Outcome, Any, list[Any], list[Any]]],
        now: float,
        whole: tuple[list[list[Any]], list[Any]] | None = None,
    ) -> None:
        """Push final outcomes to their callers (or store them for spawned calls). ``whole``
        is the worker's message they all came from, forwarded untouched when it can be."""
        by_owner: dict[bytes, list[tuple[list[Any], Any, list[Any]]]] = defaultdict(list)
        finished: dict[str, CallState] = {}
        for outcome, data, bufs, item in rows:
            call = self.calls.get(outcome.record.call_id)
            if call is None or call.cancelled:
                continue
            failed = outcome.status != protocol.STATUS_OK
            call.reported += 1
            call.failed += failed
            pool.failed += failed
            pool.done += not failed
            if call.kind == "spawn":
                call.stored[outcome.record.index] = (item, data, bufs)
                self._answer_waiters(call)
            else:
                by_owner[call.owner].append((item, data, bufs))
            finished[call.call_id] = call
        for owner, entries in by_owner.items():
            if whole is not None and len(entries) == len(whole[0]) == len(rows):
                self._send_client(owner, protocol.Outputs(whole[0]), whole[1])
                continue
            self._send_client(owner, *_outputs_message(entries))
        for call in finished.values():
            self._maybe_finish(call)

    def _answer_waiters(self, call: CallState, force: bool = False) -> None:
        now = time.monotonic()
        keep = []
        for identity, rid, start, end, deadline in call.waiters:
            stop = end if end is not None else (call.total if call.total is not None else None)
            wanted = range(start, stop) if stop is not None else None
            ready = wanted is not None and all(i in call.stored for i in wanted)
            expired = deadline is not None and now >= deadline
            if not (ready or expired or force or call.cancelled):
                keep.append((identity, rid, start, end, deadline))
                continue
            indices = sorted(i for i in call.stored if i >= start and (stop is None or i < stop))
            message, frames = _outputs_message([call.stored[i] for i in indices])
            pool = self.pools[call.pool_id]
            value = {
                "items": message.items,
                **call.as_dict(),
                "function": pool.name,
                "timeout": pool.timeout,
            }
            self._reply(identity, rid, value, frames)
        call.waiters = keep

    def _maybe_finish(self, call: CallState) -> None:
        if call.finished and call.kind != "spawn":
            if self.calls.pop(call.call_id, None) is not None:
                # kept a while, read-only, so views see a finished call's final counts
                self.finished_calls[call.call_id] = call
                while len(self.finished_calls) > _FINISHED_CALLS_KEPT:
                    self.finished_calls.popitem(last=False)
            pool = self.pools.get(call.pool_id)
            if pool and not call.cancelled:
                pool.queue.forget_call(call.call_id)

    def _break_pool(self, pool: Pool, status: str, payload: bytes, now: float) -> None:
        """Every waiting input of ``pool`` fails with ``payload``; so will new ones, until the
        function is registered again."""
        pool.broken = (status, payload)
        failed = list(pool.queue.pending)
        pool.queue.pending.clear()
        self._deliver(pool, [(Outcome(r, status, True), payload) for r in failed], now)

    def _total_cap(self) -> int:
        return self.config.max_workers_total or max(4, 2 * _CPUS)

    def _room(self) -> int:
        """How many more workers the total cap allows now."""
        return self._total_cap() - sum(1 for w in self.workers.values() if w.state != "draining")

    def _reclaim_for(self, pool: Pool, now: float) -> None:
        """The total cap is reached and ``pool`` has waiting inputs but no worker: stop one
        idle worker of another pool, preferring those kept only until their scaledown window
        ends, then those kept warm by ``min_containers`` (a pool with work must not wait
        forever behind idle workers; the warm pool refills when there is room again)."""
        candidates = []
        for other in self.pools.values():
            if other is pool:
                continue
            live = [w for w in other.workers.values() if w.state in ("idle", "busy", "starting")]
            surplus = len(live) - other.autoscaler.desired(other.load())
            candidates += [(surplus <= 0, w) for w in live if w.state == "idle"]
        if candidates:
            _, victim = min(candidates, key=lambda c: c[0])
            self._stop_worker(victim, graceful=True)

    def _autoscale(self, pool: Pool, now: float) -> None:
        if pool.broken or self._closing:
            return
        if pool.stopped:
            if not pool.queue.pending:
                return
            pool.stopped = False  # called again after a stop: it scales as usual
        room = self._room()
        if room <= 0 and pool.queue.pending and not pool.workers:
            self._reclaim_for(pool, now)
            room = self._room()
        for instruction in pool.autoscaler.decide(now, pool.load(), pool.views(), room):
            if isinstance(instruction, LaunchWorkers):
                for _ in range(instruction.count):
                    if not self._launch(pool, now):
                        break
            elif isinstance(instruction, StopWorkers):
                for worker_id in instruction.worker_ids:
                    self._stop_worker(pool.workers[worker_id], graceful=True)

    def _launch(self, pool: Pool, now: float) -> bool:
        worker_id = _new_id("wk")
        config: dict[str, Any] = {
            "worker_id": worker_id,
            "pool_id": pool.pool_id,
            "endpoint": self.worker_endpoint,
            "parent_pid": os.getpid() if self.launcher.name == "process" else None,
            "heartbeat_interval": self.config.heartbeat_interval,
        }
        keys = None
        if self.allow_list is not None:
            keys = KeyPair()
            config.update(
                server_public_key=self.server_keys.public,
                public_key=keys.public,
                secret_key=keys.secret,
            )
            self.allow_list.allow(keys.public)
        # Remote workers read it from a directory their hosts share (the launcher's).
        config_dir = self.launcher.worker_config_dir() or self.dir
        config_path = os.path.join(config_dir, f"{worker_id}.json")
        write_secret_json(config_path, config)
        spec = WorkerSpec(worker_id, pool.pool_id, config_path, dict(pool.options), pool.name)
        try:
            handle = self.launcher.start(spec)
        except LaunchFailed as exc:
            self._launch_failed(pool, str(exc), now)
            return False
        w = WorkerState(
            worker_id,
            pool.pool_id,
            handle,
            keys.public if keys else None,
            config_path,
            now,
            last_seen=now,
        )
        pool.workers[worker_id] = w
        self.workers[worker_id] = w
        self._emit("container-starting", pool.pool_id, container_id=worker_id)
        return True

    def _launch_failed(self, pool: Pool, reason: str, now: float) -> None:
        pool.launch_failures += 1
        pool.autoscaler.launch_failed(now, reason)
        log.warning("%s: %s", pool.name, pool.autoscaler.status)
        # A pool whose running workers serve its inputs is capped, not broken (e.g. by GPUs).
        serving = any(w.state in ("idle", "busy") for w in pool.workers.values())
        if pool.launch_failures >= MAX_LAUNCH_FAILURES and not serving:
            message = (
                f"{pool.name}: {pool.launch_failures} workers in a row failed to start; "
                f"the last: {reason}"
            )
            record = pickle.dumps({"kind": "LaunchError", "message": message})
            failed = list(pool.queue.pending)
            pool.queue.pending.clear()
            self._deliver(pool, [(Outcome(r, STATUS_REJECTED, True), record) for r in failed], now)

    def _stop_worker(self, w: WorkerState, graceful: bool) -> None:
        w.state = "draining"
        w.want = 0
        if graceful:
            self._send_worker(w.worker_id, protocol.Shutdown("scaled down"))
        self.launcher.stop(w.handle, graceful=graceful)
        self._emit("container-stopping", w.pool_id, container_id=w.worker_id)

    def _worker_gone(self, w: WorkerState, exit_code: int | None, now: float) -> None:
        pool = self.pools[w.pool_id]
        pool.workers.pop(w.worker_id, None)
        self.workers.pop(w.worker_id, None)
        self._gone[w.worker_id] = w.handle
        if len(self._gone) > _GONE_KEPT:
            self._gone.popitem(last=False)
        self._emit("container-stopped", pool.pool_id, container_id=w.worker_id, exit_code=exit_code)
        if w.public_key and self.allow_list:
            self.allow_list.revoke(w.public_key)
        with contextlib.suppress(OSError):
            os.unlink(w.config_path)
        # What the launcher knows beyond the code (out of memory, never started, ...).
        reason = self.launcher.exit_reason(w.handle) or _describe_exit(exit_code)
        if w.registered_at is None and not w.clean_exit and w.state != "draining":
            tail = self.launcher.logs(w.handle, 10).strip()
            said = f":\n{tail}" if tail else ""
            self._launch_failed(pool, f"worker {reason} before registering{said}", now)
        at_fault = 0 if w.clean_exit else pool.slots
        outcomes = pool.queue.worker_gone(w.worker_id, now, at_fault)
        self._report_retries(outcomes)
        final = [o for o in outcomes if o.final]
        if final:
            tail = self.launcher.logs(w.handle, 20)
            rows = []
            for o in final:
                info = {
                    "message": f"worker {w.worker_id} {reason} while running input "
                    f"{o.record.index} (attempt {o.record.attempt})",
                    "exit_code": exit_code,
                    "logs": tail,
                }
                rows.append((o, pickle.dumps(info)))
            self._deliver(pool, rows, now)
        self._dispatch(pool)

    async def _housekeeping(self) -> None:
        while True:
            await asyncio.sleep(_TICK)
            now = time.monotonic()
            try:
                self._check_workers(now)
                for call_id in list(self._waiting_calls):
                    call = self.calls.get(call_id)
                    if call is not None:
                        self._answer_waiters(call)
                    if call is None or not call.waiters:
                        self._waiting_calls.discard(call_id)
                for pool in list(self.pools.values()):
                    if pool.queue.release_delayed(now):
                        self._dispatch(pool)
                    self._autoscale(pool, now)
            except Exception:
                log.exception("housekeeping failed")

    def _check_workers(self, now: float) -> None:
        cfg = self.config
        self.workers_channel.drain()  # what a worker said before it exited counts first
        for w in list(self.workers.values()):
            code = self.launcher.exit_code(w.handle)
            if code is not None:
                self._worker_gone(w, code, now)
            elif w.registered_at is None and now - w.launched_at > cfg.startup_timeout:
                self.launcher.stop(w.handle, graceful=False)
            elif w.registered_at is not None and now - w.last_seen > cfg.heartbeat_timeout:
                log.warning("worker %s missed its heartbeats; killing it", w.worker_id)
                self.launcher.stop(w.handle, graceful=False)
            elif w.state == "draining" and now - w.last_seen > cfg.stop_grace:
                self.launcher.stop(w.handle, graceful=False)


def _outputs_message(
    entries: list[tuple[list[Any], Any, list[Any]]],
) -> tuple[protocol.Outputs, list[Any]]:
    """An ``outputs`` message for ``(item, data, buffers)`` entries, their bytes repacked."""
    frames, addresses = pack([(data, bufs) for _, data, bufs in entries])
    items = [
        [*item[:4], *where, *item[7:]]
        for (item, _, _), where in zip(entries, addresses, strict=True)
    ]
    return protocol.Outputs(items), frames


def _describe_exit(code: int | None) -> str:
    if code is None:
        return "stopped answering"
    if code < 0:
        import signal

        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = str(-code)
        return f"was killed by {name}"
    if code == 137:
        return "was killed (exit code 137: out of memory or SIGKILL)"
    return f"exited with code {code}"
