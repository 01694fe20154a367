"""How a warm spare container waits to become a worker (``launchers/docker_spares.py``):
``python -m nbscale_runtime --config /run/nbscale/worker.json --wait STALE``, its runtime
imported, until its launcher links that config into its directory.

Beside the config, the launcher makes two files: ``wake``, a FIFO it writes a byte to once
the config is there, so that the spare sleeps in ``select`` rather than polling (~2% of a
core at 5 ms); and ``alive``, whose mtime it refreshes while it lives: a spare whose
``alive`` is more than ``STALE`` seconds old exits, its control plane gone. Without the FIFO
(a file system that has none) the spare looks for its config every 5 ms.
"""

from __future__ import annotations

import contextlib
import os
import select
import stat
import time

from .worker_config import WorkerConfig

ALIVE_FILE = "alive"
WAKE_FILE = "wake"
_POLL_S = 0.005  # without the FIFO: how often to look for the config
_CHECK_S = 1.0  # with it: how often to look at ``alive`` meanwhile


def wait_for_config(path: str, stale: float) -> WorkerConfig | None:
    """The config at ``path`` once it appears, or None once ``alive`` beside it is more than
    ``stale`` seconds old (or gone). The launcher links the config in whole (``os.link``), so
    it is never read half written."""
    directory = os.path.dirname(path)
    alive = os.path.join(directory, ALIVE_FILE)
    wake = _open_fifo(os.path.join(directory, WAKE_FILE))
    try:
        while True:
            with contextlib.suppress(FileNotFoundError):
                return WorkerConfig.from_file(path)
            try:
                if time.time() - os.stat(alive).st_mtime > stale:
                    return None
            except FileNotFoundError:
                return None
            if wake is None:
                time.sleep(_POLL_S)
            elif select.select([wake], [], [], _CHECK_S)[0]:
                with contextlib.suppress(BlockingIOError):
                    os.read(wake, 64)
    finally:
        if wake is not None:
            os.close(wake)


def _open_fifo(path: str) -> int | None:
    """``path`` opened for reading and writing (so that it never reads as closed while no
    writer has it open: Linux's FIFOs allow this), or None where it is no FIFO."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_NONBLOCK)
    except OSError:
        return None
    if stat.S_ISFIFO(os.fstat(fd).st_mode):
        return fd
    os.close(fd)
    return None
