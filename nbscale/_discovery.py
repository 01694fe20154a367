"""Finding the Jupyter server's control plane, and noticing when it is gone.

A kernel started by a Jupyter server gets ``NBSCALE_CONNECTION_FILE``, the server's
connection file. When that server is gone (killed, crashed) and another one serves the same
URL (restarted), the file the kernel was given names a dead process: the restarted server's
control plane is found by its own file in the same runtime directory, matched by the Jupyter
server's URL. When there is none, nbscale says so (``ConnectionLostError``) rather than
start a private control plane in its place: the user expects the server's pools and limits.
"""

from __future__ import annotations

import glob
import json
import logging
import os
from dataclasses import dataclass
from typing import Any

from nbscale_server.callers import ProcessWatch

from .exceptions import ConnectionLostError

log = logging.getLogger("nbscale")

_urls: dict[str, str] = {}  # connection file -> its Jupyter server's URL, as last read


@dataclass(frozen=True)
class ServerFile:
    """A Jupyter server's connection file, as read."""

    path: str
    info: dict[str, Any]

    @property
    def url(self) -> str | None:
        url = self.info.get("jupyter_server_url")
        return str(url) if url else None

    def describe(self) -> str:
        """ "the control plane at ipc://... (Jupyter server http://...)" """
        where = f"the control plane at {self.info.get('client_endpoint')}"
        return f"{where} (Jupyter server {self.url})" if self.url else where


def _read(path: str) -> ServerFile | None:
    try:
        with open(path) as f:
            info = json.load(f)
    except (OSError, ValueError):
        return None
    if not isinstance(info, dict) or "client_endpoint" not in info or "pid" not in info:
        return None
    return ServerFile(path, info)


def _alive(server: ServerFile) -> bool:
    try:
        os.kill(int(server.info["pid"]), 0)
    except ProcessLookupError:
        return False
    except (PermissionError, ValueError, TypeError):
        return True  # it runs, as another user
    return not ProcessWatch(int(server.info["pid"])).gone()


def find_server(path: str | None, known_url: str | None = None) -> ServerFile | None:
    """The control plane to connect to: the one of the connection file at ``path``, or, when
    that server is gone, the live one of the same Jupyter server URL (``known_url``, else
    the file's) in the same directory. None: no file named (the caller embeds its own).
    Raises ``ConnectionLostError`` when the file names a server that is gone and no
    restarted one serves its URL."""
    if not path:
        return None
    named = _read(path)
    if named is not None and named.url:
        _urls[path] = named.url  # the next server start removes a crashed one's file
    if named is not None and _alive(named):
        return named
    url = known_url or (named.url if named is not None else _urls.get(path))
    if url is not None:
        for other in sorted(glob.glob(os.path.join(os.path.dirname(path), "nbscale-*.json"))):
            found = _read(other)
            if found is not None and found.url == url and _alive(found):
                log.info("nbscale: the Jupyter server at %s restarted; using %s", url, other)
                return found
    gone = named.describe() if named is not None else f"the control plane named by {path}"
    served = f" serves {url}" if url else " was found"
    raise ConnectionLostError(
        f"{gone} is gone, and no restarted Jupyter server{served}: start the Jupyter server "
        "again (and this kernel from it), or unset NBSCALE_CONNECTION_FILE to run an "
        "embedded control plane in this process"
    )


def server_connection_files() -> list[ServerFile]:
    """The connection files of the Jupyter servers' control planes that run on this machine:
    the one ``NBSCALE_CONNECTION_FILE`` names, else those in the Jupyter runtime directory,
    the newest first. Files left by servers that are gone are skipped."""
    from jupyter_core.paths import jupyter_runtime_dir

    named = os.environ.get("NBSCALE_CONNECTION_FILE")
    found = glob.glob(os.path.join(jupyter_runtime_dir(), "nbscale-*.json"))
    paths = [named] if named else sorted(found, key=_modified, reverse=True)
    servers = (_read(path) for path in paths)
    return [server for server in servers if server is not None and _alive(server)]


def _modified(path: str) -> float:
    try:
        return os.path.getmtime(path)
    except OSError:
        return 0.0
