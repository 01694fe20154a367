"""A few daemon threads that run a launcher's blocking calls off the control plane's loop."""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

log = logging.getLogger("nbscale.launchers")


class DaemonThreads:
    """Runs submitted calls on ``count`` daemon threads. Not a ThreadPoolExecutor: that
    refuses work once the interpreter is exiting, which is exactly when workers must still
    be stopped."""

    def __init__(self, count: int, name: str) -> None:
        self._queue: queue.SimpleQueue[tuple[Callable[[], Any], Future[Any]] | None]
        self._queue = queue.SimpleQueue()
        self._threads = [
            threading.Thread(target=self._run, name=f"{name}-{i}", daemon=True)
            for i in range(count)
        ]
        for t in self._threads:
            t.start()

    def submit(self, fn: Callable[[], Any]) -> Future[Any]:
        future: Future[Any] = Future()
        self._queue.put((fn, future))
        return future

    def _run(self) -> None:
        while (job := self._queue.get()) is not None:
            fn, future = job
            try:
                future.set_result(fn())
            except BaseException as exc:
                log.debug("launcher call failed", exc_info=True)
                future.set_exception(exc)

    def close(self) -> None:
        for _ in self._threads:
            self._queue.put(None)
