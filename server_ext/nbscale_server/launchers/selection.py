"""Which launcher a control plane uses (the ``launcher`` setting: auto, process, docker,
slurm or kubernetes).

``auto``, the default, picks Docker only when Docker can really serve the first map: the
engine answers, the docker SDK imports, and the worker base image is on the engine (or is
missing but can be made now, because a registry answers). Otherwise it picks local
processes, and says why in one line. An explicit ``docker`` fails at once, saying why, when
the engine or the SDK is missing; a missing base image fails the first build that needs it,
naming ``nbscale images base``. The choice is made once, when the control plane starts, and
reported by it (``launcher``, ``launcher_reason``) to ``nbscale.status()``, the widget, the
sidebar and ``nbscale doctor``. ``slurm`` and ``kubernetes`` are only ever chosen
explicitly: that a cluster answers does not mean a user wants their workers queued on it.

:func:`choose_launcher` is the decision, a pure function of :class:`DockerFacts`;
:func:`probe_docker` gathers the facts, asking only what the decision can still use.
"""

from __future__ import annotations

import dataclasses
import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .base import Launcher, LaunchFailed
from .docker_engine import (
    LABEL_PYTHON,
    LOCAL_NAMESPACE,
    engine_address,
    engine_problem,
    first_line,
    registry_problem,
    sdk_client,
    sdk_missing_message,
    unreachable_message,
)
from .process import ProcessLauncher
from .zygote import ZygoteClient

if TYPE_CHECKING:
    from .k8s_cluster import KubernetesOptions
    from .slurm_job import SlurmOptions

KINDS = ("auto", "process", "docker", "slurm", "kubernetes")
_EXPLICIT_ONLY = ("process", "slurm", "kubernetes")  # chosen as asked, Docker not probed
_REGISTRY_TIMEOUT = 5  # seconds a registry gets to answer before the base counts as offline


def registry_base(python: str) -> str:
    """The registry image a base of this host's own is made from when a registry answers."""
    return f"python:{python}-slim-bookworm"


def base_source(base: str, python: str) -> str:
    """What a missing base is pulled as: a base of this host's own (``nbscale/...``) is made
    from :func:`registry_base`; any other base is pulled as it is named."""
    return registry_base(python) if base.startswith(f"{LOCAL_NAMESPACE}/") else base


@dataclass(frozen=True, slots=True)
class DockerFacts:
    """What :func:`probe_docker` found; a fact it did not need to ask about stays None."""

    engine: str  # the engine's address (DOCKER_HOST or the local socket)
    python: str  # the Python minor version the workers need ("3.11")
    engine_problem: str | None = None  # why the engine does not answer; None: it does
    sdk_problem: str | None = None  # why the docker SDK does not import; None: it does
    base_image: str | None = None  # the base the default worker images build on
    base_present: bool = False
    base_python: str | None = None  # the base's Python (its nbscale.python label), if known
    registry_problem: str | None = None  # for a missing base: why it cannot be pulled now


@dataclass(frozen=True, slots=True)
class LauncherChoice:
    kind: str  # "process", "docker", "slurm" or "kubernetes"
    reason: str  # why, in a few words, for "workers: local processes (<reason>)"


def choose_launcher(requested: str, facts: DockerFacts | None) -> LauncherChoice:
    """The launcher for the setting ``requested``, from the facts about Docker (None: not
    probed, as for ``process``). Raises ``LaunchFailed``, saying what to do, for a bad
    setting and for ``docker`` where the engine or the SDK is missing."""
    if requested not in KINDS:
        raise LaunchFailed(f"unknown launcher {requested!r}: choose one of {', '.join(KINDS)}")
    if requested in _EXPLICIT_ONLY:
        return LauncherChoice(requested, f"launcher={requested}")
    if facts is None:
        raise ValueError("choosing Docker needs the facts of probe_docker()")
    if requested == "docker":
        if facts.engine_problem is not None:
            raise LaunchFailed(unreachable_message(facts.engine_problem))
        if facts.sdk_problem is not None:
            raise LaunchFailed(sdk_missing_message(facts.sdk_problem))
        problem = _base_problem(facts)
        return LauncherChoice("docker", "launcher=docker" + (f"; {problem}" if problem else ""))
    if facts.engine_problem is not None:
        return LauncherChoice("process", f"no Docker engine answers at {facts.engine}")
    if facts.sdk_problem is not None:
        return LauncherChoice(
            "process",
            f"Docker engine found, but the docker package does not import "
            f"({facts.sdk_problem}): pip install docker",
        )
    problem = _base_problem(facts)
    if problem is not None:
        return LauncherChoice("process", f"Docker engine found, but {problem}")
    return LauncherChoice("docker", _serving(facts))


def _base_problem(facts: DockerFacts) -> str | None:
    """Why the default worker image cannot be built now, or None."""
    base = facts.base_image
    if base is None:
        return None
    if not facts.base_present:
        if facts.registry_problem is None:
            return None  # the first build makes it from the registry
        return f"no base image {base}: run `nbscale images base`"
    if facts.base_python and facts.base_python != facts.python:
        return (
            f"the base image {base} has Python {facts.base_python}, not {facts.python}: "
            "run `nbscale images base`"
        )
    return None


