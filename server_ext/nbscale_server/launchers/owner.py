"""Which control plane process owns a worker, in a form that outlives the process.

A launcher tags what it creates (Docker labels, Slurm job comments) with the owner's
``"pid:start time"``. A control plane that crashed cannot clean up after itself, so the next
one on the same host removes what is tagged with an owner that no longer runs; the start
time tells a reused pid from the original process.
"""

from __future__ import annotations

# psutil is imported where it is used: a worker's image imports the client (for nested
# calls), which reaches this module, and the image has no psutil.


def owner_tag() -> str:
    """``"pid:start time"`` of this process."""
    import psutil

    me = psutil.Process()
    return f"{me.pid}:{me.create_time():.2f}"


def owner_alive(owner: str | None) -> bool:
    """Whether the process named by an owner tag ("pid:start time") still runs."""
    import psutil

    try:
        pid_text, started_text = (owner or "").split(":")
        pid, started = int(pid_text), float(started_text)
        return abs(psutil.Process(pid).create_time() - started) < 0.5
    except (ValueError, psutil.Error):
        return False
