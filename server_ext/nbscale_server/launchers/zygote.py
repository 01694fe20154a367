"""The process launcher's side of the zygote (``nbscale_runtime/zygote.py``).

``ZygoteClient`` starts the zygote, asks it for workers and hears their exits; each worker
is a ``ForkedWorker``, which answers what the launcher asks of a ``subprocess.Popen``
(``pid``, ``poll``, ``wait``, ``send_signal``, ``returncode``). Every call here is short:
a fork is answered in milliseconds, and one that is not within ``_FORK_TIMEOUT`` ends the
zygote (the launcher then spawns, and starts a new one).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import select
import signal
import socket
import subprocess
import time
import weakref
from typing import Any

log = logging.getLogger("nbscale.launchers")

_FORK_TIMEOUT = 5.0  # seconds for the zygote to answer a fork request
_MAX_MESSAGE = 1 << 16
_START_WAIT = 2.0  # seconds from its start a launch waits for the zygote, then spawns

# What the interpreter and the dynamic loader read once, at start: a forked worker has the
# zygote's, so the launcher forks only while the worker's would be the same.
_START_PREFIXES = ("PYTHON", "LD_", "MALLOC_", "GLIBC_TUNABLES")


def worker_environment() -> dict[str, str]:
    """The environment a worker (and the zygote) starts with: this process's, as of now."""
    env = dict(os.environ)
    env.pop("NBSCALE_CONNECTION_FILE", None)  # a worker is never a client
    env["PYTHONUNBUFFERED"] = "1"
    return env


def start_environment(env: dict[str, str]) -> dict[str, str]:
    return {k: v for k, v in env.items() if k.startswith(_START_PREFIXES)}


def _end(sock: socket.socket, proc: subprocess.Popen[bytes]) -> None:
    sock.close()  # the zygote exits at once on that
    try:
        proc.wait(2)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


class ZygoteGone(Exception):
    """The zygote exited, or did not answer: spawn instead."""


class ForkedWorker:
    """A worker forked by the zygote, seen as a ``subprocess.Popen``."""

    def __init__(self, zygote: ZygoteClient, pid: int) -> None:
        self.zygote = zygote
        self.pid = pid
        self.returncode: int | None = None

    def poll(self) -> int | None:
        if self.returncode is None:
            self.zygote.pump(0)
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.returncode is None:
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                raise subprocess.TimeoutExpired(f"worker {self.pid}", timeout or 0)
            self.zygote.pump(0.1 if left is None else min(0.1, left))
        return self.returncode

    def send_signal(self, sig: int) -> None:
        if self.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, sig)


class ZygoteClient:
    def __init__(self, python: str, env: dict[str, str], log_path: str) -> None:
        """Start the zygote (it is ready some 100 ms later)."""
        self.python = python
        self.start_env = start_environment(env)
        self.sock, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            with open(log_path, "ab") as out:
                self.proc = subprocess.Popen(
                    [python, "-m", "nbscale_runtime.zygote", "--fd", str(theirs.fileno())],
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    env=env,
                    pass_fds=[theirs.fileno()],
                    start_new_session=True,  # Ctrl-C in the kernel does not reach it
                )
        except OSError:
            self.sock.close()
            raise
        finally:
            theirs.close()
        # A launcher dropped without close() (a control plane never stopped) still ends it.
        self._end = weakref.finalize(self, _end, self.sock, self.proc)
        self.started_at = time.monotonic()
        self.is_ready = False
        self.gone = False
        self._workers: dict[int, ForkedWorker] = {}
        self._answers: dict[str, ForkedWorker | str] = {}  # worker id -> it, or why not

    def fits(self, python: str, env: dict[str, str]) -> bool:
        """Whether workers of ``python`` with ``env`` may be forked from it."""
        return not self.gone and python == self.python and start_environment(env) == self.start_env

    def ready(self) -> bool:
        """Whether it forks now, waiting for it while it starts (up to ``_START_WAIT``
        seconds after its start): on a few cores, an interpreter spawned beside it would
        only slow both down."""
        while not self.gone and not self.is_ready:
            left = self.started_at + _START_WAIT - time.monotonic()
            if left <= 0:
                break
            self.pump(left)
        return self.is_ready and not self.gone

    def has_workers(self) -> bool:
        """Whether workers it forked may still run."""
        if not self.gone:
            self.pump(0)
        return bool(self._workers)

    def fork(self, request: dict[str, Any]) -> ForkedWorker:
        """A worker for ``request`` (``nbscale_runtime.zygote.become_worker``'s fields);
        raises ``ZygoteGone`` (then it is closed) or ``OSError`` (the fork failed)."""
        worker_id = request["worker_id"]
        try:
            self.sock.send(json.dumps(request).encode())
        except OSError:
            self._lost()
            raise ZygoteGone("the zygote is gone") from None
        deadline = time.monotonic() + _FORK_TIMEOUT
        while worker_id not in self._answers:
            left = deadline - time.monotonic()
            if left <= 0 or self.gone:
                self.close()
                raise ZygoteGone("the zygote did not answer")
            self.pump(left)
        answer = self._answers.pop(worker_id)
        if isinstance(answer, str):
            raise OSError(answer)
        return answer

    def pump(self, timeout: float) -> None:
        """Read what the zygote said, waiting up to ``timeout`` seconds for a first word."""
        if self.gone:
            return
        wait: float | None = timeout
        while select.select([self.sock], [], [], wait)[0]:
            wait = 0
            try:
                data = self.sock.recv(_MAX_MESSAGE)
            except OSError:
                data = b""
            if not data:
                self._lost()
                return
            self._take(json.loads(data))

    def _take(self, message: dict[str, Any]) -> None:
        if "ready" in message:
            self.is_ready = True
        elif "forked" in message:  # known at once: its exit may come in the same read
            worker = self._workers[message["pid"]] = ForkedWorker(self, message["pid"])
            self._answers[message["forked"]] = worker
        elif "exited" in message:
            exited = self._workers.pop(message["exited"], None)
            if exited is not None:
                exited.returncode = message["code"]
        else:
            self._answers[message["failed"]] = message["error"]

    def _lost(self) -> None:
        """The zygote is gone: its workers, whose exits nobody can tell us now, are
        killed (with what they started) and counted as killed."""
        if self.gone:
            return
        self.gone = True
        log.warning("the worker zygote exited (code %s); spawning workers", self.proc.poll())
        for pid, worker in self._workers.items():
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGKILL)
            worker.returncode = -signal.SIGKILL
        self._workers.clear()
        self.sock.close()

    def close(self) -> None:
        """End the zygote (its workers are the launcher's to stop)."""
        self.gone = True
        self._end()

    def kill(self) -> None:
        """End a zygote that forked nothing, at once, even while it starts."""
        self.gone = True
        with contextlib.suppress(ProcessLookupError):
            self.proc.kill()
        self._end()

    def forget(self) -> None:
        """In a forked child of its launcher's process: leave the parent's zygote alone."""
        self.gone = True
        self._end.detach()
