"""Building an ``nbscale.Image`` with the Docker engine, from a context made on this host.

``plan()`` turns an image into a Dockerfile and a list of what its context needs (wheels to
download, files to copy); ``image_tag()`` hashes all of it (and the base image's id, and
the runtime's source) into the tag, so ``build()`` returns at once when that tag exists.
Otherwise it downloads the wheels with ``pip download`` for the image's Python and
platform, copies the files, and runs the build, printing each step as it starts.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import nbscale_runtime
import nbscale_server
from nbscale_server.launchers.docker_engine import LABEL_PYTHON, LOCAL_NAMESPACE

from . import _image_tags, _kernel_env
from ._image import SOURCE_DIR, Image, Layer
from .exceptions import ImageBuildError

REPOSITORY = f"{LOCAL_NAMESPACE}/worker"
LABEL_IMAGE = "nbscale.image"
LABEL_DESCRIPTION = "nbscale.image.description"
VENV = "/opt/venv"
RUNTIME_DIR = "/opt/nbscale/runtime"
_CONTEXT = ".nbscale"  # our part of the build context
_SKIP = shutil.ignore_patterns("__pycache__", "*.pyc", ".git", ".ipynb_checkpoints")

Output = Callable[[str], None]  # gets a build's steps, one line each


def print_step(line: str) -> None:
    """The default output of a build: each step printed (under the cell, in a notebook)."""
    print(f"nbscale: {line}", flush=True)


@dataclass
class BuildPlan:
    image: Image
    dockerfile: str
    wheels: dict[str, tuple[str, ...]] = field(default_factory=dict)  # context dir -> reqs
    copies: dict[str, str] = field(default_factory=dict)  # context path -> local source


def plan(image: Image) -> BuildPlan:
    """The Dockerfile of ``image`` and what its build context must hold."""
    if image.dockerfile is not None:
        with open(image.dockerfile) as f:
            lines = [f.read().rstrip("\n"), "USER root"]
    else:
        lines = [f"FROM {image.base}"]
    lines += [
        f"RUN python3 -m venv --system-site-packages {VENV}",
        f"ENV PATH={VENV}/bin:$PATH VIRTUAL_ENV={VENV} PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 "
        f"PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONPATH={RUNTIME_DIR}:{SOURCE_DIR}",
    ]
    result = BuildPlan(image, "")
    runtime = Layer("pip", tuple(_kernel_env.pinned_closure(_kernel_env.RUNTIME_DISTRIBUTIONS)))
    for i, layer in enumerate([runtime, *image.layers]):
        lines += _render(layer, i, result)
    # The runtime, and the client for functions that call functions (imported only then;
    # it needs nothing the runtime does not, and no Jupyter).
    packages = {
        "nbscale_runtime": os.path.dirname(nbscale_runtime.__file__),
        "nbscale": os.path.dirname(__file__),
        "nbscale_server": os.path.dirname(nbscale_server.__file__ or ""),
    }
    for name, source in packages.items():
        lines.append(f"COPY {_CONTEXT}/{name} {RUNTIME_DIR}/{name}")
        result.copies[f"{_CONTEXT}/{name}"] = source
    # Compiled now: workers run on a read-only root and would compile it at every start.
    lines.append(f"RUN python3 -m compileall -q {RUNTIME_DIR}")
    result.dockerfile = "\n".join(lines) + "\n"
    return result


def _render(layer: Layer, i: int, result: BuildPlan) -> list[str]:
    if layer.kind == "pip":
        where, inside = f"{_CONTEXT}/wheels-{i}", f"/tmp/nbscale-wheels-{i}"
        result.wheels[where] = layer.values
        return [
            f"COPY {where} {inside}",
            f"RUN python3 -m pip install --no-index --find-links {inside} "
            f"{shlex.join(layer.values)} && rm -rf {inside}",
        ]
    if layer.kind == "apt":
        return [
            "RUN apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y "
            f"--no-install-recommends {shlex.join(layer.values)} && rm -rf /var/lib/apt/lists/*"
        ]
    if layer.kind == "run":
        return [f"RUN {command}" for command in layer.values]
    if layer.kind == "env":
        return [f"ENV {k}={json.dumps(v)}" for k, _, v in (e.partition("=") for e in layer.values)]
    if layer.kind == "workdir":
        return [f"WORKDIR {layer.values[0]}"]
    if layer.kind == "copy":
        assert layer.source is not None and layer.target is not None
        where = f"{_CONTEXT}/local-{i}"
        if os.path.isfile(layer.source):
            where += "/" + os.path.basename(layer.source)
        result.copies[where] = layer.source
        return [f"COPY {where} {layer.target}"]
    raise ValueError(f"unknown layer kind {layer.kind!r}")


def _digest_tree(h: Any, path: str) -> None:
    """Feed the names and contents of the files under ``path`` to the hash ``h``."""
    if os.path.isfile(path):
        with open(path, "rb") as f:
            h.update(f.read())
        return
    for root, dirs, files in os.walk(path):
        dirs[:] = sorted(d for d in dirs if d not in ("__pycache__", ".git"))
        for name in sorted(files):
            if name.endswith(".pyc"):
                continue
            full = os.path.join(root, name)
            h.update(os.path.relpath(full, path).encode() + b"\0")
            with open(full, "rb") as f:
                h.update(f.read())


def image_tag(p: BuildPlan, base_id: str, platforms: list[str]) -> str:
    """``nbscale/worker:<hash>`` of everything the image is made of."""
    h = hashlib.sha256()
    for part in (p.dockerfile, base_id, p.image.python_version, *platforms):
        h.update(part.encode() + b"\0")
    for where, source in sorted(p.copies.items()):
        h.update(where.encode() + b"\0")
        _digest_tree(h, source)
    if p.image.context_dir is not None:
        _digest_tree(h, p.image.context_dir)
    return f"{REPOSITORY}:{h.hexdigest()[:16]}"


def platform_tags(arch: str, glibc: tuple[int, int]) -> list[str]:
    """pip's ``--platform`` values for manylinux wheels that run on this glibc."""
    major, minor = glibc
    tags = [f"manylinux_{major}_{m}_{arch}" for m in range(minor, 4, -1)]
    legacy = {17: "manylinux2014", 12: "manylinux2010", 5: "manylinux1"}
    return tags + [f"{name}_{arch}" for m, name in legacy.items() if m <= minor]


