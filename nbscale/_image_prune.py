"""``nbscale images prune``: remove the worker images nbscale built that no container uses,
keeping the newest.

A worker image's tag is a hash of its content, so every change of packages, files or the
runtime makes a new image, and Docker keeps the old ones until asked: a host where people
iterate fills its disk with them. Only images carrying nbscale's image label are
candidates (never the base image, never anyone else's), and Docker's own refusal to remove
an image a container uses is kept (no force): an image a container starts from between
the plan and its removal stays, and is reported so.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from ._image_build import LABEL_DESCRIPTION, LABEL_IMAGE, docker_client


@dataclass(frozen=True)
class WorkerImage:
    id: str
    created: int
    tags: tuple[str, ...]  # empty when dangling


@dataclass
class PrunePlan:
    remove: list[WorkerImage] = field(default_factory=list)
    newest: list[WorkerImage] = field(default_factory=list)  # kept: among the newest
    in_use: list[WorkerImage] = field(default_factory=list)  # kept: a container uses it


def plan_prune(images: Sequence[WorkerImage], used_ids: set[str], keep: int) -> PrunePlan:
    """Keep the ``keep`` newest images and every one a container (running or not) uses;
    remove the rest."""
    plan = PrunePlan()
    for rank, image in enumerate(sorted(images, key=lambda i: -i.created)):
        if rank < keep:
            plan.newest.append(image)
        elif image.id in used_ids:
            plan.in_use.append(image)
        else:
            plan.remove.append(image)
    return plan


@dataclass
class PruneResult:
    plan: PrunePlan
    removed: list[WorkerImage] = field(default_factory=list)
    refused: list[tuple[WorkerImage, str]] = field(default_factory=list)  # and why
    freed_bytes: int = 0


def prune(
    keep: int, dry_run: bool = False, description: str | None = None, client: Any = None
) -> PruneResult:
    """Plan, then (unless ``dry_run``) remove: each tag of an image in turn, as an image
    pushed for a cluster also carries its registry's tag. ``description``: only the images
    with that description (as ``nbscale images list`` shows it) are considered."""
    import docker.errors

    if keep < 0:
        raise ValueError(f"keep must be 0 or more, not {keep}")
    client = client or docker_client()
    labels = [LABEL_IMAGE]
    if description is not None:
        labels.append(f"{LABEL_DESCRIPTION}={description}")
    images = [
        WorkerImage(
            str(info["Id"]),
            int(info.get("Created", 0)),
            tuple(t for t in info.get("RepoTags") or () if t != "<none>:<none>"),
        )
        for info in client.api.images(filters={"label": labels})
    ]
    used = {str(c.get("ImageID", "")) for c in client.api.containers(all=True)}
    result = PruneResult(plan_prune(images, used, keep))
    if dry_run or not result.plan.remove:
        return result
    layers_before = int(client.api.df().get("LayersSize") or 0)
    for image in result.plan.remove:
        try:
            for ref in image.tags or (image.id,):
                client.api.remove_image(ref)
        except docker.errors.NotFound:
            result.removed.append(image)  # gone already: removed by someone else
        except docker.errors.APIError as exc:
            result.refused.append((image, str(exc.explanation or exc)))
        else:
            result.removed.append(image)
    result.freed_bytes = max(0, layers_before - int(client.api.df().get("LayersSize") or 0))
    return result


def report(result: PruneResult, dry_run: bool) -> str:
    """What ``nbscale images prune`` prints."""
    plan = result.plan
    lines = []
    if dry_run:
        lines += [f"would remove {_name(image)}" for image in plan.remove]
    else:
        lines += [f"removed {_name(image)}" for image in result.removed]
        lines += [f"kept {_name(image)}: {why}" for image, why in result.refused]
    verb = "would remove" if dry_run else "removed"
    count = len(plan.remove) if dry_run else len(result.removed)
    summary = f"{verb} {count} worker image{'' if count == 1 else 's'}"
    if not dry_run and result.removed:
        summary += f" ({result.freed_bytes / 1e6:,.0f} MB freed)"
    summary += f"; kept the {len(plan.newest)} newest and {len(plan.in_use)} used by a container"
    return "\n".join([*lines, summary])


def _name(image: WorkerImage) -> str:
    return ", ".join(image.tags) or image.id.removeprefix("sha256:")[:12]
