"""What a Docker worker's start checks on the engine before its container is created: its
image is there (never pulled at launch) and its named volumes exist. Each is asked once per
launcher; a start then costs no round trip for them. And, once when the launcher starts,
whether its containers can share this machine's sockets and memory (``transport="ipc"``)."""

from __future__ import annotations

import os
from typing import Any

from .base import LaunchFailed
from .docker_engine import engine_address, unreachable_message
from .docker_spec import missing_image_message, shared_kernel_problem, shared_kernel_refusal
from .volumes import check_docker_paths, ensure_docker_volume


class EngineChecks:
    def __init__(self, api: Any) -> None:
        self._api = api
        self._images: set[str] = set()  # images seen on the engine
        self._volumes: set[str] = set()  # named volumes seen there

    def image(self, image: str) -> None:
        """Fail at once, with what to do, when the image is missing."""
        if image in self._images:
            return
        import docker

        try:
            self._api.inspect_image(image)
        except docker.errors.ImageNotFound:
            raise LaunchFailed(missing_image_message(image)) from None
        except Exception as exc:
            raise LaunchFailed(unreachable_message(exc)) from None
        self._images.add(image)

    def forget_image(self, image: str) -> None:
        """It was removed since it was seen: the next start asks again."""
        self._images.discard(image)

    def volumes(self, volumes: tuple[tuple[str, str], ...]) -> None:
        """Each named volume on the engine, made once."""
        check_docker_paths(volumes)
        for _, name in volumes:
            if name not in self._volumes:
                try:
                    ensure_docker_volume(self._api, name)
                except LaunchFailed:
                    raise
                except Exception as exc:
                    raise LaunchFailed(unreachable_message(exc)) from None
                self._volumes.add(name)


def check_shared_kernel(api: Any) -> None:
    """Raise ``LaunchFailed`` saying what to do unless the engine runs its containers on
    this machine's kernel (a Unix socket mounted into them, and memfds, then work)."""
    try:
        info = api.info()
    except Exception as exc:
        raise LaunchFailed(unreachable_message(exc)) from None
    problem = shared_kernel_problem(info, engine_address(), os.uname().release)
    if problem is not None:
        raise LaunchFailed(shared_kernel_refusal(problem))
