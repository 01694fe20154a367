"""The JupyterLab sidebar (``labextension/``): its TypeScript unit tests and lint, its
packaging, and a real JupyterLab in headless Chromium watching and steering a real map
(``test_sidebar_panel.py`` has the panel's layout, ordering, logs and groups).

The browser tests start ``jupyter lab`` in a subprocess (random port, token, its own runtime,
settings and workspace directories) with this checkout's built sidebar, run maps from client
subprocesses that use the server's control plane (its connection file), and drive Debian's
Chromium through Playwright (``sidebar_lab.py``). Screenshots of the panel land in
``tests/artifacts/``.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from conftest import load_gen_contracts, wait_until
from sidebar_lab import (  # noqa: F401 - the jp_ fixtures, used by name
    ROOT,
    Lab,
    finish,
    jp_asyncio_loop,
    jp_server_cleanup,
    open_sidebar,
    shot,
    stat,
)

import nbscale

LABEXT = ROOT / "labextension"


def _run(cmd: list[str], cwd: Path, timeout: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout, check=False
    )


def _jlpm(*args: str, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    jlpm = shutil.which("jlpm")
    assert jlpm, "jlpm comes with the jupyterlab package (pip install -e '.[test]')"
    return _run([jlpm, *args], LABEXT, timeout)


@pytest.fixture(scope="module")
def node_modules() -> None:
    """The labextension's npm packages (the build hook of `pip install -e .` installs them;
    a checkout whose built assets were already there may not have them yet)."""
    if not (LABEXT / "node_modules" / ".bin" / "jest").exists():
        result = _jlpm("install", "--immutable")
        assert result.returncode == 0, result.stdout + result.stderr


def test_typescript_unit_tests_pass(node_modules: None) -> None:
    """jest: models, state, formatting, validation and chart geometry."""
    result = _jlpm("test", "--ci")
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert re.search(r"Tests:\s+\d+ passed, \d+ total", output), output


def test_typescript_is_formatted_and_lint_free(node_modules: None) -> None:
    """prettier and eslint with the extension template's rules (strict TypeScript)."""
    result = _jlpm("lint:check")
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_typescript_models_are_generated_from_the_server_models(node_modules: None) -> None:
    """labextension/src/models.ts is what scripts/gen-contracts makes of models.py now
    (JSON Schema, json-schema-to-typescript, prettier), with the names the sidebar uses."""
    result = _run(
        [sys.executable, str(ROOT / "scripts" / "gen-contracts"), "--check", "models"], ROOT, 120
    )
    assert result.returncode == 0, result.stdout + result.stderr
    source = (LABEXT / "src" / "models.ts").read_text()
    assert source.startswith("/**\n * GENERATED from server_ext/nbscale_server/models.py")
    for interface in ("IPool", "IContainer", "ICall", "ICallDetail", "IChangesMessage"):
        assert f"export interface {interface} {{" in source


