"""Launchers start and stop workers: local processes now, Docker containers next."""

from .base import Launcher, LaunchFailed, WorkerHandle, WorkerSpec
from .process import ProcessLauncher

__all__ = ["LaunchFailed", "Launcher", "ProcessLauncher", "WorkerHandle", "WorkerSpec"]
