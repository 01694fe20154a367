"""A worker's settings, as the launcher writes them to its config file (``python -m
nbscale_runtime --config FILE``), and how it dials the control plane with them."""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from .link import Link, connect

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
