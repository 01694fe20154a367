"""Who may talk to the control plane, and the files that say so.

- Local workers and clients reach the control plane through sockets inside a private
  directory (mode 0700): a Unix socket for workers (``unix://``, see
  ``nbscale_runtime.stream``), ZeroMQ ``ipc://`` for clients. The file system is the
  authentication, at no cost per byte. A Docker container with ``docker_transport="ipc"``
  gets a socket of its own, mounted into it alone, that speaks only for its worker
  (``stream_channel.py``): the mount is its credential.
- Over TCP, the worker endpoint is a CurveZMQ server: only workers whose public key the
  control plane generated and put on its allow-list complete the handshake (libzmq's ZAP), so
  a peer with a wrong or no key never gets a frame delivered, let alone unpickled.
- Keys reach a worker in its config file, written with mode 0600; never in argv or the
  environment.
- A control plane's private directory (``private_dirs.py``) names its owner, so that the
  next control plane of this user removes the directories of those that crashed.
"""

from __future__ import annotations

import json
import os
from typing import Any

import zmq
from zmq.auth.asyncio import AsyncioAuthenticator


def write_secret_json(path: str, data: dict[str, Any]) -> None:
    """Write ``data`` to ``path`` readable by this user only, never briefly world-readable."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(data, f)
    os.chmod(path, 0o600)


class KeyPair:
    __slots__ = ("public", "secret")

    def __init__(self) -> None:
        public, secret = zmq.curve_keypair()
        self.public = public.decode()
        self.secret = secret.decode()


class WorkerAllowList:
    """The CurveZMQ allow-list of worker public keys, consulted by libzmq's ZAP handler."""

    def __init__(self, ctx: zmq.Context[Any]) -> None:
        self._keys: set[bytes] = set()
        self.denied = 0
        self._auth = AsyncioAuthenticator(ctx)
        self._auth.start()
        self._auth.configure_curve_callback("*", credentials_provider=self)

    def allow(self, public_key: str) -> None:
        self._keys.add(public_key.encode())

    def revoke(self, public_key: str) -> None:
        self._keys.discard(public_key.encode())

    def callback(self, domain: str, key: bytes) -> bool:
        allowed = key in self._keys
        if not allowed:
            self.denied += 1
        return allowed

    def stop(self) -> None:
        self._auth.stop()
