"""Workers as Docker containers: one hardened container per worker, on a network of its own.

- Every container runs ``python3 -m nbscale_runtime --config /run/nbscale/worker.json`` in an
  image built by ``nbscale.Image`` (never pulled at launch: a missing image is an error). Its
  config file, which holds its CurveZMQ keys, is bind-mounted read-only; keys never appear in
  the environment or argv, where ``docker inspect`` and ``/proc`` would show them.
- Hardened: a non-root user, a read-only root with a tmpfs ``/tmp``, every capability
  dropped, no-new-privileges, a pids limit, never the Docker socket; ``init=True`` so SIGTERM
  reaches Python (as PID 1 it would ignore it); cpu, memory and shm limits from the
  function's ``cpu=``/``memory=``; GPUs by UUID (``gpus.py``), so none is shared.
- Workers reach the control plane over TCP + CurveZMQ: by default on the user's bridge
  network (``docker_engine.user_network``, kept across control planes), the worker socket
  bound to its gateway; with ``network="shared"`` on that network too, all in one network
  namespace (``docker_netns.py``: much faster to start); with ``network="host"`` on
  127.0.0.1. Never 0.0.0.0.
- Or, with ``transport="ipc"`` (an engine on this kernel only), over a Unix socket of the
  worker's own bind-mounted into its container (``stream_channel.py``), large frames in
  shared memory as for local processes; the container keeps its network for user traffic.
- A warm spare container, started ahead of the image the last plain worker ran, serves the
  next pool's first worker at once (``docker_spares.py``).
- Docker calls run on a few daemon threads, never on the control plane's loop. One thread
  follows the engine's ``die`` events (``docker_container.DieWatch``): when a container
  exits, its exit code, OOM flag and last log lines are recorded and the container is
  removed (logs use json-file with rotation, so they survive until then).
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import threading
import uuid
from typing import Any

from ..gpus import GpuAllocator, GpuError, GpuInfo
from ..losses import INFRASTRUCTURE
from ..options import FunctionOptions
from .base import (
    EXIT_NOT_STARTED,
    Launcher,
    LaunchFailed,
    LogChunk,
    WorkerHandle,
    WorkerSpec,
    signal_of_exit,
)
from .daemon_threads import DaemonThreads
from .docker_checks import EngineChecks, check_shared_kernel
from .docker_container import Container, DieWatch, create_and_start, exit_of
from .docker_engine import (
    LABEL_SERVER,
    LABEL_WORKER,
    UserNetwork,
    connect,
    forget_endpoints,
    gpus_held,
    network_lost_message,
    owner_labels,
    reap_orphans,
    remove_container_now,
    unreachable_message,
    user_network,
)
from .docker_netns import LABEL_NETNS, SharedNetns
from .docker_spares import Spares
from .docker_spec import (
    CONTAINER_UID,
    REGISTER_IN_CONTAINER,
    SOCKET_IN_CONTAINER,
    ContainerExit,
    container_options,
    host_config_options,
    lost_exit,
    missing_image_message,
    start_error_message,
)
from .logs import follow_container, follow_stamped

log = logging.getLogger("nbscale.docker")

NETWORKS = ("bridge", "shared", "host")
TRANSPORTS = ("tcp", "ipc")
_THREADS = 8  # Docker calls in parallel: starts are bound by the engine, not by us


class DockerLauncher(Launcher):
    name = "docker"

    def __init__(
        self,
        network: str = "bridge",
        client: Any = None,
        gpus: list[GpuInfo] | None = None,
        base_image: str | None = None,
        transport: str = "tcp",
        spares: int = 0,
        spares_dir: str | None = None,
        heartbeat_timeout: float = 15.0,
    ) -> None:
        """``network``: "bridge" (the user's network), "shared" (that network, one
        namespace for all this control plane's workers) or "host"; ``gpus``: the GPUs to assign
        (default: what NVML finds, on the first GPU request); ``base_image``: what the
        shared namespace's holder starts from, when the engine has it; ``transport``: how
        workers reach the control plane, "tcp" or "ipc" (a Unix socket each, mounted);
        ``spares``: warm spare containers to keep, in ``spares_dir`` (the directory the
        workers' files are in: they are linked into a spare's), each exiting after
        ``heartbeat_timeout`` seconds without this launcher."""
        if network not in NETWORKS:
            raise LaunchFailed(
                f"Docker network must be one of {', '.join(NETWORKS)}, got {network!r}"
            )
        if transport not in TRANSPORTS:
            raise LaunchFailed(
                f"Docker transport must be one of {', '.join(TRANSPORTS)}, got {transport!r}"
            )
        self.client = client or connect()
        self.api = self.client.api
        self.transport = transport
        if transport == "ipc":
            check_shared_kernel(self.api)
        self.server_id = "sv-" + uuid.uuid4().hex[:12]
        self.labels = owner_labels(self.server_id)
        reap_orphans(self.api)
        self._lock = threading.Lock()
        self._containers: dict[str, Container] = {}  # live ones, by worker id
        self._checks = EngineChecks(self.api)
        self._gpus = GpuAllocator(gpus)
        self._closed = False
        self.accepting = True  # false once close() begins
        self._network_lost: str | None = None  # why no worker can reach us any more
        self._user_network: UserNetwork | None = None
        if network == "host":
            self.network, self.bind_host = "host", "127.0.0.1"
        else:
            self._user_network = user_network(self.api)
            self.network, self.bind_host = self._user_network.name, self._user_network.gateway
        self._netns: SharedNetns | None = None
        if network == "shared":
            holders = f"nbscale-{self.server_id}"  # named after this control plane
            self._netns = SharedNetns(self.api, self.network, self.labels, holders)
            if base_image:  # started now, so the first workers seldom wait for it
                self._netns.begin(base_image)
        self._threads = DaemonThreads(_THREADS, "nbscale-docker")
        self._spares = Spares(self, spares, spares_dir, heartbeat_timeout)
        self._dies = DieWatch(self.api, f"{LABEL_SERVER}={self.server_id}", self._on_die)

    def housekeep(self, now: float) -> None:
        self._spares.keep_alive()

    def worker_bind_host(self) -> str | None:
        return None if self.transport == "ipc" else self.bind_host

    def socket_in_worker(self) -> str | None:
        return SOCKET_IN_CONTAINER if self.transport == "ipc" else None

    # --- starting -----------------------------------------------------------------------

    def spare_worker_id(self, options: FunctionOptions) -> str | None:
        return self._spares.pick(options)

    def spares(self) -> list[str]:
        return self._spares.names()

    def start(self, spec: WorkerSpec) -> WorkerHandle:
        if self._closed:
            raise LaunchFailed("the Docker launcher is closed")
        image = spec.options.image
        if not image:
            raise LaunchFailed("no image for this function (the nbscale client builds one)")
        self._checks.image(image)
        self._checks.volumes(spec.options.volumes)
        gpus = self._reserve_gpus(spec.options.gpu)
        if os.getuid() == 0:  # the files are 0600: let the container's user use them
            for path in (spec.config_path, spec.register_path, spec.socket_path):
                if path:
                    os.chown(path, CONTAINER_UID, CONTAINER_UID)
        container = self._spares.take(spec)
        if container is None:
            container = Container(
                spec.worker_id, f"nbscale-{spec.worker_id}", spec.options.memory, gpus
            )
            if not self.adopt(container):
                raise LaunchFailed("the Docker launcher is closed")
            self._threads.submit(lambda: self._create_and_start(container, spec, image))
        self._spares.refill(spec.options)
        return WorkerHandle(
            spec.worker_id, spec.pool_id, self.name, container, name=container.name, image=image
        )

    def adopt(self, c: Container) -> bool:
        """Follow a container about to be started; False once close() has begun (it stops
        taking starts under this lock: none slips past it)."""
        with self._lock:
            if self.accepting:
                self._containers[c.worker_id] = c
            return self.accepting

    def starting(self) -> list[Container]:
        """The containers whose start is under way."""
        with self._lock:
            return [c for c in self._containers.values() if not c.started.is_set()]

    def discard(self, c: Container) -> None:
        """Kill a container no worker runs in (a spare): collected and removed as it dies."""
        c.signalled = "SIGKILL"
        self._threads.submit(lambda: self._signal(c, "SIGKILL"))

    def _reserve_gpus(self, request: Any) -> list[str]:
        if request is None:
            return []
        try:
            return self._gpus.assign(request, self._gpus_taken())
        except GpuError as exc:
            raise LaunchFailed(str(exc), lasting=exc.lasting) from None
        except Exception as exc:  # listing the GPUs other containers hold failed
            raise LaunchFailed(unreachable_message(exc)) from None

    def _gpus_taken(self) -> set[str]:
        """GPUs held by live containers: ours, and those of other control planes."""
        with self._lock:
            taken = {u for c in self._containers.values() for u in c.gpus}
        return taken | gpus_held(self.api)

    def _create_and_start(self, c: Container, spec: WorkerSpec, image: str) -> None:
        import docker

        try:
            try:
                self._create_container(c, spec, image)
            except docker.errors.NotFound as exc:
                if not self._network_made_again(exc):
                    raise
                self._create_container(c, spec, image)
        except Exception as exc:
            if isinstance(exc, docker.errors.ImageNotFound):  # removed since we checked
                self._checks.forget_image(image)
                reason = f"could not start ({missing_image_message(image)})"
            else:
                reason = f"could not start ({start_error_message(exc, image)})"
            self._record_exit(c, ContainerExit(EXIT_NOT_STARTED, reason, ""))
        finally:
            c.started.set()

    def _create_container(self, c: Container, spec: WorkerSpec, image: str) -> None:
        if self._network_lost is not None:
            raise LaunchFailed(self._network_lost)
        network = self._netns.network_mode(image) if self._netns else self.network
        host = host_config_options(spec, network, c.gpus, c.spare_dir)
        host_config = self.api.create_host_config(**host)
        wait = self._spares.stale if c.spare_dir else None
        options = container_options(spec, image, c.name, self.labels, c.gpus, wait)
        create_and_start(self.api, c, options, host_config)

    def _network_made_again(self, exc: Exception) -> bool:
        """Whether the user's network, removed while this control plane ran (by ``docker
        network prune`` while no worker was on it, say), is back: made again here, on the
        gateway the worker socket is bound to (else every start fails, saying why)."""
        if f"network {self.network} not found" not in str(exc):
            return False
        gateway = user_network(self.api, like=self._user_network).gateway
        if gateway != self.bind_host:  # made meanwhile by another control plane
            self._network_lost = network_lost_message(self.network, gateway, self.bind_host)
        return self._network_lost is None

    # --- exits --------------------------------------------------------------------------

    def _on_die(self, container_id: str, labels: dict[str, str]) -> None:
        """On the events thread: one of our containers exited; collect it."""
        if LABEL_NETNS in labels and self._netns is not None:
            self._netns.lost(container_id)
        with self._lock:
            c = self._containers.get(labels.get(LABEL_WORKER, ""))
        if c is not None:
            self._threads.submit(functools.partial(self._collect, c))

    def _collect(self, c: Container) -> None:
        """Record an exited container's code, reason and last lines, then remove it."""
        if c.exit is not None or c.id is None:
            return
        exit = exit_of(self.api, c)
        if exit is None:
            return  # a stale event, or a kill that did not take
        self._record_exit(c, exit)
        with contextlib.suppress(Exception):
            self.api.remove_container(c.id, force=True)

    def _record_exit(self, c: Container, exit: ContainerExit) -> None:
        with self._lock:
            if c.exit is None:
                c.exit = exit
            self._containers.pop(c.worker_id, None)
        c.exited.set()
        self._spares.exited(c)

    # --- stopping -----------------------------------------------------------------------

    def stop(self, handle: WorkerHandle, *, graceful: bool = True) -> None:
        c: Container = handle.ref
        signal = "SIGTERM" if graceful else "SIGKILL"
        if c.exit is not None or c.signalled in (signal, "SIGKILL"):
            return
        c.signalled = signal
        self._threads.submit(lambda: self._signal(c, signal))

    def _signal(self, c: Container, signal: str) -> None:
        import docker

        c.started.wait()
        if c.id is None or c.exit is not None:
            return
        try:
            self.api.kill(c.id, signal=signal)
        except docker.errors.APIError:  # not running any more (or gone): collect it now
            self._collect(c)
        except Exception as exc:
            self._record_exit(c, lost_exit(exc))

    def exit_code(self, handle: WorkerHandle) -> int | None:
        c: Container = handle.ref
        return c.exit.code if c.exit is not None else None

    def exit_reason(self, handle: WorkerHandle) -> str | None:
        c: Container = handle.ref
        return c.exit.reason if c.exit is not None else None

    def exit_cause(self, handle: WorkerHandle) -> str | None:
        c: Container = handle.ref
        return c.exit.cause if c.exit is not None else None

    def exit_signal(self, handle: WorkerHandle) -> int | None:
        """``init`` exits with 128 + the signal that ended the worker (137: SIGKILL)."""
        return signal_of_exit(self.exit_code(handle))

    def register_in_worker(self, path: str) -> str | None:
        return REGISTER_IN_CONTAINER  # bind-mounted there, read-write

    def logs(self, handle: WorkerHandle, tail: int = 20) -> str:
        return self.follow_logs(handle, None, tail).text

    def follow_logs(self, handle: WorkerHandle, after: int | None, limit: int) -> LogChunk:
        """By Docker's timestamps: the cursor is the last line's, in microseconds."""
        c: Container = handle.ref
        if c.exit is not None:
            return follow_stamped(c.exit.logs, after, limit)
        return follow_container(self.api, c.id, after, limit)

    def wait(self, handle: WorkerHandle, timeout: float) -> int | None:
        c: Container = handle.ref
        c.exited.wait(timeout)
        return self.exit_code(handle)

    def close(self) -> None:
        """Remove every container this control plane started (the network stays, for the
        user's next control planes)."""
        if self._closed:
            return
        with self._lock:
            self.accepting = False
            pending = list(self._containers.values())
        self._spares.close()
        for c in pending:
            c.started.wait(30)
        if self._netns is not None:
            self._netns.close(30)
        self._closed = True
        self._dies.close()
        try:
            ours = self.api.containers(
                all=True, filters={"label": [f"{LABEL_SERVER}={self.server_id}"]}
            )
        except Exception:
            ours = []
        removals = [
            self._threads.submit(functools.partial(remove_container_now, self.api, c["Id"]))
            for c in ours
        ]
        for future in removals:
            with contextlib.suppress(Exception):
                future.result(timeout=30)
        for c in pending:
            removed = "was removed as the control plane stopped"
            self._record_exit(c, ContainerExit(137, removed, "", INFRASTRUCTURE))
        if self.network != "host":  # what the engine may keep of containers removed starting
            names = [c.name for c in pending] + (self._netns.names if self._netns else [])
            forget_endpoints(self.api, self.network, names)
        self._threads.close()
