"""A map's view under its notebook cell, in a real JupyterLab driven by headless Chromium:
real notebooks run by real kernels on the server's control plane, drawn by the extension's
renderer (``labextension/src/mapview.ts``).

One JupyterLab for the module; each test opens notebooks of its own. Screenshots of each
state land in ``tests/artifacts/`` (``view-*.png``).
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Iterator
from typing import Any

import nbformat
import pytest
from conftest import wait_until
from sidebar_lab import (  # noqa: F401 - the jp_ fixtures, used by name
    ARTIFACTS,
    Lab,
    jp_asyncio_loop,
    jp_server_cleanup,
)

pytestmark = pytest.mark.browser
MAP = "application/vnd.nbscale.map+json"

SETUP = """\
import time, nbscale
app = nbscale.App("view")

@app.function(max_containers=2, scaledown_window=30)
def square(x, pause=0.0):
    time.sleep(pause)
    if x % 100 == 99:
        raise ValueError(f"bad {x}")
    print(f"working on {x}")
    return x * x
"""


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    server = Lab(tmp_path_factory.mktemp("lab"))
    yield server
    server.stop()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1280, "height": 1000})
    page = context.new_page()
    page.set_default_timeout(60_000)
    yield page
    context.close()


def shot(target: Any, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    target.screenshot(path=str(ARTIFACTS / f"view-{name}.png"))


def write_notebook(lab: Lab, name: str, cells: list[str]) -> None:
    nb = nbformat.v4.new_notebook(
        cells=[nbformat.v4.new_code_cell(source) for source in cells],
        metadata={"kernelspec": {"name": "python3", "display_name": "Python 3"}},
    )
    body = {"type": "notebook", "format": "json", "content": json.loads(nbformat.writes(nb))}
    lab.request("PUT", f"api/contents/{name}", body)


def saved_outputs(lab: Lab, name: str) -> list[dict[str, Any]]:
    model = lab.request("GET", f"api/contents/{name}?content=1")
    return [out for cell in model["content"]["cells"] for out in cell.get("outputs", [])]


def saved_view(lab: Lab, name: str) -> dict[str, Any]:
    """The MIME bundle of the one map view the saved notebook has."""
    [bundle] = [o["data"] for o in saved_outputs(lab, name) if MAP in o.get("data", {})]
    return dict(bundle)


def mapping(n: int, pause: float = 0.0) -> str:
    """A cell that maps ``square`` over ``n`` inputs, each taking ``pause`` seconds."""
    return f"r = list(square.map(range({n}), kwargs={{'pause': {pause}}}, return_exceptions=True))"


def open_lab(page: Any, lab: Lab) -> None:
    """JupyterLab in a workspace of its own (no tabs restored from another test)."""
    workspace = uuid.uuid4().hex[:8]
    page.goto(f"http://127.0.0.1:{lab.port}/lab/workspaces/{workspace}?token={lab.token}")
    page.wait_for_function("() => window.jupyterapp && window.jupyterapp.shell")
    page.locator("#jp-main-dock-panel").wait_for()


def open_notebook(page: Any, path: str) -> Any:
    """Open ``path`` and wait for its kernel; the panel's locator."""
    panel_id = page.evaluate(
        """async path => {
            const app = window.jupyterapp;
            const panel = await app.commands.execute('docmanager:open', {path});
            await panel.sessionContext.ready;
            return panel.id;
        }""",
        path,
    )
    page.wait_for_function(
        """id => {
            const panel = window.jupyterapp.shell.currentWidget;
            const kernel = panel && panel.id === id && panel.sessionContext.session?.kernel;
            return kernel && kernel.status === 'idle';
        }""",
        arg=panel_id,
    )
    return page.locator(f"[id='{panel_id}']")


def run_all(page: Any, panel: Any) -> None:
    panel.click(position={"x": 5, "y": 5})  # the notebook is the current widget
    # not awaited: the command's promise ends with the cells
    page.evaluate("() => { window.jupyterapp.commands.execute('notebook:run-all-cells'); }")


def start_map(page: Any, lab: Lab, name: str, cells: list[str], done: int = 3) -> Any:
    """Write the notebook, open it, run it, and wait until its map's view counts ``done``
    results; the notebook's panel."""
    write_notebook(lab, name, cells)
    open_lab(page, lab)
    panel = open_notebook(page, name)
    run_all(page, panel)
    view = panel.locator(".nbscale-MapView")
    view.wait_for()
    wait_until(lambda: int(view_state(view)["done"] or 0) >= done, timeout=60, every=0.2)
    return panel


