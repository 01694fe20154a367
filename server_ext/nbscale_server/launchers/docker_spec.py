"""What a worker's container is, decided without the engine: its hardened host config, its
user, its GPU requests, and what an exit (or a failure to start) means in words. Pure, so that
``docker.py`` keeps only the launcher's I/O."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from ..losses import INFRASTRUCTURE, USER
from .base import EXIT_LOST, WorkerSpec
from .docker_engine import LABEL_GPUS, LABEL_POOL, LABEL_WORKER, unreachable_message
from .volumes import docker_mounts

FILES_IN_CONTAINER = "/run/nbscale"  # a warm spare's directory is mounted here, whole
CONFIG_IN_CONTAINER = f"{FILES_IN_CONTAINER}/worker.json"
REGISTER_IN_CONTAINER = f"{FILES_IN_CONTAINER}/register"
SOCKET_IN_CONTAINER = f"{FILES_IN_CONTAINER}/control.sock"  # docker_transport="ipc"
CONTAINER_UID = 10001  # the user containers run as when the control plane runs as root
COMMAND = ["python3", "-m", "nbscale_runtime", "--config", CONFIG_IN_CONTAINER]
_PIDS_LIMIT = 4096
_TMP_SIZE = "1g"
_NO_GPU_RUNTIME = "could not select device driver"


@dataclass(frozen=True, slots=True)
class ContainerExit:
    code: int
    reason: str | None  # what the exit code alone does not say
    logs: str  # its last lines, with Docker's timestamps
    cause: str | None = None  # whose fault, where Docker says (losses.USER, INFRASTRUCTURE)


def container_user() -> str:
    """Never root: the host user when that is not root, else a fixed unprivileged uid."""
    uid = os.getuid()
    return f"{CONTAINER_UID}:{CONTAINER_UID}" if uid == 0 else f"{uid}:{os.getgid()}"


def container_options(
    spec: WorkerSpec,
    image: str,
    name: str,
    labels: dict[str, str],
    gpus: list[str],
    wait: float | None = None,
) -> dict[str, Any]:
    """The ``create_container`` arguments of a worker but its host config; ``labels``:
    its control plane's; ``wait``: a warm spare's ``--wait`` (how old its alive file may
    grow)."""
    labels = {**labels, LABEL_POOL: spec.pool_id, LABEL_WORKER: spec.worker_id}
    environment = {"HOME": "/tmp", "PYTHONUNBUFFERED": "1", "PYTHONDONTWRITEBYTECODE": "1"}
    if gpus:
        labels[LABEL_GPUS] = ",".join(gpus)
        environment["NVIDIA_DRIVER_CAPABILITIES"] = "compute,utility"
    return {
        "image": image,
        "command": COMMAND if wait is None else [*COMMAND, "--wait", str(wait)],
        "name": name,
        "user": container_user(),
        "environment": environment,
        "labels": labels,
        "detach": True,
    }


def gpu_device_requests(uuids: list[str]) -> list[dict[str, Any]]:
    """Docker's request for exactly these GPUs (``--gpus '"device=UUID,..."'``)."""
    if not uuids:
        return []
    import docker

    return [docker.types.DeviceRequest(device_ids=list(uuids), capabilities=[["gpu"]])]


