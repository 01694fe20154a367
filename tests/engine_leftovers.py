"""What a test left on the Docker engine: the nbscale containers and networks whose control
plane ran in one of the processes the test names (this one, or a server or command it
started), whether that process still runs or has ended. Another control plane's (a
developer's notebook, a parallel run, an earlier test's) are not this test's leak."""

from __future__ import annotations

from typing import Any

from nbscale_server.launchers.docker_engine import LABEL_OWNER


def left_on_engine(engine: Any, *pids: int) -> list[str]:
    """Names of the containers, then networks, left by control planes in the processes
    ``pids`` (``engine``: a docker SDK client)."""
    ours = {"label": "nbscale.server"}
    found = [
        (c.name, c.labels)
        for c in engine.containers.list(all=True, filters=ours, ignore_removed=True)
    ]
    found += [(n.name, n.attrs.get("Labels") or {}) for n in engine.networks.list(filters=ours)]
    owners = tuple(f"{pid}:" for pid in pids)
    return [name for name, labels in found if labels.get(LABEL_OWNER, "").startswith(owners)]
