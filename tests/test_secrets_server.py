"""A secret given to workers by a real Jupyter server's control plane, and looked for
everywhere else: a script run with `nbscale run` against the server (a stored secret made
by the real `nbscale secret create`, and one read from a .env file beside the script) sees
the values on its worker; every REST route's answer (status, pools, each pool, calls, each
call, each worker's logs, a pool's PATCH and DELETE), the events feed, the script's output
and the server's debug log never hold them."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import tornado.httpclient
import tornado.websocket
from jupyter_process import JupyterProcess

pytestmark = pytest.mark.slow

STORED = "stored-Value-4f1c"
FROM_DOTENV = "dotenv-Value-93ab"

SCRIPT = """
import hashlib, os, pathlib, time
import nbscale as modal

app = modal.App("leak-check")
secrets = [modal.Secret.from_name("api"), modal.Secret.from_dotenv(__file__)]


@app.function(secrets=secrets, scaledown_window=60)
def digest(names):
    print("worker has", sorted(n for n in names if n in os.environ))
    return hashlib.sha256("|".join(os.environ[n] for n in names).encode()).hexdigest()


@app.local_entrypoint()
def main(go: str):
    print("DIGEST", digest.remote(["TOKEN", "DOTENV_TOKEN"]), flush=True)
    deadline = time.monotonic() + 120
    while not pathlib.Path(go).exists() and time.monotonic() < deadline:
        time.sleep(0.1)
"""


def leaks(text: str) -> list[str]:
    return [value for value in (STORED, FROM_DOTENV) if value in text]


async def follow_events(server: JupyterProcess, seen: list[str]) -> None:
    req = tornado.httpclient.HTTPRequest(
        f"ws://127.0.0.1:{server.port}/nbscale/api/events",
        headers={"Authorization": f"token {server.token}"},
    )
    ws = await tornado.websocket.websocket_connect(req)
    try:
        while (message := await ws.read_message()) is not None:
            seen.append(str(message))
    finally:
        ws.close()


def sweep_rest(server: JupyterProcess) -> dict[str, str]:
    """Every GET route's answer, by path, as text."""
    answers: dict[str, str] = {}

    def get(path: str) -> Any:
        value = server.request("GET", f"nbscale/api/{path}")
        answers[path] = json.dumps(value)
        return value

    get("status")
    pools = get("pools")
    for pool in pools:
        get(f"pools/{pool['id']}")
        for worker in pool["workers"]:
            get(f"containers/{worker['id']}/logs?tail=1000")
    for call in get("calls"):
        get(f"calls/{call['id']}")
    return answers


def test_a_secret_is_in_the_workers_environment_and_in_no_answer_event_or_log(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("JUPYTER_DATA_DIR", str(tmp_path / "data"))
    env = {k: v for k, v in os.environ.items() if k != "NBSCALE_CONNECTION_FILE"}
    made = subprocess.run(
        [sys.executable, "-m", "nbscale", "secret", "create", "api", f"TOKEN={STORED}"],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert made.returncode == 0 and not leaks(made.stdout + made.stderr), made.stderr
    project = tmp_path / "project"
    project.mkdir()
    (project / "job.py").write_text(SCRIPT)
    (project / ".env").write_text(f"DOTENV_TOKEN={FROM_DOTENV}\n")
    config = {
        "ServerApp": {
            "jpserver_extensions": {"nbscale_server": True},
            "log_level": "DEBUG",
            # nbscale's own loggers too, at every level, into the server's log
            "logging_config": {"loggers": {"nbscale": {"level": "DEBUG", "handlers": ["console"]}}},
        },
        "NbScale": {"heartbeat_interval": 0.5, "max_workers_total": 4, "launcher": "process"},
    }
    server = JupyterProcess(tmp_path, ["jupyter", "server"], config, "nbscale/api/pools")
    loop = asyncio.new_event_loop()
    events: list[str] = []
    follower = loop.create_task(follow_events(server, events))
    loop.run_until_complete(asyncio.sleep(0.5))
    go = tmp_path / "go"
    run = subprocess.Popen(
        [sys.executable, "-m", "nbscale", "run", "job.py", "--go", str(go)],
        cwd=project,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**env, "JUPYTER_RUNTIME_DIR": str(server.runtime_dir)},
    )
    try:
        assert run.stdout is not None
        printed = []
        for line in run.stdout:
            printed.append(line)
            if line.startswith("DIGEST "):
                break
        expected = hashlib.sha256(f"{STORED}|{FROM_DOTENV}".encode()).hexdigest()
        assert f"DIGEST {expected}\n" in printed, "".join(printed)  # the worker had both
        loop.run_until_complete(asyncio.sleep(1.0))  # the events of the run arrive

        answers = sweep_rest(server)
        [pool] = [p for p in json.loads(answers["pools"]) if p["function"] == "digest"]
        assert any("worker has ['DOTENV_TOKEN', 'TOKEN']" in a for a in answers.values())
        patched = server.request("PATCH", f"nbscale/api/pools/{pool['id']}", {"max_containers": 2})
        answers["PATCH pool"] = json.dumps(patched)
        answers["DELETE pool"] = json.dumps(
            server.request("DELETE", f"nbscale/api/pools/{pool['id']}")
        )
        found = {path: leaks(text) for path, text in answers.items() if leaks(text)}
        assert not found, f"secret values in REST answers: {found}"
        assert len(answers) >= 7 and events
        assert not [e for e in events if leaks(e)], "secret values in the events feed"

        go.touch()
        rest, _ = run.communicate(timeout=120)
        assert run.returncode == 0, "".join(printed) + rest
        assert not leaks("".join(printed) + rest)
    finally:
        go.touch()
        if run.poll() is None:
            run.kill()
            run.wait(10)
        follower.cancel()
        loop.run_until_complete(asyncio.gather(follower, return_exceptions=True))
        loop.close()
        server.stop()
    log = server.log_path.read_text()
    assert "nbscale" in log and "[D " in log  # debug lines: the log the values are sought in
    assert not leaks(log), "secret values in the server's log"
    worker_secret_files = list((tmp_path / "runtime").rglob("wk-*.json"))
    assert worker_secret_files == []  # their config files went with them
