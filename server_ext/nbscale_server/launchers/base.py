"""The launcher interface: how the control plane starts and stops workers.

A launcher only moves processes or containers; when to start or stop one is the autoscaler's
decision. A restarted control plane finds the workers a previous one left through the
launcher itself (Docker labels, Slurm job comments), not through saved handles.

Launchers whose workers wait in a scheduler's queue (Slurm) say so through
:meth:`Launcher.worker_status` ("pending", with the scheduler's reason), and say which exits
the infrastructure caused (:meth:`Launcher.exit_cause`, as Docker does); the defaults suit
launchers whose workers start at once.
"""

from __future__ import annotations

import abc
import collections
from dataclasses import dataclass, field
from typing import Any, Literal

from ..options import FunctionOptions
from .errors import LaunchFailed as LaunchFailed  # where launchers have imported it from

# Launchers whose workers run in containers, from an image the client builds (or pushes)
CONTAINER_LAUNCHERS = ("docker", "kubernetes")


@dataclass(frozen=True, slots=True)
class WorkerSpec:
    """Everything a launcher needs to start one worker."""

    worker_id: str
    pool_id: str
    config_path: str  # the worker's config file (endpoint, keys), mode 0600
    options: FunctionOptions = field(default_factory=FunctionOptions)  # cpu, memory, gpu, ...
    register_path: str | None = None  # its register file, for launchers that share it
    pool_name: str = ""  # the function's name, for names people read (Slurm's job name)
    socket_path: str | None = None  # its own Unix socket to the control plane, to mount


@dataclass(slots=True)
class WorkerHandle:
    worker_id: str
    pool_id: str
    launcher: str
    ref: Any  # the launcher's own reference (a Popen, a container id)
    log_path: str | None = None
    name: str | None = None  # what the launcher's own tools call it (a container's name)
    image: str | None = None  # the image it runs, for a container


@dataclass(frozen=True, slots=True)
class LogChunk:
    """Lines of a worker's output and where they end, to follow it (``Launcher.follow_logs``)."""

    text: str  # whole lines
    cursor: int | None  # pass back as ``after`` for the lines that follow; None: cannot follow
    skipped: bool = False  # more lines came after ``after`` than were returned: the oldest left out


WorkerPhase = Literal["pending", "running", "exited"]


@dataclass(frozen=True, slots=True)
class WorkerStatus:
    """Where a launched worker is, as its launcher knows it."""

    phase: WorkerPhase  # pending: queued by a scheduler, waiting for resources (not failing)
    reason: str | None = None  # the scheduler's word for why it waits: "Resources", "Priority"


# Exit codes a launcher records for a worker that never gave one of its own.
EXIT_NOT_STARTED = 125  # as `docker run` says: it could not start
EXIT_LOST = 255  # its fate is unknown: the engine or scheduler lost sight of it


def signal_of_exit(code: int | None) -> int | None:
    """The signal that ended a container whose init (or kubelet) reports 128 + the signal
    (137: SIGKILL), if one did."""
    if code is None or code in (EXIT_NOT_STARTED, EXIT_LOST) or not 128 < code < 160:
        return None
    return code - 128


