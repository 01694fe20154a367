"""The sidebar's panel in a real JupyterLab in a 760 px wide window (a laptop's half
screen): no container cell wraps, the active pool comes first and a stopped one folds away
after a minute, uptimes tick between updates, a container's output streams with times and
input numbers, Cancel asks first, a call's ``FunctionCall.from_id(...)`` line is copied, a
Docker row names its container and image, two notebooks' pools are grouped by notebook
with a "this notebook" filter, and an app deployed or stopped meanwhile is listed or unlisted
live. Screenshots of each state land in ``tests/artifacts/``."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import nbformat
import pytest
from conftest import fresh_python_stdout, wait_until
from engine_leftovers import left_on_engine
from sidebar_lab import (  # noqa: F401 - the jp_ fixtures, used by name
    Lab,
    finish,
    jp_asyncio_loop,
    jp_server_cleanup,
    open_sidebar,
    shot,
)

NARROW = {"width": 760, "height": 1000}

# One client, so one owner, with three pools: one idle, one the test stops, then one busy.
SCENARIO = """
import os, sys, time
import nbscale

n, pause = int(sys.argv[1]), float(sys.argv[2])
app = nbscale.App("panel")

@app.function(max_containers=1, scaledown_window=300)
def idle_first(x):
    return x

@app.function(max_containers=1, scaledown_window=300)
def stopped_later(x):
    return x

@app.function(max_containers=2, scaledown_window=300)
def busy_later(x):
    print(f"input {x} starts", flush=True)
    time.sleep(pause)
    print(f"input {x} ends", flush=True)
    return x

idle_first.remote(0)
stopped_later.remote(0)
print("READY", flush=True)
sys.stdin.readline()  # the test stops `stopped_later` meanwhile
try:
    print("RESULTS", list(busy_later.map(range(n))) == list(range(n)), flush=True)
except nbscale.CallCancelledError:
    print("CANCELLED", flush=True)
"""

# Cards whose content is wider than they are (a long image name pushed past the edge).
_OVERFLOWING = """panel => Array.from(panel.querySelectorAll('.nbscale-Pool, .nbscale-Call'))
  .filter(card => card.scrollWidth > card.clientWidth + 1)
  .map(card => card.outerHTML.slice(0, 200))"""

# Each cell's geometry: one line tall, and whether its text fits (scrollWidth).
_ROWS = """panel => Array.from(panel.querySelectorAll('.nbscale-Container')).map(row => ({
  height: row.getBoundingClientRect().height,
  cells: Array.from(row.querySelectorAll("[role='cell']")).map(cell => ({
    name: cell.className,
    height: cell.getBoundingClientRect().height,
    line: parseFloat(getComputedStyle(cell).lineHeight),
    fits: cell.scrollWidth <= cell.clientWidth + 1,
  })),
}))"""


def _read_until(proc: subprocess.Popen[str], marker: str) -> str:
    """The client's output up to the line starting with ``marker``."""
    seen = []
    assert proc.stdout is not None
    for line in proc.stdout:
        seen.append(line)
        if line.startswith(marker):
            return "".join(seen)
    pytest.fail(f"the client ended before {marker}:\n{''.join(seen)}")


def _pool_ids(lab: Lab) -> dict[str, str]:
    return {p["function"]: p["id"] for p in lab.api("pools")}


def _card(panel: Any, pool_id: str) -> Any:
    return panel.locator(f".nbscale-Pool[data-pool-id='{pool_id}']")


def _stop(proc: subprocess.Popen[str] | None) -> None:
    if proc is not None and proc.poll() is None:
        proc.kill()
        proc.communicate()


