"""How kernels find the control plane that a Jupyter server hosts.

The server writes a connection file (endpoints, launcher, limits; mode 0600) into the Jupyter
runtime directory and puts its path in ``NBSCALE_CONNECTION_FILE`` in its own environment.
Kernels the server starts inherit the variable, and their nbscale client connects to the
server's control plane instead of embedding one. Workers never see it (the process launcher
removes it), since a worker is never a client.

The file is written whole or not at all (a temporary file renamed into place): a full disk
never leaves an empty one. When the control plane cannot start or its file cannot be
written, the server says why in ``NBSCALE_CONNECTION_ERROR`` instead, and kernels raise
that error rather than quietly running a control plane of their own. Files left by a server
that crashed (its process gone) are removed by the next one on the host.
"""

from __future__ import annotations

import contextlib
import glob
import json
import os
from typing import Any

from .launchers.owner import owner_alive, owner_tag
from .security import write_secret_json

ENV_VAR = "NBSCALE_CONNECTION_FILE"
ERROR_VAR = "NBSCALE_CONNECTION_ERROR"


class PublicationError(OSError):
    """The connection file could not be written; the message names it and says why."""


class Publication:
    """One published connection file, and the environment values it replaced."""

    def __init__(self, runtime_dir: str, info: dict[str, Any]) -> None:
        self.path = os.path.join(runtime_dir, f"nbscale-{os.getpid()}.json")
        temporary = f"{self.path}.{os.getpid()}.tmp"
        try:
            os.makedirs(runtime_dir, mode=0o700, exist_ok=True)
            remove_stale(runtime_dir)
            write_secret_json(temporary, {**info, "owner": owner_tag()})
            os.replace(temporary, self.path)
        except OSError as exc:
            with contextlib.suppress(OSError):
                os.unlink(temporary)
            reason = exc.strerror or str(exc)
            raise PublicationError(
                exc.errno, f"cannot write the connection file {self.path}: {reason}"
            ) from exc
        self._previous = {name: os.environ.get(name) for name in (ENV_VAR, ERROR_VAR)}
        os.environ[ENV_VAR] = self.path
        os.environ.pop(ERROR_VAR, None)

    def withdraw(self) -> None:
        """Remove the file and give the environment back its previous values: a kernel
        started after this must not look for a control plane that is gone."""
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)
        if os.environ.get(ENV_VAR) == self.path:
            for name, previous in self._previous.items():
                if previous is None:
                    os.environ.pop(name, None)
                else:
                    os.environ[name] = previous


def announce_failure(message: str) -> None:
    """Tell the kernels this server starts from now on why it has no control plane for
    them: their nbscale client raises ``ControlPlaneError`` with ``message``."""
    os.environ.pop(ENV_VAR, None)
    os.environ[ERROR_VAR] = message


def remove_stale(runtime_dir: str) -> list[str]:
    """Remove the connection files of control planes whose process is gone; returns them."""
    removed = []
    for path in glob.glob(os.path.join(runtime_dir, "nbscale-*.json")):
        if _owner_alive(path):
            continue
        with contextlib.suppress(OSError):
            os.unlink(path)
            removed.append(path)
    return removed


def _owner_alive(path: str) -> bool:
    """Whether the control plane that wrote the connection file at ``path`` still runs: by
    its owner tag, else (an older or half-written file) by the pid it names."""
    try:
        with open(path) as f:
            info = json.load(f)
        owner, pid = info.get("owner"), int(info.get("pid", 0))
    except (OSError, ValueError, TypeError, AttributeError):
        owner, pid = None, 0
    if owner is not None:
        return owner_alive(owner)
    name = os.path.basename(path)[len("nbscale-") : -len(".json")]
    pid = pid or (int(name) if name.isdigit() else 0)
    if pid <= 0:
        return True  # not ours to judge
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    return True
