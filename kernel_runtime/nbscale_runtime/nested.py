"""Calls made from inside a worker: how a function body that calls ``.remote``, ``.map``,
``.spawn``... reaches its worker's own control plane, and the slot its worker lends while
it waits.

The runtime never imports the client: a function that calls out imports ``nbscale``
itself, and the client asks ``host()`` whether it runs in a worker. If so it opens a third
connection, named ``<worker id>:client``, over the worker's own transport and credentials
(the Unix socket in the control plane's private directory, or CurveZMQ with the key of the
worker's 0600 config file): nothing in argv or the environment, and the control plane knows
which worker, so which pool, owner and input, every nested call comes from.

A worker that runs one input at a time and blocks on a nested call lends its slot
(``lend``): the control plane takes back the inputs it holds but does not run and counts it
out of its pool's ``max_containers`` and the total cap until it rejoins, so another worker
may run the children, even of the same function (as Dask's secede/rejoin and Ray's blocked
``get``). A worker running several inputs at once (``@concurrent``) cannot lend: its other
inputs keep running.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

from . import capture, protocol
from .link import Link
from .sending import flush

if TYPE_CHECKING:
    from .worker import Worker

CLIENT_SUFFIX = ":client"  # a worker's client connection: ``<worker id>:client``
_LEND_WAIT = 10.0  # seconds to wait for the control plane to take the slot back

_host: Host | None = None


class Host:
    """What the client in a worker needs of the worker."""

    def __init__(self, worker: Worker) -> None:
        self._worker = worker

    @property
    def endpoint(self) -> str:
        return self._worker.cfg.endpoint

    @property
    def function_id(self) -> str | None:
        """The id of the function this worker runs (known once it is loaded)."""
        return self._worker.function_id

    def connect(self) -> Link:
        """A new connection to the control plane, as this worker's client."""
        cfg = self._worker.cfg
        return cfg.connect(cfg.worker_id + CLIENT_SUFFIX)

    @staticmethod
    def parent() -> list[object] | None:
        """[call id, index] of the input whose code runs in this thread or task."""
        current = capture.current_input()
        return list(current) if current is not None else None

    def lend(self) -> Callable[[], None] | None:
        """Lend this worker's slot while its input waits on nested calls; returns what
        rejoins, or None where it cannot lend (several inputs at once, or a call from a
        thread of the user's own)."""
        w = self._worker
        if w.mode != "inline" or w.inline_key is None or threading.get_ident() != w.main_thread:
            return None
        running = [[call_id, index, entry[1]] for (call_id, index), entry in w.running.items()]
        w.slot_lent = False
        with _own_link(w):
            flush(w)
            w._send(protocol.LendSlot(w.cfg.worker_id, running))
            deadline = time.monotonic() + _LEND_WAIT
            while not w.slot_lent and time.monotonic() < deadline:
                if w.data.poll(100):
                    w._receive_all()

        def rejoin() -> None:
            with _own_link(w):
                w._send(protocol.Rejoin(w.cfg.worker_id))

        return rejoin


@contextlib.contextmanager
def _own_link(w: Worker) -> Iterator[None]:
    """nbscale's own use of the worker's connection from inside an input's code: no nudge
    to send held outputs (``Worker._on_signal``) may come in between."""
    was, w.in_user_code = w.in_user_code, False
    try:
        yield
    finally:
        w.in_user_code = was


def install(worker: Worker) -> None:
    global _host
    _host = Host(worker)


def host() -> Host | None:
    """This process's worker, when it is one."""
    return _host
