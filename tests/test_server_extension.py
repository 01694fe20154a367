"""The Jupyter server extension: enabled on install, configured by traits, found by kernels."""

from __future__ import annotations

import asyncio
import json
import os
import stat
import subprocess
import sys
from typing import Any

import pytest

import nbscale
import nbscale_server
from nbscale._config import SETTINGS
from nbscale_server.discovery import ENV_VAR
from nbscale_server.extension import NbScale

app = nbscale.App("test-server-extension")


@app.function(max_containers=1, scaledown_window=30)
def double(x):
    return 2 * x


def test_every_setting_is_documented():
    traits = NbScale.class_own_traits(config=True)
    assert {"launcher", "max_workers_total", "worker_transport", "python"} <= set(traits)
    undocumented = [name for name, trait in traits.items() if len(trait.help) < 20]
    assert undocumented == []


def test_jupyter_finds_the_extension_app():
    [point] = nbscale_server._jupyter_server_extension_points()
    assert point == {"module": "nbscale_server", "app": NbScale}
    assert NbScale.name == "nbscale"


def test_the_installed_package_enables_the_extension():
    result = subprocess.run(
        [sys.executable, "-m", "jupyter", "server", "extension", "list"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    output = result.stdout + result.stderr
    lines = [line for line in output.splitlines() if "nbscale_server" in line]
    assert any("enabled" in line for line in lines), output
    assert any(f"nbscale_server {nbscale.__version__} " in line and "OK" in line for line in lines)


def test_auto_is_the_default_launcher_here_as_in_kernels():
    assert NbScale().launcher == "auto" == SETTINGS["launcher"].default


@pytest.fixture
def jp_server_config(jp_server_config: dict[str, Any]) -> dict[str, Any]:
    jp_server_config["NbScale"].update(
        max_workers_total=3,
        max_pending_inputs=50,
        max_inputs_in_flight_per_map=20,
        worker_transport="tcp",
        heartbeat_timeout=7.5,
        stop_grace=2.0,
    )
    return jp_server_config


async def test_traits_configure_the_control_plane(nbscale_ext):
    config = nbscale_ext.control_plane.config
    assert config.max_workers_total == 3
    assert config.limits.max_pending_inputs == 50
    assert config.limits.max_inputs_in_flight_per_map == 20
    assert config.worker_transport == "tcp"
    assert config.heartbeat_timeout == 7.5 and config.stop_grace == 2.0
    # workers reach it over CurveZMQ, and kernels learn its limits when they connect
    assert await asyncio.to_thread(lambda: list(double.map(range(30)))) == [
        2 * x for x in range(30)
    ]
    info = await asyncio.to_thread(nbscale.status)
    assert info["worker_endpoint"].startswith("tcp://127.0.0.1:")
    assert info["limits"]["max_inputs_in_flight_per_map"] == 20


async def test_kernels_find_the_server_control_plane_until_it_stops(nbscale_ext, jp_runtime_dir):
    plane = nbscale_ext.control_plane
    path = os.environ[ENV_VAR]
    assert os.path.dirname(path) == str(jp_runtime_dir)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    with open(path) as f:
        assert json.load(f)["client_endpoint"] == plane.client_endpoint

    info = await asyncio.to_thread(nbscale.status)
    assert info["mode"] == "server"
    assert info["client_endpoint"] == plane.client_endpoint
    assert info["pid"] == os.getpid()

    await asyncio.to_thread(nbscale.shutdown)
    await nbscale_ext.stop_extension()
    assert not os.path.exists(path)
    assert ENV_VAR not in os.environ
    assert (await asyncio.to_thread(nbscale.status))["mode"] == "embedded"


def test_a_connection_file_left_by_a_dead_server_is_an_error_not_a_private_plane(
    tmp_path, monkeypatch
):
    """A kernel whose Jupyter server is gone (and not restarted) is told so: it does not
    start a control plane of its own in place of the server's, with other pools and
    limits."""
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    stale = tmp_path / "nbscale-stale.json"
    info = {"client_endpoint": "ipc:///nowhere/clients", "pid": gone.pid}
    stale.write_text(json.dumps({**info, "jupyter_server_url": "http://localhost:8888/"}))
    nbscale.shutdown()
    monkeypatch.setenv(ENV_VAR, str(stale))
    try:
        with pytest.raises(nbscale.ConnectionLostError) as lost:
            nbscale.status()
        assert str(lost.value).startswith(
            "the control plane at ipc:///nowhere/clients (Jupyter server "
            "http://localhost:8888/) is gone, and no restarted Jupyter server serves "
            "http://localhost:8888/: start the Jupyter server again"
        )
        assert "unset NBSCALE_CONNECTION_FILE" in str(lost.value)
    finally:
        nbscale.shutdown()