def view_state(view: Any) -> dict[str, str]:
    """What a view shows now, read at once."""
    return dict(
        view.evaluate(
            """node => ({
                status: node.dataset.status,
                final: node.dataset.final,
                percent: node.querySelector('.nbscale-MapView-percent')?.textContent ?? '',
                done: node.querySelector('.nbscale-MapView-counts')?.dataset.done ?? '',
                total: node.querySelector('.nbscale-MapView-counts')?.dataset.total ?? '',
                counts: node.querySelector('.nbscale-MapView-counts')?.textContent ?? '',
                summary: node.querySelector('.nbscale-MapView-summary')?.textContent ?? '',
            })"""
        )
    )


def test_the_bar_counts_a_known_total_and_its_percentage_matches_every_redraw(page, lab):
    write_notebook(
        lab,
        "bar.ipynb",
        [SETUP, mapping(2000, 0.003)],
    )
    open_lab(page, lab)
    panel = open_notebook(page, "bar.ipynb")
    run_all(page, panel)
    view = panel.locator(".nbscale-MapView")
    view.wait_for()
    samples: list[dict[str, str]] = []

    def sample() -> bool:
        samples.append(view_state(view))
        if len(samples) == 20:
            shot(panel, "1-bar-running")
        return samples[-1]["final"] == "true"

    wait_until(sample, timeout=180, every=0.1)
    running = [s for s in samples if s["final"] == "false" and s["done"]]
    assert len(running) >= 5, samples
    for s in running:
        assert s["total"] == "2000", s  # from len(): known from the first redraw
        failed = re.search(r"(\d+) failed", s["counts"])
        over = int(s["done"]) + (int(failed.group(1)) if failed else 0)
        assert s["percent"] == f"{over * 100 // 2000}%", s
    assert any(0 < int(s["done"]) < 1980 for s in running)
    final = view_state(view)
    assert final["status"] == "failed" and final["percent"] == "100%"
    assert final["summary"].startswith("square: 2,000 inputs · 1,980 done · 20 failed in ")
    shot(panel, "2-bar-finished")


def test_stop_in_one_notebook_leaves_the_other_notebooks_map_running(page, lab):
    """Two notebooks define the same function: each has a pool of its own, and
    ``%nbscale stop`` in one stops only its own."""
    write_notebook(
        lab, "a.ipynb", [SETUP, "r = list(square.map(range(40), kwargs={'pause': 0.25}))"]
    )
    write_notebook(
        lab, "b.ipynb", [SETUP, "square.remote(1)", "%load_ext nbscale", "%nbscale stop"]
    )
    open_lab(page, lab)
    a = open_notebook(page, "a.ipynb")
    run_all(page, a)
    view = a.locator(".nbscale-MapView")
    view.wait_for()
    wait_until(lambda: view_state(view)["done"] not in ("", "0"), timeout=60, every=0.2)
    b = open_notebook(page, "b.ipynb")
    run_all(page, b)
    b.locator(".jp-OutputArea-output", has_text="stopped pl-").wait_for()
    shot(page, "3-two-notebooks-b-stopped-its-pool")
    pools = {p["owner"]["name"]: p for p in lab.api("pools") if p["function"] == "square"}
    assert set(pools) >= {"a.ipynb", "b.ipynb"}, pools
    assert pools["a.ipynb"]["owner"]["notebook"] == "a.ipynb"
    assert pools["b.ipynb"]["stopped"] and not pools["a.ipynb"]["stopped"]
    assert pools["a.ipynb"]["id"] != pools["b.ipynb"]["id"]
    page.evaluate(f"() => window.jupyterapp.shell.activateById('{a.get_attribute('id')}')")
    view.locator("xpath=self::*[@data-final='true']").wait_for(timeout=120_000)
    final = view_state(view)
    assert final["status"] == "done", final
    assert final["summary"].startswith("square: 40 inputs · 40 done in "), final
    shot(a, "4-two-notebooks-a-finished")


