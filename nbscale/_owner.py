"""Who this process is, as the control plane records it: the owner of the pools and calls
it creates (``nbscale_server.owners``).

In a Jupyter kernel the owner is the kernel (its id, from its connection file, survives a
restart); the Jupyter server adds the notebook's path. Elsewhere it is the process. Commands
that stop or scale pools act on their caller's own pools unless told otherwise.
"""

from __future__ import annotations

import os
import re
import socket
import sys
from collections.abc import Mapping
from typing import Any

from nbscale_runtime.worker_config import WORKER_ID_ENV
from nbscale_server.owners import short_kernel_id

_KERNEL_FILE = re.compile(r"kernel-(.+)\.json$")


def _in_kernel() -> bool:
    ipython = sys.modules.get("IPython")
    shell = ipython.get_ipython() if ipython is not None else None
    return getattr(shell, "kernel", None) is not None


def kernel_id() -> str | None:
    """This kernel's id (from its connection file's name, as a Jupyter server names it),
    or None: outside a kernel, or in one started without an id (nbclient's)."""
    if not _in_kernel():
        return None
    try:
        from ipykernel.connect import get_connection_file

        path = get_connection_file()
    except Exception:  # not an ipykernel kernel, or one without a connection file
        return None
    found = _KERNEL_FILE.search(os.path.basename(path))
    return found.group(1) if found else None


def _label(kernel: str | None) -> str:
    # The Jupyter server names the notebook of a kernel it starts in JPY_SESSION_NAME.
    session = os.environ.get("JPY_SESSION_NAME")
    in_kernel = _in_kernel()
    if in_kernel and session:
        return os.path.basename(session)
    script = sys.argv[0] if sys.argv else ""
    if not in_kernel and script and script not in ("-c", "-m") and os.path.isfile(script):
        name = os.path.basename(script)  # python -m pkg: the package's name
        return os.path.basename(os.path.dirname(script)) if name == "__main__.py" else name
    return f"kernel {short_kernel_id(kernel)}" if kernel else f"pid {os.getpid()}"


_this: dict[str, Any] | None = None


def this_owner() -> dict[str, Any]:
    """What this process says of itself at hello (``OwnerModel`` less ``notebook``)."""
    global _this
    if _this is None or _this["pid"] != os.getpid():  # first use, or a forked child
        kernel = kernel_id()
        _this = {
            "kernel_id": kernel,
            "name": _label(kernel),
            "pid": os.getpid(),
            "host": socket.gethostname(),
        }
    return dict(_this)


def is_mine(owner: Mapping[str, Any] | None, me: Mapping[str, Any] | None = None) -> bool:
    """Whether ``owner`` (a pool's or a call's) is this process (or ``me``): the same
    kernel, or, outside kernels, the same process."""
    if owner is None:
        return False
    me = me or this_owner()
    if me["kernel_id"] is not None:
        return bool(owner.get("kernel_id") == me["kernel_id"])
    return owner.get("kernel_id") is None and (owner.get("pid"), owner.get("host")) == (
        me["pid"],
        me["host"],
    )


def is_local() -> bool:
    """True here, in a kernel or a script; False in a worker (and the processes it starts)
    running your function, as Modal's ``modal.is_local()``."""
    return WORKER_ID_ENV not in os.environ
