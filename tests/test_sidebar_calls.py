"""The call graph in the sidebar, in a real JupyterLab: a call made by code on a worker (a
nested call) is listed under the call whose input made it, saying which input, and the
worker whose input waits on it shows as calling (busy, its slot lent), not idle."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest
from conftest import wait_until
from sidebar_lab import (  # noqa: F401 - the jp_ fixtures, used by name
    Lab,
    finish,
    jp_asyncio_loop,
    jp_server_cleanup,
    open_sidebar,
    shot,
)

# A spawned call whose one input maps `leaf` over three inputs from its worker; the leaves
# wait for a file the test creates, so the graph is on show for as long as the test looks.
SCENARIO = """
import os, sys, time
import nbscale

app = nbscale.App("graph")

@app.function(scaledown_window=60)
def leaf(release, x):
    deadline = time.monotonic() + 120
    while not os.path.exists(release) and time.monotonic() < deadline:
        time.sleep(0.05)
    return x

@app.function(scaledown_window=60)
def fan_out(release, n):
    return sum(leaf.map([release] * n, range(n)))

root = fan_out.spawn(sys.argv[1], 3)
print("SPAWNED", root.object_id, flush=True)
print("RESULT", root.get(timeout=180), flush=True)
"""


def _spawned_id(proc: subprocess.Popen[str]) -> str:
    assert proc.stdout is not None
    seen = []
    for line in proc.stdout:
        seen.append(line)
        if line.startswith("SPAWNED "):
            return line.split()[1]
    pytest.fail(f"the client ended before spawning:\n{''.join(seen)}")


def _worker_of(lab: Lab, function: str) -> dict[str, Any] | None:
    pools = [p for p in lab.api("pools") if p["function"] == function]
    workers = [w for p in pools for w in p["workers"]]
    return workers[0] if workers else None


@pytest.mark.browser
@pytest.mark.timeout(300)
def test_a_nested_call_is_listed_under_its_parent_whose_worker_shows_calling(
    tmp_path: Path, page: Any
) -> None:
    page.set_viewport_size({"width": 760, "height": 1000})
    lab = Lab(tmp_path)
    release = tmp_path / "release"
    client = None
    try:
        panel = open_sidebar(page, lab)
        client = lab.start_client(SCENARIO, release, name="graph.py")
        root_id = _spawned_id(client)
        root = panel.locator(f".nbscale-Call[data-call-id='{root_id}']")
        root.wait_for()

        # The map that the root's input 0 made, nested under the root's row.
        child = root.locator(
            f".nbscale-Calls-nested > .nbscale-Call[data-parent-call-id='{root_id}']"
        )
        child.wait_for(timeout=60_000)
        assert child.locator(".nbscale-Call-function").inner_text() == "leaf"
        assert child.locator(".nbscale-Call-kind").inner_text() == ".map"
        assert child.locator(".nbscale-Call-parent").inner_text() == "from input 0"
        root_children = root.locator(":scope > .nbscale-Call-graph .nbscale-Call-children")
        root_children.wait_for()
        assert root_children.inner_text() == "1 nested call"
        # listed once: not also as a call of its own at the top level
        assert (
            panel.locator(
                f".nbscale-Call[data-call-id='{child.get_attribute('data-call-id')}']"
            ).count()
            == 1
        )
        api_child = next(c for c in lab.api("calls") if c["function"] == "leaf")
        assert api_child["parent"] == {"call_id": root_id, "index": 0}

        # fan_out's worker waits on that map: busy, shown as calling, its slot lent
        def calling() -> bool:
            worker = _worker_of(lab, "fan_out")
            return worker is not None and worker["waiting_on_calls"]

        wait_until(calling, timeout=30)
        assert _worker_of(lab, "fan_out")["state"] == "busy"  # type: ignore[index]
        card = panel.locator(".nbscale-Pool", has_text="fan_out")
        state = card.locator(".nbscale-State")
        wait_until(lambda: state.inner_text() == "calling", timeout=30)
        wait_until(
            lambda: (
                card.locator(".nbscale-Pool-status").inner_text() == "1 waiting on nested calls"
            ),
            timeout=30,
        )
        assert state.get_attribute("data-waiting-on-calls") == "true"
        assert "waits on the functions it called" in (state.get_attribute("title") or "")
        shot(page, "call-graph-nested")

        # Released: the leaves return, the root finishes, and the worker is idle again; the
        # finished child stays on show under its parent.
        release.touch()
        assert "RESULT 3" in finish(client, timeout=120)
        wait_until(lambda: state.inner_text() == "idle", timeout=30)
        child.and_(panel.locator("[data-state='done']")).wait_for()
        root.and_(panel.locator("[data-state='done']")).wait_for()
        shot(page, "call-graph-done")
    finally:
        if client is not None and client.poll() is None:
            client.kill()
            client.communicate()
        lab.stop()
