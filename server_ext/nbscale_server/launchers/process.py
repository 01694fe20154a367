"""Workers as local subprocesses of the control plane's interpreter.

GPUs are assigned by UUID through ``CUDA_VISIBLE_DEVICES``, as the Docker launcher assigns
them to containers: a worker sees the GPUs its function asked for and no others, and no two
live workers share one.

Limits and cleanup, as a container would have them:

- ``memory=`` (MiB) bounds the worker's resident memory, children included: a cgroup of its
  own where one can be made (``cgroups.py``), else this launcher samples the worker's
  resident set (with its children's) a few times a second and kills it over the limit. Not
  ``RLIMIT_AS``: that counts virtual memory, which CUDA and many allocators reserve by the
  gigabyte. Either way the worker's inputs fail with "ran out of memory (memory limit N MiB)",
  as in Docker.
- ``cpu=`` (cores): a CFS quota in its cgroup (fractions included), else CPU affinity to
  ``ceil(cpu)`` cores of those this process may use.
- Each worker leads a process group (its own session); when it exits or is stopped, what is
  left of the group (and of its cgroup) is killed: nothing it started outlives it.
- With ``zygote`` (the ``process_zygote`` setting, on by default), workers are forked from a
  zygote started with the launcher, which has the runtime imported (``zygote.py``): a few
  milliseconds instead of ~90 ms of interpreter start and imports. Each is set up as a
  spawned one (the above, its log, environment and working directory); while the zygote is
  not ready yet, or the environment's start-up variables changed, workers are spawned.
- Its stdout and stderr go to a log file that is rotated at ``log_max_bytes`` (the part
  before is kept as ``<log>.1``), copied and truncated in place as logrotate's copytruncate
  does, since the worker writes to it directly (a few lines written during the copy may be
  lost).
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .. import losses
from ..gpus import GpuAllocator, GpuError, GpuInfo
from .base import (
    Launcher,
    LaunchFailed,
    LogChunk,
    WorkerHandle,
    WorkerSpec,
    out_of_memory,
    tail_lines,
)
from .cgroups import Cgroups, WorkerCgroup
from .logs import follow_file
from .volumes import link_for_process
from .zygote import ForkedWorker, ZygoteClient, ZygoteGone, worker_environment

log = logging.getLogger("nbscale.launchers")

if TYPE_CHECKING:  # psutil is imported where used: worker images (nested calls) lack it
    import psutil

_MEMORY_CHECK = 0.1  # seconds between two samples of a watched worker's resident memory
_LOG_CHECK = 1.0  # seconds between two looks at the log files' sizes


@dataclass(slots=True)
class _Worker:
    proc: subprocess.Popen[bytes] | ForkedWorker
    log_path: str
    memory_mib: int | None
    cgroup: WorkerCgroup | None
    watched: psutil.Process | None = None  # sampled for memory, without a cgroup
    out_of_memory: bool = False  # killed by the kernel or by us for passing memory_mib
    cleaned: bool = False  # the rest of its process group killed, its cgroup removed
    gone_at: float | None = None  # when it was seen gone (it is forgotten a minute later)


class ProcessLauncher(Launcher):
    name = "process"

    def __init__(
        self,
        log_dir: str,
        python: str | None = None,
        gpus: list[GpuInfo] | None = None,
        log_max_bytes: int = 16 << 20,
        cgroups: bool = True,
        zygote: bool | ZygoteClient = True,
    ) -> None:
        """``gpus``: the GPUs to assign (default: what NVML finds, on the first request);
        ``cgroups``: enforce limits with cgroups where possible (else by watching);
        ``zygote``: fork workers from a zygote, started now, or from this one, started
        ahead (``head_start.py``) with this launcher's interpreter and environment."""
        self.log_dir = log_dir
        self.python = python or sys.executable
        self.log_max_bytes = log_max_bytes
        self._gpus = GpuAllocator(gpus)
        self._gpus_held: dict[str, tuple[subprocess.Popen[bytes] | ForkedWorker, list[str]]] = {}
        self._cgroups = Cgroups.find() if cgroups else None
        self._workers: dict[str, _Worker] = {}
        self._cpus = sorted(os.sched_getaffinity(0))
        self._next_cpu = 0
        self._memory_checked = self._logs_checked = 0.0
        self._leftovers: list[WorkerCgroup] = []  # cgroups still busy when their worker went
        self._zygote: ZygoteClient | None = None
        env = worker_environment()
        if isinstance(zygote, ZygoteClient) and zygote.fits(self.python, env):
            self._zygote = zygote
        else:
            if isinstance(zygote, ZygoteClient):
                zygote.close()
            if zygote:
                self._start_zygote(env)

    def _start_zygote(self, env: dict[str, str]) -> None:
        try:
            self._zygote = ZygoteClient(self.python, env, os.path.join(self.log_dir, "zygote.log"))
        except OSError as exc:  # workers are spawned instead
            self._zygote = None
            log.warning("cannot start the worker zygote: %s", exc)

    def start(self, spec: WorkerSpec) -> WorkerHandle:
        for path, name in spec.options.volumes:
            link_for_process(path, name)
        log_path = os.path.join(self.log_dir, f"{spec.worker_id}.log")
        env = worker_environment()
        gpus = self._assign_gpus(spec.options.gpu)
        env["CUDA_VISIBLE_DEVICES"] = ",".join(gpus)  # "" hides every GPU, as on Modal
        memory, cpu = spec.options.memory, spec.options.cpu
        cgroup = None
        if self._cgroups is not None and (memory or cpu):
            cgroup = self._cgroups.create(spec.worker_id, memory, cpu)
        proc: subprocess.Popen[bytes] | ForkedWorker | None = self._fork(
            spec, env, log_path, cgroup
        )
        if proc is None:
            try:
                proc = self._spawn(spec, env, log_path)
            except LaunchFailed:
                if cgroup is not None:
                    cgroup.remove()
                raise
        if gpus:
            self._gpus_held[spec.worker_id] = (proc, gpus)
        self._workers[spec.worker_id] = self._limit(spec, proc, log_path, cgroup)
        return WorkerHandle(spec.worker_id, spec.pool_id, self.name, proc, log_path)

    def _spawn(
        self, spec: WorkerSpec, env: dict[str, str], log_path: str
    ) -> subprocess.Popen[bytes]:
        try:
            # Appending: a log truncated by the rotation goes on from its (new) end.
            with open(log_path, "ab") as out:
                return subprocess.Popen(
                    [self.python, "-m", "nbscale_runtime", "--config", spec.config_path],
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    env=env,
                    # Own session and process group: Ctrl-C in the terminal or kernel must
                    # not reach workers, and a stop kills the whole group.
                    start_new_session=True,
                    close_fds=True,
                )
        except OSError as exc:
            raise LaunchFailed(f"cannot start {self.python} (log {log_path}): {exc}") from exc

    def _fork(
        self, spec: WorkerSpec, env: dict[str, str], log_path: str, cgroup: WorkerCgroup | None
    ) -> ForkedWorker | None:
        """The worker forked by the zygote; None when it cannot be (spawn it)."""
        zygote = self._zygote
        if zygote is None:
            return None
        if not zygote.fits(self.python, env):
            if not zygote.has_workers():  # else its workers keep it: they are its children
                zygote.close()
                self._start_zygote(env)  # for the next worker: this one is spawned
            return None
        if not zygote.ready():
            return None
        procs = [] if cgroup is None else cgroup.procs_files()
        request = {
            "worker_id": spec.worker_id,
            "config_path": spec.config_path,
            "log_path": log_path,
            "cwd": os.getcwd(),
            "env": env,
            "cgroup_procs": procs,
        }
        try:
            return zygote.fork(request)
        except (ZygoteGone, OSError) as exc:
            log.warning(
                "the worker zygote could not fork %s (%s): spawning it", spec.worker_id, exc
            )
            return None

    def _limit(
        self,
        spec: WorkerSpec,
        proc: subprocess.Popen[bytes] | ForkedWorker,
        log_path: str,
        cgroup: WorkerCgroup | None,
    ) -> _Worker:
        """Put the new worker under its ``memory=`` and ``cpu=`` (before it runs user code:
        a spawned worker is still importing the runtime; a forked one joined its cgroup
        itself, and this checks it did)."""
        memory, cpu = spec.options.memory, spec.options.cpu
        if cgroup is not None:
            try:
                cgroup.add(proc.pid)
            except OSError:
                cgroup.remove()
                cgroup = None
        worker = _Worker(proc, log_path, memory, cgroup)
        enforced = cgroup.dirs if cgroup is not None else {}
        if memory and "memory" not in enforced:
            import psutil

            with contextlib.suppress(psutil.Error):
                worker.watched = psutil.Process(proc.pid)
        if cpu and "cpu" not in enforced:
            self._pin(proc.pid, cpu)
        return worker

    def _pin(self, pid: int, cpu: float) -> None:
        """Affinity to ``ceil(cpu)`` cores, taken in turn so that workers spread out."""
        count = min(len(self._cpus), math.ceil(cpu))
        cores = {self._cpus[(self._next_cpu + i) % len(self._cpus)] for i in range(count)}
        self._next_cpu = (self._next_cpu + count) % len(self._cpus)
        with contextlib.suppress(OSError):
            os.sched_setaffinity(pid, cores)

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
        """Gracefully: SIGTERM to the worker, which finishes its input and exits (what it
        started is killed then). Otherwise: SIGKILL to all of it at once."""
        proc: subprocess.Popen[bytes] | ForkedWorker = handle.ref
        if proc.poll() is None:
            if graceful:
                proc.send_signal(signal.SIGTERM)
            else:
                self._kill_all(handle.worker_id, proc)
        else:
            self._clean(handle.worker_id)

    def _kill_all(self, worker_id: str, proc: subprocess.Popen[bytes] | ForkedWorker) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        worker = self._workers.get(worker_id)
        if worker is not None and worker.cgroup is not None:
            worker.cgroup.kill_all()

    def exit_code(self, handle: WorkerHandle) -> int | None:
        proc: subprocess.Popen[bytes] | ForkedWorker = handle.ref
        code = proc.poll()
        if code is not None:
            self._clean(handle.worker_id)
        return code

    def _clean(self, worker_id: str) -> None:
        """The worker exited: kill what it left running, remove its cgroup."""
        worker = self._workers.get(worker_id)
        if worker is None or worker.cleaned:
            return
        worker.cleaned = True
        worker.gone_at = time.monotonic()
        self._kill_all(worker_id, worker.proc)
        if worker.cgroup is not None:
            worker.out_of_memory = worker.out_of_memory or worker.cgroup.oom_killed()
            if not worker.cgroup.remove():
                self._leftovers.append(worker.cgroup)

    def exit_reason(self, handle: WorkerHandle) -> str | None:
        worker = self._workers.get(handle.worker_id)
        if worker is not None and worker.out_of_memory and worker.memory_mib:
            return out_of_memory(worker.memory_mib, "was killed")
        return None

    def exit_cause(self, handle: WorkerHandle) -> str | None:
        """Out of its memory limit: the user's loss, as in Docker (else judged by signal)."""
        worker = self._workers.get(handle.worker_id)
        if worker is not None and worker.out_of_memory and worker.memory_mib:
            return losses.USER
        return None

    def logs(self, handle: WorkerHandle, tail: int = 20) -> str:
        """The last ``tail`` lines, from the rotated part too when the current one is short."""
        text = self.follow_logs(handle, None, tail).text
        lines = text.count("\n")
        if lines < tail and handle.log_path:
            text = tail_lines(handle.log_path + ".1", tail - lines) + text
        return text

    def follow_logs(self, handle: WorkerHandle, after: int | None, limit: int) -> LogChunk:
        """By byte offset; a rotation truncates the log, and a reader whose cursor is then
        past its end gets the latest lines again (``follow_file``)."""
        if not handle.log_path:
            return LogChunk("", None)
        exited = self.exit_code(handle) is not None
        return follow_file(handle.log_path, after, limit, complete=exited)

    def wait(self, handle: WorkerHandle, timeout: float) -> int | None:
        proc: subprocess.Popen[bytes] | ForkedWorker = handle.ref
        try:
            code = proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return None
        self._clean(handle.worker_id)
        return code

    # --- housekeeping -------------------------------------------------------------------

    def housekeep(self, now: float) -> None:
        if now - self._memory_checked >= _MEMORY_CHECK:
            self._memory_checked = now
            for worker_id, worker in list(self._workers.items()):
                if worker.watched is not None and not worker.cleaned:
                    self._check_memory(worker_id, worker)
        if now - self._logs_checked >= _LOG_CHECK:
            self._logs_checked = now
            self._rotate_logs()
            self._leftovers = [c for c in self._leftovers if not c.remove()]
            # Gone workers stay a minute: exit_reason and logs may still be asked.
            for worker_id, worker in list(self._workers.items()):
                if worker.gone_at is not None and time.monotonic() - worker.gone_at > 60:
                    del self._workers[worker_id]

    def _check_memory(self, worker_id: str, worker: _Worker) -> None:
        """Kill a worker whose resident memory (its children's included) passed its limit."""
        import psutil

        assert worker.watched is not None and worker.memory_mib is not None
        try:
            procs = [worker.watched, *worker.watched.children(recursive=True)]
            rss = 0
            for p in procs:
                with contextlib.suppress(psutil.Error):
                    rss += p.memory_info().rss
        except psutil.Error:
            return  # gone: exit_code will say so
        if rss > worker.memory_mib << 20:
            worker.out_of_memory = True
            self._kill_all(worker_id, worker.proc)

    def _rotate_logs(self) -> None:
        for worker in self._workers.values():
            if worker.cleaned:
                continue
            try:
                if os.path.getsize(worker.log_path) < self.log_max_bytes:
                    continue
                shutil.copyfile(worker.log_path, worker.log_path + ".1")
                os.truncate(worker.log_path, 0)
            except OSError:
                continue  # a full disk: the worker's own writes fail (and say so), not us

    def close(self) -> None:
        for worker_id, worker in list(self._workers.items()):
            if worker.proc.poll() is None:
                self._kill_all(worker_id, worker.proc)
        for worker_id in list(self._workers):
            worker = self._workers[worker_id]
            with contextlib.suppress(subprocess.TimeoutExpired):
                worker.proc.wait(2)
            self._clean(worker_id)
        for cgroup in self._leftovers:
            cgroup.remove()
        if self._zygote is not None:
            self._zygote.close()
        if self._cgroups is not None:
            self._cgroups.close()
