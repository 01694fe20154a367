"""Who created a pool or a call: the owner a client names at ``hello``.

A client (a kernel, a script) says who it is when it connects: its Jupyter kernel id (None
outside a kernel), its process id and host, and a label. The Jupyter server extension then
fills in the notebook's path from its session manager (``extension.py``). Pools are per
owner: a pool's id includes ``owner_key``, so two notebooks that define the same function
get pools of their own, and nothing one of them does touches the other's workers; a
restarted kernel keeps its id, and so its pools. A deployed app's functions are the
exception: their pools are the app's (``app_owner``), one per function for every caller,
as on Modal, where a deployed function's containers serve whoever calls it.
"""

from __future__ import annotations

import os
import socket
from typing import Any

from .models import OwnerModel

_FIELDS = {"kernel_id": (str, type(None)), "pid": (int,), "host": (str,), "name": (str,)}


def unknown_owner() -> OwnerModel:
    """The owner of a caller that did not say who it is."""
    return {
        "kernel_id": None,
        "notebook": None,
        "name": "unknown",
        "pid": 0,
        "host": "",
        "app": None,
    }


def app_owner(app: str) -> OwnerModel:
    """The owner of a deployed app's pools: the app, kept by this control plane's process."""
    return {
        "kernel_id": None,
        "notebook": None,
        "name": f"app {app}",
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "app": app,
    }


def owner_from_wire(value: Any) -> OwnerModel:
    """The owner a client sent at ``hello``; raises ValueError for anything else."""
    if value is None:
        return unknown_owner()
    if not isinstance(value, dict):
        raise ValueError(f"owner must be a JSON object, got {type(value).__name__}")
    for name, types in _FIELDS.items():
        field = value.get(name)
        if not isinstance(field, types) or isinstance(field, bool):
            raise ValueError(f"owner: bad {name} {field!r}")
    return {
        "kernel_id": value["kernel_id"],
        "notebook": None,  # only the Jupyter server knows it (its session manager)
        "name": value["name"],
        "pid": value["pid"],
        "host": value["host"],
        "app": None,  # a caller is never an app: only the control plane says one owns a pool
    }


def owner_key(owner: OwnerModel) -> str:
    """What makes an owner the same one: its deployed app, else its kernel (which a restart
    keeps), else its process."""
    if owner.get("app"):
        return f"app:{owner['app']}"
    if owner["kernel_id"]:
        return f"kernel:{owner['kernel_id']}"
    return f"process:{owner['host']}:{owner['pid']}"


def short_kernel_id(kernel_id: str) -> str:
    """The first group of a kernel's uuid, as a label: ``kernel 1b61edf8``."""
    return kernel_id.split("-")[0][:8]
