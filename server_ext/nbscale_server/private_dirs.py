"""A control plane's private directory: mode 0700, for its sockets, logs and secrets.

It names its owner (``owner``: "pid:start time"), so that the next control plane of this
user removes the directories of those that crashed. Standard library only: the zygote
started at ``import nbscale`` makes one before the rest of nbscale loads
(``launchers/head_start.py``).
"""

from __future__ import annotations

import glob
import os
import shutil
import tempfile

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