@functools.cache
def docker_client() -> Any:
    """The process's client for builds (kept: a connection costs more than the check that
    an image is up to date)."""
    from nbscale_server.launchers import LaunchFailed
    from nbscale_server.launchers.docker_engine import connect

    try:
        return connect(timeout=600)
    except LaunchFailed as exc:
        raise ImageBuildError(str(exc)) from None


# Architectures as images name them (Go's names), as pip's platform tags do (``uname -m``'s);
# another (arm's variants) is taken from the engine's info.
_PIP_ARCH = {
    "amd64": "x86_64",
    "arm64": "aarch64",
    "386": "i686",
    "ppc64le": "ppc64le",
    "s390x": "s390x",
}


def _base_id(client: Any, image: Image, out: Output) -> tuple[str, str | None]:
    """The base image's id (so a rebuilt base rebuilds its images) and the architecture
    its containers run, for their wheels (None: unknown yet), checking that it has the
    Python the image wants. A missing base of this host's own (``nbscale/...``) is made
    now when a registry answers (the base's Python image is pulled), else the error says
    to run ``nbscale images base``; other bases are pulled by the build."""
    import docker

    if image.base is None:
        return "", None
    try:
        info = client.api.inspect_image(image.base)
    except docker.errors.ImageNotFound:
        if not image.base.startswith(f"{LOCAL_NAMESPACE}/"):
            return image.base, None  # a registry image: the build pulls it
        from ._base_image import base_registry_problem, pull_base  # only now: 2 ms

        problem = base_registry_problem(image.python_version)
        if problem is not None:
            raise ImageBuildError(
                f"no base image {image.base} on this Docker host: run `nbscale images base` "
                f"(no registry answers to pull one from: {problem})"
            ) from None
        pull_base(client, image.base, image.python_version, out)
        info = client.api.inspect_image(image.base)
    python = ((info.get("Config") or {}).get("Labels") or {}).get(LABEL_PYTHON)
    if python and python != image.python_version:
        raise ImageBuildError(
            f"the base image {image.base} has Python {python}, not {image.python_version}: "
            "workers need the caller's Python minor version; run `nbscale images base` to "
            f"remake it, or set NBSCALE_BASE_IMAGE to a base with Python {image.python_version}"
        )
    return str(info["Id"]), _PIP_ARCH.get(str(info.get("Architecture")))


def exists(client: Any, tag: str) -> bool:
    import docker

    try:
        client.api.inspect_image(tag)
    except docker.errors.ImageNotFound:
        return False
    return True


