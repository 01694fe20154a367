"""A warm spare's runtime (``python -m nbscale_runtime --wait``) in a real interpreter:
it becomes a worker when its config appears, and exits 0, never serving, once its
control plane stops refreshing its ``alive`` file."""

from __future__ import annotations

import os
import subprocess
import sys
import time

from nbscale_runtime.spare import ALIVE_FILE


def spare(tmp_path, stale: float) -> subprocess.Popen[str]:
    (tmp_path / ALIVE_FILE).touch()
    config = str(tmp_path / "worker.json")
    return subprocess.Popen(
        [sys.executable, "-m", "nbscale_runtime", "--config", config, "--wait", str(stale)],
        stderr=subprocess.PIPE,
        text=True,
    )


def test_a_spare_exits_once_its_alive_file_goes_stale(tmp_path):
    proc = spare(tmp_path, stale=1.0)
    deadline = time.monotonic() + 2.5
    while time.monotonic() < deadline:  # its control plane keeps it alive
        os.utime(tmp_path / ALIVE_FILE)
        time.sleep(0.2)
    assert proc.poll() is None
    _, err = proc.communicate(timeout=10)  # left alone: gone within its stale time
    assert proc.returncode == 0 and err == ""


def test_a_spare_becomes_the_worker_its_config_names(tmp_path):
    proc = spare(tmp_path, stale=30.0)
    time.sleep(0.5)
    assert proc.poll() is None
    config = tmp_path / "config.json"  # linked in whole, as the launcher does
    config.write_text('{"worker_id": "wk-spare", "pool_id": "pl-x", "endpoint": "tcp://[::1]:1"}')
    os.link(config, tmp_path / "worker.json")
    time.sleep(0.2)
    (tmp_path / ALIVE_FILE).unlink()  # a spare still waiting would exit now
    time.sleep(1.0)
    assert proc.poll() is None  # a worker: it dials its endpoint (nobody listens there)
    proc.kill()
    proc.communicate()
