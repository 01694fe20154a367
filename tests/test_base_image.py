"""Making the worker base image (``nbscale images base``): what an offline build lacks is said
before anything starts, and a pull reports its progress and labels the base.

The offline build itself (debootstrap + docker import, about a minute) runs for real in
``scripts/docker-setup`` on a machine without the base; the pull needs a registry, which the
test machines lack, so its stream is played by a stand-in of the engine's API here."""

from __future__ import annotations

import io
import tarfile
from typing import Any

import pytest

from nbscale import _base_image
from nbscale._base_image import OFFLINE_PYTHON, make_base, offline_problems, pull_progress
from nbscale.exceptions import ImageBuildError


def test_an_offline_build_that_can_run_lacks_nothing():
    assert offline_problems(OFFLINE_PYTHON, True, "/usr/sbin/debootstrap", "http://m/debian") == []


def test_an_offline_build_names_each_thing_it_lacks():
    problems = offline_problems("3.12", False, None, None)
    assert len(problems) == 4
    python, root, debootstrap, mirror = problems
    assert "Debian bookworm's Python 3.11, and workers need Python 3.12" in python
    assert "python:3.12-slim-bookworm" in python
    assert root == "debootstrap needs root: run `nbscale images base` as root"
    assert debootstrap == "debootstrap is not installed: apt-get install debootstrap"
    assert mirror.startswith("no Debian bookworm mirror in apt's sources") and "--mirror" in mirror


def test_the_offline_build_refuses_before_it_starts(monkeypatch):
    monkeypatch.setattr(_base_image.os, "geteuid", lambda: 1000)
    monkeypatch.setattr(_base_image.shutil, "which", lambda name: None)
    monkeypatch.setattr(_base_image, "bookworm_mirror", lambda: None)
    with pytest.raises(ImageBuildError) as info:
        _base_image.build_offline(None, "nbscale/base:x", OFFLINE_PYTHON, print, None)
    message = str(info.value)
    assert message.startswith("cannot build the base image nbscale/base:x offline: ")
    assert "needs root" in message and "apt-get install debootstrap" in message
    assert "mirror" in message and "\n" not in message  # one line


class RegistryApi:
    """The engine's answers to a pull and a build, as the docker SDK decodes them."""

    def __init__(self) -> None:
        self.dockerfile = ""
        self.tag = ""

    def inspect_image(self, tag: str) -> Any:
        import docker

        raise docker.errors.ImageNotFound(tag)

    def pull(self, repository: str, tag: str, **kwargs: Any) -> Any:
        assert (repository, tag) == ("python", "3.11-slim-bookworm")
        yield {"status": "Pulling from library/python", "id": "3.11-slim-bookworm"}
        for current in (0, 5_000_000, 10_000_000):
            yield {
                "status": "Downloading",
                "id": "a",
                "progressDetail": {"current": current, "total": 10_000_000},
            }
        yield {"status": "Already exists", "id": "b"}
        yield {"status": "Download complete", "id": "a"}
        yield {"status": "Status: Downloaded newer image for python:3.11-slim-bookworm"}

    def build(self, fileobj: io.BytesIO, tag: str, **kwargs: Any) -> Any:
        self.dockerfile, self.tag = fileobj.read().decode(), tag
        yield {"stream": "Successfully tagged " + tag}


class Engine:
    def __init__(self) -> None:
        self.api = RegistryApi()


def test_a_pulled_base_reports_its_layers_and_is_labelled(monkeypatch):
    monkeypatch.setattr(_base_image, "base_registry_problem", lambda python: None)
    engine = Engine()
    lines: list[str] = []
    how = make_base(engine, "nbscale/base:bookworm", "3.11", lines.append)
    assert how == "pulled from python:3.11-slim-bookworm"
    assert lines[0] == "pulling python:3.11-slim-bookworm for nbscale/base:bookworm"
    assert lines[1] == "pulling python:3.11-slim-bookworm: 0/1 layers, 0/10 MB"  # then 1 a second
    assert lines[-1] == "labelling python:3.11-slim-bookworm as nbscale/base:bookworm"
    assert engine.api.tag == "nbscale/base:bookworm"
    assert engine.api.dockerfile == "FROM python:3.11-slim-bookworm\nLABEL nbscale.python=3.11\n"
    assert pull_progress("p", {"a": (10_000_000, 10_000_000), "b": (0, 0)}) == (
        "pulling p: 1/2 layers, 10/10 MB"
    )


def test_without_a_registry_the_base_is_built_offline(monkeypatch):
    monkeypatch.setattr(_base_image, "base_registry_problem", lambda python: "no such host")
    built: list[str] = []
    monkeypatch.setattr(
        _base_image, "build_offline", lambda client, tag, python, out, mirror: built.append(tag)
    )
    lines: list[str] = []
    how = make_base(Engine(), "nbscale/base:bookworm", "3.11", lines.append)
    assert how == "built offline with debootstrap" and built == ["nbscale/base:bookworm"]
    assert lines == [
        "no registry answers (no such host): building nbscale/base:bookworm offline with "
        "debootstrap"
    ]


def test_tar_streaming_keeps_special_files(tmp_path):
    """docker import gets the root file system as tar streams it (links and modes kept)."""
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "tool").write_text("#!/bin/sh\n")
    (tmp_path / "bin" / "tool").chmod(0o755)
    (tmp_path / "usr").symlink_to("bin")
    received = io.BytesIO()

    class ImportApi:
        def import_image(self, src: Any, **kwargs: Any) -> None:
            for chunk in src:
                received.write(chunk)
            assert kwargs["repository"] == "nbscale/base" and kwargs["tag"] == "t"
            assert "LABEL nbscale.python=3.11" in kwargs["changes"]

    class ImportEngine:
        api = ImportApi()

    _base_image._import(ImportEngine(), str(tmp_path), "nbscale/base:t", "3.11")
    received.seek(0)
    with tarfile.open(fileobj=received) as tar:
        members = {m.name: m for m in tar.getmembers()}
    assert members["./usr"].issym() and members["./bin/tool"].mode & 0o777 == 0o755