def test_the_views_cancel_button_stops_a_blocking_map_and_shows_it_cancelled(page, lab):
    cell = "r = list(square.map(range(400), kwargs={'pause': 0.2}))"  # raises when cancelled
    panel = start_map(page, lab, "cancel.ipynb", [SETUP, cell], done=5)
    view = panel.locator(".nbscale-MapView")
    button = view.locator(".nbscale-MapView-cancel")
    assert button.is_enabled() and "Cancel its pending" in (button.get_attribute("title") or "")
    shot(panel, "5-cancel-before")
    button.click()  # the kernel is busy in the cell: this goes to the server, not to it
    view.locator("xpath=self::*[@data-final='true']").wait_for()
    final = view_state(view)
    assert final["status"] == "cancelled", final
    assert re.search(r"· \d+ done · \d+ cancelled in ", final["summary"]), final
    assert "failed" not in final["summary"]
    assert view.locator(".nbscale-MapView-segment[data-name='failed']").count() == 0
    # the bar says how much ran (not 100 %); a cancelled input has no time of its own
    done = int(re.search(r"· (\d+) done", final["summary"]).group(1))
    assert final["percent"] == f"{done * 100 // 400}%", final
    times = view.locator(".nbscale-MapView-row[data-status='cancelled'] td:nth-child(5)")
    assert times.count() > 0 and set(times.all_inner_texts()) == {""}
    error = panel.locator(".jp-OutputArea-output[data-mime-type='application/vnd.jupyter.stderr']")
    text = error.inner_text()
    assert "CallCancelledError: square: the call was cancelled" in text
    assert "_map_results.py" not in text and "_loop.py" not in text  # your frames only
    shot(panel, "6-cancelled")


def test_a_rows_drill_down_streams_its_output_and_shows_a_failures_traceback(page, lab):
    chatty = (
        "@app.function(max_containers=2, scaledown_window=30)\n"
        "def chatty(x):\n"
        "    for i in range(8):\n"
        "        print(f'step {i} of input {x}', flush=True)\n"
        "        time.sleep(0.5)\n"
        "    if x == 1:\n"
        "        raise ValueError(f'bad {x}')\n"
        "    return x\n"
    )
    write_notebook(
        lab,
        "drill.ipynb",
        [SETUP, chatty, "r = list(chatty.map(range(2), return_exceptions=True))"],
    )
    open_lab(page, lab)
    panel = open_notebook(page, "drill.ipynb")
    run_all(page, panel)
    view = panel.locator(".nbscale-MapView")
    row = view.locator(".nbscale-MapView-row[data-index='0'][data-status='running']")
    row.wait_for()
    row.click()
    output = view.locator(".nbscale-MapView-details[data-index='0'] .nbscale-MapView-output")
    output.filter(has_text="step 1 of input 0").wait_for()  # while it runs, not at its end
    assert view.get_attribute("data-final") == "false"
    assert "worker" in view.locator(".nbscale-MapView-attempts").inner_text()
    shot(panel, "7-drill-down-streaming")
    view.locator("xpath=self::*[@data-final='true']").wait_for()
    view.locator(".nbscale-MapView-row[data-index='1']").click()
    traceback = view.locator(".nbscale-MapView-details[data-index='1'] .nbscale-MapView-traceback")
    text = traceback.inner_text()
    assert "raise ValueError(f'bad {x}')" in text and "ValueError: bad 1" in text
    assert "raised remotely in chatty on worker wk-" in text
    # the cell named as the notebook's own tracebacks name it, not the kernel's file for it
    assert "Cell In[2], line 7, in chatty" in text and "ipykernel_" not in text, text
    assert "step 7 of input 1" in view.locator(".nbscale-MapView-output").inner_text()
    shot(panel, "8-drill-down-failure")


def test_a_saved_closed_and_reopened_notebook_shows_the_static_summary(page, lab):
    write_notebook(
        lab, "saved.ipynb", [SETUP, "r = list(square.map(range(120), return_exceptions=True))"]
    )
    open_lab(page, lab)
    panel = open_notebook(page, "saved.ipynb")
    run_all(page, panel)
    panel.locator(".nbscale-MapView[data-final='true']").wait_for()
    page.evaluate(
        """async () => {
            const app = window.jupyterapp;
            await app.commands.execute('docmanager:save');
            app.shell.currentWidget.close();
        }"""
    )
    panel.wait_for(state="detached")
    bundle = saved_view(lab, "saved.ipynb")
    assert bundle[MAP]["final"]
    assert "square: 120 inputs · 119 done · 1 failed in " in bundle["text/html"]
    assert bundle["text/plain"].startswith("square: 120 inputs · 119 done · 1 failed in ")
    outputs = saved_outputs(lab, "saved.ipynb")
    assert not any("widget-view" in key for o in outputs for key in o.get("data", {}))
    panel = open_notebook(page, "saved.ipynb")
    view = panel.locator(".nbscale-MapView[data-final='true']")
    view.wait_for()
    assert view_state(view)["summary"].startswith("square: 120 inputs · 119 done · 1 failed in ")
    page.wait_for_timeout(5000)  # a final view stays as it is (no check of its kernel)
    assert view.get_attribute("data-status") == "failed"
    text = panel.inner_text()
    assert "Error displaying widget" not in text and "model not found" not in text
    shot(panel, "9-reopened")


