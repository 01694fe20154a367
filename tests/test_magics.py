"""The ``%%nbscale`` and ``%nbscale`` magics through a real IPython shell (cells run on real
workers), and through a real kernel with nbclient (errors as the notebook shows them)."""

from __future__ import annotations

import linecache
import os
import re
import traceback
from collections.abc import Iterator
from pathlib import Path

import nbformat
import pytest
from IPython.core.error import UsageError
from IPython.core.interactiveshell import ExecutionResult, InteractiveShell
from IPython.utils.capture import CapturedIO, capture_output
from nbclient import NotebookClient
from traitlets.config import Config

import nbscale
from nbscale import _owner, _pools
from nbscale._cells import cell_names
from nbscale_runtime.cells import RemoteRepr


@pytest.fixture(scope="module")
def ip(tmp_path_factory: pytest.TempPathFactory) -> Iterator[InteractiveShell]:
    """One shell for the module, with nbscale's magics loaded."""
    os.environ["IPYTHONDIR"] = str(tmp_path_factory.mktemp("ipython"))
    config = Config()
    config.HistoryManager.hist_file = ":memory:"
    config.InteractiveShell.colors = "NoColor"
    shell = InteractiveShell.instance(config=config)
    shell.run_line_magic("load_ext", "nbscale")
    yield shell
    InteractiveShell.clear_instance()
    del os.environ["IPYTHONDIR"]


def run(ip: InteractiveShell, code: str) -> tuple[ExecutionResult, CapturedIO]:
    with capture_output() as out:
        result = ip.run_cell(code, store_history=True)
    return result, out


def test_a_cell_runs_on_a_worker_with_the_names_it_reads(ip):
    run(ip, "import math\nbase = 10\ndef helper(v):\n    return v * 2\n")
    result, out = run(
        ip,
        "%%nbscale\nimport os\nprint('worker pid', os.getpid())\n"
        "y = helper(base) + math.floor(2.5)\ny * 3\n",
    )
    assert result.success, out.stdout + out.stderr
    assert result.result == 66  # the last expression is the cell's result
    assert ip.user_ns["y"] == 22  # assigned names come back
    pid = int(out.stdout.split("worker pid ")[1].split()[0])
    assert pid != os.getpid()  # it ran elsewhere
    assert "os" in ip.user_ns


def test_pull_and_no_pull_choose_what_comes_back(ip):
    result, _ = run(ip, "%%nbscale --no-pull\nkept_remote = 5\nkept_remote + 1\n")
    assert result.result == 6 and "kept_remote" not in ip.user_ns
    result, _ = run(ip, "%%nbscale --pull a\na = 1\nb = 2\n")
    assert result.result is None
    assert ip.user_ns["a"] == 1 and "b" not in ip.user_ns
    result, _ = run(ip, "%%nbscale --pull a --no-pull\n1\n")
    assert isinstance(result.error_in_exec, UsageError)


def test_names_that_do_not_pickle_stay_behind_and_say_so(ip):
    run(ip, "import threading\nlock = threading.Lock()\n")
    result, out = run(ip, "%%nbscale\ndef uses_lock():\n    return lock\nthreading.Lock()\n")
    assert result.success, out.stderr
    assert "not sent to the worker (they do not pickle): lock" in out.stderr
    assert "not brought back (they do not pickle): the last expression" in out.stderr
    assert isinstance(result.result, RemoteRepr) and "lock" in repr(result.result)
    assert callable(ip.user_ns["uses_lock"])


def test_a_remote_error_reads_like_a_cell_error_with_the_cells_line_numbers(ip):
    result, out = run(ip, "%%nbscale\nx = 1\n\nraise ValueError(f'boom {x}')\n")
    error = result.error_in_exec
    assert isinstance(error, ValueError) and str(error) == "boom 1"
    frames = traceback.extract_tb(error.__traceback__)
    cell_frames = [f for f in frames if f.lineno == 4 and f.line == "raise ValueError(f'boom {x}')"]
    assert cell_frames  # line 4 of the cell, the %%nbscale line being line 1
    assert linecache.getline(cell_frames[0].filename, 1).startswith("%%nbscale")
    assert "----> 4 raise ValueError(f'boom {x}')" in out.stdout
    assert "ValueError: boom 1" in out.stdout
    assert "worker.py" not in out.stdout and "cells.py" not in out.stdout
    # only the cell's frames: none of nbscale's nor of IPython's magic machinery; and the
    # note that says where it ran, shown on this IPython too (8.12 does not show notes)
    for internal in ("_magics.py", "_function.py", "_loop.py", "interactiveshell.py"):
        assert internal not in out.stdout, out.stdout
    assert "skipping hidden" not in out.stdout
    assert re.search(r"\(raised remotely in \S+ \[\d+\] on worker wk-\w+, input 0", out.stdout)