def host_config_options(
    spec: WorkerSpec, network: str, gpus: list[str], spare_dir: str | None = None
) -> dict[str, Any]:
    """The ``create_host_config`` arguments for a worker: limits, hardening, logs, GPUs.
    ``spare_dir``: a warm spare's directory, mounted in place of the worker's files, which
    appear in it when it is taken."""
    options = spec.options
    memory = options.memory
    shm_mib = max(64, memory // 2) if memory else 1024
    binds = {spec.config_path: {"bind": CONFIG_IN_CONTAINER, "mode": "ro"}}
    if spec.register_path:  # shared memory with the control plane: read-write
        binds[spec.register_path] = {"bind": REGISTER_IN_CONTAINER, "mode": "rw"}
    if spec.socket_path:  # its own socket to the control plane (connecting writes to it)
        binds[spec.socket_path] = {"bind": SOCKET_IN_CONTAINER, "mode": "rw"}
    if spare_dir is not None:  # a spare: the same files, linked into its directory later
        binds = {spare_dir: {"bind": FILES_IN_CONTAINER, "mode": "rw"}}
    host: dict[str, Any] = {
        "init": True,
        "binds": binds,
        "network_mode": network,
        "read_only": True,
        "tmpfs": {"/tmp": f"rw,nosuid,nodev,size={_TMP_SIZE},mode=1777"},
        "cap_drop": ["ALL"],
        "security_opt": ["no-new-privileges:true"],
        "pids_limit": _PIDS_LIMIT,
        "shm_size": f"{shm_mib}m",
        "log_config": {"type": "json-file", "config": {"max-size": "10m", "max-file": "3"}},
    }
    if memory:
        host["mem_limit"] = host["memswap_limit"] = f"{memory}m"
    if options.cpu:
        host["nano_cpus"] = int(options.cpu * 1e9)
    if gpus:
        host["device_requests"] = gpu_device_requests(gpus)
    if options.volumes:
        host["mounts"] = docker_mounts(options.volumes)
    return host


def shared_kernel_problem(info: dict[str, Any], address: str, release: str) -> str | None:
    """Why the containers of the engine at ``address`` (``info``: its ``docker info``)
    cannot share this machine's Unix sockets and memory, or None when they can: the engine
    must run them on this very kernel (``release``: ours) and mount this file system."""
    if not address.startswith("unix://"):
        return f"the engine is reached at {address}, so its containers may run on another machine"
    system = str(info.get("OperatingSystem") or "")
    if "Docker Desktop" in system:
        return f"this engine is {system}, which runs containers in a virtual machine of its own"
    kernel = info.get("KernelVersion")
    if kernel != release:
        return f"its containers run on another kernel ({kernel}; this machine runs {release})"
    return None


def shared_kernel_refusal(problem: str) -> str:
    return (
        "docker_transport='ipc' needs a Docker engine on this machine's own Linux kernel, "
        f"and {problem}: use docker_transport='tcp' (NBSCALE_DOCKER_TRANSPORT=tcp, or "
        "c.NbScale.docker_transport = 'tcp')"
    )


def describe_exit(state: dict[str, Any], memory: int | None) -> str | None:
    """What a container's final state says beyond its exit code (``State`` of inspect)."""
    if state.get("OOMKilled"):
        limit = f" (memory limit {memory} MiB)" if memory else ""
        return f"ran out of memory{limit} and was killed (exit code {state.get('ExitCode')})"
    if state.get("ExitCode") == 137:  # Docker knows it was not the memory limit
        return "was killed by SIGKILL (exit code 137; not out of memory)"
    return None


def container_exit(state: dict[str, Any], memory: int | None, logs: str) -> ContainerExit:
    """An exited container's code, reason and cause, from ``State`` of inspect."""
    cause = USER if state.get("OOMKilled") else None
    return ContainerExit(int(state["ExitCode"]), describe_exit(state, memory), logs, cause)


def missing_image_message(image: str) -> str:
    return (
        f"image {image!r} is not on this Docker host: build it with nbscale.Image "
        "(`nbscale images build` builds the default one); nbscale never pulls images "
        "when it starts workers"
    )


def start_error_message(exc: BaseException, image: str) -> str:
    text = str(getattr(exc, "explanation", None) or exc)
    if _NO_GPU_RUNTIME in text:
        return (
            "Docker here cannot expose GPUs: install nvidia-container-toolkit and restart "
            "Docker (nvidia-ctk runtime configure --runtime=docker)"
        )
    return f"Docker could not start a container of {image}: {text}"


def lost_exit(exc: BaseException) -> ContainerExit:
    """A container whose fate is unknown: the engine stopped answering about it."""
    return ContainerExit(EXIT_LOST, f"was lost: {unreachable_message(exc)}", "", INFRASTRUCTURE)
