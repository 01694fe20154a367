"""Secrets and volumes on Docker workers: a secret in the container's process environment
but not in what `docker inspect` shows of the container or its image (env, command,
labels); a volume written by one function's container and read by another's, a Docker named
volume nbscale-vol-NAME bound to the volume's directory, left alone by the launchers'
cleanup (volumes persist) and removed by `nbscale volume delete`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import nbscale
from nbscale_server.launchers.volumes import LABEL_VOLUME

pytestmark = [pytest.mark.docker, pytest.mark.timeout(300)]

VALUE = "docker-s3cret-never-inspected"


@pytest.fixture(autouse=True)
def data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, docker_plane: Any) -> Path:
    path = tmp_path / "jupyter-data"
    monkeypatch.setenv("JUPYTER_DATA_DIR", str(path))
    return path


def test_a_secret_is_in_the_container_environment_not_in_its_inspect(docker_plane: Any):
    app = nbscale.App("docker-secrets")

    @app.function(secrets=[nbscale.Secret.from_dict({"TOKEN": VALUE})], scaledown_window=30)
    def token() -> tuple[str, str]:
        return os.environ["TOKEN"], os.environ["NBSCALE_WORKER_ID"]

    got, worker_id = token.remote()
    assert got == VALUE
    [container] = docker_plane.containers.list(
        filters={"label": f"nbscale.worker={worker_id}"}, ignore_removed=True
    )
    inspected = json.dumps(container.attrs)
    assert VALUE not in inspected  # not in Config.Env, Args, Cmd or Labels
    image = docker_plane.images.get(container.attrs["Config"]["Image"])
    assert VALUE not in json.dumps(image.attrs) + json.dumps(image.history())
    assert VALUE not in container.logs().decode(errors="replace")


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "nbscale", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={k: v for k, v in os.environ.items() if k != "NBSCALE_CONNECTION_FILE"},
    )


def test_a_volume_written_by_one_container_is_read_by_another(docker_plane: Any):
    vol = nbscale.Volume.from_name("i15-docker-shared", create_if_missing=True)
    docker_name = "nbscale-vol-i15-docker-shared"
    try:
        app = nbscale.App("docker-volumes", volumes={"/data": vol})

        @app.function()
        def write(text: str) -> str:
            with open("/data/note.txt", "w") as f:
                f.write(text)
            return os.environ["NBSCALE_WORKER_ID"]

        @app.function()
        def read() -> tuple[str, str]:
            with open("/data/note.txt") as f:
                return f.read(), os.environ["NBSCALE_WORKER_ID"]

        writer = write.remote("written in a container")
        vol.commit()
        text, reader = read.remote()
        assert text == "written in a container" and reader != writer
        assert (vol.local_path / "note.txt").read_text() == text  # the same directory
        volume = docker_plane.volumes.get(docker_name)
        assert volume.attrs["Labels"] == {LABEL_VOLUME: "i15-docker-shared"}
        assert volume.attrs["Options"]["device"] == str(vol.local_path.resolve())

        in_use = cli("volume", "delete", "i15-docker-shared")  # its containers still run
        assert in_use.returncode == 1 and "stop the workers that use it" in in_use.stderr
        assert (vol.local_path / "note.txt").exists()
        nbscale.shutdown()  # the launcher cleans up its containers and network...
        docker_plane.volumes.get(docker_name)  # ...and keeps the volume
        assert (vol.local_path / "note.txt").exists()
        deleted = cli("volume", "delete", "i15-docker-shared")
        assert deleted.returncode == 0, deleted.stderr
        assert not [v for v in docker_plane.volumes.list() if v.name == docker_name]
        assert not vol.local_path.exists()
    finally:
        for leftover in docker_plane.volumes.list(filters={"name": docker_name}):
            leftover.remove(force=True)


def test_a_relative_mount_path_is_refused_for_containers(docker_plane: Any):
    vol = nbscale.Volume.from_name("i15-docker-relative", create_if_missing=True)

    @nbscale.App("relative").function(volumes={"data": vol})
    def nothing() -> None:
        return None

    with pytest.raises(nbscale.LaunchError, match="mount path must be absolute, such as /data"):
        nothing.remote()
