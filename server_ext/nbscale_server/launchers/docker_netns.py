"""Docker workers sharing one network namespace (``docker_network="shared"``).

A container's own network namespace is most of what Docker spends starting it (on a 2-core
host with Docker 20.10: 0.25 s alone and 1.4-1.5 s for eight at once on a user bridge, against
0.09 s and 0.33-0.40 s for containers joining an existing namespace). In the shared mode one
small *holder* container, on the user's bridge network, owns the namespace and every
worker joins it (``network_mode="container:<holder>"``), as the containers of a Kubernetes
Pod do. What the workers share is only the network: the same interfaces, loopback, ports and
host name; each keeps its own filesystem, processes, user, limits and mounts. The host's
network stays out of reach, unlike with ``host``.

The holder starts with the launcher, from the base image when the engine has it, else from
the first worker's image; it carries the control plane's owner labels, so it is removed
with the workers on close and reaped with them after a crash.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from concurrent.futures import Future
from typing import Any

from .docker_spec import container_user

log = logging.getLogger("nbscale.docker")

LABEL_NETNS = "nbscale.netns"  # on the holder: it is no worker
# Any worker image has python3 (a base image may lack `sleep`); -S: no site, starts in ms.
_HOLDER_COMMAND = ["python3", "-S", "-c", "import signal; signal.pause()"]
_HOLDER_WAIT = 60.0  # seconds a worker waits for the holder before taking a namespace of its own


class _ImageMissing(Exception):
    """The holder's image is not on the engine: try the worker's."""


class SharedNetns:
    """The holder container of one control plane's workers' network namespace."""

    def __init__(self, api: Any, network: str, labels: dict[str, str], name: str) -> None:
        self._api = api
        self._network = network
        self._labels = {**labels, LABEL_NETNS: "1"}
        self._name = name
        self._lock = threading.Lock()
        self._holder: Future[str] | None = None
        self._closed = False
        self._warned = False
        self._made = 0  # holders made, for unique names
        self.names: list[str] = []  # of every holder, for remove_network

    def begin(self, image: str) -> Future[str]:
        """Start the holder from ``image`` unless one is starting, running, or has failed
        for another reason than its image; returns its future id."""
        with self._lock:
            holder = self._holder
            if holder is None or (holder.done() and isinstance(holder.exception(), _ImageMissing)):
                holder = self._holder = Future()
                if self._closed:
                    holder.set_exception(RuntimeError("the launcher is closing"))
                else:
                    threading.Thread(
                        target=self._start, args=(holder, image), name="nbscale-docker-netns"
                    ).start()
            return holder

    def network_mode(self, image: str) -> str:
        """What a worker of ``image`` gets as ``network_mode``: the holder's namespace, or,
        when the holder cannot start, a namespace of its own on the bridge network."""
        for _ in range(2):  # the base image missing: once more, from the worker's image
            try:
                return f"container:{self.begin(image).result(timeout=_HOLDER_WAIT)}"
            except _ImageMissing:
                continue
            except Exception as exc:
                if not self._warned:
                    self._warned = True
                    log.warning(
                        "workers take a network namespace each: the shared one's holder "
                        "container did not start (%s)",
                        exc,
                    )
                break
        return self._network

    def lost(self, container_id: str) -> None:
        """The holder ``container_id`` exited or was removed: the next worker starts a new
        one (a late event of a holder already replaced changes nothing)."""
        with self._lock:
            holder = self._holder
            if holder is None or not holder.done() or holder.exception() is not None:
                return
            if holder.result() == container_id:
                self._holder = None

    def close(self, timeout: float) -> None:
        """No holder starts from now on; one starting is waited for (``timeout``), so that
        the launcher's removal by label finds it."""
        with self._lock:
            self._closed = True
            holder = self._holder
        if holder is not None:
            with contextlib.suppress(Exception):
                holder.result(timeout=timeout)

    def _start(self, holder: Future[str], image: str) -> None:
        import docker

        container_id: str | None = None
        try:
            host_config = self._api.create_host_config(
                network_mode=self._network,
                init=True,
                read_only=True,
                cap_drop=["ALL"],
                security_opt=["no-new-privileges:true"],
                pids_limit=16,
                mem_limit="64m",
                memswap_limit="64m",
                log_config={"type": "json-file", "config": {"max-size": "1m", "max-file": "1"}},
            )
            self._made += 1
            self.names.append(f"{self._name}-{self._made}")
            container_id = self._api.create_container(
                image,
                _HOLDER_COMMAND,
                name=self.names[-1],
                user=container_user(),
                labels=self._labels,
                host_config=host_config,
                detach=True,
            )["Id"]
            self._api.start(container_id)
        except docker.errors.ImageNotFound:
            holder.set_exception(_ImageMissing(image))
        except Exception as exc:
            if container_id is not None:
                with contextlib.suppress(Exception):
                    self._api.remove_container(container_id, force=True)
            holder.set_exception(exc)
        else:
            holder.set_result(container_id)
