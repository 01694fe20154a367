"""Launchers start and stop workers: local processes, Docker containers or Slurm jobs."""

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
