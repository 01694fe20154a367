"""One worker container as the Docker launcher follows it, the engine calls that make and
inspect it (the launcher's threads make them, never the control plane's loop), and the
thread that hears containers die."""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..losses import INFRASTRUCTURE
from .base import EXIT_LOST
from .docker_spec import ContainerExit, container_exit, lost_exit

log = logging.getLogger("nbscale.docker")

LOGS_KEPT = 200  # lines of an exited container's output kept after it is removed


@dataclass(eq=False)
class Container:
    """A launched worker's container, as the launcher's threads and the control plane see
    it (the ``ref`` of its ``WorkerHandle``)."""

    worker_id: str
    name: str
    memory: int | None  # MiB
    gpus: list[str]
    id: str | None = None
    started: threading.Event = field(default_factory=threading.Event)  # created or failed
    exit: ContainerExit | None = None
    exited: threading.Event = field(default_factory=threading.Event)
    signalled: str | None = None  # the last signal sent, so repeated stops send nothing
    spare_dir: str | None = None  # a warm spare's directory (docker_spares.py)


def create_and_start(api: Any, c: Container, options: dict[str, Any], host_config: Any) -> None:
    """Create and start ``c``'s container (``create_container``'s ``options``), setting
    ``c.id``; one whose start fails is removed, and ``c.id`` is None again."""
    try:
        c.id = api.create_container(**options, host_config=host_config)["Id"]
        api.start(c.id)
    except Exception:
        if c.id is not None:  # a failed start leaves a Created container behind
            with contextlib.suppress(Exception):
                api.remove_container(c.id, force=True)
            c.id = None
        raise


def exit_of(api: Any, c: Container) -> ContainerExit | None:
    """How ``c``'s container ended: its code, reason and last lines; None while it runs."""
    import docker

    assert c.id is not None
    try:
        state = api.inspect_container(c.id)["State"]
        if state.get("Running"):
            return None
        logs = api.logs(c.id, tail=LOGS_KEPT, timestamps=True).decode(errors="replace")
        return container_exit(state, c.memory, logs)
    except docker.errors.NotFound:
        return ContainerExit(EXIT_LOST, "was removed by someone else", "", INFRASTRUCTURE)
    except Exception as exc:
        return lost_exit(exc)


class DieWatch:
    """Follows the engine's ``die`` events of the containers labelled ``label``, on a thread
    of its own, reconnecting (from the last event seen) when the stream breaks; calls
    ``on_die(container_id, labels)`` on that thread for each."""

    def __init__(self, api: Any, label: str, on_die: Callable[[str, dict[str, str]], None]):
        self._api = api
        self._filters = {"type": ["container"], "event": ["die"], "label": [label]}
        self._on_die = on_die
        self._stream: Any = None
        self._closed = False
        self._watching = threading.Event()
        thread = threading.Thread(target=self._run, name="nbscale-docker-events", daemon=True)
        thread.start()
        self._watching.wait(5.0)  # a container dying from now on is heard

    def _run(self) -> None:
        since = time.time() - 1
        while not self._closed:
            try:
                self._stream = self._api.events(
                    since=f"{since:.9f}", filters=self._filters, decode=True
                )
                self._watching.set()
                for event in self._stream:
                    since = event.get("timeNano", since * 1e9) / 1e9
                    actor = event.get("Actor", {})
                    self._on_die(actor.get("ID", ""), actor.get("Attributes", {}))
            except Exception:
                if not self._closed:
                    log.debug("docker events stream broke; reconnecting", exc_info=True)
                    time.sleep(0.5)
            self._watching.set()

    def close(self) -> None:
        self._closed = True
        with contextlib.suppress(Exception):
            if self._stream is not None:
                self._stream.close()
