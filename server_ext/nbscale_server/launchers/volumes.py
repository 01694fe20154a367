"""Named volumes (``volumes={"/data": nbscale.Volume.from_name("v")}``) as each launcher's
workers see them; the data always lives in the volume's directory on this machine
(``local_store.volume_dir``), so process and Docker workers share it.

- A worker process cannot mount: its path becomes a symbolic link to the volume's directory,
  made when the path is free and its parent writable (a relative path is the worker's
  working directory's, the control plane's), kept afterwards as a mount point would be. A
  path taken by something else, or one this user may not create (``/data`` without root), is
  refused with what to use instead.
- A container mounts the Docker named volume ``nbscale-vol-NAME``: a ``local`` volume bound
  to the same directory, labelled ``nbscale.volume`` and never removed by the launchers'
  cleanup (``nbscale volume delete`` removes it). Containers run as this user, so the
  directory is theirs to write.
- Slurm jobs and Pods do not see this machine's disk: volumes are refused there.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from .. import local_store
from .base import LaunchFailed

LABEL_VOLUME = "nbscale.volume"
DOCKER_PREFIX = "nbscale-vol-"
_USE_INSTEAD = "use a path the worker may create, such as a relative path or one under $HOME"


def _volume_dir(name: str) -> Path:
    try:
        return local_store.require_volume(name)
    except local_store.StoreError as exc:
        raise LaunchFailed(str(exc), lasting=True) from None


def link_for_process(path: str, name: str) -> None:
    """Make ``path`` lead to volume ``name``'s directory for worker processes."""
    source = _volume_dir(name)
    target = Path(os.path.abspath(os.path.expanduser(path)))
    where = f"cannot mount volume {name!r} at {path} for worker processes"
    for _ in range(2):  # twice: another worker may make the same link meanwhile
        if target.is_symlink() or target.exists():
            if target.resolve() == source.resolve():
                return
            raise LaunchFailed(
                f"{where}: {target} exists already and is not the volume (a process cannot "
                f"mount over it); {_USE_INSTEAD}",
                lasting=True,
            )
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            os.symlink(source, target, target_is_directory=True)
            return
        except FileExistsError:
            continue
        except OSError as exc:
            raise LaunchFailed(
                f"{where}: a process cannot mount, and {target} cannot be made a link to it "
                f"({exc.strerror}); {_USE_INSTEAD}",
                lasting=True,
            ) from None
    raise LaunchFailed(f"{where}: {target} keeps changing", lasting=True)


def docker_volume_name(name: str) -> str:
    return DOCKER_PREFIX + name


def docker_mounts(volumes: tuple[tuple[str, str], ...]) -> list[Any]:
    """The ``mounts`` of a worker's host config (``docker.types.Mount``)."""
    if not volumes:
        return []
    import docker

    return [
        docker.types.Mount(target=path, source=docker_volume_name(name), type="volume")
        for path, name in volumes
    ]


def check_docker_paths(volumes: tuple[tuple[str, str], ...]) -> None:
    for path, name in volumes:
        if not path.startswith("/"):
            raise LaunchFailed(
                f"cannot mount volume {name!r} at {path!r} in a container: "
                "a container's mount path must be absolute, such as /data",
                lasting=True,
            )


def ensure_docker_volume(api: Any, name: str) -> None:
    """Create ``nbscale-vol-NAME`` bound to the volume's directory, unless it exists (bound
    to it: one bound elsewhere is refused rather than silently used)."""
    import docker

    source = str(_volume_dir(name).resolve())
    if os.getuid() == 0:  # containers then run as CONTAINER_UID: the directory is theirs
        from .docker_spec import CONTAINER_UID

        os.chown(source, CONTAINER_UID, CONTAINER_UID)
    volume_name = docker_volume_name(name)
    try:
        device = (api.inspect_volume(volume_name).get("Options") or {}).get("device")
    except docker.errors.NotFound:
        device = None
    else:
        if device == source:
            return
        if not device or os.path.isdir(device):
            raise LaunchFailed(
                f"Docker volume {volume_name} is bound to {device or 'storage of its own'}, "
                f"not to volume {name!r}'s directory {source}: remove it "
                f"(docker volume rm {volume_name})",
                lasting=True,
            )
        api.remove_volume(volume_name)  # bound to a directory gone: unusable, made again
    options = {"type": "none", "o": "bind", "device": source}
    api.create_volume(volume_name, "local", options, labels={LABEL_VOLUME: name})


def remove_docker_volume(name: str) -> str | None:
    """Remove ``nbscale-vol-NAME`` from the Docker engine if it is there; returns why it
    could not be (in use by a container), or None. Without an engine there is none to remove."""
    from .docker_engine import engine_reachable

    if not engine_reachable():
        return None
    import docker

    client = docker.from_env(timeout=30)
    try:
        client.api.remove_volume(docker_volume_name(name))
    except docker.errors.NotFound:
        return None
    except docker.errors.APIError as exc:
        return str(getattr(exc, "explanation", None) or exc)
    finally:
        client.close()
    return None


def refuse_volumes(volumes: tuple[tuple[str, str], ...], launcher: str) -> None:
    """For launchers whose workers run on other machines (Slurm jobs, Pods)."""
    if volumes:
        path, name = volumes[0]
        raise LaunchFailed(
            f"cannot mount volume {name!r} at {path}: {launcher} workers run on other machines, "
            "which do not see this machine's volumes; use a directory of your cluster's shared "
            "file system instead",
            lasting=True,
        )