def test_remote_errors_of_plain_calls_show_the_users_frames_and_where_they_ran(ip):
    run(ip, "import nbscale\nnbscale.config(progress='off')\napp = nbscale.App('tb')\n")
    run(ip, "@app.function\ndef fails(x):\n    raise KeyError(x)\n")
    for call in ("fails.remote(5)", "list(fails.map([5]))"):
        result, out = run(ip, call)
        assert isinstance(result.error_in_exec, KeyError)
        assert f"----> 1 {call}" in out.stdout and "----> 3     raise KeyError(x)" in out.stdout
        assert "(raised remotely in fails on worker wk-" in out.stdout
        for internal in ("_aio.py", "_loop.py", "_function.py", "_map_results.py", "hidden"):
            assert internal not in out.stdout, out.stdout
    result, out = run(ip, "nbscale.config(debug=True)\nfails.remote(5)")
    assert "_loop.py" in out.stdout  # nbscale's own frames, for debugging nbscale
    run(ip, "nbscale.config(debug=None, progress=None)")


def test_an_error_in_a_notebook_function_shows_that_functions_lines(ip):
    run(ip, "def check(v):\n    if v > 2:\n        raise KeyError(v)\n    return v\n")
    result, out = run(ip, "%%nbscale\ncheck(1)\ncheck(3)\n")
    assert isinstance(result.error_in_exec, KeyError)
    assert "----> 3 check(3)" in out.stdout
    assert "----> 3         raise KeyError(v)" in out.stdout


def test_a_bad_option_shows_the_usage_line(ip):
    result, out = run(ip, "%%nbscale --bogus 1\nx = 1\n")
    assert isinstance(result.error_in_exec, UsageError)
    assert "unrecognized arguments: --bogus 1" in out.stderr
    assert "%nbscale [--gpu T] [--image NAME]" in out.stderr
    result, out = run(ip, "%%nbscale --map range(3)\nx\n")
    assert "--map ITERABLE and --as NAME go together" in out.stderr
    result, out = run(ip, "%nbscale frobnicate")
    assert isinstance(result.error_in_exec, UsageError)
    assert "usage: %nbscale [-h] COMMAND" in out.stderr or "%nbscale COMMAND" in out.stderr


def test_a_syntax_error_is_reported_before_anything_runs(ip):
    result, _ = run(ip, "%%nbscale\nx = (\n")
    assert isinstance(result.error_in_exec, SyntaxError)


def test_map_runs_the_cell_once_per_element(ip):
    run(ip, "offset = 100\n")
    result, out = run(
        ip, "%%nbscale --map range(6) --as i --out squares --max-containers 2\ni * i + offset\n"
    )
    assert result.success, out.stderr
    assert result.result is None and ip.user_ns["squares"] == [100, 101, 104, 109, 116, 125]
    result, _ = run(ip, "%%nbscale --map \"'ab'\" --as letter\nprint('got', letter)\nletter * 2\n")
    assert result.result == ["aa", "bb"]
    result, out = run(ip, "%%nbscale --map '[1, 0]' --as d\n\n1 / d\n")
    assert isinstance(result.error_in_exec, ZeroDivisionError)
    assert "----> 3 1 / d" in out.stdout


def test_options_pick_the_pool(ip):
    result, _ = run(ip, "%%nbscale --timeout 45 --max-containers 1 --cpu 1 --memory 512\n7\n")
    assert result.result == 7
    [pool] = [p for p in _pools.pools() if p["settings"]["max_containers"] == 1]
    # named after the notebook (here: the script running the shell) and the cell's number
    assert pool["function"] == f"{_owner.this_owner()['name']} [{ip.execution_count - 1}]"
    result, _ = run(ip, "%%nbscale --gpu A100:zero\n1\n")
    assert isinstance(result.error_in_exec, nbscale.InvalidError)


