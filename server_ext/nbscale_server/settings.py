"""Every nbscale setting, declared once: its name, type, default, help and where it applies.

The other copies are derived from this table, and a test fails when one drifts:

- the client's ``nbscale.config(key=...)``, ``NBSCALE_<KEY>`` and config file
  (``nbscale/_config.py``), and ``nbscale config``, which shows each value and its source;
- the server extension's traits, ``c.NbScale.<name>`` (``extension.py``);
- ``ControlPlaneConfig``, what the control plane gets from either side;
- the README's settings table (``settings_readme.py`` renders it; ``python -m
  nbscale_server.settings --markdown`` prints it; ``scripts/gen-contracts`` rewrites it in
  place).

Where a setting applies (its ``scope``):

- ``client``: the nbscale client in a kernel or script reads it;
- ``control plane``: the control plane reads it; the embedded one (a client without a Jupyter
  server) takes it from the client's settings, the Jupyter server's from its traits;
- ``server``: the Jupyter server extension alone reads it.
"""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .limits import Limits
from .setting import Scope, Setting

__all__ = ["SETTINGS", "ControlPlaneConfig", "Scope", "Setting", "control_plane_config"]

_LIMITS = Limits()  # Modal's admission limits (limits.py) are the defaults


def _table(*settings: Setting) -> dict[str, Setting]:
    return {s.name: s for s in settings}


