"""The control plane's settings, as the embedded client and the Jupyter server extension
give them (``nbscale/_config.py`` and the extension's traits fill them in)."""

from __future__ import annotations

from dataclasses import dataclass, field

from .limits import Limits


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
    launcher: str = "process"  # "process", "docker" or "auto" (docker when an engine answers)
    docker_network: str = "bridge"  # Docker workers: "bridge" (our own network) or "host"
