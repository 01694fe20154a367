"""A Jupyter server application (``jupyter server``, ``jupyter lab``) in a subprocess, for the
end-to-end suites: its own runtime, data and config directories, a free port and a random
token. Started again in the same ``tmp``, it finds what the last one left there (its data
directory holds nbscale's store of spawned calls)."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import psutil
import tornado.httpclient
import tornado.websocket
from conftest import command_line
from jupyter_client.asynchronous.client import AsyncKernelClient


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# A Jupyter server hosting nbscale's control plane with process workers, as tests start it.
PROCESS_SERVER_CONFIG: dict[str, Any] = {
    "ServerApp": {"jpserver_extensions": {"nbscale_server": True}},
    "NbScale": {"heartbeat_interval": 0.5, "max_workers_total": 4, "launcher": "process"},
}


def start_server(tmp: Path) -> JupyterProcess:
    """A ``jupyter server`` with ``PROCESS_SERVER_CONFIG``, once its control plane answers."""
    return JupyterProcess(tmp, ["jupyter", "server"], PROCESS_SERVER_CONFIG, "nbscale/api/status")


class JupyterProcess:
    def __init__(
        self,
        tmp: Path,
        app: list[str],
        config: dict[str, Any],
        ready_path: str,
        start_timeout: float = 60,
        runtime_dir: Path | None = None,
        args: tuple[str, ...] = (),
        port: int | None = None,
    ) -> None:
        """Start ``python -m <app...>`` with ``config`` as its jupyter_server_config.json and
        wait until ``GET ready_path`` answers."""
        self.tmp = tmp
        self.port = port or free_port()
        self.token = os.urandom(16).hex()
        self.runtime_dir = runtime_dir or tmp / "runtime"
        self.data_dir = tmp / "data"
        config_dir = tmp / "config"
        config_dir.mkdir(exist_ok=True)
        (config_dir / "jupyter_server_config.json").write_text(json.dumps(config))
        env = dict(os.environ, JUPYTER_RUNTIME_DIR=str(self.runtime_dir))
        env["JUPYTER_CONFIG_DIR"] = str(config_dir)
        env["JUPYTER_DATA_DIR"] = str(self.data_dir)
        env.pop("NBSCALE_CONNECTION_FILE", None)  # the server's own, not an outer one
        self.log_path = tmp / f"{app[0]}.log"
        self._log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                *app,
                "--no-browser",
                "--allow-root",
                f"--port={self.port}",
                "--port-retries=0",
                f"--IdentityProvider.token={self.token}",
                f"--ServerApp.root_dir={tmp}",
                *args,
            ],
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + start_timeout
        try:
            while not self._ready(ready_path):
                assert self.proc.poll() is None, self.log_path.read_text()
                assert time.monotonic() < deadline, f"{' '.join(app)} did not start"
                time.sleep(0.2)
        except BaseException:  # no server left running by a test that failed to start it
            self.kill()
            raise

    def _ready(self, path: str) -> bool:
        try:
            self.request("GET", path)
        except (urllib.error.URLError, ConnectionError):
            return False
        return True

    def request(self, method: str, path: str, body: Any = None) -> Any:
        """An authenticated request to the server; the decoded JSON answer."""
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(
            f"http://127.0.0.1:{self.port}/{path}",
            data=data,
            method=method,
            headers={"Authorization": f"token {self.token}"},
        )
        with urllib.request.urlopen(req, timeout=20) as response:
            text = response.read()
        return json.loads(text) if text else None

    def request_status(self, path: str) -> tuple[int, Any]:
        """``(status, decoded JSON body)`` of a request that may fail (GET)."""
        try:
            return 200, self.request("GET", path)
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read() or b"null")

    @property
    def connection_file(self) -> Path:
        """The connection file of this server's control plane (what kernels are given)."""
        return self.runtime_dir / f"nbscale-{self.proc.pid}.json"

    def kill(self) -> None:
        """SIGKILL the server, as a crash would end it: nothing of it cleans up."""
        self.proc.kill()
        self.proc.wait(10)
        self._log.close()

    def stop(self) -> None:
        if self.proc.poll() is None:
            try:
                self.request("POST", "api/shutdown")
                self.proc.wait(30)
            except (urllib.error.URLError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait(10)
        self._log.close()


class Kernel:
    """A kernel the server started, driven over its connection file."""

    def __init__(self, connection_file: Path) -> None:
        self.client = AsyncKernelClient(connection_file=str(connection_file))
        self.client.load_connection_file()
        self.client.start_channels()

    @classmethod
    async def connect(cls, connection_file: Path) -> Kernel:
        kernel = cls(connection_file)
        await kernel.client.wait_for_ready(timeout=60)
        return kernel

    async def run(self, code: str, timeout: float = 60) -> str:
        """Run a cell; its stdout, or the test fails with the cell's traceback."""
        out: list[str] = []
        errors: list[str] = []

        def on_output(msg: dict[str, Any]) -> None:
            if msg["msg_type"] == "stream":
                out.append(msg["content"]["text"])
            elif msg["msg_type"] == "error":
                errors.append("\n".join(msg["content"]["traceback"]))

        reply = await self.client.execute_interactive(code, timeout=timeout, output_hook=on_output)
        assert reply["content"]["status"] == "ok", errors
        return "".join(out)

    def close(self) -> None:
        self.client.stop_channels()


class Server(JupyterProcess):
    """``jupyter server`` in a subprocess, with the nbscale extension; ``settings`` go to
    ``c.NbScale`` over the defaults of the tests. A server started again with the same
    ``tmp`` and ``port`` is the same server restarted."""

    def __init__(self, tmp: Path, port: int | None = None, **settings: Any) -> None:
        nbscale = {"heartbeat_interval": 0.5, "max_workers_total": 4, "launcher": "process"}
        config = {
            "ServerApp": {"jpserver_extensions": {"nbscale_server": True}},
            "NbScale": {**nbscale, **settings},
        }
        super().__init__(tmp, ["jupyter", "server"], config, "nbscale/api/pools", port=port)

    async def start_kernel(self) -> tuple[str, Kernel]:
        started = await asyncio.to_thread(self.request, "POST", "api/kernels", {"name": "python3"})
        kernel_id = started["id"]
        return kernel_id, await Kernel.connect(self.runtime_dir / f"kernel-{kernel_id}.json")

    def workers(self) -> list[psutil.Process]:
        children = psutil.Process(self.proc.pid).children(recursive=True)
        return [p for p in children if "nbscale_runtime" in command_line(p)]

    async def events(self) -> tornado.websocket.WebSocketClientConnection:
        req = tornado.httpclient.HTTPRequest(
            f"ws://127.0.0.1:{self.port}/nbscale/api/events",
            headers={"Authorization": f"token {self.token}"},
        )
        return await tornado.websocket.websocket_connect(req)


async def eventually(check: Callable[[], Awaitable[Any]], timeout: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout
    while not (result := await check()):
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.1)
    return result
