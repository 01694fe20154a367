"""Worker images for Kubernetes: built here, then pushed to the registry the nodes pull from.

The image is built as for Docker workers (``nbscale/worker:<content hash>``), tagged
``<registry>/nbscale-worker:<content hash>`` and pushed once per process; Pods pull it with
``IfNotPresent``, so an unchanged image is neither pushed nor pulled again. An
``Image.from_registry(ref)`` with nothing added is used as it is: the nodes pull ``ref``
themselves (it must hold nbscale's runtime: a worker without it fails to register).
"""

from __future__ import annotations

from typing import Any

from ._image import Image
from ._image_build import Output, build, docker_client
from ._image_tags import tag_of
from .exceptions import ImageBuildError

PUSHED_REPOSITORY = "nbscale-worker"
_pushed: set[str] = set()  # what this process pushed: a registry keeps it


def used_as_is(image: Image) -> bool:
    """Whether ``image`` is a registry image with nothing added to it."""
    return (
        image.base is not None
        and not image.layers
        and image.description == f"from_registry({image.base})"
    )


def pushed_name(registry: str, local_tag: str) -> str:
    """``<registry>/nbscale-worker:<content hash>`` for a built ``nbscale/worker:<hash>``."""
    return f"{registry.rstrip('/')}/{PUSHED_REPOSITORY}:{local_tag.rpartition(':')[2]}"


def pushed_tag(image: Image, registry: str | None) -> str | None:
    """The reference Pods run for ``image`` when this process (or the kernel that sent it
    here, whose tag it carries) built it, else None; pushed by ``kubernetes_image``."""
    if used_as_is(image):
        return str(image.base)
    local = tag_of(image)
    return pushed_name(registry, local) if registry and local else None


def pushed_here(image: Image, registry: str | None) -> bool:
    """Whether Pods can pull ``image`` without this process building or pushing it."""
    if used_as_is(image):
        return True
    return pushed_tag(image, registry) in _pushed


def kubernetes_image(image: Image, registry: str | None, out: Output, client: Any = None) -> str:
    """The image reference worker Pods run for ``image``, built and pushed if need be."""
    if used_as_is(image):
        return str(image.base)
    if not registry:
        raise ImageBuildError(
            "Kubernetes workers need a registry to pull their image from: set registry "
            "(NBSCALE_REGISTRY) on the control plane, or use Image.from_registry(ref)"
        )
    client = client or docker_client()
    local = build(image, client, out)
    target = pushed_name(registry, local)
    if target in _pushed:
        return target
    repository, _, tag = target.rpartition(":")
    out(f"pushing {target}")
    try:
        client.api.tag(local, repository, tag)
        for line in client.api.push(repository, tag=tag, stream=True, decode=True):
            if "error" in line:
                detail = (line.get("errorDetail") or {}).get("message") or line["error"]
                raise ImageBuildError(f"pushing {target} failed: {detail}")
    except ImageBuildError:
        raise
    except Exception as exc:
        raise ImageBuildError(f"pushing {target} failed: {exc}") from None
    _pushed.add(target)
    out(f"pushed {target}")
    return target
