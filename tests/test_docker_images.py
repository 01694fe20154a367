"""Worker images built for real: content-hash caching, every kind of layer seen from inside a
worker, and the ``nbscale images`` commands."""

from __future__ import annotations

import re
import subprocess
import sys
import time
import uuid
from typing import Any

import cloudpickle
import pytest

import nbscale
from nbscale._image_build import build
from nbscale._map_results import MapResults, zip_inputs
from nbscale._progress import Snapshot
from nbscale._views import render
from nbscale._views.live import CallInfo, Outcome

pytestmark = pytest.mark.docker

cloudpickle.register_pickle_by_value(sys.modules[__name__])  # workers lack this module


@pytest.fixture(scope="module", autouse=True)
def _docker(docker_plane):
    return docker_plane


def test_an_unchanged_image_is_not_rebuilt(capsys):
    tag = build(nbscale.Image.from_kernel())  # scripts/docker-setup built it already
    capsys.readouterr()
    started = time.monotonic()
    assert build(nbscale.Image.from_kernel()) == tag
    assert time.monotonic() - started < 2.0  # about 0.1 s; see bench/ for the figure
    assert capsys.readouterr().out == ""  # nothing built, nothing said


class StepsSeen:
    """A map view that keeps the lines it showed, starting with when it was put up."""

    def __init__(self) -> None:
        self.lines = ["shown"]

    def show(self, snap: Snapshot) -> None:
        self.lines = ["shown"]

    def draw(self, snap: Snapshot, pool: Any, call: CallInfo) -> None:
        self.lines.append(render.counts_line(snap))

    def finish(self, snap: Snapshot, pool: Any, call: CallInfo, outcome: Outcome) -> None:
        self.lines.append(render.summary_text(snap, outcome.text))


def test_the_first_map_shows_its_image_build_in_its_view(docker_plane):
    """Never a silent wait: a map whose image must be built first shows the build's steps
    in its view (widget or text bar), then its inputs."""
    image = nbscale.Image.from_kernel().env({"NBSCALE_TEST_RUN": uuid.uuid4().hex})
    app = nbscale.App("test-image-progress")

    @app.function(image=image, scaledown_window=2)
    def one(x):
        return x

    view = StepsSeen()
    results = MapResults(one, zip_inputs(([7],), None), True, False, None, view)
    try:
        assert list(results) == [7]
    finally:
        nbscale.shutdown()  # its container stops, so the image can go
        built = [re.match(r"built (nbscale/worker:\w+) in ", line) for line in view.lines]
        for match in filter(None, built):  # by id, with its tag: nothing dangling is left
            docker_plane.api.remove_image(docker_plane.images.get(match[1]).id, force=True)
    assert view.lines[0] == "shown"
    building = [line for line in view.lines if line.startswith("building worker image ")]
    assert building and "(from_kernel().env(" in building[0]
    assert any(": Step " in line for line in building), view.lines
    assert any(line.startswith("built nbscale/worker:") for line in view.lines), view.lines
    first_input = next(i for i, line in enumerate(view.lines) if "/1 done" in line)
    assert first_input > view.lines.index(building[-1])
    assert re.search(r"\.one: 1 inputs · 1 done in [\d.]+ s \([\d.]+/s\)$", view.lines[-1])


def test_every_layer_is_there_for_the_worker(tmp_path, monkeypatch):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "numbers.txt").write_text("1 2 3")
    (tmp_path / "note.txt").write_text("a note")
    (tmp_path / "helpers_for_test.py").write_text("def triple(x):\n    return 3 * x\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    image = (
        nbscale.Image.from_kernel()
        .pip_install("six==1.17.0")
        .env({"GREETING": "hello there"})
        .workdir("/srv")
        .run_commands("echo built > /srv/marker")
        .add_local_dir(str(tmp_path / "data"), "/srv/data")
        .add_local_file(str(tmp_path / "note.txt"), "/srv/")
        .add_local_python_source("helpers_for_test")
    )
    app = nbscale.App("test-docker-images")

    @app.function(image=image, scaledown_window=2)
    def look(x):
        import os

        import helpers_for_test
        import six

        def read(path):
            with open(path) as f:
                return f.read().strip()

        return {
            "greeting": os.environ["GREETING"],
            "cwd": os.getcwd(),
            "marker": read("/srv/marker"),
            "numbers": read("/srv/data/numbers.txt"),
            "note": read("/srv/note.txt"),
            "tripled": helpers_for_test.triple(x),
            "six": six.__version__,
        }

    assert look.remote(2) == {
        "greeting": "hello there",
        "cwd": "/srv",
        "marker": "built",
        "numbers": "1 2 3",
        "note": "a note",
        "tripled": 6,
        "six": "1.17.0",
    }


def _images(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "nbscale", "images", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout)


def test_images_commands():
    base = _images("base")
    assert base.returncode == 0, base.stderr
    python = f"{sys.version_info.major}.{sys.version_info.minor}"
    assert base.stdout.startswith(f"nbscale/base:bookworm ready: Python {python}, already there (")
    built = _images("build", timeout=300)
    assert built.returncode == 0, built.stderr
    tag, ready = built.stdout.splitlines()[-1].split()[:2]
    assert tag.startswith("nbscale/worker:") and ready == "ready"
    listed = _images("list")
    assert listed.returncode == 0, listed.stderr
    assert tag in listed.stdout and "from_kernel()" in listed.stdout


def _labelled_image(client: Any, description: str, n: int) -> str:
    """A tiny image labelled as nbscale's worker images are (only labels over the base)."""
    import io

    dockerfile = (
        f"FROM {nbscale._config.get('base_image')}\n"
        f'LABEL nbscale.image="1" nbscale.image.description="{description}" n="{n}"\n'
    )
    image, _ = client.images.build(fileobj=io.BytesIO(dockerfile.encode()), rm=True)
    return str(image.id)


def test_images_prune_removes_unused_old_images_and_keeps_the_newest_and_those_in_use():
    import docker

    from nbscale._image_prune import prune, report

    client = docker.from_env()
    description = f"prune-test-{uuid.uuid4().hex[:8]}"
    ids = []
    for n in range(4):  # Docker's creation times are in seconds: one image per second
        ids.append(_labelled_image(client, description, n))
        time.sleep(1.1)
    oldest, unused_a, unused_b, newest = ids
    mine = {"label": f"nbscale.image.description={description}"}
    holder = client.api.create_container(oldest, command="true")  # created, never started
    try:
        planned = prune(1, dry_run=True, description=description)
        assert {i.id for i in planned.plan.remove} == {unused_a, unused_b}
        assert {i.id for i in client.images.list(filters=mine)} == set(ids)

        done = prune(1, description=description)
        assert {i.id for i in done.removed} == {unused_a, unused_b} and not done.refused
        left = {
            i.id
            for i in client.images.list(
                filters={"label": f"nbscale.image.description={description}"}
            )
        }
        assert left == {oldest, newest}
        assert report(done, dry_run=False).endswith(
            "removed 2 worker images (0 MB freed); kept the 1 newest and 1 used by a container"
        )
        base = client.images.get(nbscale._config.get("base_image"))
        assert base.id  # never a candidate: not labelled as a worker image
    finally:
        client.api.remove_container(holder)
        for image_id in (oldest, newest):
            client.api.remove_image(image_id, force=True)
