"""Shared fixtures: each test module gets the process's embedded control plane, and tests
that need other settings get a fresh one with those settings (and stop it afterwards).
``nbscale_ext`` gives a test pytest-jupyter's server with the control plane in it instead."""

from __future__ import annotations

import importlib.machinery
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from types import ModuleType
from typing import Any

import psutil
import pytest
from engine_leftovers import left_on_engine

import nbscale

# jp_fetch, jp_ws_fetch, jp_serverapp, ... for the Jupyter server extension's tests
pytest_plugins = ("pytest_jupyter.jupyter_server", "slurm_cluster")  # slurm_*: Slurm suites


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Say so when a control plane in this pytest process left containers or networks on
    the Docker engine (each Docker module fails on its own; this names the others' for the
    next control plane to reap: one in-process test leaves four networks, not found yet)."""
    try:
        import docker

        engine = docker.from_env(timeout=10)
        left = left_on_engine(engine, os.getpid())
    except Exception:  # no SDK or no engine: nothing of ours can be on it
        return
    if left:
        print(f"\nleft behind on the Docker engine by this test run: {left}")


def load_gen_contracts() -> ModuleType:
    """``scripts/gen-contracts`` as a module, for tests that point it at other files."""
    path = str(Path(__file__).resolve().parent.parent / "scripts" / "gen-contracts")
    loader = importlib.machinery.SourceFileLoader("gen_contracts", path)
    module = ModuleType(loader.name)
    module.__file__ = path
    loader.exec_module(module)
    return module


def command_line(process: psutil.Process) -> str:
    """``process``'s command line as one string; empty for a process that has exited, even one
    not yet reaped (a zombie's command line cannot be read)."""
    try:
        return " ".join(process.cmdline())
    except psutil.Error:
        return ""


def fresh_python_stdout(
    code: str,
    *args: str,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    timeout: float = 60,
) -> str:
    """What ``python -c code args...`` prints in a fresh interpreter (this one's executable;
    ``env`` and ``cwd`` default to this process's); fails the test with the end of the
    child's stderr when it exits non-zero."""
    proc = subprocess.run(
        [sys.executable, "-c", code, *args],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if proc.returncode != 0:
        pytest.fail(f"python -c exited with {proc.returncode}:\n{proc.stderr[-4000:]}")
    return proc.stdout


def worker_logs(worker_id: str, after: int | None = None, tail: int = 50) -> Any:
    """What ``GET containers/{id}/logs?tail=&after=`` answers, from the embedded control
    plane (on its loop)."""
    from nbscale._client import get_client
    from nbscale._loop import get_loop

    async def read() -> Any:
        plane = (await get_client()).control_plane
        assert plane is not None, "an embedded control plane"
        return plane.api.worker_logs(worker_id, tail, after)

    return get_loop().run(read())


def detach_running_map_when(ready: Callable[[], object]) -> threading.Thread:
    """Detach this process's running map, as the REST route does, once ``ready()`` is true:
    from another thread, since the map blocks the test's own. Join the thread returned."""
    from nbscale._client import get_client
    from nbscale._loop import get_loop

    def detach() -> None:
        while not ready():
            time.sleep(0.005)

        async def on_loop() -> None:
            plane = (await get_client()).control_plane
            assert plane is not None, "an embedded control plane"
            [call] = [
                c for c in plane.delivery.calls.values() if c.kind == "map" and not c.detached
            ]
            plane.api.detach_call(call.call_id)

        get_loop().run(on_loop())

    thread = threading.Thread(target=detach)
    thread.start()
    return thread


def wait_until(predicate: Callable[[], object], timeout: float = 20.0, every: float = 0.05) -> None:
    """Poll ``predicate`` until it is true; fail the test with a message on timeout."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"condition not met within {timeout} s: {predicate}")
        time.sleep(every)


@pytest.fixture
def mount_tmpfs() -> Iterator[Callable[[str, int], Path]]:
    """``mount_tmpfs(name, kib)``: a tmpfs of that size, to fill up, at a short path (Unix
    socket paths are short); mounting needs root; unmounted and removed after the test."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    mounted: list[Path] = []

    def mount(name: str, kib: int) -> Path:
        path = Path(tempfile.mkdtemp(prefix=f"nb{name}-", dir="/tmp"))
        subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={kib}k", "tmpfs", str(path)],
                       check=True)  # fmt: skip
        mounted.append(path)
        return path

    yield mount
    for path in reversed(mounted):
        subprocess.run(["umount", "-l", str(path)], check=False)
        path.rmdir()


@pytest.fixture
def small_tmpfs(mount_tmpfs: Callable[[str, int], Path]) -> Path:
    """A 2 MiB tmpfs, to fill up."""
    return mount_tmpfs("small", 2048)


def fill(directory: Path) -> Path:
    """Fill the file system of ``directory`` up; returns the file that fills it."""
    filler = directory / "filler"
    with open(filler, "wb") as f:
        try:
            while True:
                f.write(b"\0" * 65536)
                f.flush()
        except OSError:
            pass
    return filler


@pytest.fixture
def fresh_plane(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[..., None]]:
    """Call ``fresh_plane(NBSCALE_X="1", ...)`` to run the test against a new embedded
    control plane started with those settings."""

    def start(**env: str) -> None:
        nbscale.shutdown()
        for key, value in env.items():
            monkeypatch.setenv(key, value)

    yield start
    nbscale.shutdown()


@pytest.fixture(scope="module", autouse=True)
def _fresh_control_plane_per_module() -> Iterator[None]:
    """Pools (and their warm workers) of one test module never affect the next."""
    yield
    nbscale.shutdown()


@pytest.fixture(scope="session", autouse=True)
def _stop_control_plane_at_end() -> Iterator[None]:
    os.environ.setdefault("NBSCALE_HEARTBEAT_INTERVAL", "0.5")
    # Worker processes unless a test asks for Docker (docker_plane), even where an engine runs.
    os.environ.setdefault("NBSCALE_LAUNCHER", "process")
    yield
    nbscale.shutdown()


@pytest.fixture(scope="module")
def docker_plane() -> Iterator[Any]:
    """For a module of Docker tests: a fresh embedded control plane whose workers are
    containers (NBSCALE_LAUNCHER=docker); yields a docker SDK client. Fails, never skips,
    when no engine answers (scripts/test starts one), and fails when any container or
    network of nbscale is left on the engine afterwards."""
    import docker

    try:
        client = docker.from_env()
        client.ping()
    except Exception as exc:
        pytest.fail(f"no Docker engine answers ({exc}); run scripts/docker-setup as root")
    nbscale.shutdown()
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("NBSCALE_LAUNCHER", "docker")
        yield client
        nbscale.shutdown()
    left = left_on_engine(client, os.getpid())
    assert not left, f"left behind on the Docker engine: {left}"


@pytest.fixture
def jp_server_config() -> dict[str, Any]:
    """pytest-jupyter's server: nbscale enabled, no request without authentication, and an
    extension that fails to start fails the test."""
    return {
        "ServerApp": {
            # pytest-jupyter adds terminals unless told not to; their socket is undecorated
            "jpserver_extensions": {"nbscale_server": True, "jupyter_server_terminals": False},
            "allow_unauthenticated_access": False,
            "reraise_server_extension_failures": True,
        },
        "NbScale": {"heartbeat_interval": 0.5, "max_workers_total": 4, "launcher": "process"},
    }


@pytest.fixture
def nbscale_ext(jp_serverapp: Any, jp_asyncio_loop: Any) -> Iterator[Any]:
    """The NbScale extension of ``jp_serverapp``, started as a running server starts it
    (pytest-jupyter does not); this process's nbscale client then uses its control plane."""
    nbscale.shutdown()
    jp_asyncio_loop.run_until_complete(jp_serverapp.extension_manager.start_all_extensions())
    yield jp_serverapp.extension_manager.extension_points["nbscale"].app
    nbscale.shutdown()  # before pytest-jupyter stops the server and its extensions


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Debian's Chromium, headless, through Playwright's sync API (the browser tests)."""
    from playwright.sync_api import sync_playwright
    from sidebar_lab import CHROMIUM, CHROMIUM_ARGS

    assert os.path.exists(CHROMIUM), "scripts/test installs Debian's chromium"
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1280, "height": 1400})
    page = context.new_page()
    page.set_default_timeout(60_000)
    yield page
    context.close()
