"""The worker's pulse: a thread with a connection of its own, off the main thread where user
code runs.

It sends heartbeats (with the inputs running now), reports now and then which inputs run and
what they printed so far (for the per-input drill-down), hears cancellations and shutdowns
while user code holds the main thread, ends the process when an input outlives its timeout
(a stuck input cannot be interrupted safely: it reports the timeout and exits, and the
control plane replaces the worker), likewise when a class's ``@enter`` outlives its startup
timeout, and exits when the control plane is gone: its parent process died (local
processes), or its heartbeats got no answer for ``heartbeat_timeout`` seconds (containers,
which have no parent to watch, and to which a dead control plane says nothing over TCP).
While user code holds the GIL this thread cannot run at all; the control plane then judges
the worker by its register (``liveness.py`` on its side).
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from typing import TYPE_CHECKING, Any

from . import capture, protocol
from .protocol import STATUS_TIMEOUT, output_row
from .serialization import dump_exception

if TYPE_CHECKING:
    from .worker import Worker

_STREAM_INTERVAL = 0.5  # seconds between two reports of running inputs and their output
_STREAM_CHARS = 8_000  # of a running input's new output, per report
_HELD_OUTPUTS_WAIT = 0.05  # seconds an inline input may hold back the outputs before it


class Pulse(threading.Thread):
    """Heartbeats, cancellation, timeouts, and checks that the control plane is still there
    (its parent process, and its answers to heartbeats), off the main thread."""

    def __init__(self, worker: Worker) -> None:
        super().__init__(name="nbscale-pulse", daemon=True)
        self.worker = worker
        self.reported: dict[tuple[str, int], int] = {}  # running inputs told of: pieces sent
        self.nudged: tuple[tuple[str, int], float] | None = None  # the input, when it began
        # A connection of its own: on timeout it is closed, which flushes the report out
        # before the process ends, without touching the main thread's.
        self.link = worker.cfg.connect(worker.cfg.worker_id + ":pulse")

    def run(self) -> None:
        try:
            self._beat()
        except ConnectionError:  # the control plane closed our connection: it is gone
            os._exit(0)

    def _beat(self) -> None:
        w = self.worker
        cfg = w.cfg
        interval = cfg.heartbeat_interval
        next_beat = next_stream = 0.0
        last_heard = time.monotonic()
        while True:
            now = time.monotonic()
            if now >= next_beat:
                running = [[c, i, entry[1]] for (c, i), entry in list(w.running.items())]
                self._send(protocol.Heartbeat(cfg.worker_id, running, w.gpu_monitor.sample()))
                next_beat = now + interval
            if now >= next_stream:
                self._stream(now)
                next_stream = now + _STREAM_INTERVAL
            self._check_timeouts(now)
            self._nudge_held_outputs(now)
            if cfg.parent_pid is not None and os.getppid() != cfg.parent_pid:
                os._exit(0)  # our control plane is gone; nobody will collect our results
            if (
                cfg.parent_pid is None
                and cfg.heartbeat_timeout is not None
                and now - last_heard > cfg.heartbeat_timeout
            ):
                # No answer to our heartbeats, and no parent to watch (a container): over
                # TCP a dead control plane says nothing. Nobody will collect our results.
                os._exit(0)
            if not self.link.poll(min(100, int(interval * 1000))):
                continue
            last_heard = time.monotonic()
            for frames in self.link.receive():
                msg, _ = protocol.decode(frames)
                if isinstance(msg, protocol.CancelInputs):
                    w.cancel_running(msg.call_id)
                elif isinstance(msg, protocol.Shutdown):
                    w.draining = True
                    os.write(w.wake_w, b"x")

    def _send(self, msg: protocol.Message, payload: list[Any] | tuple[Any, ...] = ()) -> None:
        self.link.send(protocol.encode(msg, payload))

    def _stream(self, now: float) -> None:
        """Tell the control plane of inputs running now that it was not told of, and of
        what running inputs printed since: one message now and then, whatever the rate of
        inputs (a fast input is seen running only if it runs at that moment)."""
        w = self.worker
        wall = time.time() - now
        rows = []
        running = list(w.running.items())
        for key, (started, attempt, _) in running:
            pieces = capture.so_far(key)
            sent = self.reported.get(key)
            text = "".join(pieces[sent or 0 :])[-_STREAM_CHARS:]
            if sent is None or text:
                rows.append([key[0], key[1], attempt, wall + started, text])
                self.reported[key] = len(pieces)
        self.reported = {k: self.reported[k] for k, _ in running if k in self.reported}
        if rows:
            self._send(protocol.Streaming(w.cfg.worker_id, rows))

    def _nudge_held_outputs(self, now: float) -> None:
        """Outputs finished just before a long inline input would wait for its end (they go
        out between inputs, a few milliseconds' worth at a time): have the main thread send
        them now (``Worker._on_signal``), once per input."""
        w = self.worker
        key = w.inline_key
        if key is None or not w.done or not w.in_user_code:
            return
        entry = w.running.get(key)
        if entry is None or now - entry[0] < _HELD_OUTPUTS_WAIT or self.nudged == (key, entry[0]):
            return
        self.nudged = (key, entry[0])
        signal.pthread_kill(w.main_thread, signal.SIGUSR1)

    def _check_timeouts(self, now: float) -> None:
        w = self.worker
        until = w.starting_until
        if until is not None and now > until:  # a class's @enter outlived its startup timeout
            fn = w.fn
            error = TimeoutError(
                f"@enter of {fn.cls.__qualname__} did not finish within its startup_timeout "
                f"of {fn.startup_timeout:g} s"
            )
            self._send(protocol.Goodbye(w.cfg.worker_id, "enter-failed"), [dump_exception(error)])
            self.link.close()
            os._exit(3)
        until = w.exiting_until
        if until is not None and now > until:  # a class's @exit outlived exit_grace
            print(
                f"@exit of {w.fn.cls.__qualname__} did not finish within exit_grace "
                f"({w.cfg.exit_grace:g} s): the worker ends without it",
                file=sys.stderr,
                flush=True,
            )
            self._send(protocol.Goodbye(w.cfg.worker_id, "exit outlived exit_grace"))
            self.link.close()
            os._exit(0)
        for key, (started, attempt, _) in list(w.running.items()):
            if now - started > w.timeout:
                row = output_row(
                    key[0],
                    key[1],
                    attempt,
                    STATUS_TIMEOUT,
                    (0, 0, 0),
                    now - started,
                    w.cfg.worker_id,
                )
                self._send(protocol.Outputs([row]), [b""])
                self._send(protocol.Goodbye(w.cfg.worker_id, f"timeout of input {key[1]}"))
                self.link.close()
                os._exit(3)
