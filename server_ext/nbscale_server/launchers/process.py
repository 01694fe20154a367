"""Workers as local subprocesses of the control plane's interpreter.

GPUs are assigned by UUID through ``CUDA_VISIBLE_DEVICES``, as the Docker launcher assigns
them to containers: a worker sees the GPUs its function asked for and no others, and no two
live workers share one.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys

from ..gpus import GpuAllocator, GpuError, GpuInfo
from .base import Launcher, LaunchFailed, LogChunk, WorkerHandle, WorkerSpec
from .logs import follow_file
from .volumes import link_for_process


class ProcessLauncher(Launcher):
    name = "process"

    def __init__(
        self, log_dir: str, python: str | None = None, gpus: list[GpuInfo] | None = None
    ) -> None:
        """``gpus``: the GPUs to assign (default: what NVML finds, on the first request)."""
        self.log_dir = log_dir
        self.python = python or sys.executable
        self._gpus = GpuAllocator(gpus)
        self._gpus_held: dict[str, tuple[subprocess.Popen[bytes], list[str]]] = {}

    def start(self, spec: WorkerSpec) -> WorkerHandle:
        for path, name in spec.options.volumes:
            link_for_process(path, name)
        log_path = os.path.join(self.log_dir, f"{spec.worker_id}.log")
        env = dict(os.environ)
        env.pop("NBSCALE_CONNECTION_FILE", None)  # a worker is never a client
        env["PYTHONUNBUFFERED"] = "1"
        gpus = self._assign_gpus(spec.options.gpu)
        env["CUDA_VISIBLE_DEVICES"] = ",".join(gpus)  # "" hides every GPU, as on Modal
        try:
            with open(log_path, "wb") as log:
                proc = subprocess.Popen(
                    [self.python, "-m", "nbscale_runtime", "--config", spec.config_path],
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    env=env,
                    # Own session: Ctrl-C in the terminal or kernel must not reach workers.
                    start_new_session=True,
                    close_fds=True,
                )
        except OSError as exc:
            raise LaunchFailed(f"cannot start {self.python}: {exc}") from exc
        if gpus:
            self._gpus_held[spec.worker_id] = (proc, gpus)
        return WorkerHandle(spec.worker_id, spec.pool_id, self.name, proc, log_path)

    def _assign_gpus(self, request: object) -> list[str]:
        if request is None:
            return []
        for worker_id, (proc, _) in list(self._gpus_held.items()):
            if proc.poll() is not None:  # exited: its GPUs are free again
                del self._gpus_held[worker_id]
        taken = {uuid for _, uuids in self._gpus_held.values() for uuid in uuids}
        try:
            return self._gpus.assign(request, taken)
        except GpuError as exc:
            raise LaunchFailed(str(exc), lasting=exc.lasting) from None

    def stop(self, handle: WorkerHandle, *, graceful: bool = True) -> None:
        proc: subprocess.Popen[bytes] = handle.ref
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM if graceful else signal.SIGKILL)

    def exit_code(self, handle: WorkerHandle) -> int | None:
        proc: subprocess.Popen[bytes] = handle.ref
        return proc.poll()

    def logs(self, handle: WorkerHandle, tail: int = 20) -> str:
        return self.follow_logs(handle, None, tail).text

    def follow_logs(self, handle: WorkerHandle, after: int | None, limit: int) -> LogChunk:
        if not handle.log_path:
            return LogChunk("", None)
        exited = self.exit_code(handle) is not None
        return follow_file(handle.log_path, after, limit, complete=exited)

    def wait(self, handle: WorkerHandle, timeout: float) -> int | None:
        proc: subprocess.Popen[bytes] = handle.ref
        try:
            return proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return None