SETTINGS: dict[str, Setting] = _table(
    # --- read by the client ---------------------------------------------------------------
    Setting(
        "connect_timeout",
        float,
        10.0,
        "client",
        "Seconds a client waits for the control plane to answer: at connection, and while "
        "calls wait on it (then they raise ConnectionLostError).",
        minimum=0.1,
    ),
    Setting(
        "progress",
        str,
        "auto",
        "client",
        "How a .map() shows its progress: widget (a live view under the notebook cell, with "
        "Cancel and Detach buttons in JupyterLab), text (a bar on stderr), off, or auto "
        "(widget in a Jupyter kernel, text when stderr is a terminal, else off).",
        choices=("auto", "widget", "text", "off"),
    ),
    Setting(
        "progress_outputs_kept",
        int,
        100,
        "client",
        "How many finished inputs' output (what they printed) a map's view keeps for its "
        "per-input drill-down, besides every failed input's.",
        minimum=0,
    ),
    Setting(
        "debug",
        bool,
        False,
        "client",
        "Show nbscale's own frames in the tracebacks of remote errors (and IPython's for "
        "the magics); by default a traceback shows only your code, local and remote.",
    ),
    Setting(
        "busy_poll_us",
        int,
        150,
        "client",
        "Microseconds nbscale's loop polls its sockets before it sleeps, while a thread waits "
        "on a .remote() call (as Linux's busy_poll): a reply that comes meanwhile is read "
        "without waking the loop, ~35 us sooner, for up to that much CPU each time the loop "
        "would sleep during the wait. 0: never poll.",
        minimum=0,
    ),
    Setting(
        "zygote_at_import",
        bool,
        True,
        "client",
        "Start the process launcher's zygote (see process_zygote) when nbscale is imported, "
        "where a control plane embedded in this process will fork local workers: the first "
        "call's worker then starts in milliseconds. Off: the zygote starts with the first "
        "call. Never in a kernel of a Jupyter server with nbscale, whose zygote is warm.",
    ),
    # --- read by the control plane (the embedded one's from the client) -------------------
    Setting(
        "launcher",
        str,
        "auto",
        "control plane",
        "What runs workers: process (local subprocesses, of the python setting's "
        "interpreter), docker (a container each; kernels build the images: nbscale.Image), "
        "slurm (a Slurm batch job each: see the Slurm settings below), kubernetes (a Pod "
        "each: see the Kubernetes settings below), or auto (docker when "
        "Docker can serve: the engine answers, the docker package imports and the base "
        "image exists or can be pulled now; else process; never slurm or kubernetes); "
        'nbscale.status()["launcher"] and ["launcher_reason"] say which and why.',
        choices=("process", "docker", "slurm", "kubernetes", "auto"),
    ),
    Setting(
        "base_image",
        str,
        "nbscale/base:bookworm",
        "control plane",
        "The base of Image.debian_slim() and Image.from_kernel(); `nbscale images base` "
        "makes it, and the auto launcher checks that it exists.",
    ),
    Setting(
        "docker_network",
        str,
        "bridge",
        "control plane",
        "Docker workers' network: bridge (the user's bridge network on this host, made once "
        "and kept for their next control planes, each binding its worker socket to its "
        "gateway), shared (that network, a control plane's workers in one network "
        "namespace, as the containers of a Kubernetes Pod: they share ports and host name; "
        "containers start 3-4x faster, so scaling out is faster) or host (loopback; as fast, "
        "but workers reach the host's own services).",
        choices=("bridge", "shared", "host"),
    ),
    Setting(
        "docker_transport",
        str,
        "tcp",
        "control plane",
        "How Docker workers reach the control plane: tcp (ZeroMQ with CurveZMQ and a key per "
        "worker, over docker_network) or ipc (a Unix socket of its own bind-mounted into each "
        "container, with large data in shared memory as for local processes: several times "
        "the bandwidth for large arrays, and lower latency; the container keeps its network). "
        "ipc needs the engine on this machine's own Linux kernel (not Docker Desktop, not a "
        "remote engine: refused there); what it trades is in the README's Docker section.",
        choices=("tcp", "ipc"),
    ),
    Setting(
        "docker_spares",
        int,
        1,
        "control plane",
        "Warm spare Docker containers to keep started, of the image the last worker ran: a "
        "new pool's first worker (a new function, a pool grown from zero) takes one and "
        "answers in tens of milliseconds instead of a container's start (~0.3 s). Only "
        "workers with no cpu, memory, gpu or volumes take one (those are fixed when a "
        "container is created). Each costs an idle container; 0: none.",
        minimum=0,
    ),
    Setting(
        "max_workers_total",
        int,
        None,
        "control plane",
        "Most workers running at once, over all pools (and, in the server, all kernels).",
        minimum=1,
        default_text="twice the CPU count, at least 4",
        client_name="max_workers",
    ),
    Setting(
        "max_pending_inputs",
        int,
        _LIMITS.max_pending_inputs,
        "control plane",
        "Inputs per function waiting for a worker; over it, .remote() raises "
        "ResourceExhaustedError and .map() waits.",
        minimum=1,
    ),
    Setting(
        "max_total_inputs",
        int,
        _LIMITS.max_total_inputs,
        "control plane",
        "Inputs per function pending or running at once.",
        minimum=1,
    ),
    Setting(
        "max_inputs_in_flight_per_map",
        int,
        _LIMITS.max_inputs_in_flight_per_map,
        "control plane",
        "Inputs one .map() call has sent and not yet got back. Small inputs (sent in runs "
        "averaging 1 KiB pickled or less) count a quarter each, here and in "
        "max_pending_inputs, until the map sends a bigger one.",
        minimum=1,
    ),
    Setting(
        "max_pending_spawn_inputs",
        int,
        _LIMITS.max_pending_spawn_inputs,
        "control plane",
        "Inputs per function from .spawn()/.spawn_map() waiting for a worker.",
        minimum=1,
    ),
    Setting(
        "heartbeat_interval",
        float,
        1.0,
        "control plane",
        "Seconds between a worker's heartbeats.",
        minimum=0.01,
    ),
    Setting(
        "heartbeat_timeout",
        float,
        15.0,
        "control plane",
        "Seconds of silence after which a worker is judged by what it runs (unresponsive "
        "while its input is within its timeout, killed otherwise), a worker exits that has "
        "not heard from its control plane, and a caller on another host counts as gone.",
        minimum=0.1,
    ),
    Setting(
        "startup_timeout",
        float,
        60.0,
        "control plane",
        "Seconds a new worker gets to register before it is killed, counted from when it "
        "starts running (a Slurm job: once it leaves the queue).",
        minimum=0.1,
    ),
    Setting(
        "pending_timeout",
        float,
        3600.0,
        "control plane",
        "Seconds a worker may wait in a scheduler's queue for resources (a pending Slurm "
        "job) before it is cancelled and counts as a launch failure: the function's waiting "
        "inputs then fail with LaunchError naming the scheduler's reason.",
        minimum=0.1,
    ),
    Setting(
        "stop_grace",
        float,
        5.0,
        "control plane",
        "Seconds a stopping worker gets to finish its input before it is killed (when the "
        "control plane stops, or a worker told to stop falls silent).",
        minimum=0.0,
    ),
    Setting(
        "exit_grace",
        float,
        30.0,
        "control plane",
        "Seconds the @exit hooks of an @app.cls class get when its worker stops (scaled "
        "down, its pool stopped, SIGTERM, the control plane stopping), on top of stop_grace: "
        "Modal's 30 s. A worker whose @exit outlives it is ended, its log saying so.",
        minimum=0.0,
    ),
    Setting(
        "worker_transport",
        str,
        "ipc",
        "control plane",
        "How local workers reach the control plane: ipc (a Unix socket in a private 0700 "
        "directory) or tcp (CurveZMQ with a per-worker key, on worker_address). Containers "
        "follow docker_transport; Slurm jobs and Pods always use tcp.",
        choices=("ipc", "tcp"),
    ),
    Setting(
        "worker_address",
        str,
        None,
        "control plane",
        "Where workers that dial over TCP (containers, Slurm jobs, tcp transport) reach the "
        "control plane: an IP address, host name or network interface name (e.g. ib0, the "
        "cluster's network) of this host; always CurveZMQ with per-worker keys. 0.0.0.0 and "
        ":: (every interface) are refused unless allow_all_interfaces is set.",
        default_text="loopback (127.0.0.1), or the Docker network's gateway for Docker "
        "workers on the bridge network",
    ),
    Setting(
        "allow_all_interfaces",
        bool,
        False,
        "control plane",
        "Let worker_address be 0.0.0.0 or :: (every network interface of this host; workers "
        "still need their CurveZMQ key).",
    ),
    Setting(
        "bind_host",
        str,
        None,
        "control plane",
        "Deprecated: the old name of worker_address, still read when worker_address is not set.",
        default_text="worker_address decides",
    ),
    Setting(
        "python",
        str,
        None,
        "control plane",
        "The Python interpreter that runs process workers and Slurm jobs (for Slurm: a path "
        "every node sees, with nbscale installed; checked when a worker registers).",
        default_text="the control plane's own",
    ),
    Setting(
        "max_input_mib",
        int,
        1024,
        "control plane",
        "Largest input or result, in MiB: a bigger one fails with a clear error, and a "
        "connection that announces a message over twice as large is dropped.",
        minimum=1,
    ),
    Setting(
        "shared_memory_min_kib",
        int,
        1024,
        "control plane",
        "Pickled data of at least this many KiB (a numpy array's buffer, a batch of inputs or "
        "results) travels between the control plane and its local process workers through "
        "shared memory (an anonymous memfd, 0600, passed over their Unix socket and freed "
        "with its last holder: never a file) instead of through the socket; 0 sends "
        "everything through the socket. "
        "Workers reached over tcp (containers, Slurm jobs, Pods) always use the socket; "
        "Docker workers with docker_transport ipc use shared memory too.",
        minimum=0,
    ),
    Setting(
        "worker_log_mib",
        int,
        16,
        "control plane",
        "Size in MiB at which a process worker's log file is rotated (the part before is "
        "kept as <log>.1).",
        minimum=1,
    ),
    Setting(
        "process_zygote",
        bool,
        True,
        "control plane",
        "Fork process workers from a zygote: a process started with the control plane that "
        "has nbscale's worker runtime imported, so that a worker starts in milliseconds "
        "instead of a new interpreter's ~0.1 s. Each forked worker is set up as a spawned one "
        "(own session, cgroup limits, log, environment); the zygote exits with its control "
        "plane. Off: every worker is a new interpreter.",
    ),
    Setting(
        "spawn_retention_days",
        float,
        7.0,
        "control plane",
        "Days a finished spawned call's results are kept (as on Modal); after that, "
        "FunctionCall.from_id and .get raise NotFoundError.",
        minimum=0.0,
    ),
    Setting(
        "spawn_memory_calls",
        int,
        100_000,
        "control plane",
        "Finished spawned calls the embedded control plane keeps in memory, with their "
        "results; beyond it (or spawn_memory_mib) the oldest are dropped. A Jupyter "
        "server's control plane keeps them on disk instead (store_path).",
        minimum=1,
    ),
    Setting(
        "spawn_memory_mib",
        int,
        1024,
        "control plane",
        "MiB of spawned calls' results the embedded control plane keeps in memory; beyond "
        "it the oldest finished calls are dropped.",
        minimum=1,
    ),
    # --- read by the Slurm launcher ----------------------------------------------------
    Setting(
        "shared_dir",
        str,
        None,
        "control plane",
        "A directory every node of the cluster sees, for Slurm workers' config files (mode "
        "0600, in a 0700 directory: their keys) and job output.",
        default_text="~/.nbscale/jobs",
    ),
    Setting(
        "slurm_partition",
        str,
        None,
        "control plane",
        "The partition of worker jobs (--partition); a function's slurm={'partition': ...} "
        "comes first.",
        default_text="the cluster's default",
    ),
    Setting(
        "slurm_account",
        str,
        None,
        "control plane",
        "The account worker jobs are charged to (--account).",
        default_text="yours by default",
    ),
    Setting(
        "slurm_qos",
        str,
        None,
        "control plane",
        "The quality of service of worker jobs (--qos).",
        default_text="the cluster's default",
    ),
    Setting(
        "slurm_time",
        str,
        None,
        "control plane",
        "The walltime of worker jobs (--time): minutes, HH:MM:SS or D-HH:MM.",
        default_text="the partition's",
    ),
    Setting(
        "slurm_gpu_types",
        str,
        None,
        "control plane",
        "Modal GPU names as the cluster's gres types, e.g. A100=a100,H100=h100_80g: "
        "gpu='A100:2' asks for --gres=gpu:a100:2; gpu='any:2' for --gres=gpu:2.",
        default_text="the name in lower case",
    ),
    Setting(
        "slurm_sbatch_args",
        str,
        None,
        "control plane",
        "More sbatch arguments for every worker job, as a shell would split them, e.g. "
        "--constraint=ib --reservation=lab.",
        default_text="none",
    ),
    Setting(
        "slurm_drain_seconds",
        int,
        120,
        "control plane",
        "Seconds before its walltime a worker job is told to stop taking inputs and drain "
        "(--signal=B:TERM@N).",
        minimum=0,
    ),
    # --- read by the Kubernetes launcher -----------------------------------------------
    Setting(
        "registry",
        str,
        None,
        "control plane",
        "The container registry Kubernetes nodes pull worker images from (e.g. "
        "registry.lab:5000/ml): after a build, the kernel pushes each worker image as "
        "<registry>/nbscale-worker:<content hash>. Required by the kubernetes launcher; "
        "Image.from_registry images without added layers are used as they are.",
        default_text="none: the kubernetes launcher refuses to start",
    ),
    Setting(
        "k8s_namespace",
        str,
        None,
        "control plane",
        "The namespace worker Pods (and their key Secrets) are created in; the launcher "
        "needs only the Role of `nbscale k8s manifests` there.",
        default_text="the namespace this Pod runs in, else the kubeconfig context's, else default",
    ),
    Setting(
        "k8s_image_pull_secrets",
        str,
        None,
        "control plane",
        "Comma-separated names of Secrets in the namespace that let nodes pull from the "
        "registry (the Pods' imagePullSecrets).",
        default_text="none",
    ),
    Setting(
        "k8s_service_address",
        str,
        None,
        "control plane",
        "HOST:PORT of a Service that forwards to this control plane's Pod: workers dial it "
        "and the control plane listens on PORT (of worker_address or the Pod's IP).",
        default_text="workers dial the control plane's Pod IP on a random port",
    ),
    Setting(
        "k8s_gpu_products",
        str,
        None,
        "control plane",
        "Modal GPU names as the nodes' nvidia.com/gpu.product labels, | between "
        "alternatives, e.g. A100=NVIDIA-A100-SXM4-80GB|NVIDIA-A100-PCIE-40GB,T4=Tesla-T4.",
        default_text="the GPU Feature Discovery names of each Modal type",
    ),
    Setting(
        "k8s_drain_seconds",
        int,
        120,
        "control plane",
        "A worker Pod's termination grace period: the seconds a scaled-down worker has to "
        "finish its inputs after SIGTERM before the kubelet kills it.",
        minimum=0,
    ),
    # --- read by the Jupyter server extension alone ---------------------------------------
    Setting(
        "store_path",
        str,
        None,
        "server",
        "The SQLite file (WAL) that keeps spawned calls' inputs and results across "
        "restarts of the server, for spawn_retention_days.",
        default_text="nbscale.db in the Jupyter data directory",
    ),
    Setting(
        "events_interval",
        float,
        0.25,
        "server",
        "Seconds between two messages on the events WebSocket: changes in between are "
        "coalesced into one message.",
        minimum=0.02,
    ),
)

