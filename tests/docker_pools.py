"""A pool's containers as the Docker engine lists them, found by their workers' ids (the
``nbscale.worker`` label): a worker that began as a warm spare has no pool label."""

from __future__ import annotations

from typing import Any

import nbscale


def worker_ids(function: str) -> set[str]:
    """The ids of the workers ``nbscale.status()`` lists for ``function``'s pools."""
    pools = [p for p in nbscale.status()["pools"] if p["function"] == function]
    return {w["id"] for p in pools for w in p["workers"]}


def pool_containers(client: Any, function: str, **listing: Any) -> list[Any]:
    """The containers of ``function``'s workers (``listing``: more of ``containers.list``'s
    arguments; sparse by default: a full listing inspects each container, and one removed
    in between raises)."""
    ids = worker_ids(function)
    listing.setdefault("sparse", True)
    found = client.containers.list(filters={"label": "nbscale.worker"}, **listing)
    return [c for c in found if labels_of(c).get("nbscale.worker") in ids]


def labels_of(container: Any) -> dict[str, str]:
    """A container's labels, from a sparse listing too."""
    return container.attrs.get("Labels") or container.labels