@pytest.mark.browser
@pytest.mark.timeout(420)
def test_the_panel_holds_at_760_px_orders_pools_and_streams_logs(tmp_path: Path, page: Any) -> None:
    page.set_viewport_size(NARROW)
    page.context.grant_permissions(["clipboard-read", "clipboard-write"])
    lab = Lab(tmp_path)
    client = None
    try:
        panel = open_sidebar(page, lab)
        assert panel.bounding_box()["width"] < 320  # JupyterLab's sidebar in a 760 px window
        launcher = panel.locator(".nbscale-Launcher")
        launcher.wait_for()
        assert launcher.get_attribute("data-launcher") == "process"
        assert "Workers run as local processes: launcher=process" in launcher.inner_text()

        client = lab.start_client(SCENARIO, 60, 0.5, name="sweep.py")
        _read_until(client, "READY")
        ids = _pool_ids(lab)
        idle, stopped = ids["idle_first"], ids["stopped_later"]
        _card(panel, stopped).wait_for()

        # Stop a pool from its card, through the confirmation it always had.
        _card(panel, stopped).locator(".nbscale-Stop").click()
        page.locator(".jp-Dialog-button", has_text="Stop pool").click()
        _card(panel, stopped).and_(panel.locator("[data-activity='stopped']")).wait_for()
        stopped_at = time.monotonic()

        # The pool with work comes first, then the idle one, then the stopped one.
        assert client.stdin is not None
        client.stdin.write("GO\n")
        client.stdin.flush()
        wait_until(lambda: "busy_later" in _pool_ids(lab), timeout=30)
        busy = _pool_ids(lab)["busy_later"]
        busy_card = _card(panel, busy)
        busy_card.and_(panel.locator("[data-activity='active']")).wait_for()
        order = [c.get_attribute("data-pool-id") for c in panel.locator(".nbscale-Pool").all()]
        assert order == [busy, idle, stopped]
        group = panel.locator(".nbscale-Owner")
        assert (
            group.count() == 1 and "sweep.py" in group.locator(".nbscale-Owner-name").inner_text()
        )
        assert busy_card.get_attribute("data-owner") == "sweep.py"

        # No container cell wraps at this width: each is one line tall, every row as tall
        # as the others, and a process's id and pid are shown whole.
        wait_until(lambda: busy_card.locator(".nbscale-Container").count() == 2, timeout=30)
        # (a container starting or leaving elsewhere may be on show a moment: CI saw 4 rows once)
        wait_until(lambda: len(panel.evaluate(_ROWS)) == 3, timeout=30)
        rows = panel.evaluate(_ROWS)
        assert len(rows) == 3, rows  # busy_later's two and idle_first's one
        for row in rows:
            assert abs(row["height"] - rows[0]["height"]) <= 1, rows
            for cell in row["cells"]:
                assert cell["height"] <= 1.25 * cell["line"], (cell, rows)
                if "name" in cell["name"]:
                    assert cell["fits"], (cell, rows)
        assert panel.evaluate(_OVERFLOWING) == []
        shot(page, "760-active-first")

        # A container's output streams while its row is open: times and input numbers.
        busy_card.locator(".nbscale-Container").first.click()
        lines = busy_card.locator(".nbscale-Log")
        lines.filter(has_text=re.compile(r"input \d+ starts")).first.wait_for()
        seen = lines.count()
        wait_until(lambda: lines.count() >= seen + 2, timeout=30, every=0.2)
        for line in lines.filter(has_text=re.compile(r"input \d+ (starts|ends)")).all():
            text = line.locator(".nbscale-Log-text").inner_text()
            index = re.search(r"input (\d+)", text).group(1)  # type: ignore[union-attr]
            assert line.locator(".nbscale-Log-input").inner_text() == f"#{index}"
            assert re.fullmatch(r"\d\d:\d\d:\d\d", line.locator("time").inner_text())
        shot(panel, "760-streaming-logs")

        # Uptimes tick between updates: idle_first's pool does not change, so the server
        # does not send it again, and its container's uptime still moves on.
        uptime = _card(panel, idle).locator(".nbscale-Container-uptime")
        before = int(uptime.get_attribute("data-uptime"))
        wait_until(lambda: int(uptime.get_attribute("data-uptime")) >= before + 2, timeout=10)

        # Copy the line that gets the call's results from another kernel.
        call_row = panel.locator(".nbscale-Call[data-state='running']")
        call_id = call_row.get_attribute("data-call-id")
        call_row.locator(".nbscale-CopyId").click()
        copied = page.evaluate("() => navigator.clipboard.readText()")
        assert copied == f'nbscale.FunctionCall.from_id("{call_id}")'
        call_row.locator(".nbscale-Copied").wait_for()

        # Cancel asks first; keeping the call running keeps it running.
        call_row.locator(".nbscale-Cancel").click()
        dialog = page.locator(".jp-Dialog")
        dialog.wait_for()
        assert "Cancel this call?" in dialog.inner_text()
        shot(page, "760-cancel-asks")
        page.locator(".jp-Dialog-button", has_text="Keep running").click()
        dialog.wait_for(state="detached")
        time.sleep(1)
        assert not lab.api(f"calls/{call_id}")["cancelled"]
        call_row.locator(".nbscale-Cancel").click()
        page.locator(".jp-Dialog-button", has_text="Cancel call").click()
        panel.locator(f".nbscale-Call[data-call-id='{call_id}'][data-state='cancelled']").wait_for()
        assert "CANCELLED" in finish(client)

        # A minute after its stop, the stopped pool folds away behind a toggle.
        toggle = panel.locator(".nbscale-ShowStopped")
        toggle.wait_for(timeout=(95 - (time.monotonic() - stopped_at)) * 1000)
        assert time.monotonic() - stopped_at >= 55
        assert toggle.inner_text() == "show 1 stopped"
        assert _card(panel, stopped).count() == 0
        shot(page, "760-stopped-folded")
        toggle.click()
        _card(panel, stopped).wait_for()
        assert toggle.inner_text() == "hide 1 stopped"
        # ... with its event log, newest first: its stop, then what came before.
        _card(panel, stopped).locator(".nbscale-ShowEvents").click()
        events = _card(panel, stopped).locator(".nbscale-PoolEvents li")
        assert "stopped: its calls cancelled" in events.first.inner_text()
        assert re.match(r"\d\d:\d\d:\d\d ", events.first.inner_text())
        _card(panel, stopped).scroll_into_view_if_needed()
        shot(page, "760-stopped-shown-with-events")
    finally:
        _stop(client)
        lab.stop()


