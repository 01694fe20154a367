"""A fork server for local worker processes: the runtime imported once, each worker forked.

A worker spawned as ``python -m nbscale_runtime`` spends ~90 ms before it can register:
starting the interpreter, ``site`` and its ``.pth`` files, and importing the runtime
(cloudpickle, the protocol). The process launcher starts one *zygote* with its
control plane, ``python -m nbscale_runtime.zygote --fd N``, which imports the runtime and
then only forks, on request, a child that becomes a worker in a few milliseconds.

What keeps a forked worker the same as a spawned one:

- the zygote is single-threaded and holds no socket but its request socket, no ZeroMQ
  context and no CUDA: it forks nothing else (it refuses to fork once it has a thread);
- the child leads a session of its own, joins its cgroups (``memory=``, ``cpu=``) before
  anything else, writes stdout and stderr to its log file, reads nothing from stdin, and
  takes the environment and working directory the launcher sends (the secrets stay in the
  worker's 0600 config file, which the child reads as a spawned worker does);
- then it runs :func:`nbscale_runtime.worker.serve` from this module's ``main``, with the
  zygote's frames gone, so that the interpreter exits as a spawned worker's does (atexit
  handlers, non-daemon threads joined).

What differs: the hash seed of ``str`` (one per zygote, as with multiprocessing's fork) and
the interpreter's start-up environment (``PYTHON*``, ``LD_*``): the launcher forks only
while those match what the zygote started with, and starts a new zygote otherwise.

Requests and answers are JSON datagrams on a ``SOCK_SEQPACKET`` pair: ``{"fork": ...}``
gets ``{"forked": id, "pid": N}`` or ``{"failed": id, "error": ...}``; the zygote reaps its
children and says ``{"exited": pid, "code": returncode}`` (a signal as ``-signum``, as
``subprocess`` does). It exits when its control plane closes the socket or dies; its
workers then see their parent gone and exit too (``pulse.py``).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import select
import signal
import socket
import sys
import threading
from typing import Any

from . import nvml, worker  # what every forked worker needs, imported before any fork

if nvml.library_present():  # the GPU monitor's (8 ms); NVML opens per worker
    with contextlib.suppress(ImportError):
        import pynvml  # type: ignore[import-not-found]  # noqa: F401

_PARENT_CHECK = 1.0  # seconds between two looks at whether the control plane still lives
_MAX_REQUEST = 1 << 22  # a request carries an environment: 4 MiB is far more than any


def _send(sock: socket.socket, message: dict[str, Any]) -> None:
    sock.send(json.dumps(message).encode())


def _returncode(status: int) -> int:
    return -os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)


class Zygote:
    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.parent = os.getppid()
        self.wake_r, self.wake_w = os.pipe()
        os.set_blocking(self.wake_r, False)
        os.set_blocking(self.wake_w, False)

    def serve(self) -> dict[str, Any] | None:
        """Fork workers until the control plane goes (None); in a forked child, the
        request it is to serve."""
        signal.set_wakeup_fd(self.wake_w)
        signal.signal(signal.SIGCHLD, lambda signum, frame: None)  # wakes the select
        _send(self.sock, {"ready": os.getpid()})
        while True:
            watched: list[Any] = [self.sock, self.wake_r]
            readable, _, _ = select.select(watched, [], [], _PARENT_CHECK)
            if self.wake_r in readable:
                while True:
                    try:
                        if not os.read(self.wake_r, 4096):
                            break
                    except BlockingIOError:
                        break
            self._reap()
            if os.getppid() != self.parent:
                return None  # our control plane died (kill -9): we go with it
            if self.sock not in readable:
                continue
            try:
                data = self.sock.recv(_MAX_REQUEST)
            except ConnectionError:
                return None
            if not data:
                return None  # the control plane closed us: stopped, or gone
            request = json.loads(data)
            if self._fork(request) == 0:
                return request  # the child: a worker from here on

    def _fork(self, request: dict[str, Any]) -> int | None:
        worker_id = request["worker_id"]
        if threading.active_count() > 1:  # a thread's locks could be held in the child
            _send(self.sock, {"failed": worker_id, "error": "the zygote has threads"})
            return None
        try:
            pid = os.fork()
        except OSError as exc:
            _send(self.sock, {"failed": worker_id, "error": f"fork: {exc}"})
            return None
        if pid == 0:
            self._leave()
            return 0
        _send(self.sock, {"forked": worker_id, "pid": pid})
        return pid

    def _leave(self) -> None:
        """In the child: drop what is the zygote's (its signal handling, its sockets)."""
        signal.set_wakeup_fd(-1)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        self.sock.close()
        os.close(self.wake_r)
        os.close(self.wake_w)

    def _reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            _send(self.sock, {"exited": pid, "code": _returncode(status)})


def become_worker(request: dict[str, Any]) -> worker.WorkerConfig:
    """Set this forked child up as the launcher would a spawned worker; its config."""
    os.setsid()  # its own session and process group: a stop kills all of it
    for procs in request.get("cgroup_procs", ()):
        try:  # limits before any code of the user's; the launcher checks and falls back
            with open(procs, "w") as f:
                f.write(str(os.getpid()))
        except OSError:
            pass
    log = os.open(request["log_path"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.dup2(log, 1)
    os.dup2(log, 2)
    os.close(log)
    os.close(null)
    started_in = os.getcwd()
    os.chdir(request["cwd"])
    if sys.path and sys.path[0] == started_in:  # ``-m`` put the start directory first
        sys.path[0] = request["cwd"]
    os.environ.clear()
    os.environ.update(request["env"])
    sys.argv = [worker.__file__, "--config", request["config_path"]]
    cfg = worker.WorkerConfig.from_file(request["config_path"])
    if cfg.parent_pid is not None:  # our parent is the zygote, which dies with the plane
        cfg = dataclasses.replace(cfg, parent_pid=os.getppid())
    return cfg


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m nbscale_runtime.zygote")
    parser.add_argument("--fd", type=int, required=True, help="the request socket's fd")
    args = parser.parse_args(argv)
    sock = socket.socket(fileno=args.fd)
    request = Zygote(sock).serve()
    if request is None:
        return 0
    return worker.serve(become_worker(request))


if __name__ == "__main__":
    sys.exit(main())
