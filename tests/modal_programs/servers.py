"""A ported program run against a real Jupyter server's control plane: detached (its spawned
work goes on after the script ends, and its results are fetched from another process) and
not (what the run started ends with it)."""

from __future__ import annotations

import json
import re
from pathlib import Path

from conftest import fresh_python_stdout
from jupyter_process import JupyterProcess
from programs import load, nbscale_run, run_env

FETCH = (
    "import json, sys, nbscale\n"
    "print(json.dumps(list(nbscale.FunctionCall.from_id(sys.argv[1]).iter())))"
)


def start_server(tmp_path: Path, launcher: str) -> JupyterProcess:
    config = {
        "ServerApp": {"jpserver_extensions": {"nbscale_server": True}},
        "NbScale": {"heartbeat_interval": 0.5, "max_workers_total": 4, "launcher": launcher},
    }
    return JupyterProcess(tmp_path, ["jupyter", "server"], config, "nbscale/api/pools")


def fetch_results(server: JupyterProcess, call_id: str) -> list[int]:
    """The results of a spawned call, from a process of its own that connects to the
    server's control plane."""
    [connection_file] = server.runtime_dir.glob("nbscale-*.json")
    env = run_env("process", server.runtime_dir, NBSCALE_CONNECTION_FILE=str(connection_file))
    out = fresh_python_stdout(FETCH, call_id, env=env, timeout=180)
    results: list[int] = json.loads(out.splitlines()[-1])
    return results


def check_batch_detach(launcher: str, tmp_path: Path) -> None:
    program = load("batch_detach")
    expected = [program.process_chunk.local(i) for i in range(10)]
    server = start_server(tmp_path, launcher)
    try:
        env = run_env(launcher, server.runtime_dir)
        where = f"on the Jupyter server's control plane (pid {server.proc.pid})"

        # Not detached: leaving the run cancels the work it spawned.
        proc = nbscale_run("batch_detach.py", "--chunks", "10", env=env)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert where in proc.stderr and "submitted 10 chunks" in proc.stdout
        assert "detached" not in proc.stderr
        [ended] = [c for c in server.request("GET", "nbscale/api/calls") if c["kind"] == "spawn"]
        assert ended["cancelled"] and ended["done"] < 10

        # Detached: the command names the call, whose work goes on after the script ended.
        proc = nbscale_run("--detach", "batch_detach.py", "--chunks", "10", env=env)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        found = re.search(r"detached: 1 spawned call keeps running .*: (fc-\w+)", proc.stderr)
        assert found, proc.stderr
        call_id = found[1]
        assert fetch_results(server, call_id) == expected
        call = server.request("GET", f"nbscale/api/calls/{call_id}")
        assert (call["done"], call["cancelled"]) == (10, False)
    finally:
        server.stop()
