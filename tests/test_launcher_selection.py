"""Choosing the launcher (NBSCALE_LAUNCHER), and the Docker launcher's pure parts: container
hardening, limits, ownership labels. No Docker engine needed."""

from __future__ import annotations

import dataclasses
import os
import socket
import threading

import pytest

import nbscale
from nbscale import _config, _kernel_env
from nbscale_server.launchers import LaunchFailed, ProcessLauncher, WorkerSpec, docker_engine
from nbscale_server.launchers.docker_engine import (
    connect,
    engine_reachable,
    owner_alive,
    owner_labels,
    remove_network,
    sdk_client,
)
from nbscale_server.launchers.docker_spec import (
    CONFIG_IN_CONTAINER,
    container_user,
    describe_exit,
    host_config_options,
)
from nbscale_server.launchers.selection import (
    DockerFacts,
    LauncherChoice,
    base_source,
    choose_launcher,
    probe_docker,
    start_launcher,
)
from nbscale_server.options import FunctionOptions

BOGUS = "unix:///nonexistent/docker.sock"


def test_launcher_setting_is_checked(monkeypatch):
    assert _config.get("launcher") in ("auto", "process", "docker")
    monkeypatch.setenv("NBSCALE_LAUNCHER", "podman")
    with pytest.raises(nbscale.InvalidError, match="NBSCALE_LAUNCHER"):
        _config.get("launcher")
    monkeypatch.setenv("NBSCALE_DOCKER_NETWORK", "overlay")
    with pytest.raises(nbscale.InvalidError, match="bridge, shared, host"):
        _config.get("docker_network")


FACTS = DockerFacts(engine="unix:///var/run/docker.sock", python="3.11")
READY = dataclasses.replace(
    FACTS, base_image="nbscale/base:bookworm", base_present=True, base_python="3.11"
)


def test_process_and_slurm_are_chosen_without_asking_docker():
    assert choose_launcher("process", None) == LauncherChoice("process", "launcher=process")
    assert choose_launcher("slurm", None) == LauncherChoice("slurm", "launcher=slurm")
    with pytest.raises(LaunchFailed, match="unknown launcher 'podman': choose one of auto"):
        choose_launcher("podman", None)


def test_auto_without_an_engine_uses_processes():
    facts = dataclasses.replace(FACTS, engine_problem="no socket /var/run/docker.sock")
    choice = choose_launcher("auto", facts)
    assert choice == LauncherChoice(
        "process", "no Docker engine answers at unix:///var/run/docker.sock"
    )


def test_auto_without_the_docker_package_uses_processes():
    facts = dataclasses.replace(FACTS, sdk_problem="ModuleNotFoundError: No module named 'docker'")
    choice = choose_launcher("auto", facts)
    assert choice.kind == "process"
    assert choice.reason.startswith("Docker engine found, but the docker package does not import")
    assert choice.reason.endswith("pip install docker")


def test_auto_without_a_base_image_uses_processes_and_names_the_fix():
    facts = dataclasses.replace(
        FACTS, base_image="nbscale/base:bookworm", registry_problem="no such host"
    )
    assert choose_launcher("auto", facts) == LauncherChoice(
        "process",
        "Docker engine found, but no base image nbscale/base:bookworm: run `nbscale images base`",
    )


def test_auto_with_a_base_of_another_python_uses_processes():
    facts = dataclasses.replace(READY, base_python="3.12")
    choice = choose_launcher("auto", facts)
    assert choice.kind == "process"
    assert "has Python 3.12, not 3.11: run `nbscale images base`" in choice.reason


def test_auto_uses_docker_when_it_can_serve():
    assert choose_launcher("auto", READY) == LauncherChoice(
        "docker", "Docker engine at unix:///var/run/docker.sock, base image nbscale/base:bookworm"
    )
    unlabelled = dataclasses.replace(READY, base_python="")  # e.g. a registry image
    assert choose_launcher("auto", unlabelled).kind == "docker"


def test_auto_uses_docker_when_a_registry_can_give_the_missing_base():
    facts = dataclasses.replace(FACTS, base_image="nbscale/base:bookworm")  # registry answers
    choice = choose_launcher("auto", facts)
    assert choice.kind == "docker"
    assert "the first map makes the base image nbscale/base:bookworm from " in choice.reason
    assert choice.reason.endswith("python:3.11-slim-bookworm")