CLIENT_SETTINGS = {s.key: s for s in SETTINGS.values() if s.key is not None}
SERVER_SETTINGS = {s.trait: s for s in SETTINGS.values() if s.trait is not None}
_LIMIT_NAMES = frozenset(f.name for f in dataclasses.fields(Limits))


def _server_default(name: str) -> Any:
    return SETTINGS[name].trait_default


@dataclass
class ControlPlaneConfig:
    """What the control plane runs with: the settings of scope "control plane", plus where
    the clients' endpoint is (the embedded mode and tests pick it; not a user setting)."""

    limits: Limits = field(default_factory=Limits)
    max_workers_total: int | None = _server_default("max_workers_total")
    heartbeat_interval: float = _server_default("heartbeat_interval")
    heartbeat_timeout: float = _server_default("heartbeat_timeout")
    startup_timeout: float = _server_default("startup_timeout")
    pending_timeout: float = _server_default("pending_timeout")
    stop_grace: float = _server_default("stop_grace")
    exit_grace: float = _server_default("exit_grace")
    worker_transport: str = _server_default("worker_transport")
    worker_address: str | None = _server_default("worker_address")
    allow_all_interfaces: bool = _server_default("allow_all_interfaces")
    bind_host: str | None = _server_default("bind_host")  # deprecated: worker_address
    python: str | None = _server_default("python")
    launcher: str = _server_default("launcher")
    docker_network: str = _server_default("docker_network")
    docker_transport: str = _server_default("docker_transport")
    docker_spares: int = _server_default("docker_spares")
    base_image: str = _server_default("base_image")
    max_input_mib: int = _server_default("max_input_mib")
    shared_memory_min_kib: int = _server_default("shared_memory_min_kib")
    worker_log_mib: int = _server_default("worker_log_mib")
    process_zygote: bool = _server_default("process_zygote")
    spawn_retention_days: float = _server_default("spawn_retention_days")
    spawn_memory_calls: int = _server_default("spawn_memory_calls")
    spawn_memory_mib: int = _server_default("spawn_memory_mib")
    shared_dir: str | None = _server_default("shared_dir")
    slurm_partition: str | None = _server_default("slurm_partition")
    slurm_account: str | None = _server_default("slurm_account")
    slurm_qos: str | None = _server_default("slurm_qos")
    slurm_time: str | None = _server_default("slurm_time")
    slurm_gpu_types: str | None = _server_default("slurm_gpu_types")
    slurm_sbatch_args: str | None = _server_default("slurm_sbatch_args")
    slurm_drain_seconds: int = _server_default("slurm_drain_seconds")
    registry: str | None = _server_default("registry")
    k8s_namespace: str | None = _server_default("k8s_namespace")
    k8s_image_pull_secrets: str | None = _server_default("k8s_image_pull_secrets")
    k8s_service_address: str | None = _server_default("k8s_service_address")
    k8s_gpu_products: str | None = _server_default("k8s_gpu_products")
    k8s_drain_seconds: int = _server_default("k8s_drain_seconds")
    client_endpoint: str | None = None  # default: ipc in the control plane's private directory
    store_path: str | None = None  # the SQLite store (a Jupyter server's); None: in memory

    @property
    def max_message_bytes(self) -> int:
        """What a peer may announce in one message before it is dropped."""
        return 2 * self.max_input_mib << 20

    @property
    def shared_min_bytes(self) -> int | None:
        """Frames from this size go to local workers through shared memory (None: none)."""
        return (self.shared_memory_min_kib << 10) or None


def control_plane_config(value: Callable[[Setting], Any]) -> ControlPlaneConfig:
    """The control plane's settings, each read with ``value`` (the client's settings or
    the server's traits)."""
    rows = [s for s in SETTINGS.values() if s.scope == "control plane"]
    limits = Limits(**{s.name: value(s) for s in rows if s.name in _LIMIT_NAMES})
    others = {s.name: value(s) for s in rows if s.name not in _LIMIT_NAMES}
    return ControlPlaneConfig(limits=limits, **others)


if __name__ == "__main__":
    from .settings_readme import markdown

    if sys.argv[1:] != ["--markdown"]:
        sys.exit("usage: python -m nbscale_server.settings --markdown")
    sys.stdout.write(markdown())
