"""The zygote started at ``import nbscale``, for the embedded control plane's first call.

A script or a notebook imports nbscale well before its first call (the import alone takes
longer than the zygote needs to be ready). Where that call will start a control plane in
this process that forks local workers (``head_start.surely_process``), the zygote starts
now, first thing in the import, so that the first worker forks at once instead of after
~0.1 s of a new interpreter; the control plane's modules load with the import too.
Nothing starts on a worker, in a kernel of a Jupyter server with nbscale (its control
plane's zygote is warm), in a multiprocessing child, or with ``zygote_at_import`` or
``process_zygote`` off. Settings changed before the first call still count: a zygote that
no longer fits them is ended then and the call starts as it would have.

Light modules only until the zygote has started: the rest of nbscale loads after it.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import sys

from nbscale_server.launchers.head_start import HeadStart, head_start, surely_process
from nbscale_server.launchers.zygote import worker_environment

from . import _config

log = logging.getLogger("nbscale")

_pending: HeadStart | None = None


def _wanted() -> tuple[str, str, bool] | None:
    """(launcher, python, zygote) settings where a zygote should start now, else None."""
    # A worker sets its host in this module before any code of the user's runs; loading
    # it here would cost the head start ~40 ms.
    nested = sys.modules.get("nbscale_runtime.nested")
    if nested is not None and nested.host() is not None:
        return None
    if os.environ.get("NBSCALE_CONNECTION_FILE"):
        return None
    # A multiprocessing child (spawn, forkserver: Python 3.14's default) re-imports its
    # parent's main module: one zygote per pool process would serve nobody.
    multiprocessing = sys.modules.get("multiprocessing")
    if multiprocessing is not None and multiprocessing.parent_process() is not None:
        return None
    if os.environ.get("NBSCALE_CONNECTION_ERROR") or not _config.get("zygote_at_import"):
        return None
    launcher, zygote = _config.get("launcher"), _config.get("process_zygote")
    if not (zygote and surely_process(launcher)):
        return None
    return launcher, _config.get("python") or sys.executable, zygote


def start() -> None:
    """Start the zygote if it will serve; never raises (a bad setting is the first call's
    to report)."""
    global _pending
    try:
        wanted = _wanted()
        if wanted is not None:
            _pending = head_start(*wanted)
    except Exception as exc:  # the import must not fail for a head start
        log.debug("nbscale: no zygote at import: %s", exc)
        return
    if _pending is not None:
        atexit.register(_discard)
        # The control plane's modules load with nbscale (~70 ms more for the import), not
        # on the first call, which then answers in milliseconds; bench/ reports both. One
        # that cannot load (psutil missing) is the first call's to report.
        with contextlib.suppress(ImportError):
            import nbscale_server.control_plane  # noqa: F401


def take(launcher: str, python: str, zygote: bool) -> HeadStart | None:
    """The head start for a control plane starting now with these settings: the one made
    at import if it still fits them, else a new one (``head_start.head_start``)."""
    global _pending
    made, _pending = _pending, None
    try:  # a bad value, passed over at import, is this call's to report, as any setting's
        _config.get("zygote_at_import")
    except Exception:
        if made is not None:
            made.discard()
        raise
    if made is not None:
        started = made.zygote
        fits = started is not None and started.fits(python, worker_environment())
        if fits and zygote and surely_process(launcher):
            return made
        made.discard()
    return head_start(launcher, python, zygote)


def _discard() -> None:
    global _pending
    made, _pending = _pending, None
    if made is not None:
        with contextlib.suppress(Exception):
            made.discard()


def _forget_in_child() -> None:
    """A forked child of this process must not use, or end, its parent's zygote."""
    global _pending
    if _pending is not None and _pending.zygote is not None:
        _pending.zygote.forget()
    _pending = None


os.register_at_fork(after_in_child=_forget_in_child)
start()