def test_a_missing_base_of_this_host_is_made_from_python_slim_others_pulled_as_named():
    assert base_source("nbscale/base:bookworm", "3.12") == "python:3.12-slim-bookworm"
    assert base_source("ghcr.io/me/base:1", "3.12") == "ghcr.io/me/base:1"
    facts = dataclasses.replace(FACTS, base_image="ghcr.io/me/base:1")
    assert choose_launcher("auto", facts).reason.endswith("pulls the base image ghcr.io/me/base:1")


def test_explicit_docker_fails_loudly_without_engine_or_sdk():
    no_engine = dataclasses.replace(FACTS, engine_problem="connection refused")
    with pytest.raises(LaunchFailed) as info:
        choose_launcher("docker", no_engine)
    assert "cannot reach the Docker engine" in str(info.value)
    assert "(connection refused)" in str(info.value)
    no_sdk = dataclasses.replace(FACTS, sdk_problem="ModuleNotFoundError: docker")
    with pytest.raises(LaunchFailed, match=r"docker package \(ModuleNotFoundError: docker\)"):
        choose_launcher("docker", no_sdk)


def test_explicit_docker_without_a_base_says_so_and_leaves_it_to_the_build():
    facts = dataclasses.replace(FACTS, base_image="nbscale/base:x", registry_problem="offline")
    assert choose_launcher("docker", facts) == LauncherChoice(
        "docker", "launcher=docker; no base image nbscale/base:x: run `nbscale images base`"
    )
    assert choose_launcher("docker", READY) == LauncherChoice("docker", "launcher=docker")


def test_the_probe_stops_at_a_silent_engine(monkeypatch):
    monkeypatch.setenv("DOCKER_HOST", BOGUS)
    assert not engine_reachable()
    facts = probe_docker("nbscale/base:bookworm", "3.11")
    assert facts.engine == BOGUS
    assert facts.engine_problem == "no socket /nonexistent/docker.sock"
    assert facts.base_image is None  # not asked about
    assert choose_launcher("auto", facts).kind == "process"


def test_start_launcher(monkeypatch, tmp_path):
    monkeypatch.setenv("DOCKER_HOST", BOGUS)
    launcher, choice = start_launcher("auto", str(tmp_path), base_image="nbscale/base:bookworm")
    assert isinstance(launcher, ProcessLauncher) and choice.kind == "process"
    with pytest.raises(LaunchFailed) as info:
        start_launcher("docker", str(tmp_path))
    message = str(info.value)
    assert f"cannot reach the Docker engine at {BOGUS}" in message
    assert "NBSCALE_LAUNCHER=process" in message


def test_engine_ping_reads_the_answer(monkeypatch, tmp_path):
    """A local socket is pinged directly (no docker SDK import): 200 means reachable."""
    path = str(tmp_path / "docker.sock")
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(path)
    server.listen(4)
    answers = [
        b"HTTP/1.1 500 Internal Server Error\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nApi-Version: 1.41\r\n\r\nOK",
        b"HTTP/1.1 200 OK\r\n\r\nOK",
    ]

    def serve() -> None:
        for answer in answers:
            conn, _ = server.accept()
            with conn:
                conn.recv(1024)
                conn.sendall(answer)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    monkeypatch.setenv("DOCKER_HOST", f"unix://{path}")
    try:
        assert not engine_reachable()
        assert engine_reachable()
        # the version it speaks, for the SDK's clients (which then need not ask for it)
        assert sdk_client(5).api._version == "1.41"
        assert engine_reachable()
        assert path not in docker_engine._API_VERSIONS  # restarted: it may speak another
    finally:
        thread.join(5)
        server.close()


def test_status_names_the_launcher_and_why(fresh_plane):
    fresh_plane(NBSCALE_LAUNCHER="auto", DOCKER_HOST=BOGUS)
    info = nbscale.status()
    assert info["launcher"] == "process"
    assert info["launcher_reason"] == f"no Docker engine answers at {BOGUS}"
    assert info["version"] == nbscale.__version__


def test_containers_are_hardened_and_limited():
    spec = WorkerSpec(
        "wk-1", "pl-1", "/tmp/nbscale-x/wk-1.json", FunctionOptions(cpu=1.5, memory=512)
    )
    host = host_config_options(spec, "nbscale-sv-1", [])
    assert host["init"] is True
    assert host["read_only"] is True
    assert host["tmpfs"]["/tmp"].startswith("rw,nosuid,nodev,")
    assert host["cap_drop"] == ["ALL"]
    assert host["security_opt"] == ["no-new-privileges:true"]
    assert host["pids_limit"] > 0
    assert host["binds"] == {spec.config_path: {"bind": CONFIG_IN_CONTAINER, "mode": "ro"}}
    assert host["network_mode"] == "nbscale-sv-1"
    assert host["mem_limit"] == host["memswap_limit"] == "512m"
    assert host["shm_size"] == "256m"
    assert host["nano_cpus"] == 1_500_000_000
    assert host["log_config"]["type"] == "json-file"
    assert host["log_config"]["config"]["max-file"] == "3"
    assert "docker.sock" not in str(host)
    plain = host_config_options(WorkerSpec("wk-2", "pl-1", "/x.json"), "host", [])
    assert "mem_limit" not in plain and "nano_cpus" not in plain
    user = container_user()
    assert not user.startswith("0:")
    assert user == ("10001:10001" if os.getuid() == 0 else f"{os.getuid()}:{os.getgid()}")


