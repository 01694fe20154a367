"""The shared network namespace's holder, decided against a fake Docker API (the real engine's
side is in test_docker_shared_netns.py): which image it starts from, what a worker gets when
it cannot start, and which exits replace it."""

from __future__ import annotations

from typing import Any

import docker
import pytest

from nbscale_server.launchers.docker_netns import SharedNetns


class FakeApi:
    def __init__(self, images: set[str], start_error: Exception | None = None) -> None:
        self.images = images
        self.start_error = start_error
        self.created: list[tuple[str, str]] = []  # (image, name)
        self.removed: list[str] = []

    def create_host_config(self, **options: Any) -> dict[str, Any]:
        return options

    def create_container(self, image: str, command: list[str], **options: Any) -> dict[str, str]:
        if image not in self.images:
            raise docker.errors.ImageNotFound(f"No such image: {image}")
        self.created.append((image, options["name"]))
        return {"Id": f"id-{len(self.created)}"}

    def start(self, container_id: str) -> None:
        if self.start_error is not None:
            raise self.start_error

    def remove_container(self, container_id: str, force: bool = False) -> None:
        self.removed.append(container_id)


def shared(api: FakeApi) -> SharedNetns:
    return SharedNetns(api, "nbscale-sv-1", {"nbscale.server": "sv-1"}, "nbscale-sv-1")


def test_workers_join_the_holder_started_from_the_base_image():
    api = FakeApi({"base", "worker"})
    netns = shared(api)
    netns.begin("base")
    assert netns.network_mode("worker") == "container:id-1"
    assert netns.network_mode("worker") == "container:id-1"
    assert api.created == [("base", "nbscale-sv-1-1")]


def test_a_missing_base_image_gives_way_to_the_workers_image():
    api = FakeApi({"worker"})
    netns = shared(api)
    netns.begin("base")
    assert netns.network_mode("worker") == "container:id-1"
    assert [image for image, _ in api.created] == ["worker"]


def test_a_holder_that_cannot_start_leaves_workers_a_namespace_of_their_own(caplog):
    api = FakeApi({"worker"}, start_error=RuntimeError("no python3 in the image"))
    netns = shared(api)
    assert netns.network_mode("worker") == "nbscale-sv-1"  # the bridge network itself
    assert api.removed == ["id-1"]  # the created holder is not left behind
    assert "no python3 in the image" in caplog.text


def test_only_the_current_holders_exit_replaces_it():
    api = FakeApi({"worker"})
    netns = shared(api)
    assert netns.network_mode("worker") == "container:id-1"
    netns.lost("id-1")
    assert netns.network_mode("worker") == "container:id-2"
    netns.lost("id-1")  # a late event of the holder already replaced
    assert netns.network_mode("worker") == "container:id-2"


def test_no_holder_starts_once_closing():
    api = FakeApi({"worker"})
    netns = shared(api)
    netns.close(timeout=1)
    assert netns.network_mode("worker") == "nbscale-sv-1"
    assert api.created == []


@pytest.mark.parametrize("network", ["overlay", ""])
def test_an_unknown_docker_network_is_refused(network):
    from nbscale_server.launchers import LaunchFailed
    from nbscale_server.launchers.docker import DockerLauncher

    with pytest.raises(LaunchFailed, match="bridge, shared, host"):
        DockerLauncher(network=network, client=object())
