"""The process launcher's zygote, started ahead of its control plane.

A script's first call starts a control plane in its process (``nbscale/_client.py``).
Loading the control plane's modules takes about as long as the zygote takes to start its
interpreter and import the runtime (tens of milliseconds each), one after the other. Started
first, the zygote starts on another core while they load, and the first worker forks that
much sooner: at ``import nbscale`` (``nbscale/_prestart.py``), else at the first call. Only
where the process launcher is sure to be chosen: ``launcher=process``, or ``auto`` where no
Docker engine can answer (no socket at its address); elsewhere the control plane starts its
launcher as before. Standard library and light modules only (``_prestart`` loads this
first).
"""

from __future__ import annotations

import contextlib
import os
import shutil
from dataclasses import dataclass

from ..private_dirs import private_dir
from .docker_engine import engine_address
from .zygote import ZygoteClient, worker_environment


@dataclass(slots=True)
class HeadStart:
    """What a control plane starts with, made ahead: its private directory (which holds
    the zygote's log) and the zygote, if one could start."""

    dir: str
    zygote: ZygoteClient | None

    def discard(self) -> None:
        """The control plane did not start: remove what was made for it."""
        if self.zygote is not None:
            self.zygote.kill()
        shutil.rmtree(self.dir, ignore_errors=True)


def surely_process(launcher: str) -> bool:
    """Whether the ``launcher`` setting will choose local processes, known without asking
    Docker anything (``selection.choose_launcher`` decides)."""
    if launcher == "process":
        return True
    address = engine_address()
    return (
        launcher == "auto"
        and address.startswith("unix://")
        and not os.path.exists(address.removeprefix("unix://"))
    )


def head_start(launcher: str, python: str, zygote: bool) -> HeadStart | None:
    """The control plane's directory and zygote, started now, where the process launcher
    will fork workers (``zygote``: the ``process_zygote`` setting); else None."""
    if not (zygote and surely_process(launcher)):
        return None
    directory = private_dir()
    started = None
    with contextlib.suppress(OSError):  # the launcher says so when it starts its own
        started = ZygoteClient(python, worker_environment(), os.path.join(directory, "zygote.log"))
    return HeadStart(directory, started)
