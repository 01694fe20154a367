"""Which launcher a control plane uses: ``NBSCALE_LAUNCHER`` = process, docker, slurm or auto."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .base import Launcher, LaunchFailed
from .docker_engine import engine_reachable
from .process import ProcessLauncher

if TYPE_CHECKING:
    from ..remote import RemoteWorkers

KINDS = ("auto", "process", "docker", "slurm")


def make_launcher(
    kind: str,
    log_dir: str,
    python: str | None = None,
    docker_network: str = "bridge",
    remote: RemoteWorkers | None = None,
) -> Launcher:
    """The launcher for ``kind``; "auto" means Docker containers when a Docker engine
    answers, else local processes; "slurm" is never chosen by "auto" (``remote``: its
    settings). Raises ``LaunchFailed`` when Docker was asked for and
    cannot be used, saying why."""
    if kind not in KINDS:
        raise LaunchFailed(f"unknown launcher {kind!r}: choose one of {', '.join(KINDS)}")
    if kind == "auto":
        kind = "docker" if engine_reachable() else "process"
    if kind == "docker":
        from .docker import DockerLauncher  # imports the docker SDK: only when used

        return DockerLauncher(network=docker_network)
    if kind == "slurm":
        from .slurm import launcher_for

        return launcher_for(python, remote)
    return ProcessLauncher(log_dir, python)
