"""The ported Modal programs of this folder, run as a user runs them (``nbscale run``, or
nbclient for the notebook), and what each must print: computed here, from the program's
own functions called locally (``.local()``), never written down by hand.

``PROGRAMS`` maps each script to its command-line arguments and its check; the suites
(``test_modal_programs.py`` on worker processes, ``test_modal_programs_docker.py`` in Docker
containers) run every one of them.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import nbformat
from nbclient import NotebookClient

HERE = Path(__file__).parent


def load(name: str) -> ModuleType:
    """The program ``name``.py imported here (under a name of its own), for its functions'
    ``.local()``."""
    module_name = f"modal_program_{name}"
    if module_name in sys.modules:
        return sys.modules[module_name]
    spec = importlib.util.spec_from_file_location(module_name, HERE / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    spec.loader.exec_module(module)
    return module


def run_env(launcher: str, runtime_dir: Path, **extra: str) -> dict[str, str]:
    """The environment of an ``nbscale run``: the given launcher, and a Jupyter runtime
    directory of its own (so that it finds only the servers a test starts) and data
    directory (its named secrets and volumes)."""
    env = {**os.environ, "NBSCALE_LAUNCHER": launcher, "JUPYTER_RUNTIME_DIR": str(runtime_dir)}
    env["JUPYTER_DATA_DIR"] = str(runtime_dir / "data")
    env.pop("NBSCALE_CONNECTION_FILE", None)
    env.update(extra)
    return env


def nbscale_run(
    *args: str, env: dict[str, str], timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    """``nbscale run ARGS`` in this folder, as a user types it."""
    return subprocess.run(
        [sys.executable, "-m", "nbscale", "run", *args],
        cwd=HERE,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
    )


def lines(text: str) -> list[str]:
    return [line.strip() for line in text.splitlines()]


# --- what each program must print ------------------------------------------------------


def check_hello_world(out: str, program: ModuleType) -> None:
    f = program.f
    assert lines(out).count(str(f.local(1000))) == 2  # here, then on a worker
    assert str(sum(f.local(i) for i in range(20))) in lines(out)
    assert "hello 4" in out and "world 3" in out  # what the workers printed


def check_basic_grid_search(out: str, program: ModuleType) -> None:
    best_score, best_k = max(program.fit_knn.local(k) for k in range(1, 40))
    assert "Best k = %3d, score = %.4f" % (best_k, best_score) in lines(out)


ENTRYPOINT_ARGS = ("--text", "ab", "--times", "3", "--scale", "0.5", "--shout")


def check_entrypoint_args(out: str, program: ModuleType) -> None:
    assert f"result: {program.repeat.local('ab', 3).upper()}" in lines(out)
    assert f"scaled: {0.5 * 3}" in lines(out)


def check_retries(out: str, program: ModuleType) -> None:
    for x in range(4):
        assert f"flaky {x * x} after 3 attempts" in lines(out)  # two flakes, then success
    expected = []
    for x in [1, -2, 300, 4]:
        try:
            expected.append(f"ok: {program.check.local(x)}")
        except program.NotRetryable as exc:
            expected.append(f"not retryable: {exc}")
        except ValueError as exc:
            expected.append(f"bad value: {exc}")
    got = [
        line for line in lines(out) if line.split(":")[0] in ("ok", "not retryable", "bad value")
    ]
    assert got == expected
    assert "caught ValueError -1 is negative" in lines(out)


def check_spawn_gather(out: str, program: ModuleType) -> None:
    assert f"gathered {[program.cube.local(i) for i in range(12)]}" in lines(out)
    assert f"again {program.cube.local(11)}" in lines(out)


def check_timeouts(out: str, program: ModuleType) -> None:
    assert f"slept {program.sleeper.local(0.1)}" in lines(out)
    assert "timed out" in lines(out)


def check_async_map(out: str, program: ModuleType) -> None:
    double = program.double.local  # an async function's .local() runs it to completion
    assert f"one {double(21)}" in lines(out)
    assert f"many {[double(i) for i in range(10)]}" in lines(out)


def check_parallel_map(out: str, program: ModuleType) -> None:
    my_func, add, maybe_fail = program.my_func.local, program.add.local, program.maybe_fail.local
    assert f"map {[my_func(i) for i in range(8)]}" in lines(out)
    assert f"starmap {[add(1, 2), add(3, 4)]}" in lines(out)
    assert f"kwargs {[add(1, 10, scale=3), add(2, 20, scale=3)]}" in lines(out)
    assert f"unordered {sorted(my_func(i) for i in range(6))}" in lines(out)
    outcomes: list[Any] = []
    for x in range(4):
        try:
            outcomes.append(maybe_fail(x))
        except Exception as exc:
            outcomes.append(exc)
    assert f"exceptions {outcomes!r}" in lines(out)


def check_concurrent_inputs(out: str, program: ModuleType) -> None:
    assert f"inputs {list(range(8))}" in lines(out)
    [most] = [line for line in lines(out) if line.startswith("most at once ")]
    assert 2 <= int(most.rsplit(" ", 1)[1]) <= 4  # several at once, never past max_inputs


COMPOSED_TEXT = "  Hello World hello  nbscale "


def check_composed_app(out: str, program: ModuleType) -> None:
    words = [program.normalize.local(w) for w in COMPOSED_TEXT.split()]
    assert f"words {words}" in lines(out)
    assert f"counts {program.count.local(words)}" in lines(out)
    assert "tags {'stage': 'normalize'}" in lines(out)  # inherited from the included app


DB_USER, DB_PASSWORD = "analyst", "correct horse battery staple"


def check_secrets_volumes(out: str, program: ModuleType) -> None:
    connected = f"connected as {DB_USER} with a password of {len(DB_PASSWORD)} characters"
    assert connected in lines(out)
    assert "greetings ['hello secrets', 'hello volumes']" in lines(out)
    assert "written 6" in lines(out)
    assert f"total {sum(i * i for i in range(6))}" in lines(out)
    assert DB_PASSWORD not in out


def nbscale_cli(*args: str, env: dict[str, str]) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "nbscale", *args], capture_output=True, text=True, env=env
    )
    assert proc.returncode == 0, proc.stderr


def setup_secrets_volumes(env: dict[str, str]) -> dict[str, str]:
    """The stored secret the program reads, made as a user makes it; its mount path."""
    nbscale_cli(
        "secret", "create", "example-db-credentials", f"DB_USER={DB_USER}",
        f"DB_PASSWORD={DB_PASSWORD}", env=env,
    )  # fmt: skip
    return {"VOLUME_PATH": str(Path(env["JUPYTER_RUNTIME_DIR"]) / "mnt" / "shards")}


def teardown_secrets_volumes(env: dict[str, str]) -> None:
    """The program's volume removed, with its Docker named volume."""
    nbscale_cli("volume", "delete", "example-shards", env=env)


