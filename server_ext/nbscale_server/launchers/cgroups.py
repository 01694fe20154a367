"""Local workers' ``memory=`` and ``cpu=``, enforced as Docker enforces a container's.

Where this process may make cgroups (cgroup v1's ``memory`` and ``cpu`` controllers,
writable by root or by a user they were delegated to), each limited worker gets one of its
own under this process's: ``memory.limit_in_bytes`` (swap included where the kernel
accounts it) counts resident memory, and the kernel's OOM killer ends the worker when its
processes pass it; ``cpu.cfs_quota_us`` gives it ``cpu`` cores' worth of time per period,
fractions included. Everything the worker starts stays in its cgroup, so a stop kills it
all. Where no cgroup can be made (cgroup v2 without a delegated subtree, no permission),
``ProcessLauncher`` watches each worker's resident memory instead and pins ``cpu=`` with
CPU affinity (see ``process.py``).

Cgroups are named for their owner (``nbscale-<pid>-<start time>``), so that the next control
plane on the host removes those of one that crashed (after killing what is left in them).
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal

from .owner import owner_alive, owner_tag

log = logging.getLogger("nbscale.launchers")

_ROOT = "/sys/fs/cgroup"
_PERIOD_US = 100_000  # the CFS period the cpu quota is a share of


def _own_paths() -> dict[str, str]:
    """This process's cgroup directory for each v1 controller that is mounted."""
    mounts: dict[str, str] = {}
    with contextlib.suppress(OSError), open("/proc/self/mountinfo") as f:
        for line in f:
            fields = line.split()
            dash = fields.index("-")
            if fields[dash + 1] != "cgroup":
                continue
            for option in fields[-1].split(","):
                if option in ("memory", "cpu") and fields[3] == "/":
                    mounts[option] = fields[4]
    paths: dict[str, str] = {}
    with contextlib.suppress(OSError), open("/proc/self/cgroup") as f:
        for line in f:
            _, controllers, path = line.rstrip("\n").split(":", 2)
            for controller in controllers.split(","):
                if controller in mounts:
                    paths[controller] = os.path.join(mounts[controller], path.lstrip("/"))
    return paths


def _write(path: str, value: str) -> None:
    with open(path, "w") as f:
        f.write(value)


def _read(path: str) -> str:
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return ""


class WorkerCgroup:
    """One worker's cgroups (memory, cpu, or both)."""

    def __init__(self, dirs: dict[str, str]) -> None:
        self.dirs = dirs  # controller -> directory

    def add(self, pid: int) -> None:
        for path in self.dirs.values():
            _write(os.path.join(path, "cgroup.procs"), str(pid))

    def oom_killed(self) -> bool:
        """Whether the kernel killed a process of it for passing its memory limit."""
        path = self.dirs.get("memory")
        if path is None:
            return False
        for line in _read(os.path.join(path, "memory.oom_control")).splitlines():
            name, _, value = line.partition(" ")
            if name == "oom_kill":
                return int(value) > 0
        return _read(os.path.join(path, "memory.failcnt")).strip() not in ("", "0")

    def kill_all(self) -> None:
        """SIGKILL every process in it (what the worker left behind included)."""
        for path in self.dirs.values():
            for pid in _read(os.path.join(path, "cgroup.procs")).split():
                with contextlib.suppress(ProcessLookupError, ValueError):
                    os.kill(int(pid), signal.SIGKILL)

    def remove(self) -> bool:
        """Remove its directories; False while processes remain in one."""
        removed = True
        for controller, path in list(self.dirs.items()):
            try:
                os.rmdir(path)
            except FileNotFoundError:
                pass
            except OSError:
                removed = False
                continue
            del self.dirs[controller]
        return removed


class Cgroups:
    """The cgroups this control plane makes for its workers, under its own."""

    def __init__(self, parents: dict[str, str]) -> None:
        self.parents = parents  # controller -> this control plane's directory

    @classmethod
    def find(cls) -> Cgroups | None:
        """Cgroups for workers, where this process may make them; None where it may not."""
        name = "nbscale-" + owner_tag().replace(":", "-")
        parents = {}
        for controller, own in _own_paths().items():
            remove_stale(own)
            parent = os.path.join(own, name)
            try:
                os.makedirs(parent, exist_ok=True)
            except OSError:
                continue
            parents[controller] = parent
        return cls(parents) if parents else None

    def create(self, worker_id: str, memory_mib: int | None, cpu: float | None) -> WorkerCgroup:
        """A cgroup for one worker with these limits (empty for those it cannot enforce)."""
        dirs = {}
        wanted = {"memory": memory_mib, "cpu": cpu}
        for controller, parent in self.parents.items():
            if wanted[controller] is None:
                continue
            path = os.path.join(parent, worker_id)
            try:
                os.makedirs(path, exist_ok=True)
                if controller == "memory" and memory_mib is not None:
                    limit = str(memory_mib << 20)
                    _write(os.path.join(path, "memory.limit_in_bytes"), limit)
                    swap = os.path.join(path, "memory.memsw.limit_in_bytes")
                    if os.path.exists(swap):  # no swapping past the limit either
                        _write(swap, limit)
                elif controller == "cpu" and cpu is not None:
                    quota = max(1000, int(cpu * _PERIOD_US))
                    _write(os.path.join(path, "cpu.cfs_period_us"), str(_PERIOD_US))
                    _write(os.path.join(path, "cpu.cfs_quota_us"), str(quota))
            except OSError as exc:
                log.warning(
                    "cannot limit the %s of %s with %s: %s", controller, worker_id, path, exc
                )
                with contextlib.suppress(OSError):
                    os.rmdir(path)
                continue
            dirs[controller] = path
        return WorkerCgroup(dirs)

    def enforces(self, controller: str) -> bool:
        return controller in self.parents

    def close(self) -> None:
        for parent in self.parents.values():
            with contextlib.suppress(OSError):
                os.rmdir(parent)


def remove_stale(own: str) -> None:
    """Remove the worker cgroups of control planes that are gone, and what runs in them."""
    try:
        names = [n for n in os.listdir(own) if n.startswith("nbscale-")]
    except OSError:
        return
    for name in names:
        pid, _, started = name[len("nbscale-") :].partition("-")
        if owner_alive(f"{pid}:{started}"):
            continue
        parent = os.path.join(own, name)
        workers = [os.path.join(parent, w) for w in os.listdir(parent) if w.startswith("wk-")]
        for path in workers:
            cgroup = WorkerCgroup({"any": path})
            cgroup.kill_all()
            import psutil  # where used: worker images (nested calls) lack it

            with contextlib.suppress(psutil.Error):
                psutil.wait_procs(
                    [psutil.Process(int(p)) for p in _read(f"{path}/cgroup.procs").split()],
                    timeout=1,
                )
            cgroup.remove()
        with contextlib.suppress(OSError):
            os.rmdir(parent)
            log.info("removed %s, left by a control plane that is gone", parent)
