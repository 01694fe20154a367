"""What a test left on the Docker engine: the nbscale containers and networks that this test
process owns, or that a control plane which died during the test left behind. Another live
control plane's (a developer's notebook, a parallel run) are its own, not this test's leak,
and so are those of one that died before the test began (the next control plane reaps them).
"""

from __future__ import annotations

import os
from datetime import datetime
from typing import Any

from nbscale_server.launchers.docker_engine import LABEL_OWNER, owner_alive


def left_on_engine(engine: Any, since: float = 0.0) -> list[str]:
    """Names of the containers, then networks, left behind (``engine``: a docker SDK client;
    ``since``: when the test began, a time.time())."""
    ours = {"label": "nbscale.server"}
    found = [(c.name, c.attrs) for c in engine.containers.list(all=True, filters=ours)]
    found += [(n.name, n.attrs) for n in engine.networks.list(filters=ours)]
    me = f"{os.getpid()}:"
    left = []
    for name, attrs in found:
        owner = (attrs.get("Labels") or attrs.get("Config", {}).get("Labels") or {}).get(
            LABEL_OWNER, ""
        )
        if owner.startswith(me) or (_created(attrs) >= since and not owner_alive(owner)):
            left.append(name)
    return left


def _created(attrs: dict[str, Any]) -> float:
    """Docker's "2026-11-28T09:34:18.934135854Z", to the microsecond."""
    stamp = attrs["Created"].rstrip("Z")
    whole, _, fraction = stamp.partition(".")
    return datetime.fromisoformat(f"{whole}.{fraction[:6] or '0'}+00:00").timestamp()
