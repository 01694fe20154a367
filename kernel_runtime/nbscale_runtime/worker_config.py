"""A worker's settings, as the launcher writes them to its config file (``python -m
nbscale_runtime --config FILE``), and how it dials the control plane with them."""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field

from .link import Link, connect

# How often a warm spare container looks for the config file that makes it a worker: its
# share of the first call's latency, against ~200 stat calls a second while it waits.
_SPARE_POLL_S = 0.005
# Beside a spare's config: its launcher refreshes this file's mtime while it lives.
ALIVE_FILE = "alive"

# Set in a worker's environment (to its id), and so in its children's: ``nbscale.is_local()``
# reads it.
WORKER_ID_ENV = "NBSCALE_WORKER_ID"


@dataclass(frozen=True)
class WorkerConfig:
    worker_id: str
    pool_id: str
    endpoint: str
    parent_pid: int | None = None
    heartbeat_interval: float = 1.0
    max_result_mib: int | None = None  # a bigger result fails, as not serializable
    shared_min: int | None = None  # frames from this size go through shared memory (unix://)
    # seconds without a word from the control plane before the worker exits (None: never)
    heartbeat_timeout: float | None = None
    register_path: str | None = None  # the register file, as this worker sees it
    exit_grace: float | None = None  # seconds a class's @exit hooks may run (None: unbounded)
    server_public_key: str | None = None
    public_key: str | None = None
    secret_key: str | None = None
    # what the function's secrets put in its environment, before any of its code runs
    env: dict[str, str] | None = field(default=None, repr=False)

    @classmethod
    def from_file(cls, path: str) -> WorkerConfig:
        with open(path) as f:
            return cls(**json.load(f))

    def connect(self, identity: str) -> Link:
        """A connection to the control plane, named ``identity``."""
        keys = None
        if self.server_public_key:
            keys = (self.server_public_key, self.public_key or "", self.secret_key or "")
        return connect(self.endpoint, identity, keys, self.shared_min)


def wait_for_config(path: str, stale: float) -> WorkerConfig | None:
    """The config at ``path`` once it appears, or None once the ``alive`` file beside it is
    more than ``stale`` seconds old (or gone): how a warm spare container
    (``launchers/docker_spares.py``), its runtime imported, waits to become a worker while
    its control plane lives. The launcher links the config in whole (``os.link``), so it is
    never read half written."""
    alive = os.path.join(os.path.dirname(path), ALIVE_FILE)
    while True:
        try:
            return WorkerConfig.from_file(path)
        except FileNotFoundError:
            try:
                if time.time() - os.stat(alive).st_mtime > stale:
                    return None
            except FileNotFoundError:
                return None
            time.sleep(_SPARE_POLL_S)
