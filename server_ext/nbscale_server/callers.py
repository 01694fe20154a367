"""The callers of a control plane (kernels, scripts) and whether they are still there.

A caller says at ``hello`` which process it is (pid and host), and pings while it waits on
calls. A caller on this host is gone when its process is (killed, crashed: its process is
checked, pid reuse included); one elsewhere, or that did not say, when it has been silent
for the grace period. A caller whose process lives is never judged by its silence: code
holding its GIL may keep its pings from being sent for a while.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass

_HOST = socket.gethostname()


class ProcessWatch:
    """Whether a process on this host is still the one it was (its pid may be reused)."""

    def __init__(self, pid: int) -> None:
        # imported here: the client imports this module, also in worker images without it
        import psutil

        self.pid = pid
        self._missing = False
        self._created: float | None = None
        try:
            self._created = psutil.Process(pid).create_time()
        except psutil.NoSuchProcess:
            self._missing = True
        except (psutil.Error, OSError):
            pass  # not ours to see (another user's)

    def gone(self) -> bool:
        import psutil

        if self._missing:
            return True
        if self._created is None:
            return False  # not ours to see: silence will tell
        try:
            process = psutil.Process(self.pid)
            return (
                process.create_time() != self._created or process.status() == psutil.STATUS_ZOMBIE
            )
        except psutil.NoSuchProcess:
            return True
        except (psutil.Error, OSError):
            return False


@dataclass(slots=True)
class Caller:
    versions: dict[str, str]  # its Python and cloudpickle, which its pickles need
    process: ProcessWatch | None  # its process, when it runs on this host
    pid: int
    last_heard: float


class Callers:
    def __init__(self) -> None:
        self._known: dict[bytes, Caller] = {}

    def hello(
        self, identity: bytes, versions: dict[str, str], pid: int, host: str, now: float
    ) -> None:
        process = ProcessWatch(pid) if pid and host == _HOST else None
        self._known[identity] = Caller(versions, process, pid, now)

    def versions(self, identity: bytes) -> dict[str, str] | None:
        caller = self._known.get(identity)
        return caller.versions if caller is not None else None

    def heard(self, identity: bytes, now: float) -> None:
        caller = self._known.get(identity)
        if caller is not None:
            caller.last_heard = now

    def gone(self, identity: bytes, now: float, grace: float) -> str | None:
        """Why the caller ``identity`` is gone, or None while it is there (or unknown: an
        in-process caller never says hello over a socket)."""
        caller = self._known.get(identity)
        if caller is None:
            return None
        if caller.process is not None:
            return f"is gone (its process {caller.pid} ended)" if caller.process.gone() else None
        if now - caller.last_heard > grace:
            return f"has been silent for {now - caller.last_heard:.0f} s"
        return None

    def forget(self, identity: bytes) -> None:
        self._known.pop(identity, None)

    def identities(self) -> list[bytes]:
        return list(self._known)