DOCKER_CLIENT = """
import sys, time
import nbscale

app = nbscale.App("panel-docker")

@app.function(max_containers=1, scaledown_window=60)
def in_a_container(x):
    print(f"container input {x}", flush=True)
    time.sleep(0.2)
    return x

print("RESULTS", list(in_a_container.map(range(int(sys.argv[1])))), flush=True)
"""


@pytest.mark.browser
@pytest.mark.docker
@pytest.mark.timeout(300)
def test_a_docker_row_names_its_container_and_image(tmp_path: Path, page: Any) -> None:
    import docker

    engine = docker.from_env()
    page.set_viewport_size(NARROW)
    lab = Lab(tmp_path, launcher="docker")
    client = None
    try:
        panel = open_sidebar(page, lab)
        panel.locator(".nbscale-Launcher[data-launcher='docker']").wait_for()
        client = lab.start_client(DOCKER_CLIENT, 20)
        row = panel.locator(".nbscale-Container")
        row.first.wait_for(timeout=120_000)
        [worker] = [w for p in lab.api("pools") for w in p["workers"]]
        ours = {"label": f"nbscale.worker={worker['id']}"}
        # The row shows a worker as soon as it is launched; its container is created a moment
        # later, on the launcher's thread.
        wait_until(lambda: engine.containers.list(filters=ours, ignore_removed=True), timeout=60)
        [container] = engine.containers.list(filters=ours, ignore_removed=True)
        name = row.first.locator(".nbscale-Container-name")
        assert name.inner_text() == container.name == f"nbscale-{worker['id']}"
        assert "pid" not in name.inner_text()  # the pid inside a container says nothing
        assert panel.evaluate(_OVERFLOWING) == []  # nor does the image's long name
        row.first.click()
        about = panel.locator(".nbscale-Logs-about")
        assert about.inner_text().startswith(f"container {container.name} · image nbscale/")
        panel.locator(".nbscale-Log", has_text="container input").first.wait_for()
        spares = panel.locator(".nbscale-Spares")  # one starts a second after the worker's
        spares.wait_for(timeout=60_000)
        assert spares.inner_text() == "1 warm spare container waits for a new pool's first worker"
        [spare] = (spares.get_attribute("title") or "").splitlines()
        assert engine.containers.get(spare).labels["nbscale.pool"] == ""  # in no pool
        shot(page, "760-docker-row")
        assert "RESULTS" in finish(client, timeout=120)
    finally:
        _stop(client)
        lab.stop()
    left = left_on_engine(engine, lab.proc.pid)
    assert not left, f"left behind on the Docker engine: {left}"


NOTEBOOK_CELL = """\
import nbscale

app = nbscale.App("{name}")

@app.function(max_containers=1, scaledown_window=300)
def from_{name}(x):
    return x + 1

from_{name}.remote(1)
"""


def _notebook(root: Path, name: str) -> None:
    notebook = nbformat.v4.new_notebook(
        cells=[nbformat.v4.new_code_cell(NOTEBOOK_CELL.format(name=name))],
        metadata={
            "kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}
        },
    )
    nbformat.write(notebook, root / f"{name}.ipynb")


def _run_notebook(page: Any, path: str) -> None:
    """Open ``path`` (it becomes the current document) and run all its cells."""
    page.evaluate(
        """async path => {
            const app = window.jupyterapp;
            const notebook = await app.commands.execute('docmanager:open', { path });
            await notebook.context.ready;
            await notebook.sessionContext.ready;
            app.shell.activateById(notebook.id);
            await app.commands.execute('notebook:run-all-cells');
        }""",
        path,
    )


