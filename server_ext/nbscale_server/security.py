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
- A private directory names its owner (``owner``: "pid:start time"), so that the next
  control plane of this user removes the directories of those that crashed.
"""

from __future__ import annotations

import glob
import json
import os
import shutil
import tempfile
from typing import Any

import zmq
from zmq.auth.asyncio import AsyncioAuthenticator

from .launchers.owner import owner_alive, owner_tag

_OWNER_FILE = "owner"  # in a private directory: "pid:start time" of the control plane


def private_dir(prefix: str = "nbscale-") -> str:
    """A new directory only this user can enter (mkdtemp creates it with mode 0700), with an
    ``owner`` file naming this process; those of control planes that crashed go first."""
    remove_stale_dirs(prefix)
    path = tempfile.mkdtemp(prefix=prefix)
    os.chmod(path, 0o700)
    try:
        with open(os.path.join(path, _OWNER_FILE), "w") as f:
            f.write(owner_tag())
    except OSError:
        shutil.rmtree(path, ignore_errors=True)
        raise
    return path


def remove_stale_dirs(prefix: str = "nbscale-") -> list[str]:
    """Remove the private directories of this user's control planes whose process is gone
    (found by their ``owner`` file; anything without one is left alone)."""
    removed = []
    for path in glob.glob(os.path.join(tempfile.gettempdir(), prefix + "*")):
        try:
            if os.stat(path).st_uid != os.getuid():
                continue
            with open(os.path.join(path, _OWNER_FILE)) as f:
                owner = f.read().strip()
        except OSError:
            continue
        if not owner_alive(owner):
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
    return removed


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
