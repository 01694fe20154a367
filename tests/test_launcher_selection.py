"""Choosing the launcher (NBSCALE_LAUNCHER), and the Docker launcher's pure parts: container
hardening, limits, ownership labels. No Docker engine needed."""

from __future__ import annotations

import os
import socket
import threading

import pytest

import nbscale
from nbscale import _config
from nbscale_server.launchers import LaunchFailed, ProcessLauncher, WorkerSpec, make_launcher
from nbscale_server.launchers.docker import (
    CONFIG_IN_CONTAINER,
    container_user,
    describe_exit,
    host_config_options,
)
from nbscale_server.launchers.docker_engine import engine_reachable, owner_alive, owner_labels
from nbscale_server.options import FunctionOptions

BOGUS = "unix:///nonexistent/docker.sock"


def test_launcher_setting_is_checked(monkeypatch):
    assert _config.get("launcher") in ("auto", "process", "docker")
    monkeypatch.setenv("NBSCALE_LAUNCHER", "podman")
    with pytest.raises(nbscale.InvalidError, match="NBSCALE_LAUNCHER"):
        _config.get("launcher")
    monkeypatch.setenv("NBSCALE_DOCKER_NETWORK", "overlay")
    with pytest.raises(nbscale.InvalidError, match="bridge, host"):
        _config.get("docker_network")


def test_auto_falls_back_to_processes_without_an_engine(monkeypatch, tmp_path):
    monkeypatch.setenv("DOCKER_HOST", BOGUS)
    assert not engine_reachable()
    assert isinstance(make_launcher("auto", str(tmp_path)), ProcessLauncher)
    assert isinstance(make_launcher("process", str(tmp_path)), ProcessLauncher)


def test_docker_without_an_engine_says_what_to_do(monkeypatch, tmp_path):
    monkeypatch.setenv("DOCKER_HOST", BOGUS)
    with pytest.raises(LaunchFailed) as info:
        make_launcher("docker", str(tmp_path))
    message = str(info.value)
    assert f"cannot reach the Docker engine at {BOGUS}" in message
    assert "NBSCALE_LAUNCHER=process" in message
    with pytest.raises(LaunchFailed, match="unknown launcher"):
        make_launcher("podman", str(tmp_path))


def test_engine_ping_reads_the_answer(monkeypatch, tmp_path):
    """A local socket is pinged directly (no docker SDK import): 200 means reachable."""
    path = str(tmp_path / "docker.sock")
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(path)
    server.listen(4)
    answers = [b"HTTP/1.1 500 Internal Server Error\r\n\r\n", b"HTTP/1.1 200 OK\r\n\r\nOK"]

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
    finally:
        thread.join(5)
        server.close()


def test_status_names_the_launcher(fresh_plane):
    fresh_plane(NBSCALE_LAUNCHER="auto", DOCKER_HOST=BOGUS)
    assert nbscale.status()["launcher"] == "process"


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
