"""Warm spare containers: Docker workers started before anyone needs them.

A container's start is most of a Docker worker's first-call latency (~0.25 s on a bridge
network, then ~0.07 s for Python and the runtime), and a pool growing from zero cannot hide
it: a new function's first call, a notebook's first call after its pool scaled down. So the
launcher keeps ``docker_spares`` containers started ahead, of the image its last worker ran
(usually the kernel's ``Image.from_kernel()``), each running ``nbscale_runtime --wait``: its
runtime imported, waiting for a worker's files to appear in its own directory, mounted at
/run/nbscale.

The next worker whose container would be the same (that image; no cpu or memory limit, GPU or
volume: those are fixed when a container is created) takes a spare: the fleet names the
worker after it (``DockerLauncher.spare_worker_id``), and instead of starting a container
the launcher links the worker's files (register, socket, config last) into the spare's
directory and wakes it through a FIFO there (``nbscale_runtime/spare.py``). A spare is named
as its worker will be, ``nbscale-wk-...``, with an empty ``nbscale.pool`` label: a rename
at the take would touch the engine's network endpoints, which Docker 20.10 has leaked on
such paths ("network ... has active endpoints" with none). Another spare is started a second
after the launcher's starts are done (their runtimes load meanwhile), so that spares do not
slow a pool's own starts.

A spare outlives no control plane: the launcher's housekeeping refreshes the ``alive`` file
in its directory every second, and the spare exits once that file is ``heartbeat_timeout``
old, as a worker does that stops hearing from its control plane.

The trade: one idle container (~12 MB, a wake-up a second) per control plane that has run a
plain Docker worker. A spare whose runtime fails (an image whose runtime predates
``--wait``) is not started again for that image; one killed from outside is. A worker that
began as a spare carries an empty ``nbscale.pool`` label (Docker cannot change a label), and
a spare serves from the image it started with, even if that is removed meanwhile.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import threading
import time
import uuid
from typing import TYPE_CHECKING

from nbscale_runtime.spare import ALIVE_FILE, WAKE_FILE

from ..options import FunctionOptions
from .base import WorkerSpec
from .docker_container import Container
from .docker_spec import (
    CONFIG_IN_CONTAINER,
    CONTAINER_UID,
    REGISTER_IN_CONTAINER,
    SOCKET_IN_CONTAINER,
)
from .errors import LaunchFailed

if TYPE_CHECKING:
    from .docker import DockerLauncher

log = logging.getLogger("nbscale.docker")

_STARTS_WAIT_S = 30.0  # how long a refill waits for the starts under way
_QUIET_S = 1.0  # and then a moment without any (their runtimes load meanwhile)


def _poke(fifo: str) -> None:
    """Tell a spare its config is there (if it is not listening yet, it will look first)."""
    with contextlib.suppress(OSError):
        fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
        try:
            os.write(fd, b"x")
        finally:
            os.close(fd)


def _waiting(c: Container) -> bool:
    """Whether a spare is started and has not exited: one a worker can take."""
    return c.started.is_set() and c.id is not None and c.exit is None


def can_be_spare(options: FunctionOptions) -> bool:
    """Whether a worker with these options could run in a spare of its image: its container
    needs nothing fixed at creation that a spare is made without."""
    return bool(options.image) and not (
        options.memory or options.cpu or options.gpu is not None or options.volumes
    )


class Spares:
    """A Docker launcher's warm spares. Its bookkeeping is under the launcher's lock; a
    thread of its own starts them (it waits for the launcher's starts, so it must not hold
    one of the threads they need)."""

    def __init__(
        self, launcher: DockerLauncher, wanted: int, root: str | None, stale: float
    ) -> None:
        self._launcher = launcher
        self.wanted = wanted if root is not None else 0
        self.stale = stale  # seconds without a refresh of its alive file: a spare exits
        self._root = root  # spares' directories go here (the worker files' file system)
        self._ready: dict[str, tuple[str, Container]] = {}  # by worker id: image, container
        self._broken: set[str] = set()  # images whose spare failed: none is made of them
        self._refreshed = 0.0
        self._last_start = 0.0  # when the launcher last started a worker (monotonic)
        self._image: str | None = None  # what spares are wanted of: the last plain worker's
        self._wake = threading.Event()  # the image changed, or a spare went
        self._thread: threading.Thread | None = None

    def pick(self, options: FunctionOptions) -> str | None:
        """The worker id of a started spare that a worker with ``options`` can take."""
        if not can_be_spare(options):
            return None
        with self._launcher._lock:
            for worker_id, (image, c) in self._ready.items():
                if image == options.image and _waiting(c):
                    return worker_id
        return None

    def names(self) -> list[str]:
        """The container names of the spares that wait (``pick`` could hand them out)."""
        with self._launcher._lock:
            return [c.name for _, c in self._ready.values() if _waiting(c)]

    def take(self, spec: WorkerSpec) -> Container | None:
        """The spare ``spec`` names (``pick``), made its worker by linking its files in;
        None when ``spec`` names none."""
        with self._launcher._lock:
            _, c = self._ready.pop(spec.worker_id, (None, None))
        if c is None or c.spare_dir is None:
            return None
        links = (  # the config last: it is what the spare waits for
            (spec.register_path, REGISTER_IN_CONTAINER),
            (spec.socket_path, SOCKET_IN_CONTAINER),
            (spec.config_path, CONFIG_IN_CONTAINER),
        )
        try:
            for path, in_container in links:
                if path:
                    os.link(path, os.path.join(c.spare_dir, os.path.basename(in_container)))
        except OSError as exc:
            self._launcher.discard(c)
            why = f"could not hand its files to a warm spare container: {exc}"
            raise LaunchFailed(why) from None
        _poke(os.path.join(c.spare_dir, WAKE_FILE))
        return c

    def refill(self, options: FunctionOptions) -> None:
        """After a worker's start: keep ``wanted`` spares of its image, if it could be one."""
        self._last_start = time.monotonic()
        image = options.image
        if self.wanted and can_be_spare(options) and image and image not in self._broken:
            self._image = image
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="nbscale-docker-spares")
                self._thread.daemon = True
                self._thread.start()
            self._wake.set()

    def close(self) -> None:
        """The launcher closes: its spares' thread ends (close() removes the containers)."""
        self._wake.set()

    def _run(self) -> None:
        launcher = self._launcher
        while self._wake.wait() and launcher.accepting:
            self._wake.clear()
            while launcher.accepting:  # the pool's starts first, and their runtimes' loading
                for c in launcher.starting():
                    c.started.wait(_STARTS_WAIT_S)
                seen = self._last_start
                time.sleep(_QUIET_S)
                if self._last_start == seen and not launcher.starting():
                    break
            image = self._image
            if image is not None and image not in self._broken and launcher.accepting:
                self._refill(image)

    def _refill(self, image: str) -> None:
        launcher = self._launcher
        with launcher._lock:
            stale = [c for other, c in self._ready.values() if other != image]
            self._ready = {k: v for k, v in self._ready.items() if v[0] == image}
            new = [self._new_spare() for _ in range(self.wanted - len(self._ready))]
            self._ready |= {c.worker_id: (image, c) for c in new}
        for c in stale:  # the latest image's spares only
            launcher.discard(c)
        for c in new:
            self._start(c, image)

    def _new_spare(self) -> Container:
        tag = uuid.uuid4().hex[:12]
        assert self._root is not None
        spare_dir = os.path.join(self._root, f"spare-{tag}")
        return Container(f"wk-{tag}", f"nbscale-wk-{tag}", None, [], spare_dir=spare_dir)

    def _start(self, c: Container, image: str) -> None:
        assert c.spare_dir is not None
        try:
            os.mkdir(c.spare_dir, 0o700)
            open(os.path.join(c.spare_dir, ALIVE_FILE), "w").close()
            os.mkfifo(os.path.join(c.spare_dir, WAKE_FILE), 0o600)
            if os.getuid() == 0:  # the container's user must enter it, and open its FIFO
                for path in (c.spare_dir, os.path.join(c.spare_dir, WAKE_FILE)):
                    os.chown(path, CONTAINER_UID, CONTAINER_UID)
        except OSError as exc:
            log.warning("no warm spare container: cannot make %s: %s", c.spare_dir, exc)
            self._drop(c)
            return
        if not self._launcher.adopt(c):
            self._drop(c)
            return
        self._launcher._create_and_start(c, WorkerSpec(c.worker_id, "", c.spare_dir), image)

    def _drop(self, c: Container) -> None:
        with self._launcher._lock:
            self._ready.pop(c.worker_id, None)
        shutil.rmtree(c.spare_dir or "", ignore_errors=True)

    def keep_alive(self) -> None:
        """Refresh the spares' alive files (from the control plane's housekeeping), a few
        times in each ``stale`` period."""
        now = time.monotonic()
        if now - self._refreshed < min(1.0, self.stale / 4):
            return
        self._refreshed = now
        with self._launcher._lock:
            spares = [c for _, c in self._ready.values()]
        for c in spares:
            with contextlib.suppress(OSError):
                os.utime(os.path.join(c.spare_dir or "", ALIVE_FILE))

    def exited(self, c: Container) -> None:
        """A container of the launcher exited and was collected: if it was a spare no one
        took, start another, or, if its runtime failed, make none of its image again."""
        if c.spare_dir is None:
            return
        shutil.rmtree(c.spare_dir, ignore_errors=True)
        with self._launcher._lock:
            image, _ = self._ready.pop(c.worker_id, (None, None))
        if image is None or not self._launcher.accepting:
            return
        assert c.exit is not None
        if not 0 < c.exit.code < 128:  # it stopped waiting, or was killed: another one
            self._wake.set()
            return
        self._broken.add(image)  # its runtime failed (no --wait, say): it would again
        why = c.exit.reason or f"exit code {c.exit.code}"
        last = "".join(c.exit.logs.strip().splitlines()[-1:])
        log.warning("a warm spare container of %s failed (%s: %s); none is kept", image, why, last)