class Launcher(abc.ABC):
    """Starts and stops workers of one kind (local processes, Docker containers, ...)."""

    name: str = "abstract"

    def spare_worker_id(self, options: FunctionOptions) -> str | None:
        """The id a new worker with ``options`` must take for the launcher to start it at
        once in a container already started (a Docker warm spare), or None: any new id."""
        return None

    def spares(self) -> list[str]:
        """The names of the started containers that wait to become workers (Docker's warm
        spares), as the launcher's own tools show them."""
        return []

    @abc.abstractmethod
    def start(self, spec: WorkerSpec) -> WorkerHandle:
        """Start a worker; raise ``LaunchFailed`` with a readable reason when it cannot."""

    @abc.abstractmethod
    def stop(self, handle: WorkerHandle, *, graceful: bool = True) -> None:
        """Ask the worker to finish its current input and exit (or kill it at once)."""

    @abc.abstractmethod
    def exit_code(self, handle: WorkerHandle) -> int | None:
        """The worker's exit code once it has exited, else None."""

    @abc.abstractmethod
    def logs(self, handle: WorkerHandle, tail: int = 20) -> str:
        """The last ``tail`` lines the worker wrote to stdout/stderr."""

    def follow_logs(self, handle: WorkerHandle, after: int | None, limit: int) -> LogChunk:
        """The lines written since the cursor ``after`` (None: the last ``limit``), at most
        ``limit`` of them (the latest), and the cursor to follow from. A launcher that cannot
        follow returns the last lines and no cursor, and its readers read them again."""
        return LogChunk(self.logs(handle, limit), None)

    def exit_reason(self, handle: WorkerHandle) -> str | None:
        """Why an exited worker ended, when the launcher knows more than its exit code
        (e.g. "ran out of memory ..."); phrased to follow "worker wk-...". None: say what
        the exit code says."""
        return None

    def worker_status(self, handle: WorkerHandle) -> WorkerStatus:
        """Whether the worker waits in a scheduler's queue, runs, or has exited. The
        default suits launchers whose workers start at once: running until it has an exit
        code."""
        return WorkerStatus("exited" if self.exit_code(handle) is not None else "running")

    def housekeep(self, now: float) -> None:  # noqa: B027 - optional hook
        """Called on every housekeeping tick (``now``: the control plane's clock), for what
        a launcher watches itself (memory limits, log sizes)."""

    def exit_cause(self, handle: WorkerHandle) -> str | None:
        """Whose fault an exited worker's end was, when the launcher knows: ``losses.USER``
        (it ran out of memory, its job failed), ``losses.INFRASTRUCTURE`` (removed by
        someone else, lost with its engine or node, preempted, cancelled by a scheduler or an
        admin, past its walltime); None: judge by the signal that ended it
        (``losses.cause_of_loss``)."""
        return None

    def exit_signal(self, handle: WorkerHandle) -> int | None:
        """The signal that ended an exited worker, if one did (a process's negative code)."""
        code = self.exit_code(handle)
        return -code if code is not None and code < 0 else None

    def register_in_worker(self, path: str) -> str | None:
        """Where the worker sees its register file (``nbscale_runtime.register``), made at
        ``path`` on this host; None when the worker cannot share this host's files (it then
        tells its starts through its messages)."""
        return path

    def socket_in_worker(self) -> str | None:
        """Where the worker finds a Unix socket of its own to the control plane, which the
        launcher mounts there from ``WorkerSpec.socket_path`` (Docker with
        ``docker_transport="ipc"``); None: it dials the control plane's endpoint."""
        return None

    def worker_config_dir(self) -> str | None:
        """The directory worker config and register files must be written to for this
        launcher's workers to read them (one the cluster's nodes share), or None: the
        control plane's private directory."""
        return None

    def worker_bind_host(self) -> str | None:
        """The address the control plane binds its worker socket to (over TCP, with
        CurveZMQ) for this launcher's workers to reach it, unless the ``worker_address``
        setting names one; None when they share this machine's file system and ``ipc://``
        works."""
        return None

    def worker_port(self) -> int | None:
        """The port the worker socket must listen on (a Kubernetes Service forwards to it),
        or None: a random free one."""
        return None

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release what the launcher holds; workers are stopped by the control plane."""


def tail_lines(path: str | None, tail: int) -> str:
    """The last ``tail`` lines of the text file at ``path`` ("" when it cannot be read)."""
    if not path or tail <= 0:
        return ""
    try:
        with open(path, errors="replace") as f:
            return "".join(collections.deque(f, maxlen=tail))
    except OSError:
        return ""


def out_of_memory(limit_mib: int | None, how: str) -> str:
    """How a worker that passed its memory limit ended, after "worker wk-...": the same
    words for every launcher."""
    limit = f" (memory limit {limit_mib} MiB)" if limit_mib else ""
    return f"ran out of memory{limit} and {how}"
