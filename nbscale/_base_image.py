"""The worker base image: Debian bookworm with Python, which every default worker image
(``Image.from_kernel()``, ``Image.debian_slim()``) builds on. Its name is
``NBSCALE_BASE_IMAGE`` (default ``nbscale/base:bookworm``).

:func:`make_base` (``nbscale images base``) pulls ``python:X.Y-slim-bookworm`` (X.Y: this
Python) when a registry answers within a few seconds, else builds a base offline: debootstrap
a minimal bookworm with python3 from the apt mirror this machine already uses, then
``docker import`` it. Either way the image is labelled with its Python (``nbscale.python``)
and tagged with the base's name. What the offline build lacks (root, debootstrap, a mirror,
the right Python) is said before anything starts.
"""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import tempfile
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from nbscale_server.launchers.docker_engine import (
    LABEL_PYTHON,
    first_line,
    registry_problem,
    unreachable_message,
)
from nbscale_server.launchers.selection import registry_base

from .exceptions import ImageBuildError

OFFLINE_PYTHON = "3.11"  # the python3 of Debian bookworm, what an offline base has
OFFLINE_PACKAGES = "python3,python3-venv"
REGISTRY_TIMEOUT = 5  # seconds a registry gets to answer before the base is built offline
_PULL_REPORT_INTERVAL = 1.0  # seconds between two lines about a pull's progress
_PATH = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

Output = Callable[[str], None]


def base_python(client: Any, tag: str) -> str | None:
    """The Python of the base image ``tag`` on the engine ("" when unlabelled), or None
    when it is not there."""
    import docker

    try:
        info = client.api.inspect_image(tag)
    except docker.errors.ImageNotFound:
        return None
    return str(((info.get("Config") or {}).get("Labels") or {}).get(LABEL_PYTHON, ""))


def make_base(
    client: Any,
    tag: str,
    python: str,
    out: Output,
    *,
    force: bool = False,
    offline: bool = False,
    mirror: str | None = None,
) -> str:
    """Make the base image ``tag`` with Python ``python`` unless it is there already (or
    ``force``); returns how it was made. Raises ``ImageBuildError`` naming what is missing."""
    if not force and base_python(client, tag) in (python, ""):
        return "already there"
    problem = "not asked (--offline)" if offline else base_registry_problem(python)
    if problem is None:
        pull_base(client, tag, python, out)
        return f"pulled from {registry_base(python)}"
    out(f"no registry answers ({problem}): building {tag} offline with debootstrap")
    build_offline(client, tag, python, out, mirror)
    return "built offline with debootstrap"


def base_registry_problem(python: str) -> str | None:
    """None when a registry answers for the base's Python image, within a few seconds,
    else why not."""
    import docker

    try:
        quick = docker.from_env(timeout=REGISTRY_TIMEOUT)
    except Exception as exc:
        raise ImageBuildError(unreachable_message(exc)) from None
    try:
        return registry_problem(quick.api, registry_base(python))
    finally:
        quick.close()


# --- from a registry --------------------------------------------------------------------


def pull_base(client: Any, tag: str, python: str, out: Output) -> None:
    """Pull ``python:X.Y-slim-bookworm``, reporting its layers as they download, then tag
    it as ``tag`` with the ``nbscale.python`` label."""
    source = registry_base(python)
    repository, _, version = source.partition(":")
    out(f"pulling {source} for {tag}")
    layers: dict[str, tuple[int, int]] = {}  # id -> (bytes done, bytes in all)
    next_report = 0.0
    try:
        for event in client.api.pull(repository, version, stream=True, decode=True):
            if "error" in event:
                raise ImageBuildError(f"pulling {source} failed: {event['error']}")
            detail = event.get("progressDetail") or {}
            layer = event.get("id")
            if layer and event.get("status") == "Downloading" and detail.get("total"):
                layers[layer] = (int(detail.get("current", 0)), int(detail["total"]))
            elif layer and event.get("status") in ("Download complete", "Already exists"):
                size = layers.get(layer, (0, 0))[1]
                layers[layer] = (size, size)
            if layers and time.monotonic() >= next_report:
                next_report = time.monotonic() + _PULL_REPORT_INTERVAL
                out(pull_progress(source, layers))
    except ImageBuildError:
        raise
    except Exception as exc:
        raise ImageBuildError(f"pulling {source} failed: {first_line(exc)}") from None
    out(f"labelling {source} as {tag}")
    dockerfile = io.BytesIO(f"FROM {source}\nLABEL {LABEL_PYTHON}={python}\n".encode())
    try:
        for chunk in client.api.build(
            fileobj=dockerfile, tag=tag, rm=True, pull=False, decode=True
        ):
            if "error" in chunk:
                raise ImageBuildError(f"tagging {tag} failed: {chunk['error']}")
    except ImageBuildError:
        raise
    except Exception as exc:
        raise ImageBuildError(f"tagging {tag} failed: {first_line(exc)}") from None


def pull_progress(source: str, layers: dict[str, tuple[int, int]]) -> str:
    """``pulling python:3.11-slim-bookworm: 2/4 layers, 12/41 MB``."""
    done = sum(1 for current, total in layers.values() if total and current >= total)
    current = sum(c for c, _ in layers.values()) / 1e6
    total = sum(t for _, t in layers.values()) / 1e6
    return f"pulling {source}: {done}/{len(layers)} layers, {current:.0f}/{total:.0f} MB"


