"""The ``nbscale`` command, run as a user would: the demo (piped and on a terminal), errors
in one line with documented exit codes, ``--version``, ``doctor``; and the one version."""

from __future__ import annotations

import fcntl
import json
import os
import pty
import re
import select
import struct
import subprocess
import sys
import termios
import time
from pathlib import Path

import pytest

import nbscale
import nbscale_runtime
import nbscale_server
from nbscale._cli import EPILOG

ROOT = Path(__file__).parent.parent
BOGUS = "unix:///nonexistent/docker.sock"


def nbscale_command(
    *args: str, timeout: float = 90, **env: str
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "nbscale", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **env},
    )


def test_one_version_everywhere():
    package = json.loads((ROOT / "labextension" / "package.json").read_text())
    assert nbscale.__version__ == nbscale_server.__version__ == nbscale_runtime.__version__
    assert package["version"] == nbscale.__version__  # the sidebar's, checked as it is a copy
    assert nbscale_command("--version").stdout == f"nbscale {nbscale.__version__}\n"


def test_help_documents_the_exit_codes_and_the_commands():
    proc = nbscale_command("--help")
    assert proc.returncode == 0
    assert EPILOG in proc.stdout
    for command in ("demo", "doctor", "status", "images"):
        assert command in proc.stdout
    images = nbscale_command("images", "--help").stdout
    assert "base" in images and "build" in images and "list" in images


def test_a_bad_command_line_exits_2():
    proc = nbscale_command("demo", "--inputs", "many")
    assert proc.returncode == 2
    assert "invalid int value: 'many'" in proc.stderr


def test_an_nbscale_error_is_one_line_with_the_fix_and_no_traceback():
    proc = nbscale_command("demo", NBSCALE_LAUNCHER="docker", DOCKER_HOST=BOGUS)
    assert proc.returncode == 1
    [line] = proc.stderr.splitlines()
    assert line.startswith(f"nbscale: error: cannot reach the Docker engine at {BOGUS}")
    assert "NBSCALE_LAUNCHER=process" in line  # the way out
    debug = nbscale_command("--debug", "demo", NBSCALE_LAUNCHER="docker", DOCKER_HOST=BOGUS)
    assert debug.returncode == 1
    assert "Traceback (most recent call last)" in debug.stderr
    assert debug.stderr.splitlines()[-1] == line
    bad = nbscale_command("status", NBSCALE_MAX_WORKERS="many")  # a bad setting, the same
    assert bad.returncode == 1 and "Traceback" not in bad.stderr
    assert bad.stderr.startswith("nbscale: error: bad value 'many' for max_workers")


def test_doctor_without_docker_says_why_workers_are_processes():
    proc = nbscale_command("doctor", DOCKER_HOST=BOGUS, NBSCALE_LAUNCHER="auto")
    out = proc.stdout
    assert f"python         {'.'.join(map(str, sys.version_info[:3]))}" in out
    assert f"nbscale {nbscale.__version__} · pyzmq " in out
    assert f"workers        local processes (no Docker engine answers at {BOGUS})" in out
    assert f"docker         no engine answers at {BOGUS}" in out
    assert re.search(r"GPUs           (none: .+|\d+ x .+)", out)
    assert "jupyter        server extension nbscale_server" in out
    assert "control plane  " in out
    assert len(out.splitlines()) <= 24  # one screen
    assert proc.returncode == 0 and out.endswith("no problem found\n"), out
    forced = nbscale_command("doctor", DOCKER_HOST=BOGUS, NBSCALE_LAUNCHER="docker")
    assert forced.returncode == 1
    assert re.search(
        r"^! workers +launcher=docker, but cannot reach the Docker engine", forced.stdout, re.M
    )
    assert forced.stdout.endswith("problems (marked !)\n")


@pytest.mark.slow
def test_demo_maps_over_a_pool_that_grows_and_shrinks():
    proc = nbscale_command("demo", "--inputs", "40", "--scaledown-window", "1")
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "(embedded control plane)" in out
    assert "workers: local processes (launcher=process)" in out  # conftest's setting
    assert "done: 40 results" in out
    assert "\r" not in out  # piped: a line per update
    sizes = [int(n) for n in re.findall(r"pool: (\d+) containers", out)]
    assert max(sizes) >= 2  # it scaled up
    assert sizes[-1] == 0  # and back to zero


def _run_on_a_terminal(args: list[str], columns: int, timeout: float = 90) -> tuple[int, str]:
    """Run ``python -m nbscale ARGS`` with stdout and stderr on a pseudo-terminal of
    ``columns`` columns; its exit code and everything it wrote."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, columns, 0, 0))
    proc = subprocess.Popen(
        [sys.executable, "-m", "nbscale", *args], stdin=slave, stdout=slave, stderr=slave
    )
    os.close(slave)
    chunks = []
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.5)
            if ready:
                try:
                    data = os.read(master, 65536)
                except OSError:  # EIO: the child closed the terminal
                    break
                if not data:
                    break
                chunks.append(data)
            elif proc.poll() is not None:
                break
        code = proc.wait(timeout=max(1.0, deadline - time.monotonic()))
    finally:
        os.close(master)
        if proc.poll() is None:
            proc.kill()
    return code, b"".join(chunks).decode()


@pytest.mark.slow
def test_on_a_terminal_the_progress_line_is_redrawn_in_place():
    code, out = _run_on_a_terminal(["demo", "--inputs", "60", "--scaledown-window", "1"], 100)
    assert code == 0, out
    lines = out.replace("\r\n", "\n").split("\n")  # the terminal turns \n into \r\n
    [progress] = [line for line in lines if "square [" in line]  # one line, many draws
    draws = [d for d in progress.split("\r") if d.strip()]
    assert len(draws) >= 3, progress
    assert draws[-1].startswith("square: 60 inputs · 60 done in ")  # the summary replaced it
    assert all(len(d.rstrip()) <= 99 for d in draws[:-1])  # cut to the width: never wraps
    assert any(d.endswith("…") for d in draws[:-1])  # the bar with the pool is wider than 100
    [shrinking] = [line for line in lines if "pool: 0 containers" in line]
    assert shrinking.count("\r") >= 2  # the pool's line too, redrawn as it scales down
    assert len(lines) < 12  # header, workers, progress, done, scaling down, pool