def test_exit_reasons_name_out_of_memory():
    state = {"ExitCode": 137, "OOMKilled": True}
    assert describe_exit(state, 64) == (
        "ran out of memory (memory limit 64 MiB) and was killed (exit code 137)"
    )
    assert "not out of memory" in str(describe_exit({"ExitCode": 137, "OOMKilled": False}, 64))
    assert describe_exit({"ExitCode": 1}, None) is None


def test_ownership_labels_name_a_live_process():
    labels = owner_labels("sv-test")
    assert labels["nbscale.server"] == "sv-test"
    assert owner_alive(labels["nbscale.owner"])
    pid, started = labels["nbscale.owner"].split(":")
    assert not owner_alive(f"{pid}:{float(started) - 100:.2f}")  # a reused pid
    assert not owner_alive("999999999:1.00")
    assert not owner_alive(None)
    assert not owner_alive("garbage")


@pytest.mark.docker
def test_the_probe_reads_the_engine_and_the_base_image():
    """Against the real engine (scripts/docker-setup made the base image)."""
    python = _kernel_env.python_minor()
    facts = probe_docker(_config.get("base_image"), python)
    assert facts.engine_problem is None and facts.sdk_problem is None
    assert facts.base_present and facts.base_python == python
    assert choose_launcher("auto", facts).kind == "docker"
    missing = probe_docker("nbscale/base:no-such-tag", python)
    assert missing.engine_problem is None and not missing.base_present
    # offline (no registry answers), processes; with a registry, Docker pulls the base
    expected = "process" if missing.registry_problem else "docker"
    assert choose_launcher("auto", missing).kind == expected


@pytest.mark.docker
def test_docker_clients_take_the_api_version_from_the_ping(monkeypatch):
    """The probe's and the launcher's clients skip the SDK's ``GET /version`` (5-10 ms of
    a local engine each, on a first call's path): the ping gave the version."""
    import docker

    asked: list[str] = []

    def ask_version(client: docker.APIClient) -> str:
        asked.append(client.base_url)
        raise AssertionError("GET /version")

    monkeypatch.setattr(docker.APIClient, "_retrieve_server_version", ask_version)
    facts = probe_docker(_config.get("base_image"), _kernel_env.python_minor())
    assert facts.engine_problem is None and facts.base_present
    client = connect(timeout=10)
    try:
        assert client.ping()
        # the version the engine gives, as the SDK would have asked for it
        assert client.api._version == client.api.version(api_version=False)["ApiVersion"]
    finally:
        client.close()
    assert asked == []


class StaleEndpointEngine:
    """A Docker API whose network keeps the endpoint of a container removed while it was
    starting (moby/moby#23302) until that container's name is disconnected with force."""

    def __init__(self, stale: str | None) -> None:
        self.stale = stale
        self.removed = False

    def remove_network(self, network_id: str) -> None:
        if self.stale is not None:
            raise RuntimeError(f"error while removing network: {network_id} has active endpoints")
        self.removed = True

    def disconnect_container_from_network(self, name: str, network_id: str, force: bool) -> None:
        if name != self.stale or not force:
            raise RuntimeError(f"endpoint {name} not found")
        self.stale = None


def test_a_network_with_a_stale_endpoint_is_removed_by_disconnecting_it(caplog):
    engine = StaleEndpointEngine(stale="nbscale-wk-2")
    remove_network(engine, "net-1", "nbscale-sv-1", ["nbscale-wk-1", "nbscale-wk-2"])
    assert engine.removed
    # an endpoint no name clears: left to the next control plane's reaping, with the fix named
    stuck = StaleEndpointEngine(stale="a container of someone else")
    remove_network(stuck, "net-1", "nbscale-sv-1", ["nbscale-wk-1"])
    assert not stuck.removed
    assert "docker network rm nbscale-sv-1` after restarting dockerd" in caplog.text
