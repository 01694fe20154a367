"""Workers as Slurm batch jobs: one ``sbatch`` job per worker, dialling back over CurveZMQ.

- Each worker is one job (``slurm_job.py`` writes its command line and script), submitted
  with ``sbatch --parsable`` on a daemon thread, never on the control plane's loop. Its
  config file (endpoint and keys, mode 0600) and its output file live in this control
  plane's job directory under ``shared_dir``, which the nodes must see; workers dial the
  control plane's ``worker_address`` (loopback unless set: only jobs on this node reach it).
- One poller thread asks ``squeue`` about every live job in one call (about once a second,
  five times a second while a stop is under way), and ``scontrol show job`` about each job
  that ended, for its ``State``/``ExitCode``/``Reason`` (``slurm_queue.py`` reads them). A
  pending job is a worker waiting for resources, with Slurm's reason
  (:meth:`SlurmLauncher.worker_status`).
- Stopping: gracefully, the running job's worker gets SIGTERM (``scancel --batch
  --signal=TERM``: it finishes its inputs and exits); by force, or while it is still
  queued, the job is cancelled (``scancel``).
- Every job's ``--comment`` names this control plane and its owner process; a new launcher
  cancels the jobs, and removes the job directories, that dead control planes of this host
  left behind. Closing cancels every job this one submitted and waits until they are out of
  the queue.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field

from ..losses import INFRASTRUCTURE, USER
from ..remote import LOOPBACK, default_shared_dir, make_job_dir, remove_orphan_job_dirs
from .base import Launcher, LaunchFailed, LogChunk, WorkerHandle, WorkerSpec, WorkerStatus
from .daemon_threads import DaemonThreads
from .logs import follow_file
from .owner import owner_alive, owner_tag
from .slurm_job import (
    JobComment,
    SlurmOptions,
    batch_script,
    job_environment,
    job_name,
    sbatch_command,
)
from .slurm_queue import (
    SQUEUE_FORMAT,
    JobEnd,
    job_end,
    lost,
    parse_scontrol_job,
    parse_squeue,
    phase_of,
    slurm_error,
)
from .volumes import refuse_volumes

log = logging.getLogger("nbscale.slurm")

EXIT_NOT_SUBMITTED = 125
_THREADS = 4  # sbatch/scancel calls in parallel
_COMMAND_TIMEOUT = 60.0  # seconds a Slurm command may take (slurmctld can be busy)
_POLL_INTERVAL = 1.0
_URGENT_POLL_INTERVAL = 0.2  # while a stop is under way, so the control plane sees the exit
_MISSES_BEFORE_LOST = 2  # polls in a row without a job in squeue before it counts as lost
_LOG_FILES_KEPT = 256  # output files of ended jobs kept for %nbscale logs
_CLOSE_WAIT = 15.0  # seconds close() waits for its jobs to leave the queue


@dataclass(eq=False)
class SlurmJob:
    """A worker's job, as the launcher's threads and the control plane see it (the ``ref``
    of its ``WorkerHandle``)."""

    worker_id: str
    log_path: str
    job_id: str | None = None
    state: str = "SUBMITTING"  # Slurm's state, as last polled
    reason: str | None = None  # Slurm's reason for a pending job
    end: JobEnd | None = None
    submitted: threading.Event = field(default_factory=threading.Event)  # or refused
    ended: threading.Event = field(default_factory=threading.Event)
    signalled: str | None = None  # "TERM" or "cancel": the last stop asked for
    cancelled: bool = False  # this control plane cancelled it
    misses: int = 0


class SlurmLauncher(Launcher):
    name = "slurm"

    def __init__(
        self,
        python: str | None = None,
        options: SlurmOptions | None = None,
        shared_dir: str | None = None,
    ) -> None:
        """``python``: the interpreter jobs run the worker with (a path the nodes see;
        default this one); ``options``: the control plane's job options (its ``slurm_*``
        settings); ``shared_dir``: a directory the nodes see, for worker config files and
        job output."""
        if shutil.which("sbatch") is None:
            raise LaunchFailed(
                "Slurm's sbatch is not on PATH: run the control plane on a host of the "
                "cluster (a login node), or choose another launcher (NBSCALE_LAUNCHER)"
            )
        self.python = python or sys.executable
        self.options = options or SlurmOptions()
        self.server_id = "sv-" + uuid.uuid4().hex[:12]
        self.host = socket.gethostname()
        self.owner = owner_tag()
        self._env = job_environment(os.environ)
        self.reap_orphans()
        shared = shared_dir or default_shared_dir()
        try:
            remove_orphan_job_dirs(shared)
            self.dir = make_job_dir(shared, self.server_id)
        except OSError as exc:
            raise LaunchFailed(f"cannot make a job directory in {shared}: {exc}") from None
        self._lock = threading.Lock()
        self._jobs: dict[str, SlurmJob] = {}  # live ones, by worker id
        self._ended_logs: collections.deque[str] = collections.deque()
        self._closed = False
        self._wake = threading.Event()
        self._threads = DaemonThreads(_THREADS, "nbscale-slurm")
        self._poller = threading.Thread(target=self._poll, name="nbscale-slurm-poll", daemon=True)
        self._poller.start()

    def worker_bind_host(self) -> str | None:
        return LOOPBACK  # workers dial over TCP: on a cluster, worker_address names where

    def worker_config_dir(self) -> str | None:
        return self.dir

    def _run(self, args: list[str], stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            args,
            input=stdin,
            capture_output=True,
            text=True,
            timeout=_COMMAND_TIMEOUT,
            env=self._env,
            check=False,
        )

    # --- starting -----------------------------------------------------------------------

    def start(self, spec: WorkerSpec) -> WorkerHandle:
        if self._closed:
            raise LaunchFailed("the Slurm launcher is closed")
        refuse_volumes(spec.options.volumes, "Slurm")
        log_path = os.path.join(self.dir, f"{spec.worker_id}.log")
        comment = JobComment(self.server_id, spec.worker_id, spec.pool_id, self.host, self.owner)
        try:
            args = sbatch_command(
                spec.options,
                self.options,
                job_name(spec.pool_name or spec.pool_id),
                comment,
                log_path,
            )
        except ValueError as exc:
            raise LaunchFailed(str(exc)) from None
        job = SlurmJob(spec.worker_id, log_path)
        with self._lock:
            self._jobs[spec.worker_id] = job
        script = batch_script(self.python, spec.config_path)
        self._threads.submit(lambda: self._submit(job, args, script))
        return WorkerHandle(spec.worker_id, spec.pool_id, self.name, job, log_path)

    def _submit(self, job: SlurmJob, args: list[str], script: str) -> None:
        try:
            done = self._run(args, stdin=script)
        except (OSError, subprocess.TimeoutExpired) as exc:
            # sbatch itself failed (slurmctld down, a timeout): it may well work next time
            reason = f"could not be submitted ({exc})"
            end: JobEnd | None = JobEnd(EXIT_NOT_SUBMITTED, reason, INFRASTRUCTURE)
        else:
            end = None
            if done.returncode != 0:
                reason = f"could not be submitted to Slurm ({slurm_error(done.stderr)})"
                end = JobEnd(EXIT_NOT_SUBMITTED, reason, USER)  # refused: it would be again
            else:
                job.job_id = done.stdout.strip().split(";")[0]  # "id" or "id;cluster"
                job.state = "PENDING"
        if end is not None:
            self._record_end(job, end)
        job.submitted.set()  # after job_id is known: stop() and close() wait for it
        if job.job_id is not None and job.signalled is not None:  # stopped meanwhile
            self._cancel(job)

    # --- what Slurm says ----------------------------------------------------------------

    def _poll(self) -> None:
        urgent = False
        while not self._closed:
            self._wake.wait(_URGENT_POLL_INTERVAL if urgent else _POLL_INTERVAL)
            self._wake.clear()
            with self._lock:
                live = [j for j in self._jobs.values() if j.job_id is not None and j.end is None]
            urgent = any(j.signalled for j in live)
            if live and not self._closed:
                try:
                    self._update(live)
                except Exception:
                    log.warning("asking Slurm about worker jobs failed", exc_info=True)

    def _update(self, jobs: list[SlurmJob]) -> None:
        ids = ",".join(j.job_id for j in jobs if j.job_id)
        done = self._run(["squeue", "-h", "--states=all", "-j", ids, "-o", SQUEUE_FORMAT])
        if done.returncode != 0 and "Invalid job id" not in done.stderr:
            log.warning("squeue failed: %s", slurm_error(done.stderr))
            return  # Slurm is busy or down: the jobs' fate is unknown, not ended
        entries = parse_squeue(done.stdout)
        for job in jobs:
            entry = entries.get(job.job_id or "")
            if entry is None:
                job.misses += 1
                if job.misses >= _MISSES_BEFORE_LOST:
                    self._finish(job, None)
            elif entry.phase == "exited":
                self._finish(job, entry.state)
            else:
                job.misses = 0
                job.state, job.reason = entry.state, entry.reason

    def _finish(self, job: SlurmJob, state: str | None) -> None:
        """Record an ended job's State, ExitCode and Reason (from ``scontrol show job``)."""
        job_id = job.job_id or "?"
        done = self._run(["scontrol", "show", "job", "-o", job_id])
        fields = parse_scontrol_job(done.stdout) if done.returncode == 0 else {}
        final = fields.get("JobState") or state
        if final is None or phase_of(final) != "exited":
            self._record_end(job, lost(job_id))
            return
        end = job_end(
            job_id, final, fields.get("ExitCode", ""), fields.get("Reason"), job.cancelled
        )
        self._record_end(job, end)

    def _record_end(self, job: SlurmJob, end: JobEnd) -> None:
        with self._lock:
            if job.end is None:
                job.end = end
                job.state = "ENDED"
            self._jobs.pop(job.worker_id, None)
            self._ended_logs.append(job.log_path)
            old = self._ended_logs.popleft() if len(self._ended_logs) > _LOG_FILES_KEPT else None
        job.ended.set()
        if old is not None:
            with contextlib.suppress(OSError):
                os.unlink(old)

    def exit_code(self, handle: WorkerHandle) -> int | None:
        job: SlurmJob = handle.ref
        return job.end.code if job.end is not None else None

    def exit_reason(self, handle: WorkerHandle) -> str | None:
        job: SlurmJob = handle.ref
        return job.end.reason if job.end is not None else None

    def exit_cause(self, handle: WorkerHandle) -> str | None:
        job: SlurmJob = handle.ref
        return job.end.cause if job.end is not None else None

    def worker_status(self, handle: WorkerHandle) -> WorkerStatus:
        job: SlurmJob = handle.ref
        if job.end is not None:
            return WorkerStatus("exited")
        if job.state == "SUBMITTING":
            return WorkerStatus("pending")
        phase = phase_of(job.state)
        return WorkerStatus(phase, job.reason if phase == "pending" else None)

    def job_id(self, handle: WorkerHandle) -> str | None:
        """The Slurm job id of a worker (None until ``sbatch`` has answered)."""
        job: SlurmJob = handle.ref
        return job.job_id

    def logs(self, handle: WorkerHandle, tail: int = 20) -> str:
        return self.follow_logs(handle, None, tail).text

    def follow_logs(self, handle: WorkerHandle, after: int | None, limit: int) -> LogChunk:
        job: SlurmJob = handle.ref
        return follow_file(job.log_path, after, limit, complete=job.end is not None)

    def wait(self, handle: WorkerHandle, timeout: float) -> int | None:
        job: SlurmJob = handle.ref
        job.ended.wait(timeout)
        return self.exit_code(handle)

    # --- stopping -----------------------------------------------------------------------

    def stop(self, handle: WorkerHandle, *, graceful: bool = True) -> None:
        job: SlurmJob = handle.ref
        wanted = "TERM" if graceful else "cancel"
        if job.end is not None or job.signalled in (wanted, "cancel"):
            return
        job.signalled = wanted
        self._threads.submit(lambda: self._stop(job, wanted))

    def _stop(self, job: SlurmJob, wanted: str) -> None:
        job.submitted.wait()
        if job.job_id is None or job.end is not None:
            return
        if wanted == "TERM" and job.state == "RUNNING":
            term = ["scancel", "--batch", "--signal=TERM", job.job_id]
            if self._run(term).returncode == 0:
                self._wake.set()
                return
        self._cancel(job)  # queued (nothing to drain), forced, or the signal failed

    def _cancel(self, job: SlurmJob) -> None:
        job.cancelled = True
        done = self._run(["scancel", job.job_id or ""])
        if done.returncode != 0:
            log.warning("scancel %s failed: %s", job.job_id, slurm_error(done.stderr))
        self._wake.set()

    def reap_orphans(self) -> list[str]:
        """Cancel the jobs that control planes of this host left in the queue when they
        died; returns their job ids. Raises ``LaunchFailed`` when Slurm does not answer."""
        try:
            done = self._run(["squeue", "--me", "-h", "-o", SQUEUE_FORMAT])
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise LaunchFailed(f"cannot reach Slurm: {exc}") from None
        if done.returncode != 0:
            raise LaunchFailed(f"cannot reach Slurm: squeue says {slurm_error(done.stderr)}")
        orphans = []
        for entry in parse_squeue(done.stdout).values():
            comment = JobComment.parse(entry.comment)
            if comment and comment.host == self.host and not owner_alive(comment.owner):
                orphans.append(entry.job_id)
        if orphans:
            self._run(["scancel", *orphans])
            log.warning(
                "cancelled %d Slurm job(s) left by a control plane that died: %s",
                len(orphans),
                ", ".join(orphans),
            )
        return orphans

    def close(self) -> None:
        """Cancel every job this control plane submitted, wait until they have left the
        queue, then remove the job directory."""
        if self._closed:
            return
        with self._lock:
            jobs = list(self._jobs.values())
        for job in jobs:
            job.submitted.wait(_COMMAND_TIMEOUT)
        self._closed = True
        self._wake.set()
        ids = [j.job_id for j in jobs if j.job_id is not None and j.end is None]
        ids += [i for i in self._strays() if i not in ids]
        if ids:
            with contextlib.suppress(OSError, subprocess.TimeoutExpired):
                self._run(["scancel", *ids])
            self._wait_out_of_queue(ids)
        for job in jobs:
            job.cancelled = True
            self._record_end(job, JobEnd(-15, "was cancelled as the control plane stopped"))
        shutil.rmtree(self.dir, ignore_errors=True)
        self._threads.close()

    def _strays(self) -> list[str]:
        """Jobs of this control plane in the queue that it has no record of."""
        with contextlib.suppress(OSError, subprocess.TimeoutExpired):
            done = self._run(["squeue", "--me", "-h", "-o", SQUEUE_FORMAT])
            return [
                e.job_id
                for e in parse_squeue(done.stdout).values()
                if (c := JobComment.parse(e.comment)) and c.server_id == self.server_id
            ]
        return []

    def _wait_out_of_queue(self, ids: list[str]) -> None:
        deadline = time.monotonic() + _CLOSE_WAIT
        while time.monotonic() < deadline:
            try:
                done = self._run(["squeue", "-h", "-j", ",".join(ids), "-o", SQUEUE_FORMAT])
            except (OSError, subprocess.TimeoutExpired):
                return
            if not parse_squeue(done.stdout):
                return
            time.sleep(0.1)
        log.warning("Slurm jobs %s were still in the queue %s s after scancel", ids, _CLOSE_WAIT)
