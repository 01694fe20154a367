"""What the browser tests of the sidebar share: ``jupyter lab`` in a subprocess with this
checkout's sidebar, client scripts that use its control plane, Debian's Chromium through
Playwright (its sync API), and screenshots in ``tests/artifacts/``.

The test modules import the two fixtures below that keep pytest-jupyter off Playwright's
event loop; ``browser`` and ``page`` are in ``conftest.py``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from jupyter_process import JupyterProcess

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = Path(__file__).resolve().parent / "artifacts"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

# A client of the server's control plane: maps `slow_square` over range(n), each input
# sleeping a while. print() output goes back to the caller; what is written to the worker's
# own stdout (as C libraries do) lands in the container's log, which the panel shows.
CLIENT = """
import os, sys, time
import nbscale

n, pause, max_containers = int(sys.argv[1]), float(sys.argv[2]), int(sys.argv[3])
app = nbscale.App("sidebar")

@app.function(max_containers=max_containers, scaledown_window=60)
def slow_square(x):
    os.write(1, f"low-level output for input {x}\\n".encode())
    time.sleep(pause)
    return x * x

print("MODE", nbscale.status()["mode"], flush=True)
try:
    results = list(slow_square.map(range(n)))
except nbscale.CallCancelledError:
    print("CANCELLED", flush=True)
else:
    print("RESULTS", len(results), results == [x * x for x in range(n)], flush=True)
"""


class Lab(JupyterProcess):
    """`jupyter lab` in a subprocess, with its own settings and workspace dirs."""

    def __init__(self, tmp: Path, server_extension: bool = True, launcher: str = "process") -> None:
        config: dict[str, Any] = {
            "NbScale": {"heartbeat_interval": 0.5, "max_workers_total": 4, "launcher": launcher}
        }
        if not server_extension:
            config["ServerApp"] = {"jpserver_extensions": {"nbscale_server": False}}
        settings_dir = tmp / "settings"
        # No news or update pop-ups over the panel (nor their network requests).
        notification = settings_dir / "@jupyterlab" / "apputils-extension"
        notification.mkdir(parents=True)
        (notification / "notification.jupyterlab-settings").write_text(
            json.dumps({"fetchNews": "false", "checkForUpdates": False})
        )
        # This checkout's sidebar, ahead of any installed copy (the first one found wins).
        built = ROOT / "nbscale" / "labextension"
        assert (built / "package.json").is_file(), "build it: cd labextension && jlpm build"
        extensions = tmp / "labextensions"
        extensions.mkdir()
        (extensions / "nbscale").symlink_to(built)
        app = [
            "jupyterlab",
            "--ip=127.0.0.1",
            f"--LabApp.extra_labextensions_path={extensions}",
            f"--LabApp.user_settings_dir={settings_dir}",
            f"--LabApp.workspaces_dir={tmp / 'workspaces'}",
            "--LabApp.expose_app_in_browser=True",
            "--LabApp.news_url=None",
            "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
        ]
        super().__init__(tmp, app, config, "api/status", start_timeout=90)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/lab?token={self.token}"

    def api(self, path: str) -> Any:
        """GET a route of the nbscale REST API."""
        return self.request("GET", f"nbscale/api/{path}")

    def start_map(self, n: int, pause: float, max_containers: int) -> subprocess.Popen[str]:
        """A client process mapping over ``n`` inputs through this server's control plane."""
        return self.start_client(CLIENT, n, pause, max_containers)

    def start_client(
        self, source: str, *args: object, name: str = "client.py"
    ) -> subprocess.Popen[str]:
        """Run the script ``source`` (as ``name``, which becomes its owner's label) with
        ``args``, as a client of this server's control plane; its stdin is a pipe."""
        [connection_file] = self.runtime_dir.glob("nbscale-*.json")
        script = self.tmp / name
        script.write_text(source)
        env = dict(os.environ, NBSCALE_CONNECTION_FILE=str(connection_file))
        return subprocess.Popen(
            [sys.executable, str(script), *map(str, args)],
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )


def finish(proc: subprocess.Popen[str], timeout: float = 60) -> str:
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, _ = proc.communicate()
        pytest.fail(f"the client did not finish:\n{out}")
    return out


# pytest-jupyter's autouse fixtures take the running event loop and, after each test, clean
# up an in-process Jupyter server on it and close it. Here the servers are subprocesses and
# the running loop is Playwright's (its sync API runs one for the module): leave it be.
@pytest.fixture(autouse=True)
def jp_asyncio_loop() -> None:
    return None


@pytest.fixture(autouse=True)
def jp_server_cleanup() -> None:
    return None


def open_sidebar(page: Any, lab: Lab) -> Any:
    page.goto(lab.url)
    tab = page.locator("li[data-id='nbscale-sidebar']")
    tab.wait_for()
    tab.click()
    panel = page.locator("#nbscale-sidebar")
    panel.wait_for()
    return panel


def shot(target: Any, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    target.screenshot(path=str(ARTIFACTS / f"sidebar-{name}.png"))


def stat(card: Any, name: str) -> int:
    return int(card.locator(f"[data-stat='{name}']").get_attribute("data-value"))
