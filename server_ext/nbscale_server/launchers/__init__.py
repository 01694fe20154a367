"""Launchers start and stop workers: local processes, Docker containers or Slurm jobs.

The names below load on first use, so that importing one light module of this package
(``head_start``, ``zygote``, ``docker_engine``: the zygote started at ``import nbscale``)
does not load every launcher first.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .base import Launcher, WorkerHandle, WorkerSpec
    from .errors import LaunchFailed
    from .process import ProcessLauncher
    from .selection import LauncherChoice, start_launcher

_HOMES = {
    "LaunchFailed": ".errors",
    "Launcher": ".base",
    "LauncherChoice": ".selection",
    "ProcessLauncher": ".process",
    "WorkerHandle": ".base",
    "WorkerSpec": ".base",
    "start_launcher": ".selection",
}
__all__ = [
    "LaunchFailed",
    "Launcher",
    "LauncherChoice",
    "ProcessLauncher",
    "WorkerHandle",
    "WorkerSpec",
    "start_launcher",
]


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(home, __name__), name)