def build(image: Image, client: Any = None, out: Output = print_step) -> str:
    """Build ``image`` unless an image with its tag exists; returns the tag. ``out`` gets
    each step as a line."""
    client = client or docker_client()
    p = plan(image)
    try:
        base_id, arch = _base_id(client, image, out)
        # The engine's info (10-30 ms) only when the base did not say it.
        arch = arch or str(client.info().get("Architecture") or os.uname().machine)
        platforms = platform_tags(arch, image.glibc)
        tag = image_tag(p, base_id, platforms)
        if exists(client, tag):
            _image_tags.remember(image, tag)
            return tag
    except ImageBuildError:
        raise
    except Exception as exc:  # the engine stopped answering
        from nbscale_server.launchers.docker_engine import unreachable_message

        raise ImageBuildError(unreachable_message(exc)) from None
    started = time.monotonic()
    step = f"building worker image {tag} ({image.description})"
    out(step)
    with tempfile.TemporaryDirectory(prefix="nbscale-build-") as context:
        _make_context(p, context, platforms, lambda line: out(f"{step}: {line}"))
        _run_build(client, context, tag, image, lambda line: out(f"{step}: {line}"))
    out(f"built {tag} in {time.monotonic() - started:.1f} s")
    _image_tags.remember(image, tag)
    return tag


def _make_context(p: BuildPlan, context: str, platforms: list[str], out: Output) -> None:
    if p.image.context_dir is not None:
        shutil.copytree(p.image.context_dir, context, dirs_exist_ok=True, ignore=_SKIP)
    for where, source in p.copies.items():
        target = os.path.join(context, where)
        os.makedirs(os.path.dirname(target), exist_ok=True)
        if os.path.isdir(source):
            shutil.copytree(source, target, ignore=_SKIP)
        else:
            shutil.copy2(source, target)
    for where, requirements in p.wheels.items():
        out(f"downloading wheels for {', '.join(requirements)}")
        _download(requirements, os.path.join(context, where), p.image.python_version, platforms)
    with open(os.path.join(context, _CONTEXT, "Dockerfile"), "w") as f:
        f.write(p.dockerfile)


def _download(
    requirements: tuple[str, ...], dest: str, python_version: str, platforms: list[str]
) -> None:
    """``pip download`` Linux wheels for the image's Python into ``dest``; pip's own
    settings apply (PIP_INDEX_URL, PIP_FIND_LINKS + PIP_NO_INDEX for a host offline)."""
    os.makedirs(dest, exist_ok=True)
    command = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--quiet",
        "--disable-pip-version-check",
        "--only-binary=:all:",
        "--dest",
        dest,
        "--python-version",
        python_version,
        "--implementation",
        "cp",
        "--abi",
        "cp" + python_version.replace(".", ""),
        *(f"--platform={tag}" for tag in platforms),
        *requirements,
    ]
    proc = subprocess.run(command, capture_output=True, text=True)
    if proc.returncode != 0:
        tail = "\n".join(proc.stderr.strip().splitlines()[-15:])
        raise ImageBuildError(
            f"pip could not download Linux wheels for Python {python_version} of "
            f"{', '.join(requirements)} (a package without wheels can be installed with "
            f".run_commands('pip install ...') instead):\n{tail}"
        )


def _run_build(client: Any, context: str, tag: str, image: Image, out: Output) -> None:
    labels = {
        LABEL_IMAGE: "1",
        LABEL_DESCRIPTION: image.description,
        LABEL_PYTHON: image.python_version,
    }
    recent: deque[str] = deque(maxlen=30)
    try:
        stream = client.api.build(
            path=context,
            dockerfile=f"{_CONTEXT}/Dockerfile",
            tag=tag,
            labels=labels,
            rm=True,
            forcerm=True,
            pull=False,
            decode=True,
        )
        for chunk in stream:
            if "error" in chunk:
                recent.append(str(chunk["error"]))
                raise ImageBuildError(f"building {tag} failed:\n" + "\n".join(recent))
            for line in str(chunk.get("stream", "")).splitlines():
                if line.strip():
                    recent.append(line)
                if line.startswith("Step "):
                    out(line)
    except ImageBuildError:
        raise
    except Exception as exc:
        raise ImageBuildError(f"building {tag} failed: {exc}") from None


def list_images(client: Any = None) -> list[dict[str, Any]]:
    """The worker images nbscale built on this Docker host, newest first."""
    client = client or docker_client()
    rows = []
    for info in client.api.images(filters={"label": LABEL_IMAGE}):
        labels = info.get("Labels") or {}
        for tag in info.get("RepoTags") or ["<none>"]:
            rows.append(
                {
                    "tag": tag,
                    "id": str(info["Id"]).removeprefix("sha256:")[:12],
                    "created": int(info.get("Created", 0)),
                    "size_mb": round(int(info.get("Size", 0)) / 1e6),
                    "python": labels.get(LABEL_PYTHON, ""),
                    "description": labels.get(LABEL_DESCRIPTION, ""),
                }
            )
    return sorted(rows, key=lambda r: -r["created"])


def image_for(fn: Any, image: Image | None) -> Image:
    """The image ``fn`` runs in: the one given, else ``Image.from_kernel`` with the
    distributions ``fn`` uses."""
    if image is not None:
        return image
    return Image.from_kernel(*_kernel_env.distributions_used_by(fn))
