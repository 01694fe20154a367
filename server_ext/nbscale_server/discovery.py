"""How kernels find the control plane that a Jupyter server hosts.

The server writes a connection file (endpoints, launcher, limits; mode 0600) into the Jupyter
runtime directory and puts its path in ``NBSCALE_CONNECTION_FILE`` in its own environment.
Kernels the server starts inherit the variable, and their nbscale client connects to the
server's control plane instead of embedding one. Workers never see it (the process launcher
removes it), since a worker is never a client.
"""

from __future__ import annotations

import contextlib
import os
from typing import Any

from .security import write_secret_json

ENV_VAR = "NBSCALE_CONNECTION_FILE"


class Publication:
    """One published connection file, and the environment value it replaced."""

    def __init__(self, runtime_dir: str, info: dict[str, Any]) -> None:
        os.makedirs(runtime_dir, mode=0o700, exist_ok=True)
        self.path = os.path.join(runtime_dir, f"nbscale-{os.getpid()}.json")
        write_secret_json(self.path, info)
        self._previous = os.environ.get(ENV_VAR)
        os.environ[ENV_VAR] = self.path

    def withdraw(self) -> None:
        """Remove the file and give the environment back its previous value: a kernel
        started after this must not look for a control plane that is gone."""
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)
        if os.environ.get(ENV_VAR) == self.path:
            if self._previous is None:
                del os.environ[ENV_VAR]
            else:
                os.environ[ENV_VAR] = self._previous