@pytest.mark.browser
@pytest.mark.timeout(300)
def test_two_notebooks_pools_are_grouped_by_notebook(tmp_path: Path, page: Any) -> None:
    page.set_viewport_size(NARROW)
    for name in ("alpha", "beta"):
        _notebook(tmp_path, name)
    lab = Lab(tmp_path)
    try:
        panel = open_sidebar(page, lab)
        groups = panel.locator(".nbscale-Owner")
        _run_notebook(page, "alpha.ipynb")
        panel.locator(".nbscale-Owner[data-current='true']", has_text="from_alpha").wait_for(
            timeout=90_000
        )
        _run_notebook(page, "beta.ipynb")
        panel.locator(".nbscale-Owner", has_text="from_beta").wait_for(timeout=90_000)

        # One group per notebook, named after it, with its own pool; the current one first.
        wait_until(lambda: groups.first.get_attribute("data-current") == "true", timeout=10)
        names = [g.locator(".nbscale-Owner-name").inner_text() for g in groups.all()]
        assert names == ["beta.ipynb", "alpha.ipynb"]
        beta, alpha = groups.all()
        assert beta.locator(".nbscale-Pool-function").all_inner_texts() == ["from_beta"]
        assert alpha.locator(".nbscale-Pool-function").all_inner_texts() == ["from_alpha"]
        assert "this notebook" in beta.locator(".nbscale-Owner-title").inner_text()
        assert re.search(r"kernel [0-9a-f]{8}", alpha.locator(".nbscale-Owner-detail").inner_text())
        shot(page, "760-two-notebooks")

        # "This notebook": only the current notebook's group, following the user's tab.
        panel.locator(".nbscale-Filter-option[data-filter='current']").click()
        wait_until(lambda: groups.count() == 1, timeout=10)
        assert groups.locator(".nbscale-Owner-name").inner_text() == "beta.ipynb"
        shot(page, "760-this-notebook")
        page.locator(".lm-TabBar-tab", has_text="alpha.ipynb").click()
        panel.locator(".nbscale-Owner-name", has_text="alpha.ipynb").wait_for()
        assert groups.count() == 1
        panel.locator(".nbscale-Filter-option[data-filter='all']").click()
        wait_until(lambda: groups.count() == 2, timeout=10)
    finally:
        lab.stop()


DEPLOYED_APP = """
import nbscale

app = nbscale.App("nightly-etl")


@app.function()
def extract(x):
    return x


@app.cls()
class Loader:
    @nbscale.method()
    def load(self, x):
        return x
"""


def _nbscale_command(lab: Lab, *args: str) -> str:
    [connection_file] = lab.runtime_dir.glob("nbscale-*.json")
    env = dict(os.environ, NBSCALE_CONNECTION_FILE=str(connection_file))
    done = subprocess.run(
        [sys.executable, "-m", "nbscale", *args],
        env=env,
        cwd=lab.tmp,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.mark.browser
@pytest.mark.timeout(300)
def test_an_app_deployed_or_stopped_is_listed_live(tmp_path: Path, page: Any) -> None:
    page.set_viewport_size(NARROW)
    lab = Lab(tmp_path)
    try:
        panel = open_sidebar(page, lab)
        panel.locator(".nbscale-Launcher").wait_for()
        apps = panel.locator(".nbscale-Apps")
        assert apps.count() == 0  # nothing deployed: no section

        # deployed from a terminal while the panel is open: listed without a reload
        (tmp_path / "etl.py").write_text(DEPLOYED_APP)
        _nbscale_command(lab, "deploy", "etl.py")
        apps.wait_for(timeout=30_000)
        assert apps.locator("summary").inner_text() == "Deployed apps (1)"
        apps.locator("summary").click()
        entry = apps.locator("li[data-app='nightly-etl']")
        assert entry.inner_text() == "nightly-etl: extract, Loader"
        shot(panel, "760-deployed-app")

        # called by name from a script: its pool is listed under the app, for every caller
        [connection_file] = lab.runtime_dir.glob("nbscale-*.json")
        extract = 'nbscale.Function.from_name("nightly-etl", "extract")'
        call = f"import nbscale; print({extract}.remote(5))"
        env = dict(os.environ, NBSCALE_CONNECTION_FILE=str(connection_file))
        assert fresh_python_stdout(call, env=env, timeout=120).strip() == "5"
        group = panel.locator(".nbscale-Owner[data-owner='app:nightly-etl']")
        group.wait_for(timeout=30_000)
        assert group.locator(".nbscale-Owner-name").inner_text() == "app nightly-etl"
        assert "deployed app" in group.locator(".nbscale-Owner-detail").inner_text()
        assert "nightly-etl/extract" in group.inner_text()

        _nbscale_command(lab, "apps", "stop", "nightly-etl")
        apps.wait_for(state="detached", timeout=30_000)
    finally:
        lab.stop()