def check_shared_dict(out: str, program: ModuleType) -> None:
    assert "42" in lines(out)
    assert f"squares {sorted(program.square(x) for x in range(8))}" in lines(out)
    assert "length 9" in lines(out)


def check_queue_jobs(out: str, program: ModuleType) -> None:
    assert "handled 40" in lines(out)  # every job taken exactly once
    assert "left 0 0" in lines(out)
    assert f"results {[program.work(j) for j in range(40)]}" in lines(out)


@dataclass(frozen=True)
class Program:
    args: tuple[str, ...]
    check: Callable[[str, ModuleType], None]
    setup: Callable[[dict[str, str]], dict[str, str]] | None = None  # -> more environment
    teardown: Callable[[dict[str, str]], None] | None = None


PROGRAMS: dict[str, Program] = {
    "hello_world": Program((), check_hello_world),
    "basic_grid_search": Program((), check_basic_grid_search),
    "entrypoint_args": Program(ENTRYPOINT_ARGS, check_entrypoint_args),
    "retries": Program((), check_retries),
    "spawn_gather": Program((), check_spawn_gather),
    "timeouts": Program((), check_timeouts),
    "async_map": Program((), check_async_map),
    "parallel_map": Program((), check_parallel_map),
    "concurrent_inputs": Program((), check_concurrent_inputs),
    "composed_app": Program(("--text", COMPOSED_TEXT), check_composed_app),
    "secrets_volumes": Program(
        (), check_secrets_volumes, setup_secrets_volumes, teardown_secrets_volumes
    ),
    "shared_dict": Program((), check_shared_dict),
    "queue_jobs": Program((), check_queue_jobs),
}


