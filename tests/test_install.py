"""The first five minutes, as a new user lives them: the built wheel installed into a fresh
virtual environment (no editable install, nothing of this checkout on the path), then the
installed ``nbscale`` command and Jupyter, with the Docker engine running.

With the base image there, the demo runs on Docker workers; with ``NBSCALE_BASE_IMAGE``
naming a missing image it runs on local processes and says why; ``NBSCALE_LAUNCHER=docker``
then fails in one line naming ``nbscale images base``. ``nbscale doctor`` says the same.
``jupyter server extension list`` shows the extension enabled, with the version, and
``jupyter lab --version`` works. The venv takes about 20 s with pip's cache warm.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from engine_leftovers import left_on_engine

import nbscale

# The first test also waits for the wheel and the venv (SETUP_TIMEOUT).
pytestmark = [pytest.mark.slow, pytest.mark.docker, pytest.mark.timeout(600)]

ROOT = Path(__file__).parent.parent
MISSING_BASE = "nbscale/base:no-such-base"
SETUP_TIMEOUT = 400  # seconds for the wheel, the venv and its installs


class Venv:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.bin = path / "bin"
        self.home = path.parent  # the commands run here, far from this checkout
        self.env = {
            key: value
            for key, value in os.environ.items()
            if not key.startswith(("NBSCALE_", "JUPYTER_", "PYTHON", "VIRTUAL_ENV"))
        }
        self.env["PATH"] = f"{self.bin}{os.pathsep}{self.env.get('PATH', '')}"
        self.env["NBSCALE_CONFIG_FILE"] = str(self.home / "no-config.json")  # a new user's
        self.env["JUPYTER_RUNTIME_DIR"] = str(self.home / "runtime")  # no server of ours
        self.last_pid = 0

    def run(
        self, *command: str, timeout: float = 300, **env: str
    ) -> subprocess.CompletedProcess[str]:
        argv = [str(self.bin / command[0]), *command[1:]]
        with subprocess.Popen(
            argv,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=self.home,
            env={**self.env, **env},
        ) as proc:
            self.last_pid = proc.pid  # whose leftovers on the Docker engine are its own
            try:
                out, err = proc.communicate(timeout=timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                raise
        return subprocess.CompletedProcess(argv, proc.returncode, out, err)

    def demo(self, inputs: int, **env: str) -> subprocess.CompletedProcess[str]:
        """The README's first command (``nbscale demo``), quicker to scale down."""
        return self.run(
            "nbscale", "demo", "--inputs", str(inputs), "--scaledown-window", "1", **env
        )


@pytest.fixture(scope="module")
def venv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Venv]:
    tmp = tmp_path_factory.mktemp("install")
    started = time.monotonic()
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w", str(tmp), str(ROOT)],
        check=True,
        timeout=SETUP_TIMEOUT,
    )
    [wheel] = tmp.glob("nbscale-*.whl")
    built = time.monotonic()
    subprocess.run([sys.executable, "-m", "venv", str(tmp / "venv")], check=True, timeout=120)
    env = Venv(tmp / "venv")
    installed = env.run("pip", "install", "--quiet", str(wheel), timeout=SETUP_TIMEOUT)
    assert installed.returncode == 0, installed.stderr
    print(
        f"\nfresh venv: wheel built in {built - started:.1f} s, "
        f"installed in {time.monotonic() - built:.1f} s"
    )
    yield env


def test_the_wheel_brings_everything_a_first_run_needs(venv: Venv):
    frozen = venv.run("pip", "freeze").stdout.lower()
    for requirement in (
        "docker==",
        "nvidia-ml-py==",
        "ipykernel==",
        "jupyterlab==4.",
        "packaging==",
    ):
        assert requirement in frozen, frozen
    version = venv.run("nbscale", "--version")
    assert version.stdout == f"nbscale {nbscale.__version__}\n"
    lab = venv.run("jupyter", "lab", "--version", timeout=60)
    assert lab.returncode == 0 and re.fullmatch(r"4\.\d+\.\d+\S*\n", lab.stdout), lab
    listed = venv.run("jupyter", "server", "extension", "list", timeout=60)
    output = re.sub(r"\x1b\[[0-9;]*m", "", listed.stdout + listed.stderr)
    assert re.search(r"^\s+nbscale_server enabled$", output, re.M), output
    assert re.search(rf"^\s+nbscale_server {re.escape(nbscale.__version__)} OK$", output, re.M)


