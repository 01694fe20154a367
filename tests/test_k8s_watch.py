"""The Pod watch (k8s_watch.py) against the fake API server's HTTP side, with no Pod
running (none is scheduled: the fake has no room): list, then watch from the list's
resourceVersion, a new list after 410 Gone, nothing missed, and a prompt close."""

from __future__ import annotations

import threading
from typing import Any

import docker
import pytest
from conftest import wait_until
from k8s_cluster_fixtures import NAMESPACE, write_kubeconfig
from k8s_fake_api import FakeKubernetes

from nbscale_server.launchers.k8s_watch import PodWatch


def pod(name: str, labels: dict[str, str]) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "labels": labels},
        "spec": {
            "containers": [{"name": "worker", "image": "x:1", "command": ["true"]}],
            "volumes": [{"name": "keys", "secret": {"secretName": f"{name}-keys", "items": []}}],
        },
    }


@pytest.fixture
def fake(tmp_path):
    fake = FakeKubernetes(docker.from_env())
    fake.no_room = True  # Pods stay Pending: nothing runs
    yield fake
    fake.close()


@pytest.fixture
def core(fake, tmp_path):
    from kubernetes import client, config

    path = tmp_path / "kubeconfig"
    write_kubeconfig(path, fake.url)
    configuration = client.Configuration()
    config.load_kube_config(str(path), client_configuration=configuration)
    api = client.ApiClient(configuration)
    yield client.CoreV1Api(api)
    api.close()


def test_list_then_watch_then_list_again_after_410(fake, core):
    fake.create_pod(NAMESPACE, pod("before", {"app": "x"}))
    seen: list[tuple[str, str]] = []
    lists: list[set[str]] = []
    lock = threading.Lock()

    def on_event(kind: str, obj: dict[str, Any]) -> None:
        with lock:
            seen.append((kind, obj["metadata"]["name"]))

    watch = PodWatch(core, NAMESPACE, "app=x", on_event, lambda names, _: lists.append(names))
    try:
        assert watch.wait_listed(10)
        assert lists[0] == {"before"}  # the list found what existed
        fake.create_pod(NAMESPACE, pod("after", {"app": "x"}))
        fake.create_pod(NAMESPACE, pod("other", {"app": "y"}))  # not selected
        wait_until(lambda: ("ADDED", "after") in seen, timeout=10)
        fake.compact()  # the watch's resourceVersion is now too old: 410 Gone
        wait_until(lambda: watch.lists == 2, timeout=10)
        assert lists[1] == {"before", "after"}
        fake.create_pod(NAMESPACE, pod("later", {"app": "x"}))
        wait_until(lambda: ("ADDED", "later") in seen, timeout=10)
        assert not [name for _, name in seen if name == "other"]
    finally:
        watch.close()
    watch._thread.join(5)
    assert not watch._thread.is_alive()  # closing ends an open watch at once