def _serving(facts: DockerFacts) -> str:
    if facts.base_image is None:
        return f"Docker engine at {facts.engine}"
    if facts.base_present:
        return f"Docker engine at {facts.engine}, base image {facts.base_image}"
    source = base_source(facts.base_image, facts.python)
    if source == facts.base_image:
        return f"Docker engine at {facts.engine}; the first map pulls the base image {source}"
    return (
        f"Docker engine at {facts.engine}; the first map makes the base image "
        f"{facts.base_image} from {source}"
    )


def probe_docker(base_image: str | None, python: str) -> DockerFacts:
    """Ask Docker what :func:`choose_launcher` needs: the engine's ping first (no SDK import
    on a machine without Docker), then the SDK, then the base image on the engine, and the
    registry only for a missing base (a few seconds at most)."""
    facts = DockerFacts(engine_address(), python)
    problem = engine_problem()
    if problem is not None:
        return dataclasses.replace(facts, engine_problem=problem)
    try:
        import docker
    except Exception as exc:  # ImportError, or a broken install of it or its dependencies
        return dataclasses.replace(facts, sdk_problem=f"{type(exc).__name__}: {exc}")
    if base_image is None:
        return facts
    facts = dataclasses.replace(facts, base_image=base_image)
    try:
        client = sdk_client(_REGISTRY_TIMEOUT)
    except Exception as exc:
        return dataclasses.replace(facts, engine_problem=first_line(exc))
    try:
        labels = (client.api.inspect_image(base_image).get("Config") or {}).get("Labels") or {}
        return dataclasses.replace(facts, base_present=True, base_python=labels.get(LABEL_PYTHON))
    except docker.errors.ImageNotFound:
        return dataclasses.replace(
            facts, registry_problem=registry_problem(client.api, base_source(base_image, python))
        )
    except Exception as exc:  # the engine stopped answering
        return dataclasses.replace(facts, engine_problem=first_line(exc))
    finally:
        client.close()


def start_launcher(
    requested: str,
    log_dir: str,
    python: str | None = None,
    docker_network: str = "bridge",
    base_image: str | None = None,
    *,
    slurm: SlurmOptions | None = None,
    shared_dir: str | None = None,
    kubernetes: KubernetesOptions | None = None,
    log_max_bytes: int = 16 << 20,
    zygote: bool | ZygoteClient = True,
    docker_transport: str = "tcp",
    docker_spares: int = 0,
    heartbeat_timeout: float = 15.0,
) -> tuple[Launcher, LauncherChoice]:
    """Choose the launcher (probing Docker for ``auto`` and ``docker``) and start it.
    Under ``auto``, a Docker launcher that cannot start (its network, say) gives way to
    local processes, with the reason. ``slurm`` and ``shared_dir``: the Slurm launcher's
    job options and the directory its nodes share; ``kubernetes``: the Kubernetes
    launcher's settings; ``zygote``: the process launcher forks its workers from one (or
    from this one, started ahead: closed where another launcher is chosen);
    ``docker_transport``: how Docker workers reach the control plane; ``docker_spares``:
    warm spare containers to keep (in ``log_dir``, where the workers' files are), which
    exit after ``heartbeat_timeout`` seconds without the control plane.
    Raises ``LaunchFailed`` as
    :func:`choose_launcher`, and when Slurm does not answer."""
    handed = zygote if isinstance(zygote, ZygoteClient) else None
    try:
        # Workers in containers need this Python's minor version (cloudpickle's pickles do).
        this_python = f"{sys.version_info.major}.{sys.version_info.minor}"
        probe = requested not in _EXPLICIT_ONLY
        facts = probe_docker(base_image, this_python) if probe else None
        choice = choose_launcher(requested, facts)
        if choice.kind == "slurm":
            from .slurm import SlurmLauncher  # only when used

            return SlurmLauncher(python, slurm, shared_dir), choice
        if choice.kind == "kubernetes":
            from .k8s_cluster import KubernetesOptions
            from .kubernetes import KubernetesLauncher  # imports the kubernetes client

            return KubernetesLauncher(kubernetes or KubernetesOptions()), choice
        if choice.kind == "docker":
            from .docker import DockerLauncher  # imports the docker SDK: only when used

            try:
                launcher = DockerLauncher(
                    network=docker_network,
                    base_image=base_image,
                    transport=docker_transport,
                    spares=docker_spares,
                    spares_dir=log_dir,
                    heartbeat_timeout=heartbeat_timeout,
                )
                return launcher, choice
            except LaunchFailed as exc:
                if requested != "auto":
                    raise
                choice = LauncherChoice("process", f"Docker engine found, but {exc}")
        processes = ProcessLauncher(log_dir, python, log_max_bytes=log_max_bytes, zygote=zygote)
        handed = None  # the process launcher has it now
        return processes, choice
    finally:
        if handed is not None:  # another launcher was chosen, or none could start
            handed.close()