def run_program(name: str, launcher: str, runtime_dir: Path) -> None:
    """Run the program with ``nbscale run`` and check what it printed."""
    program = PROGRAMS[name]
    env = run_env(launcher, runtime_dir)
    if program.setup is not None:
        env.update(program.setup(env))
    try:
        proc = nbscale_run(f"{name}.py", *program.args, env=env)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        # Imported here with the run's data directory: its Volume.from_name makes one there.
        saved = os.environ.get("JUPYTER_DATA_DIR")
        os.environ["JUPYTER_DATA_DIR"] = env["JUPYTER_DATA_DIR"]
        try:
            module = load(name)
        finally:
            if saved is None:
                del os.environ["JUPYTER_DATA_DIR"]
            else:
                os.environ["JUPYTER_DATA_DIR"] = saved
        program.check(proc.stdout + proc.stderr, module)
    finally:
        if program.teardown is not None:
            program.teardown(env)


# --- scripts run with `python FILE.py` -------------------------------------------------


def check_run_from_script(out: str, program: ModuleType) -> None:
    square = program.square.local
    assert f"remote {square(7)}" in lines(out)
    assert "squaring 7" in lines(out)  # what the worker printed
    assert "is_local True" in lines(out)  # here, not on a worker
    assert f"squares {[square(i) for i in range(6)]}" in lines(out)  # main(n=6), called


SCRIPTS: dict[str, Callable[[str, ModuleType], None]] = {
    "run_from_script": check_run_from_script,
}


def run_script(name: str, launcher: str, runtime_dir: Path) -> None:
    """Run the program with ``python FILE.py``, as a user does, and check what it printed."""
    proc = subprocess.run(
        [sys.executable, f"{name}.py"],
        cwd=HERE,
        capture_output=True,
        text=True,
        timeout=300,
        env=run_env(launcher, runtime_dir),
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    SCRIPTS[name](proc.stdout + proc.stderr, load(name))


# --- the notebook ------------------------------------------------------------------------


def run_notebook() -> str:
    """Execute app_run_notebook.ipynb in a real kernel (started with this process's
    environment: the caller sets the launcher), plus a cell that reports its pools
    afterwards; everything the cells printed."""
    nb = nbformat.read(HERE / "app_run_notebook.ipynb", as_version=4)
    nb.cells.append(
        nbformat.v4.new_code_cell(
            "import json\n"
            'print("POOLS", json.dumps([[p["function"], p["stopped"]] '
            'for p in modal.status()["pools"]]))'
        )
    )
    NotebookClient(nb, timeout=240, kernel_name="python3").execute()
    texts = [out.get("text", "") for cell in nb.cells for out in cell.get("outputs", [])]
    return "\n".join(texts)


def check_notebook(out: str) -> None:
    assert f"remote: {42 * 42}" in lines(out)
    assert f"mapped: {[x * x for x in range(10)]}" in lines(out)
    [pools] = [line for line in lines(out) if line.startswith("POOLS ")]
    assert json.loads(pools.removeprefix("POOLS ")) == [["square", True]]  # ended with the run
