"""Launchers start and stop workers: local processes or Docker containers."""

from .base import Launcher, LaunchFailed, WorkerHandle, WorkerSpec
from .process import ProcessLauncher
from .selection import make_launcher

__all__ = [
    "LaunchFailed",
    "Launcher",
    "ProcessLauncher",
    "WorkerHandle",
    "WorkerSpec",
    "make_launcher",
]
