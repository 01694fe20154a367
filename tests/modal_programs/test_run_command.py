"""`nbscale run` as a user meets it with a ported Modal program, on worker processes: the
entrypoint's --help and a bad flag, a function run on a worker by name, a script's own
failure and exit code, --detach refused without a Jupyter server, and a Modal feature that
nbscale lacks stopping the run with one line that names the feature and the script's line."""

from __future__ import annotations

from pathlib import Path

import pytest
from programs import HERE, lines, nbscale_run, run_env

pytestmark = pytest.mark.slow


def line_of(script: str, text: str) -> int:
    """The number of the first line of ``script`` that holds ``text``."""
    source = (HERE / script).read_text().splitlines()
    return next(n for n, line in enumerate(source, 1) if text in line)


def test_help_lists_the_entrypoints_flags(tmp_path: Path) -> None:
    proc = nbscale_run("entrypoint_args.py", "--help", env=run_env("process", tmp_path))
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "usage: nbscale run entrypoint_args.py::main" in out
    assert "Repeat TEXT on a worker, then shout it here if asked." in out  # its docstring
    assert "--text STR" in out and "str (required)" in out
    assert "--times INT" in out and "int (default: 2)" in out
    assert "--scale FLOAT" in out and "float (default: 1.5)" in out
    assert "--shout, --no-shout" in out and "bool (default: False)" in out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--text", "ab", "--times", "many"), "argument --times: invalid int value: 'many'"),
        (("--times", "3"), "the following arguments are required: --text"),
        (("--text", "ab", "--colour", "red"), "unrecognized arguments: --colour red"),
    ],
)
def test_a_bad_flag_exits_2_and_runs_nothing(
    args: tuple[str, ...], message: str, tmp_path: Path
) -> None:
    proc = nbscale_run("entrypoint_args.py", *args, env=run_env("process", tmp_path))
    assert proc.returncode == 2
    assert message in proc.stderr
    assert "result:" not in proc.stdout


def test_a_function_named_runs_on_a_worker(tmp_path: Path) -> None:
    env = run_env("process", tmp_path)
    proc = nbscale_run("run_from_script.py::square", "--x", "7", env=env)
    assert proc.returncode == 0, proc.stderr
    assert "squaring 7" in lines(proc.stdout)  # printed by the worker, shown here
    assert "running square (function, on a worker)" in proc.stderr
    assert "remote" not in proc.stdout  # imported as a module: its __main__ block did not run


def test_a_module_by_its_dotted_name(tmp_path: Path) -> None:
    env = run_env("process", tmp_path)
    proc = nbscale_run("-m", "spawn_gather", "--n", "3", env=env)
    assert proc.returncode == 0, proc.stderr
    assert "gathered [0, 1, 8]" in lines(proc.stdout)
    proc = nbscale_run("-m", "spawn_gather.py", env=env)
    assert proc.returncode == 1
    assert "-m takes a module's dotted name, not a file: spawn_gather.py" in proc.stderr


def test_detach_without_a_jupyter_server_is_refused(tmp_path: Path) -> None:
    # tmp_path is the run's Jupyter runtime directory: no server runs there.
    proc = nbscale_run("--detach", "batch_detach.py", env=run_env("process", tmp_path))
    assert proc.returncode == 1
    [line] = proc.stderr.splitlines()
    assert line.startswith("nbscale: error: --detach: a detached run needs the Jupyter server's")
    assert "submitted" not in proc.stdout  # refused before anything ran


@pytest.mark.parametrize(
    ("script", "asks", "says"),
    [
        (
            "scheduled_report.py",
            "schedule=",
            "modal.Period is not supported by nbscale: there is no scheduler",
        ),
    ],
)
def test_a_modal_feature_nbscale_lacks_stops_the_run_in_one_line(
    script: str, asks: str, says: str, tmp_path: Path
) -> None:
    proc = nbscale_run(script, env=run_env("process", tmp_path))
    assert proc.returncode == 1
    [line] = proc.stderr.splitlines()  # no traceback
    assert line.startswith(f"nbscale: error: {script}:{line_of(script, asks)}: {says}"), line


BOOM = """\
import sys
import nbscale as modal

app = modal.App("boom")


@app.function()
def half(x: int) -> float:
    return x / 2


@app.local_entrypoint()
def main(code: int = 0):
    print("half", half.remote(3))
    if code:
        sys.exit(code)
    raise ValueError("the script's own failure")
"""


def test_the_scripts_own_failure_shows_its_traceback_and_its_exit_code(tmp_path: Path) -> None:
    script = tmp_path / "boom.py"
    script.write_text(BOOM)
    env = run_env("process", tmp_path / "runtime")
    proc = nbscale_run(str(script), env=env)
    assert proc.returncode == 1
    assert "half 1.5" in lines(proc.stdout)
    assert "Traceback (most recent call last)" in proc.stderr
    [n] = [n for n, line in enumerate(BOOM.splitlines(), 1) if "raise ValueError" in line]
    assert f'boom.py", line {n}, in main' in proc.stderr  # the script's frame
    assert proc.stderr.rstrip().endswith("ValueError: the script's own failure")
    assert "_cli_run.py" not in proc.stderr  # nbscale's own frames left out
    proc = nbscale_run(str(script), "--code", "3", env=env)
    assert proc.returncode == 3  # its own sys.exit
