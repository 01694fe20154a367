"""W8's control plane: the real ``ControlPlane`` in a process of its own, as a Jupyter
server hosts it, with a launcher that starts simulated workers instead of processes.

``SimLauncher`` hands each worker its config (the very file the fleet wrote: endpoint,
worker id, CurveZMQ keys) to one of the simulated-worker hosts (``w8_workers.py``) over a
ZeroMQ socket, round robin, and learns of their exits the same way. The workers it starts
share no files with the control plane (``register_in_worker`` is None), as workers on other
machines do, and reach it over TCP with CurveZMQ (``worker_bind_host``): the path remote
workers take, with a handshake and encryption per connection, not the local Unix socket.

    python bench/w8_plane.py --dir DIR --hosts 2 --max-workers 1000

writes ``DIR/connection.json`` (what ``NBSCALE_CONNECTION_FILE`` names) once every host has
said hello and the control plane is up, and stops on SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import signal
from typing import Any

import zmq

from nbscale_server.channel import Channel, unbounded
from nbscale_server.control_plane import ControlPlane
from nbscale_server.launchers import Launcher, LaunchFailed, WorkerHandle, WorkerSpec
from nbscale_server.limits import Limits
from nbscale_server.security import write_secret_json
from nbscale_server.settings import ControlPlaneConfig

# Host <-> launcher messages: [host, verb, *args], all bytes.
START, STOP, EXIT, HELLO = b"start", b"stop", b"exit", b"hello"


class SimLauncher(Launcher):
    """Starts simulated workers on the hosts that connected to ``endpoint``."""

    name = "sim"

    def __init__(self, ctx: zmq.Context[Any], endpoint: str) -> None:
        self.sock = unbounded(ctx.socket(zmq.ROUTER))
        self.sock.bind(endpoint)
        self.hosts: list[bytes] = []
        self._next_host: itertools.cycle[bytes] | None = None
        self.exits: dict[str, int] = {}
        self.host_of: dict[str, bytes] = {}
        self.channel: Channel | None = None

    def attach(self) -> None:
        """Hear the hosts on the running loop."""
        self.channel = Channel(self.sock, self._on_message)

    def _on_message(self, frames: list[Any]) -> None:
        host, verb, *args = (bytes(f) for f in frames)
        if verb == HELLO:
            self.hosts.append(host)
            self._next_host = itertools.cycle(self.hosts)
        elif verb == EXIT:
            self.exits[args[0].decode()] = int(args[1])

    def start(self, spec: WorkerSpec) -> WorkerHandle:
        if self._next_host is None or self.channel is None:
            raise LaunchFailed("no simulated-worker host connected")
        host = next(self._next_host)
        with open(spec.config_path, "rb") as f:  # handed over as a container gets its mount
            config = f.read()
        self.host_of[spec.worker_id] = host
        self.channel.send([host, START, config])
        return WorkerHandle(spec.worker_id, spec.pool_id, self.name, spec.worker_id)

    def stop(self, handle: WorkerHandle, *, graceful: bool = True) -> None:
        host = self.host_of.get(handle.worker_id)
        if host is not None and self.channel is not None:
            how = b"graceful" if graceful else b"kill"
            self.channel.send([host, STOP, handle.worker_id.encode(), how])

    def exit_code(self, handle: WorkerHandle) -> int | None:
        return self.exits.get(handle.worker_id)

    def logs(self, handle: WorkerHandle, tail: int = 20) -> str:
        return ""

    def register_in_worker(self, path: str) -> str | None:
        return None  # on another machine: no shared files

    def worker_bind_host(self) -> str | None:
        return "127.0.0.1"  # TCP with CurveZMQ, as remote workers connect

    def close(self) -> None:
        if self.channel is not None:
            self.channel.close()


def plane_config(max_workers: int, in_flight: int) -> ControlPlaneConfig:
    """The defaults, but room for ``max_workers`` and ``in_flight`` inputs per map."""
    default = Limits()
    limits = Limits(
        max_pending_inputs=max(default.max_pending_inputs, in_flight),
        max_total_inputs=max(default.max_total_inputs, in_flight),
        max_inputs_in_flight_per_map=in_flight,
    )
    return ControlPlaneConfig(limits=limits, max_workers_total=max_workers, stop_grace=10.0)


async def serve(work_dir: str, hosts: int, max_workers: int, in_flight: int) -> None:
    ctx: zmq.Context[Any] = zmq.Context()
    launcher = SimLauncher(ctx, f"ipc://{work_dir}/launcher")
    plane = ControlPlane(plane_config(max_workers, in_flight), launcher, ctx=ctx)
    launcher.attach()
    while len(launcher.hosts) < hosts:
        await asyncio.sleep(0.01)
    await plane.start()
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stopping.set)
    # The file appears whole: the driver polls for it.
    tmp = os.path.join(work_dir, "connection.json.tmp")
    write_secret_json(tmp, plane.connection_info())
    os.rename(tmp, os.path.join(work_dir, "connection.json"))
    await stopping.wait()
    await plane.stop()
    launcher.close()
    ctx.term()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", required=True, help="where the sockets and files go")
    parser.add_argument("--hosts", type=int, required=True, help="hosts to wait for")
    parser.add_argument("--max-workers", type=int, required=True)
    parser.add_argument("--in-flight", type=int, default=Limits().max_inputs_in_flight_per_map)
    args = parser.parse_args()
    asyncio.run(serve(args.dir, args.hosts, args.max_workers, args.in_flight))


if __name__ == "__main__":
    main()
