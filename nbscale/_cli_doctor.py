"""``nbscale doctor``: what nbscale finds on this machine, in one screen.

Python and the versions installed; which launcher ``auto`` (or the setting) picks and why;
the Docker engine, the base image and the worker images; the GPUs NVML sees; the Jupyter
server extension and sidebar; and the Jupyter server's control plane, if one runs. Each line
is a :class:`Finding`; a problem (something that stops nbscale working as set up here) is
marked, and makes the command exit 1.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import nbscale

from . import _config, _kernel_env
from ._loop import get_loop
from ._views.render import workers_line, workers_text
from .exceptions import NbscaleError

if TYPE_CHECKING:
    from nbscale_server.launchers.selection import DockerFacts

PACKAGES = ("pyzmq", "cloudpickle", "docker", "nvidia-ml-py", "jupyterlab", "ipykernel")
_TIMEOUT = 5.0  # seconds any one question (to Docker, to a control plane) may take


@dataclass(frozen=True, slots=True)
class Finding:
    topic: str
    text: str
    problem: bool = False


def add_parser(sub: Any) -> None:
    sub.add_parser(
        "doctor",
        help="say what nbscale finds here: versions, launcher and why, Docker, images, GPUs, "
        "Jupyter, control plane",
    ).set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    found = findings()
    print(report(found))
    return 1 if any(f.problem for f in found) else 0


def report(found: list[Finding]) -> str:
    width = max(len(f.topic) for f in found)
    lines = [f"{'!' if f.problem else ' '} {f.topic:<{width}}  {f.text}" for f in found]
    problems = sum(f.problem for f in found)
    lines.append(
        f"{problems} problem{'s' if problems != 1 else ''} (marked !)"
        if problems
        else "no problem found"
    )
    return "\n".join(lines)


def findings() -> list[Finding]:
    return [
        Finding("python", f"{platform.python_version()} at {sys.executable}"),
        _versions(),
        *_workers(),
        _gpus(),
        *_jupyter(),
        _control_plane(),
    ]


def _versions() -> Finding:
    import nbscale_runtime
    import nbscale_server

    own = {nbscale.__version__, nbscale_server.__version__, nbscale_runtime.__version__}
    parts = [f"nbscale {nbscale.__version__}"]
    missing = []
    for name in PACKAGES:
        version = _kernel_env.installed_version(name)
        parts.append(f"{name} {version}" if version else f"{name} missing")
        if version is None:
            missing.append(name)
    text = " · ".join(parts)
    if len(own) > 1:
        return Finding("versions", f"{text}; mixed nbscale installs: reinstall nbscale", True)
    if missing:
        return Finding("versions", f"{text}; pip install {' '.join(missing)}", True)
    return Finding("versions", text)


def _workers() -> list[Finding]:
    """The launcher decision, made as a new control plane here would make it, and the
    Docker facts behind it."""
    from nbscale_server.launchers import LaunchFailed
    from nbscale_server.launchers.selection import choose_launcher, probe_docker

    try:
        requested, base = _config.get("launcher"), _config.get("base_image")
    except NbscaleError as exc:
        return [Finding("workers", str(exc), True)]
    facts = probe_docker(base, _kernel_env.python_minor())
    try:
        choice = choose_launcher(requested, facts)
        said = workers_text({"launcher": choice.kind, "launcher_reason": choice.reason})
        workers = Finding("workers", f"{said} [launcher={requested}]")
    except LaunchFailed as exc:
        workers = Finding("workers", f"launcher={requested}, but {exc}", True)
    return [workers, *_docker(facts, base, requested == "docker")]


def _docker(facts: DockerFacts, base: str, needed: bool) -> list[Finding]:
    engine = facts.engine
    if facts.engine_problem is not None:
        return [
            Finding("docker", f"no engine answers at {engine} ({facts.engine_problem})", needed)
        ]
    if facts.sdk_problem is not None:
        return [Finding("docker", f"the docker package does not import: {facts.sdk_problem}", True)]
    import docker

    from ._base_image import base_python
    from ._image_build import list_images

    try:
        client = docker.from_env(timeout=int(_TIMEOUT))
    except Exception as exc:
        return [Finding("docker", f"the docker package cannot talk to {engine}: {exc}", needed)]
    try:
        version = client.version().get("Version", "?")
        python = base_python(client, base)
        if python is None:
            base_text = f"{base} is missing: run `nbscale images base`"
        else:
            size = client.api.inspect_image(base).get("Size", 0) / 1e6
            base_text = f"{base} (Python {python or 'unlabelled'}, {size:.0f} MB)"
        rows = list_images(client)
    except Exception as exc:
        return [Finding("docker", f"engine at {engine} stopped answering: {exc}", needed)]
    finally:
        client.close()
    tagged = [row for row in rows if not row["tag"].startswith("<none>")]
    if tagged:
        newest = tagged[0]
        age = _age(time.time() - newest["created"])
        images = (
            f"{len(tagged)} built by nbscale; newest {newest['tag']} (Python {newest['python']}, "
            f"{newest['size_mb']} MB, {age} ago)"
        )
    else:
        images = "none yet: the first Docker map builds one (or `nbscale images build`)"
    return [
        Finding("docker", f"engine {version} at {engine}"),
        Finding("base image", base_text, needed and python is None),
        Finding("worker images", images),
    ]


def _age(seconds: float) -> str:
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60)):
        if seconds >= size:
            n = int(seconds // size)
            return f"{n} {unit}{'s' if n > 1 else ''}"
    return f"{int(seconds)} s"


def _gpus() -> Finding:
    from nbscale_server.gpus import GpuError, discover

    try:
        gpus = discover()
    except GpuError as exc:
        return Finding("GPUs", f"none: {exc}")
    if not gpus:
        return Finding("GPUs", "none: NVML finds no GPU")
    names: dict[str, int] = {}
    for gpu in gpus:
        label = f"{gpu.name} ({gpu.memory_total / 2**30:.0f} GiB)"
        names[label] = names.get(label, 0) + 1
    return Finding("GPUs", ", ".join(f"{n} x {label}" for label, n in names.items()))


def _jupyter() -> list[Finding]:
    from jupyter_core.paths import jupyter_config_path, jupyter_path
    from jupyter_server.extension.config import ExtensionConfigManager

    import nbscale_server

    enabled = ExtensionConfigManager(
        read_config_path=jupyter_config_path()
    ).get_jpserver_extensions()
    if enabled.get("nbscale_server"):
        server = Finding(
            "jupyter", f"server extension nbscale_server {nbscale_server.__version__} enabled"
        )
    else:
        server = Finding(
            "jupyter",
            "server extension nbscale_server is not enabled: "
            "jupyter server extension enable nbscale_server",
            True,
        )
    lab = _kernel_env.installed_version("jupyterlab")
    sidebar = None
    for root in jupyter_path("labextensions"):
        path = os.path.join(root, "nbscale", "package.json")
        if os.path.exists(path):
            with open(path) as f:
                sidebar = json.load(f).get("version")
            break
    text = f"{lab}" if lab else "missing: pip install jupyterlab"
    text += f" · sidebar nbscale {sidebar} installed" if sidebar else " · no nbscale sidebar"
    return [server, Finding("jupyterlab", text, not (lab and sidebar))]


def _control_plane() -> Finding:
    """The control plane a kernel here would use: the Jupyter server's, found by its
    connection file (``NBSCALE_CONNECTION_FILE``, or the Jupyter runtime directory)."""
    from ._client import hello
    from ._discovery import server_connection_files

    for server in server_connection_files():
        info = server.info
        try:
            said = get_loop().run(hello(info, _TIMEOUT))
        except NbscaleError as exc:
            return Finding("control plane", f"{server.path}: {exc}", True)
        return Finding(
            "control plane",
            f"the Jupyter server's (pid {info['pid']}, nbscale {said.get('version', '?')}) "
            f"answers; {workers_line(said)}",
        )
    return Finding(
        "control plane",
        "no Jupyter server's runs here; a script or kernel starts its own on first use",
    )
