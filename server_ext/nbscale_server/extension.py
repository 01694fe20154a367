"""The Jupyter server extension: the control plane lives in the Jupyter server.

Installed with the wheel, it is enabled by ``etc/jupyter/jupyter_server_config.d/nbscale.json``.
When the server's loop runs, it starts one control plane on that loop, publishes its
connection file for the kernels the server starts (``discovery.py``), and serves the REST and
WebSocket API (``handlers.py``). Kernels then share its pools and limits, and a kernel restart
loses nothing: pools, workers and spawned calls belong to the server. When the server stops,
so do the workers.

Settings are traits, read from ``jupyter_server_config.py`` or ``jupyter_nbscale_config.py``
as ``c.NbScale.<name>``; ``NbScale.class_print_help()`` lists them with their help.
"""

from __future__ import annotations

from typing import Any

import zmq
from jupyter_server.extension.application import ExtensionApp
from traitlets import Bool, Dict, Enum, Float, Integer, List, Unicode

from .control_plane import ControlPlane, ControlPlaneConfig
from .discovery import Publication
from .events import EventHub
from .handlers import routes
from .limits import Limits
from .remote import SETTING_NAMES, RemoteWorkers

_LIMITS = Limits()


class NbScale(ExtensionApp):
    """Hosts the nbscale control plane in the Jupyter server."""

    name = "nbscale"
    description = "Modal-style .map() over autoscaled worker pools, hosted by this server."

    launcher = Enum(
        ["process", "docker", "slurm", "auto"],
        default_value="process",
        help="How workers are started: 'process' runs each as a local subprocess of the "
        "server's Python (see `python`); 'docker' runs each in a container of its own "
        "(kernels build the images: nbscale.Image); 'slurm' submits one Slurm batch job "
        "each (see worker_address, shared_dir and the slurm_* settings); 'auto' is docker "
        "when a Docker engine answers, else process.",
    ).tag(config=True)

    docker_network = Enum(
        ["bridge", "host"],
        default_value="bridge",
        help="Docker workers' network: 'bridge' (a network of the control plane's own, "
        "the worker socket bound to its gateway) or 'host' (loopback; starts faster).",
    ).tag(config=True)

    max_workers_total = Integer(
        None,
        allow_none=True,
        min=1,
        help="Most workers running at once over all pools and kernels "
        "(default: twice the CPU count, at least 4).",
    ).tag(config=True)

    max_pending_inputs = Integer(
        _LIMITS.max_pending_inputs,
        min=1,
        help="Inputs per function waiting for a worker; over it, .remote() raises "
        "ResourceExhaustedError and .map() waits.",
    ).tag(config=True)

    max_total_inputs = Integer(
        _LIMITS.max_total_inputs,
        min=1,
        help="Inputs per function pending or running at once.",
    ).tag(config=True)

    max_inputs_in_flight_per_map = Integer(
        _LIMITS.max_inputs_in_flight_per_map,
        min=1,
        help="Inputs one .map() call has sent and not yet got back.",
    ).tag(config=True)

    max_pending_spawn_inputs = Integer(
        _LIMITS.max_pending_spawn_inputs,
        min=1,
        help="Inputs per function from .spawn()/.spawn_map() waiting for a worker.",
    ).tag(config=True)

    heartbeat_interval = Float(1.0, min=0.01, help="Seconds between a worker's heartbeats.").tag(
        config=True
    )

    heartbeat_timeout = Float(
        15.0,
        min=0.1,
        help="Seconds without a word from a worker before it counts as lost (its inputs "
        "are retried elsewhere).",
    ).tag(config=True)

    startup_timeout = Float(
        60.0, min=0.1, help="Seconds a new worker gets to register before it is killed."
    ).tag(config=True)

    stop_grace = Float(
        5.0,
        min=0.0,
        help="Seconds a stopping worker gets to finish its input before it is killed.",
    ).tag(config=True)

    worker_transport = Enum(
        ["ipc", "tcp"],
        default_value="ipc",
        help="How workers reach the control plane: 'ipc' (a Unix socket in a private 0700 "
        "directory) or 'tcp' (CurveZMQ with a per-worker key, bound to `bind_host`).",
    ).tag(config=True)

    bind_host = Unicode(
        "127.0.0.1",
        help="The address the tcp worker endpoint binds; loopback unless workers run "
        "elsewhere (never 0.0.0.0 without a reason).",
    ).tag(config=True)

    python = Unicode(
        None,
        allow_none=True,
        help="The Python interpreter that runs process workers (default: the server's).",
    ).tag(config=True)

    # --- workers on other hosts (Slurm): nbscale_server.remote reads these ---
    worker_address = Unicode(
        "127.0.0.1",
        help="Where Slurm workers reach the control plane (CurveZMQ, per-worker keys): an "
        "IP, host or interface name of this host that the nodes can reach, e.g. 'ib0'. "
        "0.0.0.0 and :: are refused unless allow_all_interfaces is True.",
    ).tag(config=True)

    allow_all_interfaces = Bool(
        False,
        help="Let worker_address be 0.0.0.0 or :: (every network interface of this host; "
        "workers still need their CurveZMQ key).",
    ).tag(config=True)

    shared_dir = Unicode(
        None,
        allow_none=True,
        help="A directory every node sees, for Slurm workers' config files (mode 0600: "
        "their keys) and job output (default: ~/.nbscale/jobs).",
    ).tag(config=True)

    slurm_partition = Unicode(
        None, allow_none=True, help="The Slurm partition of worker jobs (--partition)."
    ).tag(config=True)

    slurm_account = Unicode(
        None, allow_none=True, help="The Slurm account worker jobs are charged to (--account)."
    ).tag(config=True)

    slurm_qos = Unicode(
        None, allow_none=True, help="The Slurm quality of service of worker jobs (--qos)."
    ).tag(config=True)

    slurm_time = Unicode(
        None,
        allow_none=True,
        help="The walltime of worker jobs (--time), e.g. '4:00:00' (default: the partition's).",
    ).tag(config=True)

    slurm_gpu_types = Dict(
        key_trait=Unicode(),
        value_trait=Unicode(),
        help="Modal GPU names as this cluster's gres types, e.g. {'A100': 'a100'}: gpu='A100:2' "
        "asks for --gres=gpu:a100:2 (default: the name in lower case; 'any': --gres=gpu:N).",
    ).tag(config=True)

    slurm_sbatch_args = List(
        Unicode(), help="More sbatch arguments for worker jobs, e.g. ['--constraint=ib']."
    ).tag(config=True)

    slurm_drain_seconds = Integer(
        120,
        min=0,
        max=65535,
        help="Seconds before its walltime a worker job is told to stop taking inputs and "
        "drain (--signal=B:TERM@N).",
    ).tag(config=True)

    events_interval = Float(
        0.25,
        min=0.02,
        help="Seconds between two messages on the events WebSocket: changes in between "
        "are coalesced into one message.",
    ).tag(config=True)

    control_plane: ControlPlane | None = None
    hub: EventHub | None = None
    publication: Publication | None = None

    def control_plane_config(self) -> ControlPlaneConfig:
        """The traits, as the control plane's settings."""
        return ControlPlaneConfig(
            limits=Limits(
                max_pending_inputs=self.max_pending_inputs,
                max_total_inputs=self.max_total_inputs,
                max_inputs_in_flight_per_map=self.max_inputs_in_flight_per_map,
                max_pending_spawn_inputs=self.max_pending_spawn_inputs,
            ),
            max_workers_total=self.max_workers_total,
            heartbeat_interval=self.heartbeat_interval,
            heartbeat_timeout=self.heartbeat_timeout,
            startup_timeout=self.startup_timeout,
            stop_grace=self.stop_grace,
            worker_transport=self.worker_transport,
            bind_host=self.bind_host,
            python=self.python,
            launcher=self.launcher,
            docker_network=self.docker_network,
            remote=RemoteWorkers.from_settings(
                {name: getattr(self, name) for name in SETTING_NAMES}
            ),
        )

    def initialize_handlers(self) -> None:
        self.handlers.extend(routes())

    async def _start_jupyter_server_extension(self, serverapp: Any) -> None:
        """Start the control plane on the server's running loop, then tell kernels."""
        plane = ControlPlane(self.control_plane_config(), ctx=zmq.Context())
        await plane.start()
        self.control_plane = plane
        self.hub = EventHub(plane, self.events_interval)
        info = {**plane.connection_info(), "jupyter_server_url": serverapp.connection_url}
        self.publication = Publication(serverapp.runtime_dir, info)
        self.log.info(
            "nbscale control plane at %s (connection file %s)",
            plane.client_endpoint,
            self.publication.path,
        )

    async def stop_extension(self) -> None:
        """Withdraw the connection file, then stop every worker and close the sockets."""
        if self.publication is not None:
            self.publication.withdraw()
            self.publication = None
        if self.hub is not None:
            self.hub.close()
            self.hub = None
        plane, self.control_plane = self.control_plane, None
        if plane is not None:
            await plane.stop()
            plane.ctx.term()
