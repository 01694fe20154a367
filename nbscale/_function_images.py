"""What a function's pool gets from images, launcher by launcher, when it registers: for
Docker workers the tag of its image, built here (and for Kubernetes Pods pushed to the
control plane's registry), with the images of the functions its code calls; on a worker,
the tag the kernel built; for workers that are not containers (processes, Slurm jobs),
none, but the image's ``env`` variables, and a line saying the rest is not built."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from nbscale_server.launchers.base import CONTAINER_LAUNCHERS
from nbscale_server.options import FunctionOptions

from ._image import outside_containers
from ._image_tags import images_called_by, tag_of
from ._secret import Secret
from .exceptions import InvalidError

if TYPE_CHECKING:
    from ._client import Client
    from ._function import Function

BuildOutput = Callable[[str], None]  # gets an image build's steps, one line each


def worker_secrets(
    fn: Function, client: Client, on_build: BuildOutput | None
) -> tuple[Secret, ...]:
    """``fn``'s secrets; on workers that are not containers, after its image's variables
    (so that its own win), saying in the caller's process that the rest of the image is not
    built."""
    launcher = str(client.server_info.get("launcher"))
    if fn.image is None or launcher in CONTAINER_LAUNCHERS:
        return fn.secrets
    if client.mode != "worker":  # said where the user looks, not in each worker's output
        from ._image_build import print_step

        (on_build or print_step)(outside_containers(fn.image, fn.name, launcher))
    return (Secret.from_dict(fn.image.env_variables()), *fn.secrets)


async def build_called_images(raw_f: Any, client: Client, on_build: BuildOutput | None) -> None:
    """For Docker and Kubernetes workers, build (and for Pods push) the images of the
    functions ``raw_f``'s code calls that declare their own (a worker can do neither when
    it calls them)."""
    launcher = client.server_info.get("launcher")
    if launcher not in CONTAINER_LAUNCHERS or client.mode == "worker":
        return
    from ._image_build import build, print_step
    from ._image_push import kubernetes_image, pushed_here

    registry = client.server_info.get("registry")
    out = on_build or print_step
    for image in images_called_by(raw_f):  # microseconds when all are built
        if launcher == "docker" and tag_of(image) is None:
            await asyncio.to_thread(build, image, None, out)
        elif launcher == "kubernetes" and not pushed_here(image, registry):
            await asyncio.to_thread(kubernetes_image, image, registry, out)


async def options_with_image(
    fn: Function, client: Client, on_build: BuildOutput | None = None
) -> FunctionOptions:
    """``fn``'s options as the control plane takes them: for Docker workers the image is
    the tag of the built image (built here, off the loop, when it does not exist yet, its
    steps printed or given to ``on_build``); for Kubernetes workers, that image pushed to
    the control plane's registry; for worker processes there is none."""
    launcher = client.server_info.get("launcher")
    containers = launcher in CONTAINER_LAUNCHERS
    if client.mode == "worker" and containers and fn.image is not None:
        pods = launcher == "kubernetes"
        return _built_options(fn, client.server_info.get("registry") if pods else None)
    if not containers or client.mode == "worker":
        return fn.options  # a worker's: its control plane gives it the worker's image
    from ._image_build import build, image_for, print_step

    image = image_for(fn.raw_f, fn.image)
    out = on_build or print_step
    if launcher == "kubernetes":
        from ._image_push import kubernetes_image

        registry = client.server_info.get("registry")
        tag = await asyncio.to_thread(kubernetes_image, image, registry, out)
    else:
        tag = await asyncio.to_thread(build, image, None, out)
    return dataclasses.replace(fn.options, image=tag)


def _built_options(fn: Function, registry: str | None) -> FunctionOptions:
    """On a Docker worker, a function with an image of its own: the tag the kernel that
    sent this code built it under (on a Pod, ``registry`` given, that image as pushed
    there); a container can neither build nor push it."""
    assert fn.image is not None
    if registry:
        from ._image_push import pushed_tag

        tag = pushed_tag(fn.image, registry)
    else:
        tag = tag_of(fn.image)
    if tag is None:
        raise InvalidError(
            f"{fn.name} declares its own image ({fn.image.description}), which the "
            "kernel did not build before sending this code (it builds those of the "
            "functions a function names in its code; this one came another way), and a "
            f"container cannot build images: call {fn.name} once from the kernel "
            "first, which builds it, or drop its image= to run it in its caller's image"
        )
    return dataclasses.replace(fn.options, image=tag)
