"""A full disk fails what hit it, with the path and the reason, and nothing else.

Small tmpfs mounts filled to the last byte stand for the full disks: under the control
plane's private directory (worker configs, worker logs), and as a Jupyter server's runtime
directory (its connection file).
"""

from __future__ import annotations

import asyncio
import os
import re
import tempfile
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import fill
from jupyter_process import JupyterProcess, Kernel

import nbscale
from nbscale.exceptions import LaunchError

app = nbscale.App("test-disk-full")


@app.function(min_containers=1, max_containers=1, scaledown_window=60)
def warm(x):
    return x


@app.function(max_containers=1, scaledown_window=60)
def cold(x):
    return x


@app.function(min_containers=1, max_containers=1, scaledown_window=60)
def loud(x):
    for _ in range(2000):
        print("a line the worker's log cannot take " * 4)
    return x * 2


def test_a_full_disk_fails_launches_with_the_path_and_running_pools_go_on(
    mount_tmpfs: Callable[[str, int], Path], monkeypatch, fresh_plane, capsys
):
    tmp = mount_tmpfs("tmp", 8192)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp))  # the control plane's private dir
    fresh_plane()
    assert warm.remote(1) == 1 and loud.remote(0) == 0  # live workers, then the disk fills
    capsys.readouterr()
    fill(tmp)
    with pytest.raises(LaunchError, match="No space left on device") as failed:
        cold.remote(1)
    named = rf"{tmp}/nbscale-\w+/wk-\w+\.(json|log|register)"
    assert re.search(named, str(failed.value)), failed.value
    # Housekeeping goes on for every other pool, and a worker whose log is full keeps
    # running its input: its output reaches the caller, with a note.
    assert warm.remote(2) == 2
    assert loud.remote(21) == 42
    out = capsys.readouterr().out
    assert "a line the worker's log cannot take" in out
    assert "cannot write the worker's log" in out and "No space left on device" in out


def test_a_full_runtime_dir_at_server_start_is_an_error_kernels_are_told(
    mount_tmpfs: Callable[[str, int], Path], tmp_path: Path
):
    runtime = mount_tmpfs("run", 64)
    # Room for the two small files the Jupyter server writes there itself, not for ours.
    filler = fill(runtime)
    os.truncate(filler, filler.stat().st_size - 2 * 4096)
    config = {
        "ServerApp": {
            "jpserver_extensions": {"nbscale_server": True},
            "cookie_secret_file": str(tmp_path / "cookie_secret"),
        },
        "NbScale": {"launcher": "process"},
    }
    server = JupyterProcess(
        tmp_path, ["jupyter", "server"], config, "api/status", runtime_dir=runtime
    )
    try:
        assert list(runtime.glob("nbscale-*")) == []  # no empty connection file left
        log = server.log_path.read_text()
        assert f"cannot write the connection file {runtime}/nbscale-" in log, log
        assert "No space left on device" in log
        status = server.request_status("nbscale/api/status")
        assert status[0] == 503 and "could not start" in status[1]["message"], status
        filler.unlink()  # space again, for the kernel's own files: it is told all the same

        async def in_a_kernel() -> str:
            started = await asyncio.to_thread(
                server.request, "POST", "api/kernels", {"name": "python3"}
            )
            kernel = await Kernel.connect(runtime / f"kernel-{started['id']}.json")
            try:
                return await kernel.run(
                    "import nbscale\n"
                    "try:\n    nbscale.status()\n"
                    "except nbscale.exceptions.ControlPlaneError as e:\n    print('TOLD', e)\n"
                )
            finally:
                kernel.close()

        told = asyncio.run(in_a_kernel())
        assert told.startswith("TOLD the Jupyter server's nbscale control plane could not start")
        assert f"{runtime}/nbscale-" in told and "No space left on device" in told
    finally:
        server.stop()