def test_line_magics_status_pools_scale_logs_and_stop(ip):
    marker = "a line for the log of the worker"
    result, _ = run(ip, f"%%nbscale --max-containers 4\nimport os\nos.write(2, b'{marker}\\n')\n")
    assert result.success
    [pool] = [p for p in _pools.pools() if p["settings"]["max_containers"] == 4]

    result, out = run(ip, "%nbscale status")
    assert result.success and "nbscale embedded control plane" in out.stdout
    assert pool["id"] in out.stdout

    result, out = run(ip, "%nbscale pools")
    [table] = out.outputs
    assert pool["id"] in table.data["text/plain"] and "containers" in table.data["text/plain"]
    assert f"data-pool='{pool['id']}'" in table.data["text/html"]

    result, out = run(ip, f"%nbscale scale {pool['id']} --max 3 --scaledown-window 30")
    assert result.success and "max_containers=3" in out.stdout
    assert _pools.find_pool(pool["id"])["settings"]["max_containers"] == 3
    assert _pools.find_pool(pool["id"])["settings"]["scaledown_window"] == 30
    result, out = run(ip, f"%nbscale scale {pool['id']}")
    assert isinstance(result.error_in_exec, UsageError)

    worker = pool["workers"][0]["id"]
    result, out = run(ip, f"%nbscale logs {worker}")
    assert result.success and marker in out.stdout
    # a bad argument: the message and the command's usage line, no traceback
    result, out = run(ip, "%nbscale logs fc-nothing")
    assert isinstance(result.error_in_exec, UsageError)
    assert "no function call fc-nothing" in out.stderr
    assert "usage: %nbscale logs [--tail TAIL] CALL_OR_CONTAINER" in out.stderr
    result, out = run(ip, "%nbscale logs nope")
    assert "usage: %nbscale logs" in out.stderr and "Traceback" not in out.stdout + out.stderr

    result, out = run(ip, f"%nbscale stop {pool['id']}")
    assert result.success and f"stopped {pool['id']}" in out.stdout
    assert _pools.find_pool(pool["id"])["stopped"]
    result, out = run(ip, "%nbscale stop")
    assert result.success and "stopped pl-" in out.stdout
    result, out = run(ip, "%nbscale stop no-such-pool")
    assert isinstance(result.error_in_exec, UsageError)
    assert "no pool 'no-such-pool'" in out.stderr and "usage: %nbscale stop" in out.stderr


def test_what_a_cell_reads_and_assigns():
    names = cell_names(
        "import os\nfrom math import pi\nx = a + 1\ndef f(v):\n    return v * b\n"
        "class K:\n    size = c\n[d for _ in range(2)]\n",
        "<cell>",
    )
    assert {"a", "b", "c", "d", "range"} <= names.used
    assert names.assigned == {"os", "pi", "x", "f", "K"}


def test_unloading_removes_the_magics(ip):
    ip.run_line_magic("unload_ext", "nbscale")
    assert "nbscale" not in ip.magics_manager.magics["cell"]
    ip.run_line_magic("load_ext", "nbscale")
    assert "nbscale" in ip.magics_manager.magics["line"]


MAGICS_NOTEBOOK = [
    "%load_ext nbscale",
    "factor = 3",
    "%%nbscale\nimport os\nprint('on a worker:', os.getpid() != PARENT)\nz = factor * 7\nz",
    "%%nbscale --map range(4) --as n --out tripled\nn * factor",
    "print('TRIPLED', tripled, 'Z', z)",
    "%nbscale status",
    "%%nbscale\nfirst = 1\n\nraise RuntimeError('remote trouble')",
    "%%nbscale --nope\n1",
]


@pytest.mark.slow
def test_magics_in_a_real_kernel(tmp_path: Path):
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(f"import os\nPARENT = {os.getpid()}")]
    nb.cells += [nbformat.v4.new_code_cell(src) for src in MAGICS_NOTEBOOK]
    NotebookClient(nb, timeout=90, allow_errors=True, kernel_name="python3").execute()
    outputs = [cell.outputs for cell in nb.cells]

    def text(i: int) -> str:
        return "".join(
            o.get("text", "") + o.get("data", {}).get("text/plain", "") for o in outputs[i]
        )

    assert "on a worker: True" in text(3)
    assert [o.data["text/plain"] for o in outputs[3] if o.output_type == "execute_result"] == ["21"]
    assert "TRIPLED [0, 3, 6, 9] Z 21" in text(5)
    # --map shows the live view, whose last state is a summary any viewer shows; its pool is
    # named after the notebook (nbclient's kernel: its pid) and the cell; results are values
    [view] = [o.data for o in outputs[4] if "application/vnd.nbscale.map+json" in o.get("data", {})]
    state = view["application/vnd.nbscale.map+json"]
    assert state["final"] and re.match(r"pid \d+ \[5\]: 4 inputs · 4 done", state["summary"])
    assert state["summary"] in view["text/html"]
    assert sorted(r["summary"] for r in state["rows"]) == ["0", "3", "6", "9"]  # no envelope
    assert "embedded control plane" in text(6)
    [error] = [o for o in outputs[7] if o.output_type == "error"]
    assert error.ename == "RuntimeError" and error.evalue == "remote trouble"
    shown = re.sub(r"\x1b\[[0-9;]*m", "", "\n".join(error.traceback))  # no colours
    assert "Cell In[8], line 4" in shown and "----> 4 raise RuntimeError('remote trouble')" in shown
    assert "UsageError: unrecognized arguments: --nope" in text(8)
    assert "%nbscale [--gpu T]" in text(8)  # the usage line