def test_a_map_cut_short_by_a_kernel_restart_leaves_a_summary_saying_so(page, lab):
    panel = start_map(page, lab, "restart.ipynb", [SETUP, mapping(300, 0.2)])
    view = panel.locator(".nbscale-MapView")
    page.evaluate("() => { window.jupyterapp.shell.currentWidget.sessionContext.restartKernel(); }")
    view.locator("xpath=self::*[@data-final='true']").wait_for(timeout=90_000)
    final = view_state(view)
    assert final["status"] == "lost", final
    assert "cut short: the kernel stopped before the map ended" in final["summary"]
    done = int(re.search(r"· (\d+) done", final["summary"]).group(1))
    assert final["percent"] == f"{done * 100 // 300}%", final  # of what ran
    page.evaluate("() => window.jupyterapp.commands.execute('docmanager:save')")
    bundle = saved_view(lab, "restart.ipynb")
    assert "cut short" in bundle["text/html"] and bundle[MAP]["final"]
    shot(panel, "10-cut-short-by-restart")


def test_the_views_detach_button_lets_the_map_run_on_for_from_id(page, lab):
    # Inputs from a slow generator: the kernel is still sending them when Detach is pressed,
    # and from_id(...).iter() gives those sent after it too.
    cell = (
        "r = []\n"
        "def slowly(n):\n"
        "    for x in range(n):\n"
        "        time.sleep(0.05)\n"
        "        yield x\n"
        "try:\n"
        "    for v in square.map(slowly(60), kwargs={'pause': 0.2}):\n"
        "        r.append(v)\n"
        "except nbscale.CallDetachedError as e:\n"
        "    print(e)\n"
        "    rest = list(nbscale.FunctionCall.from_id(e.call_id).iter())\n"
        "    print('DETACHED', len(r), len(rest), r + rest == [x * x for x in range(60)])\n"
    )
    panel = start_map(page, lab, "detach.ipynb", [SETUP, cell])
    view = panel.locator(".nbscale-MapView")
    view.locator(".nbscale-MapView-detach").click()
    view.locator("xpath=self::*[@data-final='true']").wait_for()
    assert view.get_attribute("data-status") == "detached"
    resume = view.locator(".nbscale-MapView-resume").inner_text()
    assert re.search(r'nbscale\.FunctionCall\.from_id\("fc-[0-9a-f]{20}"\)\.iter\(\)', resume)
    stdout = ".jp-OutputArea-output[data-mime-type='application/vnd.jupyter.stdout']"
    printed = panel.locator(stdout, has_text=re.compile(r"DETACHED \d+"))
    printed.wait_for(timeout=90_000)
    assert re.search(r"DETACHED \d+ \d+ True", printed.inner_text())
    shot(panel, "11-detached")


def test_the_pools_monitor_keeps_each_pool_on_one_line_in_a_narrow_notebook(page, lab):
    """In a notebook split beside another (here a narrow window), the monitor's cells once
    wrapped ``2/2 (0 starting, 0 busy, 2 idle)`` over five lines; the table scrolls instead."""
    page.set_viewport_size({"width": 600, "height": 1000})
    cells = [SETUP, "square.remote(1)", "m = nbscale.monitor(interval=0.5)", "time.sleep(3)"]
    write_notebook(lab, "narrow.ipynb", [*cells, "m.stop()"])
    open_lab(page, lab)
    panel = open_notebook(page, "narrow.ipynb")
    run_all(page, panel)
    table = panel.locator("table", has=page.locator("th", has_text="containers"))
    table.locator("td", has_text="square").first.wait_for()
    lines = table.evaluate(
        """table => [...table.querySelectorAll('th, td')].map(cell => {
            const range = document.createRange();
            range.selectNodeContents(cell);
            const boxes = [...range.getClientRects()];
            return [cell.textContent, new Set(boxes.map(box => Math.round(box.top))).size];
        })"""
    )
    shot(panel, "10-monitor-narrow")
    wrapped = [(text, n) for text, n in lines if n > 1]
    assert not wrapped, f"cells over more than one line: {wrapped}"
    # Too wide for the window, it scrolls sideways: a box around it within the output does.
    assert table.evaluate(
        """table => {
            for (let e = table.parentElement; e; e = e.parentElement) {
                const scrolls = ['auto', 'scroll'].includes(getComputedStyle(e).overflowX);
                if (scrolls && e.scrollWidth > e.clientWidth) return true;
                if (e.classList.contains('jp-OutputArea-output')) return false;
            }
            return false;
        }"""
    )
    header = panel.locator("span", has_text=re.compile(r"^nbscale · ")).first.inner_text()
    assert re.match(r"nbscale · (1 pool|[02-9]\d* pools|1\d+ pools) · ", header), header