def test_with_the_base_image_the_demo_runs_on_docker_workers(venv: Venv):
    demo = venv.demo(30)
    assert demo.returncode == 0, demo.stdout + demo.stderr
    out = demo.stdout
    assert "workers: Docker containers (Docker engine at " in out
    assert ", base image nbscale/base:bookworm)" in out
    assert "done: 30 results" in out and "pool: 0 containers" in out
    assert "Traceback" not in demo.stderr
    _nothing_left_on_the_engine(venv.last_pid)
    doctor = venv.run("nbscale", "doctor", timeout=60)
    assert doctor.returncode == 0, doctor.stdout
    report = doctor.stdout
    assert f"nbscale {nbscale.__version__} · pyzmq " in report
    assert re.search(
        r"^  workers +Docker containers \(Docker engine at .+\) \[launcher=auto\]$", report, re.M
    )
    assert re.search(r"^  docker +engine \S+ at ", report, re.M)
    assert re.search(
        r"^  base image +nbscale/base:bookworm \(Python 3\.\d+, \d+ MB\)$", report, re.M
    )
    assert re.search(
        r"^  worker images +\d+ built by nbscale; newest nbscale/worker:", report, re.M
    )
    assert re.search(r"^  GPUs +", report, re.M)
    assert re.search(
        rf"^  jupyter +server extension nbscale_server {nbscale.__version__} enabled$", report, re.M
    )
    assert re.search(r"^  jupyterlab +4\.\S+ · sidebar nbscale \S+ installed$", report, re.M)
    assert re.search(r"^  control plane +no Jupyter server's runs here", report, re.M)


@pytest.fixture(scope="module")
def offline() -> bool:
    """Whether no registry answers here (as on the test machines): a missing base then
    means local processes under auto, and an error under docker. Where one answers, the
    first map makes the base from it instead (and the test removes what it made)."""
    from nbscale._base_image import base_registry_problem

    return base_registry_problem(f"{sys.version_info.major}.{sys.version_info.minor}") is not None


def test_without_the_base_image_the_demo_runs_on_processes_and_says_why(venv: Venv, offline):
    demo = venv.demo(30, NBSCALE_BASE_IMAGE=MISSING_BASE)
    assert demo.returncode == 0, demo.stdout + demo.stderr
    if not offline:
        _remove_image(MISSING_BASE)
        assert f"the first map makes the base image {MISSING_BASE} from python:" in demo.stdout
        return
    reason = f"Docker engine found, but no base image {MISSING_BASE}: run `nbscale images base`"
    assert f"workers: local processes ({reason})" in demo.stdout
    assert "done: 30 results" in demo.stdout
    doctor = venv.run("nbscale", "doctor", timeout=60, NBSCALE_BASE_IMAGE=MISSING_BASE)
    assert doctor.returncode == 0, doctor.stdout
    assert f"local processes ({reason}) [launcher=auto]" in doctor.stdout
    assert f"base image     {MISSING_BASE} is missing: run `nbscale images base`" in doctor.stdout


def test_docker_asked_for_without_the_base_image_fails_in_one_line(venv: Venv, offline):
    demo = venv.demo(5, NBSCALE_LAUNCHER="docker", NBSCALE_BASE_IMAGE=MISSING_BASE)
    if not offline:
        _remove_image(MISSING_BASE)
        assert demo.returncode == 0, demo.stderr
        return
    assert demo.returncode == 1
    [error] = demo.stderr.splitlines()
    assert error.startswith(f"nbscale: error: no base image {MISSING_BASE} on this Docker host: ")
    assert "run `nbscale images base`" in error
    doctor = venv.run(
        "nbscale", "doctor", timeout=60, NBSCALE_LAUNCHER="docker", NBSCALE_BASE_IMAGE=MISSING_BASE
    )
    assert doctor.returncode == 1
    assert f"! base image     {MISSING_BASE} is missing: run `nbscale images base`" in doctor.stdout


def _remove_image(tag: str) -> None:
    import docker

    client = docker.from_env()
    try:
        client.api.remove_image(tag)
    finally:
        client.close()


def _nothing_left_on_the_engine(demo_pid: int) -> None:
    import docker

    client = docker.from_env()
    try:
        left = left_on_engine(client, demo_pid)
    finally:
        client.close()
    assert not left, f"left behind on the Docker engine: {left}"
