"""Launchers start and stop workers: local processes or Docker containers."""

from .base import Launcher, LaunchFailed, WorkerHandle, WorkerSpec
from .process import ProcessLauncher
from .selection import LauncherChoice, start_launcher

__all__ = [
    "LaunchFailed",
    "Launcher",
    "LauncherChoice",
    "ProcessLauncher",
    "WorkerHandle",
    "WorkerSpec",
    "start_launcher",
]
