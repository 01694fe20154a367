"""Timestamps along W2's round trip, for ``bench/w2_hops.py`` only (never imported by nbscale).

When ``NBSCALE_HOPS`` names a folder, every Python process that has this folder on its
``PYTHONPATH`` (the benchmark process and its workers, which inherit it) wraps a few of
nbscale's functions to note ``time.perf_counter_ns()`` (CLOCK_MONOTONIC, one clock for every
process of the machine) as each one starts or ends, and writes its notes to
``<folder>/<pid>.txt`` at exit. ``w2_hops.py`` lines them up call by call.
"""

from __future__ import annotations

import atexit
import functools
import os
import time
from typing import Any

_folder = os.environ.get("NBSCALE_HOPS")
notes: list[tuple[str, int]] = []


def note(name: str) -> None:
    notes.append((name, time.perf_counter_ns()))


def _wrap(owner: Any, attr: str, name: str, end: bool = False) -> None:
    fn = getattr(owner, attr)

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        notes.append((name, time.perf_counter_ns()))
        try:
            return fn(*args, **kwargs)
        finally:
            if end:
                notes.append((name + ".end", time.perf_counter_ns()))

    setattr(owner, attr, wrapper)


def _write() -> None:
    with open(os.path.join(_folder or ".", f"{os.getpid()}.txt"), "w") as out:
        out.writelines(f"{name} {ns}\n" for name, ns in notes)


def install() -> None:
    from nbscale_runtime import worker
    from nbscale_runtime.stream import FrameReader, FrameWriter

    _wrap(worker.Worker, "_receive_all", "w.receive")
    _wrap(worker.Worker, "_run_inline", "w.run", end=True)
    _wrap(worker.Worker, "_send", "w.send", end=True)
    _wrap(FrameReader, "read_from", "read")
    _wrap(FrameWriter, "write", "write", end=True)
    try:
        from nbscale_server import delivery, outbox
        from nbscale_server.stream_channel import StreamChannel
    except ImportError:  # a worker without the control plane's package
        pass
    else:
        _wrap(delivery.Delivery, "submit", "cp.submit")
        _wrap(delivery.Delivery, "on_outputs", "cp.outputs")
        _wrap(StreamChannel, "_readable", "cp.readable")
        _wrap(outbox.Outbox, "send_worker", "cp.send_worker", end=True)
    atexit.register(_write)


if _folder:
    install()
