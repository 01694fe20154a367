"""Worker images built for real: content-hash caching, every kind of layer seen from inside a
worker, and the ``nbscale images`` commands."""

from __future__ import annotations

import subprocess
import sys
import time

import cloudpickle
import pytest

import nbscale
from nbscale._image_build import build

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


def test_images_commands():
    built = subprocess.run(
        [sys.executable, "-m", "nbscale", "images", "build"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert built.returncode == 0, built.stderr
    tag, ready = built.stdout.splitlines()[-1].split()[:2]
    assert tag.startswith("nbscale/worker:") and ready == "ready"
    listed = subprocess.run(
        [sys.executable, "-m", "nbscale", "images", "list"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert listed.returncode == 0, listed.stderr
    assert tag in listed.stdout and "from_kernel()" in listed.stdout
