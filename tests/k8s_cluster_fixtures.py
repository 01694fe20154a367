"""Fixtures for the Kubernetes launcher's contract suite: the fake API server of
k8s_fake_api.py (Pods run as real Docker containers), a kubeconfig naming it, and a real
registry on loopback (Debian's docker-registry) that kernels push worker images to."""

from __future__ import annotations

import json
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from k8s_fake_api import FakeKubernetes

NAMESPACE = "nbscale-test"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def write_kubeconfig(path: Path, url: str) -> None:
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "fake", "cluster": {"server": url}}],
        "users": [{"name": "tester", "user": {"token": "fake"}}],
        "contexts": [
            {
                "name": "fake",
                "context": {"cluster": "fake", "user": "tester", "namespace": NAMESPACE},
            }
        ],
        "current-context": "fake",
    }
    path.write_text(json.dumps(config))


@pytest.fixture(scope="module")
def fake_k8s(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FakeKubernetes]:
    """The fake API server and a kubeconfig for it (its path in ``fake.kubeconfig``). Fails
    when any of its containers is left on the engine afterwards."""
    import docker

    try:
        client = docker.from_env()
        client.ping()
    except Exception as exc:
        pytest.fail(f"no Docker engine answers ({exc}); run scripts/docker-setup as root")
    fake = FakeKubernetes(client)
    kubeconfig = tmp_path_factory.mktemp("kube") / "config"
    write_kubeconfig(kubeconfig, fake.url)
    fake.kubeconfig = str(kubeconfig)  # type: ignore[attr-defined]
    yield fake
    fake.close()
    left = client.containers.list(
        all=True, filters={"label": f"nbscale.server={fake.id}"}, ignore_removed=True
    )
    assert not left, f"Pods' containers left on the engine: {[c.name for c in left]}"


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A registry on loopback (the Docker engine pushes to 127.0.0.0/8 without TLS)."""
    port = free_port()
    root = tmp_path_factory.mktemp("registry")
    config = root / "config.yml"
    config.write_text(
        "version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n"
        f"    rootdirectory: {root / 'data'}\nhttp:\n  addr: 127.0.0.1:{port}\n"
    )
    process = subprocess.Popen(
        ["docker-registry", "serve", str(config)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    address = f"127.0.0.1:{port}"
    deadline = time.monotonic() + 20
    while True:
        try:
            urllib.request.urlopen(f"http://{address}/v2/", timeout=1).close()
            break
        except OSError:
            if time.monotonic() > deadline or process.poll() is not None:
                process.kill()
                pytest.fail("docker-registry did not start (apt-get install docker-registry)")
            time.sleep(0.1)
    yield address
    process.terminate()
    process.wait(10)


def registry_tags(address: str, repository: str) -> list[str]:
    try:
        with urllib.request.urlopen(f"http://{address}/v2/{repository}/tags/list") as r:
            tags: list[str] = json.load(r).get("tags") or []
            return tags
    except OSError:
        return []


def plane_env(fake: Any, registry: str) -> dict[str, str]:
    """The settings of an embedded control plane whose workers are the fake cluster's Pods."""
    return {
        "NBSCALE_LAUNCHER": "kubernetes",
        "KUBECONFIG": fake.kubeconfig,
        "NBSCALE_REGISTRY": registry,
        "NBSCALE_WORKER_ADDRESS": "127.0.0.1",
        "NBSCALE_K8S_DRAIN_SECONDS": "20",
    }


def our_pods(fake: Any, pool_name: str | None = None) -> list[dict[str, Any]]:
    with fake.lock:
        pods = [p for k, p in fake.pods.items() if k.startswith(f"{NAMESPACE}/")]
    if pool_name is None:
        return pods
    return [
        p for p in pods if p["metadata"]["annotations"].get("nbscale.io/pool-name") == pool_name
    ]
