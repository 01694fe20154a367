"""The ported Modal programs of test_modal_programs.py again, their workers Docker
containers: each run with `nbscale run`, the notebook with nbclient, the batch program
detached from a Jupyter server whose workers are containers. Nothing of nbscale is left on
the engine afterwards (the docker_plane fixture checks)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from programs import PROGRAMS, SCRIPTS, check_notebook, run_notebook, run_program, run_script
from servers import check_batch_detach

pytestmark = [pytest.mark.docker, pytest.mark.timeout(420)]  # first builds of images


@pytest.mark.parametrize("name", sorted(PROGRAMS))
def test_program(name: str, tmp_path: Path, docker_plane: Any) -> None:
    run_program(name, "docker", tmp_path)


@pytest.mark.parametrize("name", sorted(SCRIPTS))
def test_script(name: str, tmp_path: Path, docker_plane: Any) -> None:
    run_script(name, "docker", tmp_path)


def test_notebook_with_app_run(monkeypatch: pytest.MonkeyPatch, docker_plane: Any) -> None:
    monkeypatch.delenv("NBSCALE_CONNECTION_FILE", raising=False)
    check_notebook(run_notebook())  # docker_plane has set NBSCALE_LAUNCHER=docker


def test_batch_detached_keeps_running_after_the_script(tmp_path: Path, docker_plane: Any) -> None:
    check_batch_detach("docker", tmp_path)
