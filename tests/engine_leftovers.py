"""What a test left on the Docker engine: the nbscale containers and networks that this test
process owns, or that a control plane which has since died left behind. Another live control
plane's (a developer's notebook, a parallel run) are its own, not this test's leak."""

from __future__ import annotations

import os
from typing import Any

from nbscale_server.launchers.docker_engine import LABEL_OWNER, owner_alive


def left_on_engine(engine: Any) -> list[str]:
    """Names of the containers, then networks, left behind (``engine``: a docker SDK client)."""
    ours = {"label": "nbscale.server"}
    found = [(c.name, c.labels) for c in engine.containers.list(all=True, filters=ours)]
    found += [(n.name, n.attrs.get("Labels") or {}) for n in engine.networks.list(filters=ours)]
    me = f"{os.getpid()}:"
    return [
        name
        for name, labels in found
        if labels.get(LABEL_OWNER, "").startswith(me) or not owner_alive(labels.get(LABEL_OWNER))
    ]