# --- offline ----------------------------------------------------------------------------


def bookworm_mirror() -> str | None:
    """The Debian bookworm mirror apt already uses on this machine, if any."""
    try:
        listed = subprocess.run(
            ["apt-get", "indextargets", "--format", "$(SITE) $(RELEASE)", "Identifier: Packages"],
            capture_output=True,
            text=True,
            timeout=30,
        ).stdout
    except (OSError, subprocess.TimeoutExpired):
        return None
    for line in listed.splitlines():
        site, _, release = line.partition(" ")
        if release.strip() == "bookworm":
            return site
    return None


def offline_problems(
    python: str, is_root: bool, debootstrap: str | None, mirror: str | None
) -> list[str]:
    """What an offline build of the base lacks here (nothing: it can run)."""
    problems = []
    if python != OFFLINE_PYTHON:
        problems.append(
            f"an offline base has Debian bookworm's Python {OFFLINE_PYTHON}, and workers need "
            f"Python {python} (this one's): let Docker reach a registry for "
            f"{registry_base(python)}, or run nbscale with Python {OFFLINE_PYTHON}"
        )
    if not is_root:
        problems.append("debootstrap needs root: run `nbscale images base` as root")
    if debootstrap is None:
        problems.append("debootstrap is not installed: apt-get install debootstrap")
    if mirror is None:
        problems.append(
            "no Debian bookworm mirror in apt's sources: add one (e.g. "
            "`deb http://deb.debian.org/debian bookworm main`) or give --mirror URL"
        )
    return problems


def build_offline(client: Any, tag: str, python: str, out: Output, mirror: str | None) -> None:
    """debootstrap a minimal bookworm with python3, then ``docker import`` it as ``tag``."""
    mirror = mirror or bookworm_mirror()
    debootstrap = shutil.which("debootstrap")
    problems = offline_problems(python, os.geteuid() == 0, debootstrap, mirror)
    if problems:
        raise ImageBuildError(f"cannot build the base image {tag} offline: {'; '.join(problems)}")
    assert debootstrap is not None and mirror is not None
    rootfs = tempfile.mkdtemp(prefix="nbscale-rootfs-")
    try:
        out(f"debootstrap: a minimal Debian bookworm from {mirror} (about a minute)")
        _run_steps(
            [
                debootstrap,
                "--variant=minbase",
                f"--include={OFFLINE_PACKAGES}",
                "bookworm",
                rootfs,
                mirror,
            ],
            "debootstrap",
            out,
        )
        found = subprocess.run(
            [
                "chroot",
                rootfs,
                "python3",
                "-c",
                "import sys; print('%d.%d' % sys.version_info[:2])",
            ],
            capture_output=True,
            text=True,
        ).stdout.strip()
        if found != python:
            raise ImageBuildError(f"debootstrap gave Python {found or '?'}, not {python}")
        for cache in ("var/cache/apt/archives", "var/lib/apt/lists"):
            shutil.rmtree(os.path.join(rootfs, cache), ignore_errors=True)
        out(f"importing the root file system into Docker as {tag}")
        _import(client, rootfs, tag, python)
    finally:
        _remove_rootfs(rootfs)


def _run_steps(command: list[str], name: str, out: Output) -> None:
    """Run ``command``, each line it prints a step for ``out``; on failure, raise with its
    last lines."""
    recent: deque[str] = deque(maxlen=20)
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert proc.stdout is not None
    for line in proc.stdout:
        line = line.rstrip()
        if line:
            recent.append(line)
            out(f"{name}: {line.removeprefix('I: ')}")
    if proc.wait() != 0:
        raise ImageBuildError(f"{name} failed (exit code {proc.returncode}):\n" + "\n".join(recent))


def _import(client: Any, rootfs: str, tag: str, python: str) -> None:
    from docker.utils import parse_repository_tag

    repository, version = parse_repository_tag(tag)
    tar = subprocess.Popen(["tar", "-C", rootfs, "-c", "."], stdout=subprocess.PIPE)
    assert tar.stdout is not None
    chunks = iter(lambda: tar.stdout.read(1 << 20), b"")  # type: ignore[union-attr]
    try:
        client.api.import_image(
            src=chunks,
            repository=repository,
            tag=version,
            changes=[f"LABEL {LABEL_PYTHON}={python}", f"ENV {_PATH}", 'CMD ["python3"]'],
            stream_src=True,
        )
    except Exception as exc:
        raise ImageBuildError(f"docker import of {tag} failed: {first_line(exc)}") from None
    finally:
        tar.stdout.close()
        tar.wait()


def _remove_rootfs(rootfs: str) -> None:
    """Remove the root file system, but never through a mount point (a debootstrap that
    failed half-way can leave /proc mounted in it): those are unmounted first, and the
    directory is left alone when one stays mounted."""
    mounted = [m for m in _mounts() if m == rootfs or m.startswith(rootfs + "/")]
    for point in sorted(mounted, reverse=True):
        subprocess.run(["umount", "-l", point], capture_output=True)
    if any(m == rootfs or m.startswith(rootfs + "/") for m in _mounts()):
        return
    shutil.rmtree(rootfs, ignore_errors=True)


def _mounts() -> list[str]:
    try:
        with open("/proc/self/mounts") as f:
            return [line.split()[1] for line in f if len(line.split()) > 1]
    except OSError:
        return []
