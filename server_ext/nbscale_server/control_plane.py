"""The control plane: a broker that connects callers to autoscaled worker pools.

This module is its composition root. It binds the channels (a ZeroMQ ROUTER for clients; a
Unix stream socket for local workers, or a ROUTER over TCP with CurveZMQ for containers),
links in-process clients without sockets, routes each message to the room that handles
it, runs the housekeeping tick, and starts and stops the whole. The rooms, each depending
only on those below it:

    api       what callers and the REST API may ask (one table: message type -> handler)
    registration  a registered function's pool, by its code, options and owner
    shared_objects  Dicts and Queues: their requests, waits and keeping (shared_core)
    deployed  deployed apps, found by name
    spawn_batches  spawns and their first results by the batch (over the delivery)
    nesting   callers that are code on a worker, and the slots their workers lend
    liveness  workers gone or silent, and what becomes of their inputs (exact blame)
    worker_events  what workers say: register (versions checked), heartbeat, goodbye
    fleet     workers from launch to exit: autoscaling, the total cap
    watching  running inputs' output to the callers that watch them; detached calls
    delivery  calls, admission, dispatch of inputs to workers
    settling  outputs back to callers (or to the store), retries, finished calls
    spawned   spawned and detached calls: inputs and outputs in the store, fetched later
    store     what outlives callers: in memory (embedded), or a SQLite file (the server's)
    outbox    every message sent: to workers, replies, refusals, change events
    pool      the records they share (pools, workers; calls in calls.py), over the pure cores
              (queue, autoscaler, limits, options, compatibility)

Everything runs on one asyncio loop (the Jupyter server's, or a background thread's when
embedded in a client process); result bytes pass from workers to callers unpickled.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import shutil
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import zmq

from nbscale_runtime import __version__, protocol
from nbscale_runtime.protocol import OUT_WORKER_ID

from .api import Api
from .channel import Channel, unbounded
from .delivery import Delivery
from .deployed import DeployedApps
from .fleet import Fleet
from .launchers import Launcher, LauncherChoice, LaunchFailed, start_launcher
from .launchers.head_start import HeadStart
from .liveness import Liveness
from .log_limit import LimitedLog
from .nesting import Nesting, nested_worker_id
from .outbox import Deliver, Outbox
from .pool import Records
from .private_dirs import private_dir
from .remote import LOOPBACK, WorkerAddressError, bind_worker_socket, resolve_worker_address
from .security import WorkerAllowList
from .settings import ControlPlaneConfig
from .shared_objects import SharedObjects
from .sqlite_store import SqliteStore
from .store import MemoryStore, SpawnStore
from .stream_channel import StreamChannel
from .watching import Watching
from .worker_events import WorkerEvents

if TYPE_CHECKING:  # imported when used: ~6 ms of every other control plane's start
    from .launchers.k8s_cluster import KubernetesOptions
    from .launchers.slurm_job import SlurmOptions

log = logging.getLogger("nbscale.control_plane")

TICK = 0.05  # housekeeping period, seconds

WorkerHandler = Callable[[Any, Any, list[Any], float], None]


class ControlPlane:
    def __init__(
        self,
        config: ControlPlaneConfig | None = None,
        launcher: Launcher | None = None,
        ctx: zmq.Context[Any] | None = None,
        clock: Callable[[], float] = time.monotonic,
        head_start: HeadStart | None = None,
    ) -> None:
        """``clock`` gives the time every decision uses (tests pass a fake one);
        ``head_start``: the directory and zygote made for it ahead (``head_start.py``)."""
        self.config = config or ControlPlaneConfig()
        self.ctx = ctx or zmq.Context()
        self.dir = head_start.dir if head_start is not None else private_dir()
        cfg = self.config
        try:
            # An address the operator chose is checked before anything starts.
            self._address = self._configured_address()
            if launcher is not None:
                choice = LauncherChoice(launcher.name, "given to the control plane")
            else:  # decided once, here: auto probes Docker (launchers/selection.py)
                launcher, choice = start_launcher(
                    cfg.launcher,
                    self.dir,
                    cfg.python,
                    cfg.docker_network,
                    cfg.base_image,
                    slurm=self._slurm_options(),
                    kubernetes=self._kubernetes_options(),
                    shared_dir=cfg.shared_dir,
                    log_max_bytes=cfg.worker_log_mib << 20,
                    zygote=(head_start and head_start.zygote) or cfg.process_zygote,
                    docker_transport=cfg.docker_transport,
                    docker_spares=cfg.docker_spares,
                    heartbeat_timeout=cfg.heartbeat_timeout,
                )
        except LaunchFailed:
            shutil.rmtree(self.dir, ignore_errors=True)
            raise
        self.launcher = launcher
        self.launcher_choice = choice
        self.clock = clock
        self._peer_log = LimitedLog(log)  # what broken or hostile peers send
        self.records = Records()
        self.outbox = Outbox()
        try:
            self.store = make_store(cfg)
        except BaseException:
            shutil.rmtree(self.dir, ignore_errors=True)
            launcher.close()
            raise
        self.delivery = Delivery(self.records, self.outbox, cfg.limits, clock, self.store)
        self.fleet = Fleet(
            self.records, self.outbox, self.delivery, self.launcher, self.config, clock, self.dir
        )
        self.liveness = Liveness(
            self.records, self.fleet, self.delivery, self.launcher, self.config, clock
        )
        self.watching = Watching(self.delivery, self.outbox)
        self.worker_events = WorkerEvents(
            self.records, self.outbox, self.delivery, self.fleet, self.config
        )
        self.nesting = Nesting(self.records, self.outbox, self.delivery)
        self.api = Api(
            self.records,
            self.outbox,
            self.delivery,
            self.fleet,
            self.liveness,
            clock,
            self.connection_info,
            self.nesting,
            self.watching,
            SharedObjects(self.outbox, self.store, clock),
            DeployedApps(self.outbox, self.store),
        )
        self._worker_handlers: dict[type[protocol.Message], WorkerHandler] = {
            protocol.Register: self.worker_events.on_register,
            protocol.GetInputs: self.delivery.on_get_inputs,
            protocol.Heartbeat: self.worker_events.on_heartbeat,
            protocol.Goodbye: self.worker_events.on_goodbye,
            protocol.Started: self.worker_events.on_started,
            protocol.LendSlot: self.nesting.on_lend_slot,
            protocol.Rejoin: self.nesting.on_rejoin,
            protocol.Streaming: self.watching.on_streaming,
        }
        # What the channels call with ``[identity, header, *payload]``, decoded and routed.
        self.receive_from_worker = self._receiver(self.on_worker)
        self.receive_from_client = self._receiver(self.api.handle)
        self.workers_channel: Channel | StreamChannel | None = None
        self.clients: Channel | None = None
        self.client_endpoint = ""
        self.worker_endpoint = ""
        self._tasks: list[asyncio.Task[Any]] = []
        self._closing = False

    def _configured_address(self) -> str | None:
        """The numeric address workers dial that the ``worker_address`` setting (or its
        deprecated name ``bind_host``) names; None when unset."""
        cfg = self.config
        if cfg.bind_host and not cfg.worker_address:
            log.warning("the bind_host setting is deprecated: call it worker_address")
        address = cfg.worker_address or cfg.bind_host
        if not address:
            return None
        try:
            return resolve_worker_address(address, cfg.allow_all_interfaces)
        except WorkerAddressError as exc:
            raise LaunchFailed(str(exc)) from None

    def _slurm_options(self) -> SlurmOptions | None:
        if self.config.launcher != "slurm":
            return None
        from .launchers.slurm_job import SlurmOptions

        try:
            return SlurmOptions.from_settings(self.config)
        except ValueError as exc:
            raise LaunchFailed(f"bad Slurm setting: {exc}") from None

    def _kubernetes_options(self) -> KubernetesOptions | None:
        if self.config.launcher != "kubernetes":
            return None
        from .launchers.k8s_cluster import KubernetesOptions

        try:
            return KubernetesOptions.from_settings(self.config)
        except ValueError as exc:
            raise LaunchFailed(f"bad Kubernetes setting: {exc}") from None

    # --- lifecycle ----------------------------------------------------------------------

    async def start(self) -> None:
        cfg = self.config
        client_sock = bounded_messages(unbounded(self.ctx.socket(zmq.ROUTER)), cfg)
        self.client_endpoint = cfg.client_endpoint or f"ipc://{self.dir}/clients"
        client_sock.bind(self.client_endpoint)
        # Containers, Slurm jobs and Pods cannot share our private directory: they dial the
        # address the operator chose, else their launcher's (a bridge gateway, loopback),
        # always with CurveZMQ; or (Docker with docker_transport=ipc) each gets a socket of
        # its own in it, mounted into its container alone (the fleet makes them).
        launcher_address = self.launcher.worker_bind_host()
        own_sockets = self.launcher.socket_in_worker() is not None
        on_worker = self.receive_from_worker
        if (cfg.worker_transport == "tcp" and not own_sockets) or launcher_address is not None:
            address = self._address or launcher_address or LOOPBACK
            keys = self.fleet.server_keys
            self.fleet.allow_list = WorkerAllowList(self.ctx)
            worker_sock = bounded_messages(unbounded(self.ctx.socket(zmq.ROUTER)), cfg)
            worker_sock.curve_server = True
            worker_sock.curve_secretkey = keys.secret.encode()
            worker_sock.curve_publickey = keys.public.encode()
            port = self.launcher.worker_port()
            self.worker_endpoint = bind_worker_socket(worker_sock, address, port)
            self.workers_channel = Channel(worker_sock, on_worker)
        else:  # a Unix socket in the private directory: half the thread wake-ups of ZeroMQ
            path = os.path.join(self.dir, "workers")
            self.worker_endpoint = f"unix://{path}"
            self.workers_channel = StreamChannel(
                path, on_worker, max_message=cfg.max_message_bytes, shared_min=cfg.shared_min_bytes
            )
            if own_sockets:
                self.fleet.worker_sockets = self.workers_channel
        self.fleet.endpoint = self.worker_endpoint
        self.clients = Channel(client_sock, self.receive_from_client)
        self.outbox.attach(self.workers_channel, self.clients)
        # Spawned calls a crashed control plane left unfinished run again (at least once).
        for pool in self.delivery.spawned.resume(self.records, self.fleet.total_cap()):
            self.outbox.emit("pool-added", pool.pool_id)
        self._tasks = [asyncio.ensure_future(self._housekeeping())]

    async def stop(self) -> None:
        """Stop every worker (gracefully, then by force) and close the sockets."""
        if self._closing:
            return
        self._closing = self.fleet.closing = True
        for task in self._tasks:
            task.cancel()
        self.fleet.stop_all(graceful=True)
        started = time.monotonic()
        while not self.fleet.all_exited():
            if not self.fleet.kill_past_grace(time.monotonic() - started):
                break
            await asyncio.sleep(0.02)
        self.stop_workers_now()
        for channel in (self.clients, self.workers_channel):
            if channel is not None:
                channel.close()
        if self.fleet.allow_list:
            self.fleet.allow_list.stop()
        self.store.close()
        shutil.rmtree(self.dir, ignore_errors=True)

    def stop_workers_now(self) -> None:
        """Kill every worker without waiting: for interpreter exit, when no loop may run."""
        self.fleet.kill_all()

    def connection_info(self) -> dict[str, Any]:
        return {
            "client_endpoint": self.client_endpoint,
            "worker_endpoint": self.worker_endpoint,
            "version": __version__,
            "launcher": self.launcher.name,
            "launcher_reason": self.launcher_choice.reason,  # why this launcher, in a line
            "registry": self.config.registry,  # where kernels push images for Kubernetes
            "pid": os.getpid(),
            "limits": dataclasses.asdict(self.config.limits),
            "max_input_mib": self.config.max_input_mib,
            "store": self.store.location,  # where spawned calls are kept
            # public by nature: workers need it to verify the server; it grants nothing
            "worker_public_key": self.fleet.server_keys.public if self.fleet.allow_list else None,
        }

    # --- routing ------------------------------------------------------------------------

    def _receiver(self, handler: Callable[[bytes, Any, list[Any]], None]) -> Any:
        """A channel's ``on_message``: decode ``[identity, header, *payload]``, then route."""

        def receive(frames: list[Any]) -> None:
            identity = frames[0] if isinstance(frames[0], bytes) else frames[0].bytes
            try:
                msg, payload = protocol.decode(frames[1:])
            except protocol.ProtocolError as exc:
                self._peer_log.warning("dropping undecodable message from %r: %s", identity, exc)
                return
            handler(identity, msg, payload)

        return receive

    def connect_local(self, deliver: Deliver) -> Deliver:
        """Link a client living in this process and on this loop, without sockets: messages
        are handed over as objects, never encoded. Returns the function that sends to us."""
        identity = f"local-{len(self.outbox.local_clients)}".encode()
        handle = self.api.handle

        def to_us(msg: protocol.Message, payload: list[Any]) -> None:
            handle(identity, msg, payload)

        # Both ways, hand over at once: a request is handled within the client's send (its
        # reply resolves the future before the client awaits it, saving two loop turns), and
        # the client's handlers only record what arrived (resolve a future, queue outputs),
        # never calling back into the control plane.
        self.outbox.local_clients[identity] = deliver
        return to_us

    def on_worker(self, identity: bytes, msg: protocol.Message, payload: list[Any]) -> None:
        now = self.clock()
        # A connection speaks for the worker it is named after (``<id>`` or ``<id>:pulse``),
        # never for another one.
        speaker = identity.split(b":", 1)[0].decode(errors="replace")
        if type(msg) is protocol.Outputs:  # the hot path: a batch, from any worker
            if all(item[OUT_WORKER_ID] == speaker for item in msg.items):
                self.delivery.on_outputs(msg, payload, now)
            else:
                self._peer_log.warning("dropping outputs from %r for another worker", identity)
            return
        if nested_worker_id(identity) is not None:  # code on a worker, calling functions
            self.api.handle(identity, msg, payload)
            return
        handler = self._worker_handlers.get(type(msg))
        worker_id = getattr(msg, "worker_id", "")
        w = self.records.workers.get(worker_id) if worker_id == speaker else None
        if handler is None or w is None:
            self._peer_log.warning("dropping %s from worker %r", msg.op, identity)
            return
        w.heard(now)
        handler(w, msg, payload, now)

    # --- housekeeping -------------------------------------------------------------------

    def tick(self) -> None:
        """Notice exits and timeouts, answer waits that expired, release retries whose delay
        passed, and let every pool's autoscaler act."""
        now = self.clock()
        if self.workers_channel is not None:
            self.workers_channel.drain()  # what a worker said before it exited counts first
        self.launcher.housekeep(now)  # memory limits watched, logs rotated
        self.liveness.check_workers(now)
        self.api.check_callers(now, self.config.heartbeat_timeout)
        self.delivery.answer_waiting()
        self.api.shared.expire()
        self.delivery.spawned.housekeep(now)
        for pool in list(self.records.pools.values()):
            try:  # one pool's failure is that pool's: the others go on
                if pool.queue.release_delayed(now):
                    self.delivery.dispatch(pool)
                self.fleet.autoscale(pool, now)
                self.nesting.check_deadlock(pool, now)
            except Exception:
                log.exception("housekeeping of %s failed", pool.name)

    async def _housekeeping(self) -> None:
        while True:
            await asyncio.sleep(TICK)
            try:
                self.tick()
            except Exception:
                log.exception("housekeeping failed")


def make_store(cfg: ControlPlaneConfig) -> SpawnStore:
    """The Jupyter server's SQLite store when it names one, else the in-memory one."""
    retention = cfg.spawn_retention_days * 86400
    if cfg.store_path:
        return SqliteStore(cfg.store_path, retention)
    return MemoryStore(cfg.spawn_memory_calls, cfg.spawn_memory_mib << 20, retention)


def bounded_messages(sock: zmq.Socket[Any], cfg: ControlPlaneConfig) -> zmq.Socket[Any]:
    """A peer that sends more than ``max_message_bytes`` at once is disconnected by libzmq
    (the sender of an honest input that large was told no before it sent it)."""
    sock.setsockopt(zmq.MAXMSGSIZE, cfg.max_message_bytes)
    return sock