def test_a_hand_edited_model_fails_the_check(
    node_modules: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    """A field added to models.ts by hand (one the server does not send) is caught."""
    gen = load_gen_contracts()
    edited = tmp_path / "models.ts"
    committed = (LABEXT / "src" / "models.ts").read_text()
    edited.write_text(committed.replace("  backlog: number;", "  backlog: number;\n  x: 1;"))
    monkeypatch.setattr(gen, "MODELS_TS", edited)
    monkeypatch.setattr(gen, "ROOT", tmp_path)
    monkeypatch.setattr(sys, "argv", ["gen-contracts", "--check", "models"])
    assert gen.main() == 1
    assert "-  x: 1;" in capsys.readouterr().out


def test_the_labextension_is_installed_and_enabled() -> None:
    """`pip install` put the prebuilt sidebar where JupyterLab looks, and it is enabled."""
    [paths] = nbscale._jupyter_labextension_paths()
    built = Path(nbscale.__file__).parent / paths["src"]
    assert (built / "package.json").is_file(), "the labextension was not built"
    assert (built / "static" / "style.js").is_file()
    assert paths["dest"] == "nbscale"
    result = _run([sys.executable, "-m", "jupyter", "labextension", "list"], ROOT, 60)
    listing = re.sub(r"\x1b\[[0-9;]*m", "", result.stdout + result.stderr)
    assert re.search(r"^\s+nbscale v\S+ enabled OK", listing, re.MULTILINE), listing


# --- the browser tests ----------------------------------------------------------------


@pytest.mark.browser
@pytest.mark.timeout(300)
def test_the_sidebar_follows_and_steers_a_running_map(tmp_path: Path, page: Any) -> None:
    lab = Lab(tmp_path)
    client = cancelled = None
    try:
        panel = open_sidebar(page, lab)
        panel.locator(".nbscale-Status[data-status='live']").wait_for()
        assert "No pools yet" in panel.inner_text()
        shot(panel, "1-empty")

        # A map of 40 inputs on at most one container: the pool appears, with a backlog.
        n = 40
        client = lab.start_map(n, pause=0.4, max_containers=1)
        panel.locator(".nbscale-Pool", has_text="slow_square").wait_for()
        pool_id = panel.locator(".nbscale-Pool").get_attribute("data-pool-id")
        card = panel.locator(f".nbscale-Pool[data-pool-id='{pool_id}']")
        seen: dict[str, set[int]] = {"runners": set(), "backlog": set(), "done": set()}

        def watch() -> None:
            seen["runners"].add(stat(card, "num_total_runners"))
            seen["backlog"].add(stat(card, "backlog"))
            seen["done"].add(stat(card, "done"))

        def one_container_and_a_backlog() -> bool:
            watch()
            return stat(card, "num_total_runners") == 1 and stat(card, "backlog") > 0

        wait_until(one_container_and_a_backlog, timeout=60, every=0.2)
        panel.locator(".nbscale-Call", has_text="slow_square").wait_for()
        first_call = panel.locator(".nbscale-Call").get_attribute("data-call-id")
        call_row = panel.locator(f".nbscale-Call[data-call-id='{first_call}']")
        assert call_row.locator(".nbscale-Cancel").is_visible()
        shot(panel, "2-running")

        # The autoscaler form refuses a bad max beside its field, then raises it to 3.
        card.locator(".nbscale-Edit").click()
        form = card.locator(".nbscale-Form")
        form.locator("input[name='max_containers']").fill("0")
        assert "1 to 100000" in form.locator(".nbscale-Form-error").inner_text()
        assert form.locator(".nbscale-Save").is_disabled()
        shot(panel, "3-invalid-max")
        form.locator("input[name='max_containers']").fill("3")
        form.locator(".nbscale-Save").click()
        form.wait_for(state="detached")
        assert lab.api(f"pools/{pool_id}")["settings"]["max_containers"] == 3

        # ... and it takes effect: the pool grows past its old max of one.
        def scaled_up_past_the_old_max() -> bool:
            return lab.api(f"pools/{pool_id}")["num_total_runners"] > 1

        def more_containers_shown() -> bool:
            watch()
            return stat(card, "num_total_runners") > 1

        wait_until(scaled_up_past_the_old_max, timeout=60, every=0.2)
        wait_until(more_containers_shown, timeout=30, every=0.2)
        assert "max 3" in card.locator(".nbscale-Pool-settings").inner_text()
        shot(panel, "4-scaled-up")

        # Every result arrives; the panel counts them all.
        def all_done() -> bool:
            watch()
            return stat(card, "done") == n

        wait_until(all_done, timeout=120, every=0.2)
        out = finish(client)
        assert f"RESULTS {n} True" in out and "MODE server" in out, out
        # The panel moved with the pool: its size, its backlog and its result count.
        assert len(seen["runners"]) >= 2, seen
        assert len(seen["backlog"]) >= 2 and max(seen["backlog"]) > 0, seen
        assert any(0 < done < n for done in seen["done"]), seen
        call_row.locator(".nbscale-Call-label").filter(has_text=f"{n} / {n}").wait_for()
        assert call_row.locator(".nbscale-Cancel").count() == 0

        # A container's recent output, on click.
        card.locator(".nbscale-Container").first.click()
        logs = card.locator(".nbscale-Logs-lines")
        logs.filter(has_text="low-level output for input").wait_for()
        shot(panel, "5-finished-with-logs")

        # Cancel from the panel: the client's map ends with CallCancelledError.
        cancelled = lab.start_map(400, pause=0.4, max_containers=2)
        running = panel.locator(".nbscale-Call[data-state='running']")
        running.wait_for()
        call_id = running.get_attribute("data-call-id")
        [listed] = [c for c in lab.api("calls") if c["id"] == call_id]

        def second_map_under_way() -> bool:
            label = running.locator(".nbscale-Call-label")
            return int(label.get_attribute("data-done")) > 0

        wait_until(second_map_under_way, timeout=60, every=0.2)
        running.locator(".nbscale-Cancel").click()
        page.locator(".jp-Dialog-button", has_text="Cancel call").click()
        panel.locator(f".nbscale-Call[data-call-id='{call_id}'][data-state='cancelled']").wait_for()
        out = finish(cancelled)
        assert "CANCELLED" in out, out
        calls = lab.api("calls")
        assert call_id not in {c["id"] for c in calls if not c["cancelled"]}, calls

        def cancelled_inputs_gone() -> bool:
            pool = lab.api(f"pools/{listed['pool_id']}")
            return pool["backlog"] == 0 and pool["num_running_inputs"] == 0

        wait_until(cancelled_inputs_gone, timeout=30, every=0.2)
        assert lab.api(f"pools/{listed['pool_id']}")["done"] < 400
        shot(panel, "6-cancelled")

        # Stop the first pool from the panel, through its confirmation dialog.
        card.locator(".nbscale-Stop").click()
        page.locator(".jp-Dialog-button", has_text="Stop pool").click()

        def pool_stopped() -> bool:
            pool = lab.api(f"pools/{pool_id}")
            return pool["stopped"] and pool["num_total_runners"] == 0

        wait_until(pool_stopped, timeout=30, every=0.2)
        panel.locator(f".nbscale-Pool.nbscale-mod-stopped[data-pool-id='{pool_id}']").wait_for()

        # The same panel in the dark theme.
        page.evaluate(
            "() => window.jupyterapp.commands.execute("
            "'apputils:change-theme', {theme: 'JupyterLab Dark'})"
        )
        page.locator("body[data-jp-theme-name='JupyterLab Dark']").wait_for(state="attached")
        page.wait_for_timeout(500)  # let the theme's CSS apply
        shot(panel, "7-dark")
        shot(page, "8-whole-page-dark")
    finally:
        for proc in (client, cancelled):
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.communicate()
        lab.stop()


@pytest.mark.browser
@pytest.mark.timeout(180)
def test_the_sidebar_says_once_when_the_server_extension_is_missing(
    tmp_path: Path, page: Any
) -> None:
    lab = Lab(tmp_path, server_extension=False)
    warnings: list[str] = []
    page.on(
        "console",
        lambda m: warnings.append(m.text) if m.text.startswith("nbscale:") else None,
    )
    try:
        panel = open_sidebar(page, lab)
        message = panel.locator(".nbscale-Message")
        message.wait_for()
        assert message.inner_text().startswith(
            "The nbscale server extension is not running in this Jupyter server"
        )
        page.wait_for_timeout(3000)  # the poll retries, and says nothing new
        assert panel.locator(".nbscale-Message").count() == 1
        assert panel.locator(".nbscale-Pool").count() == 0
        assert len(warnings) == 1, warnings
        shot(panel, "9-no-server-extension")
    finally:
        lab.stop()
