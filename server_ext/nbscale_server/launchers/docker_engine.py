"""The Docker engine as the Docker launcher sees it: reaching it, and what nbscale owns there.

Every container nbscale creates on an engine carries labels: ``nbscale.server`` (the control
plane), ``nbscale.pool``, ``nbscale.worker``, and ``nbscale.host`` + ``nbscale.owner`` (this
machine's name and the control plane process's pid and start time). A control plane that
crashed cannot clean up after itself, so every new one removes the containers (and the
networks of control planes before the user's network) whose owner process on this host is
gone (:func:`reap_orphans`); those of live control planes, and of other hosts sharing the
engine, are left alone.

The bridge network workers run on is the user's (:func:`user_network`): made by the first
control plane of this user on this host that needs it and kept for the next ones, as an
image is, since making one is an eighth of a cold start (55-60 ms of Docker 20.10 here).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import logging
import os
import socket
import tempfile
from dataclasses import dataclass
from typing import Any

from .errors import LaunchFailed
from .owner import owner_alive, owner_tag

log = logging.getLogger("nbscale.docker")

LABEL_SERVER = "nbscale.server"
LABEL_POOL = "nbscale.pool"
LABEL_WORKER = "nbscale.worker"
LABEL_HOST = "nbscale.host"
LABEL_OWNER = "nbscale.owner"
LABEL_GPUS = "nbscale.gpus"
LABEL_NETWORK = "nbscale.network"  # on a user's network: the uid it is for
LABEL_PYTHON = "nbscale.python"  # on images nbscale made: their Python's minor version
LOCAL_NAMESPACE = "nbscale"  # images made on this host (base, workers), never pulled as named

_DEFAULT_SOCKET = "/var/run/docker.sock"
# The API version each local engine's ping gave (its ``API-Version`` header): clients made
# with it skip the SDK's ``GET /version``, 5-10 ms for a local engine, as it asks
# containerd and runc theirs.
_API_VERSIONS: dict[str, str] = {}


def engine_address() -> str:
    return os.environ.get("DOCKER_HOST") or f"unix://{_DEFAULT_SOCKET}"


def engine_problem(timeout: float = 2.0) -> str | None:
    """None when a Docker engine answers, else why not; cheap: a local socket is asked
    ``GET /_ping`` directly, so choosing the process launcher on a machine without Docker
    costs no import of the docker SDK; other addresses (tcp://, ssh://) go through the SDK."""
    address = engine_address()
    if address.startswith("unix://"):
        return _ping_unix_socket(address.removeprefix("unix://"), timeout)
    try:
        import docker

        docker.DockerClient(base_url=address, timeout=int(timeout) or 1).ping()
    except Exception as exc:
        return first_line(exc)
    return None


def engine_reachable(timeout: float = 2.0) -> bool:
    """Whether a Docker engine answers (see :func:`engine_problem`)."""
    return engine_problem(timeout) is None


def first_line(problem: BaseException | str) -> str:
    """The first line of an error (the docker SDK's carry the engine's explanation)."""
    text = str(getattr(problem, "explanation", None) or problem)
    return text.splitlines()[0] if text.strip() else type(problem).__name__


def registry_problem(api: Any, image: str) -> str | None:
    """None when the engine can pull ``image`` now (its registry answers, through the
    engine's own mirrors and proxy), else why not; bounded by ``api``'s timeout."""
    try:
        api.inspect_distribution(image)
    except Exception as exc:
        return first_line(exc)
    return None


def _ping_unix_socket(path: str, timeout: float) -> str | None:
    """None when the engine on the socket at ``path`` answers its ping, else why not."""
    if not os.path.exists(path):
        return f"no socket {path}"
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(timeout)
            sock.connect(path)
            sock.sendall(b"GET /_ping HTTP/1.0\r\nHost: docker\r\n\r\n")
            answer = sock.recv(1024)
    except OSError as exc:
        return str(exc)
    status, *headers = answer.split(b"\r\n\r\n", 1)[0].decode(errors="replace").split("\r\n")
    _API_VERSIONS.pop(path, None)  # an engine restarted since may speak another
    if status.split()[1:2] != ["200"]:
        return f"it answered {status!r}"
    for header in headers:
        name, _, value = header.partition(":")
        if name.strip().lower() == "api-version" and value.strip():
            _API_VERSIONS[path] = value.strip()
    return None


def sdk_client(timeout: int) -> Any:
    """``docker.from_env(timeout=timeout)``, with the API version a ping of this local
    engine gave, when one did (else the SDK asks the engine for it)."""
    import docker

    version = _API_VERSIONS.get(engine_address().removeprefix("unix://"))
    return docker.from_env(timeout=timeout, version=version)


def connect(timeout: int = 60) -> Any:
    """A docker SDK client for the engine at $DOCKER_HOST (or the local socket); raises
    ``LaunchFailed`` saying what to do when the SDK is missing or the engine is silent."""
    try:
        import docker  # noqa: F401  (its absence is said before the engine is asked)
    except ImportError:
        raise LaunchFailed(sdk_missing_message()) from None
    address = engine_address()
    if address.startswith("unix://"):  # the SDK would leak its socket on a failed connect
        problem = _ping_unix_socket(address.removeprefix("unix://"), 5.0)
        if problem is not None:
            raise LaunchFailed(unreachable_message(problem))
    try:
        client = sdk_client(timeout)
        client.ping()
    except Exception as exc:
        raise LaunchFailed(unreachable_message(exc)) from None
    return client


def sdk_missing_message(problem: str = "not installed") -> str:
    return (
        f"Docker workers need the docker package ({problem}): pip install docker "
        "(or run workers as local processes with NBSCALE_LAUNCHER=process)"
    )


def unreachable_message(problem: BaseException | str) -> str:
    return (
        f"cannot reach the Docker engine at {engine_address()} ({first_line(problem)}). "
        "Start Docker (systemctl start docker, or dockerd as root), point DOCKER_HOST at a "
        "running engine, or run workers as local processes with NBSCALE_LAUNCHER=process"
    )


def owner_labels(server_id: str) -> dict[str, str]:
    """The labels that tie a container or network to this control plane process."""
    return {LABEL_SERVER: server_id, LABEL_HOST: socket.gethostname(), LABEL_OWNER: owner_tag()}


def remove_container_now(api: Any, container_id: str) -> None:
    """Remove a container, returning once it is gone, even when a removal is under way
    already (an exit being collected): the engine then answers 409 at once."""
    import docker

    try:
        api.remove_container(container_id, force=True)
    except docker.errors.NotFound:
        pass
    except docker.errors.APIError as exc:
        if exc.status_code != 409:
            raise
        with contextlib.suppress(docker.errors.NotFound):
            api.wait(container_id, timeout=30, condition="removed")


def reap_orphans(api: Any) -> int:
    """Remove the containers, then the networks, that control planes of this host left
    behind when they died; returns how many containers went."""
    mine = {"label": [f"{LABEL_HOST}={socket.gethostname()}"]}
    removed = 0
    names: list[str] = []  # of the containers reaped, for remove_network
    for container in api.containers(all=True, filters=mine):
        if not owner_alive(container.get("Labels", {}).get(LABEL_OWNER)):
            names += [n.lstrip("/") for n in container.get("Names") or []]
            with contextlib.suppress(Exception):
                api.remove_container(container["Id"], force=True)
                removed += 1
    for network in api.networks(filters=mine):
        if not owner_alive((network.get("Labels") or {}).get(LABEL_OWNER)):
            name = network.get("Name", network["Id"])
            remove_network(api, network["Id"], name, names, logging.DEBUG)
    if removed:
        log.warning(
            "removed %d container(s) (workers, warm spares) left by a control plane that died: %s",
            removed,
            ", ".join(names),
        )
    return removed


def remove_network(
    api: Any, network_id: str, name: str, container_names: list[str], level: int = logging.WARNING
) -> None:
    """Remove a control plane's network once its containers are gone. The engine can keep
    the endpoint of a container force-removed while it was starting, and then refuses with
    "has active endpoints" (moby/moby#23302); disconnecting by container name with force
    clears such an endpoint. Logs, never raises: a network left is reaped by the next
    control plane of this host (:func:`reap_orphans`), which says so only at ``level``
    (debug: another run's leftover is not this run's news)."""
    try:
        api.remove_network(network_id)
        return
    except Exception as exc:
        if "active endpoints" not in str(exc):
            log.log(level, "could not remove Docker network %s: %s", name, exc)
            return
    forget_endpoints(api, network_id, container_names)
    try:
        api.remove_network(network_id)
    except Exception as exc:
        log.log(
            level,
            "could not remove Docker network %s (%s); the engine keeps an endpoint of a removed "
            "container: `docker network rm %s` after restarting dockerd removes it",
            name,
            exc,
            name,
        )


def gpus_held(api: Any) -> set[str]:
    """The GPUs (UUIDs) that running containers of any control plane hold."""
    held: set[str] = set()
    for container in api.containers(filters={"label": [LABEL_GPUS]}):
        held.update(filter(None, container.get("Labels", {}).get(LABEL_GPUS, "").split(",")))
    return held


def network_lost_message(name: str, gateway: str, bound: str) -> str:
    return (
        f"the Docker network {name} was removed while this control plane ran, and another "
        f"made it again on gateway {gateway}, not {bound}, where this one listens for workers: "
        "restart it (nbscale.shutdown(), or restart the kernel or the Jupyter server)"
    )


def forget_endpoints(api: Any, network: str, container_names: list[str]) -> None:
    """Disconnect from ``network``, with force, what the engine may keep of the containers
    ``container_names`` once they are removed (an endpoint of a container force-removed
    while it was starting, moby/moby#23302), so that it is not kept for ever."""
    for container_name in container_names:
        with contextlib.suppress(Exception):
            api.disconnect_container_from_network(container_name, network, force=True)


def user_network_name() -> str:
    """``nbscale-u<uid>-<host>``: one per user and host (engines can be shared by both)."""
    host = hashlib.sha256(socket.gethostname().encode()).hexdigest()[:8]
    return f"nbscale-u{os.getuid()}-{host}"


@dataclass(frozen=True)
class UserNetwork:
    name: str
    gateway: str  # the control planes' worker sockets are bound to it
    subnet: str


def user_network(api: Any, like: UserNetwork | None = None) -> UserNetwork:
    """The user bridge network of this user's workers on this host, made now if no control
    plane made it before; ``like``: as it was, when it was removed meanwhile (made again
    on its subnet and gateway, where the control planes listen).

    Control planes bind their worker sockets to the gateway, an address of this host that
    only the host and containers can reach, never to 0.0.0.0. Sharing the network costs
    them no isolation that mattered: each control plane's workers authenticate with its own
    CurveZMQ keys, and workers of different control planes of one user could already reach
    each other through the host. Other users, and other containers, get networks of their
    own (Docker isolates bridge networks from each other). Made under a file lock, since the
    engine can make two networks of one name when asked at once (its check is no lock)."""
    import docker

    name = user_network_name()
    lock_path = os.path.join(tempfile.gettempdir(), f"{name}.lock")
    problem: Exception | None = None
    with contextlib.ExitStack() as held:
        with contextlib.suppress(OSError):  # no lock (a read-only /tmp): the engine's check
            lock = held.enter_context(open(lock_path, "a"))
            fcntl.flock(lock, fcntl.LOCK_EX)
        found = _networks_named(api, name)
        if not found:
            # No nbscale.host label: versions before it reap whatever carries one, unowned.
            labels = {LABEL_NETWORK: str(os.getuid())}
            pool = like and docker.types.IPAMPool(subnet=like.subnet, gateway=like.gateway)
            ipam = docker.types.IPAMConfig(pool_configs=[pool]) if pool else None
            try:
                api.create_network(
                    name, driver="bridge", labels=labels, ipam=ipam, check_duplicate=True
                )
            except Exception as exc:  # made meanwhile by another host's control plane?
                problem = exc
            found = _networks_named(api, name)
    if not found:
        because = f": {first_line(problem)}" if problem else ""
        raise LaunchFailed(f"could not make the Docker network {name} for workers{because}")
    configs = found[0].get("IPAM", {}).get("Config") or []
    config = next((c for c in configs if c.get("Gateway") and c.get("Subnet")), None)
    if config is None:
        raise LaunchFailed(
            f"Docker network {name} has no IPv4 gateway to bind to: remove it "
            f"(`docker network rm {name}`) and the next control plane makes it again"
        )
    return UserNetwork(name, config["Gateway"], config["Subnet"])


def _networks_named(api: Any, name: str) -> list[dict[str, Any]]:
    """The networks called ``name`` exactly (the engine's filter matches parts of names),
    the oldest first: should there be two, every control plane takes the same one."""
    found = [n for n in api.networks(names=[name]) if n.get("Name") == name]
    return sorted(found, key=lambda n: (n.get("Created", ""), n["Id"]))
