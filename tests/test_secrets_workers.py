"""Secrets and volumes on real worker processes: a secret's variables in the worker's
environment (a stored one, made by the real `nbscale secret create`), another secret's
function on other workers, the values absent from the status, pools and worker logs; a
volume written by one function's worker and read by another's, kept across control planes;
a mount path a process cannot take refused with what to use instead."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import worker_logs

import nbscale

VALUE = "s3cret-value-never-shown"


@pytest.fixture(autouse=True)
def data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "jupyter-data"
    monkeypatch.setenv("JUPYTER_DATA_DIR", str(path))
    return path


def environment(*names: str) -> tuple[int, dict[str, str | None]]:
    return os.getpid(), {name: os.environ.get(name) for name in names}


def test_a_secret_reaches_the_workers_environment_and_nowhere_else(data_dir: Path):
    made = subprocess.run(
        [sys.executable, "-m", "nbscale", "secret", "create", "api", f"TOKEN={VALUE}"],
        capture_output=True,
        text=True,
        timeout=60,
        env=os.environ.copy(),
    )
    assert made.returncode == 0, made.stderr
    app = nbscale.App("secrets", secrets=[nbscale.Secret.from_dict({"REGION": "home"})])
    stored = app.function(
        secrets=[nbscale.Secret.from_name("api", required_keys=["TOKEN"])], scaledown_window=30
    )(environment)
    other = app.function(
        secrets=[nbscale.Secret.from_dict({"TOKEN": "another"})], scaledown_window=30
    )(environment)

    pid, env = stored.remote("TOKEN", "REGION", "NBSCALE_WORKER_ID")
    assert env["TOKEN"] == VALUE and env["REGION"] == "home"
    assert "TOKEN" not in os.environ  # given to workers, not to this process
    others = list(other.map(["TOKEN"] * 4))
    assert {e["TOKEN"] for _, e in others} == {"another"}
    assert pid not in {p for p, _ in others}  # other secrets: never the same worker
    live_pid, live_env = stored.remote("TOKEN")
    assert live_env["TOKEN"] == VALUE

    status = nbscale.status()
    assert len(status["pools"]) == 2  # the same secrets, the same pool; others, another
    shown = json.dumps(status)
    assert VALUE not in shown and "another" not in shown
    worker_ids = [w["id"] for p in status["pools"] for w in p["workers"]]
    assert worker_ids
    for worker_id in worker_ids:
        assert VALUE not in json.dumps(worker_logs(worker_id))
    for shown_by_proc in ("cmdline", "environ"):  # nor its command line or starting env
        with open(f"/proc/{live_pid}/{shown_by_proc}", "rb") as f:
            assert VALUE.encode() not in f.read()


def test_a_missing_stored_secret_fails_the_call_with_what_to_do():
    app = nbscale.App("missing-secret")
    f = app.function(secrets=[nbscale.Secret.from_name("nope")])(environment)
    with pytest.raises(nbscale.NotFoundError, match="nbscale secret create nope"):
        f.remote("TOKEN")


def write(path: str, text: str) -> int:
    Path(path).write_text(text)
    return os.getpid()


def read(path: str) -> tuple[int, str]:
    return os.getpid(), Path(path).read_text()


def test_a_volume_written_by_one_worker_is_read_by_another(tmp_path: Path, fresh_plane):
    vol = nbscale.Volume.from_name("shared", create_if_missing=True)
    mount = str(tmp_path / "mnt" / "shared")  # a free path, under a writable parent
    app = nbscale.App("volumes", volumes={mount: vol})
    writer = app.function()(write)
    reader = app.function()(read)

    writer_pid = writer.remote(f"{mount}/note.txt", "from the writer")
    vol.commit()
    reader_pid, text = reader.remote(f"{mount}/note.txt")
    assert text == "from the writer" and reader_pid != writer_pid
    assert (vol.local_path / "note.txt").read_text() == "from the writer"  # persistent here
    assert os.path.realpath(mount) == str(vol.local_path.resolve())

    fresh_plane()  # another control plane, other workers: the data is still there
    later = nbscale.Volume.from_name("shared")
    reader_again = nbscale.App("later").function(volumes={mount: later})(read)
    assert reader_again.remote(f"{mount}/note.txt")[1] == "from the writer"


def test_a_path_a_process_cannot_take_is_refused_with_what_to_use(tmp_path: Path):
    vol = nbscale.Volume.from_name("refused", create_if_missing=True)
    taken = tmp_path / "taken"
    taken.mkdir()
    f = nbscale.App("taken").function(volumes={str(taken): vol})(read)
    with pytest.raises(nbscale.LaunchError) as caught:
        f.remote(str(taken / "x"))
    message = str(caught.value)
    assert f"cannot mount volume 'refused' at {taken}" in message
    assert "relative path or one under $HOME" in message
    assert list(taken.iterdir()) == []  # left as it was


def test_an_images_env_variables_reach_worker_processes_and_the_rest_is_said_unbuilt(capsys):
    """A Modal program's image on local processes: not built (they run this environment),
    but its ``env`` variables are set, under the function's own ``env``, which wins."""
    image = nbscale.Image.debian_slim().pip_install("numpy").env({"MODE": "fast", "LEVEL": "1"})
    app = nbscale.App("image-env")
    fn = app.function(image=image, env={"LEVEL": "2"}, scaledown_window=30)(environment)
    _, seen = fn.remote("MODE", "LEVEL")
    assert seen == {"MODE": "fast", "LEVEL": "2"}
    printed = capsys.readouterr().out
    python = f"{sys.version_info.major}.{sys.version_info.minor}"
    assert (
        f"environment: its image debian_slim({python}).pip_install(1).env() is not built: the "
        "workers are local processes, which run this Python environment and its packages; "
        "its env variables apply (LEVEL, MODE)"
    ) in printed
