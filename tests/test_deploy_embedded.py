"""Without a Jupyter server nothing is deployed: the embedded control plane would lose it
with its process, and says so (the server's deployments: ``test_server_dict_queue.py``)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import nbscale

app = nbscale.App("refused")


@app.function()
def f(x: int) -> int:
    return x


def test_deploy_without_a_jupyter_server_is_refused_with_the_reason():
    with pytest.raises(nbscale.InvalidError, match="deploying needs the Jupyter server's"):
        app.deploy()
    with pytest.raises(nbscale.NotFoundError, match="no deployed app 'refused'"):
        nbscale.Function.from_name("refused", "f")


def error_without_a_server(tmp_path: Path, *command: str) -> str:
    """The one line ``nbscale COMMAND`` prints when no Jupyter server runs (it exits 1)."""
    env = {**os.environ, "JUPYTER_RUNTIME_DIR": str(tmp_path)}  # no server runs there
    env.pop("NBSCALE_CONNECTION_FILE", None)
    proc = subprocess.run(
        [sys.executable, "-m", "nbscale", *command],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert proc.returncode == 1
    [line] = proc.stderr.splitlines()
    return line


def test_nbscale_deploy_without_a_server_says_so_in_one_line(tmp_path: Path):
    script = tmp_path / "one.py"
    script.write_text("import nbscale\napp = nbscale.App('one')\n@app.function()\ndef g(): pass\n")
    line = error_without_a_server(tmp_path, "deploy", str(script))
    assert line.startswith("nbscale: error: deploying needs the Jupyter server's control plane")


@pytest.mark.parametrize("command", [["list"], ["stop", "some-app"]])
def test_nbscale_apps_without_a_server_says_there_is_none(tmp_path: Path, command: list[str]):
    line = error_without_a_server(tmp_path, "apps", *command)
    assert line.startswith("nbscale: error: deployed apps live on the Jupyter server's"), line
