"""Ported Modal programs, each run with `nbscale run` (the notebook with nbclient) on worker
processes, and what they print checked against their functions run locally; the batch
program detached from a real Jupyter server, its results fetched after it ended."""

from __future__ import annotations

from pathlib import Path

import pytest
from programs import PROGRAMS, SCRIPTS, check_notebook, run_notebook, run_program, run_script
from servers import check_batch_detach

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("name", sorted(PROGRAMS))
def test_program(name: str, tmp_path: Path) -> None:
    run_program(name, "process", tmp_path)


@pytest.mark.parametrize("name", sorted(SCRIPTS))
def test_script(name: str, tmp_path: Path) -> None:
    run_script(name, "process", tmp_path)


def test_notebook_with_app_run(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NBSCALE_LAUNCHER", "process")
    monkeypatch.delenv("NBSCALE_CONNECTION_FILE", raising=False)
    check_notebook(run_notebook())


def test_batch_detached_keeps_running_after_the_script(tmp_path: Path) -> None:
    check_batch_detach("process", tmp_path)
