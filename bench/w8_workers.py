"""W8's simulated workers: hundreds per process, each speaking the real worker protocol over
real sockets, as a remote worker does.

Each simulated worker is what ``nbscale_runtime.worker`` is on the wire, less the process:
two CurveZMQ DEALER connections over TCP named ``wk-...`` (data) and ``wk-...:pulse``,
with the keys of the config file the control plane wrote for it. It registers, loads the
function it is sent, asks for inputs with the real worker's own prefetch policy
(``intake.more_wanted``), unpickles and runs each input and pickles its result
(``serialization``), and sends ``outputs`` batches carrying its next ``want``; its pulse
heartbeats every ``heartbeat_interval`` and hears ``pong``, ``cancel-inputs`` and
``shutdown``. It runs a batch inline, between two awaits, rather than on a thread of its
own: what it leaves out is a process, its threads and its register file.

    python bench/w8_workers.py --launcher ipc://DIR/launcher

connects to ``w8_plane.SimLauncher``, which hands it workers to start and stop.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from typing import Any

import cloudpickle
import zmq
import zmq.asyncio

from nbscale_runtime import protocol
from nbscale_runtime.intake import more_wanted
from nbscale_runtime.packed_inputs import load_inputs
from nbscale_runtime.protocol import (
    RUN_ATTEMPT,
    RUN_CALL_ID,
    RUN_COUNT,
    RUN_INDEX,
    RUN_PACKED,
    RUN_SKIP,
    RUN_WHERE,
    STATUS_OK,
)
from nbscale_runtime.serialization import PayloadWriter, load, split_payload
from nbscale_runtime.worker import WorkerConfig

EXIT, HELLO, START, STOP = b"exit", b"hello", b"start", b"stop"
_VERSION = ".".join(map(str, sys.version_info[:3]))


class SimWorker:
    """One simulated worker. Its attributes named as ``Worker``'s are those its prefetch
    policy reads (``intake.more_wanted``), kept with the same meaning."""

    def __init__(self, host: Host, cfg: WorkerConfig) -> None:
        self.host = host
        self.cfg = cfg
        self.data = self._connect(cfg.worker_id)
        self.pulse = self._connect(cfg.worker_id + ":pulse")
        self.fn: Any = None
        self.slots = 1
        self.draining = False
        self.queue: tuple[()] = ()  # a batch runs whole as it arrives: nothing waits
        self.running: dict[Any, Any] = {}
        self.demand = 0
        self.avg_seconds: float | None = None
        self.ran = 0
        self.tasks = [asyncio.ensure_future(self._serve()), asyncio.ensure_future(self._beat())]

    def _connect(self, identity: str) -> zmq.asyncio.Socket:
        sock = self.host.ctx.socket(zmq.DEALER)
        sock.setsockopt(zmq.IDENTITY, identity.encode())
        sock.setsockopt(zmq.LINGER, 2000)
        sock.curve_serverkey = (self.cfg.server_public_key or "").encode()
        sock.curve_publickey = (self.cfg.public_key or "").encode()
        sock.curve_secretkey = (self.cfg.secret_key or "").encode()
        sock.connect(self.cfg.endpoint)
        return sock

    def _send(self, msg: protocol.Message, payload: list[Any] | tuple[Any, ...] = ()) -> None:
        self.data.send_multipart(protocol.encode(msg, payload), copy=False)

    def _more_wanted(self) -> int:
        return more_wanted(self)  # type: ignore[arg-type]  # the real policy

    async def _serve(self) -> None:
        cfg = self.cfg
        self._send(
            protocol.Register(
                cfg.worker_id,
                cfg.pool_id,
                protocol.PROTOCOL_VERSION,
                _VERSION,
                cloudpickle.__version__,
                0,
                [],
            )
        )
        while True:
            msg, payload = protocol.decode(await self.data.recv_multipart(copy=False))
            if isinstance(msg, protocol.RunInputs):
                self._run(msg, payload)
            elif isinstance(msg, protocol.FunctionDef):
                self.fn = self.host.function(bytes(payload[0].buffer), msg.sys_path)
                self.slots = max(1, msg.max_inputs)
                if want := self._more_wanted():
                    self._send(protocol.GetInputs(cfg.worker_id, want))
            elif isinstance(msg, protocol.Shutdown):
                self.stop(graceful=True)

    def _run(self, msg: protocol.RunInputs, payload: list[Any]) -> None:
        wid = self.cfg.worker_id
        writer = PayloadWriter()
        rows = []
        ran = 0
        parts = split_payload(payload, [item[RUN_WHERE] for item in msg.items])
        for item, (data, buffers) in zip(msg.items, parts, strict=True):
            call_id, index, attempt = item[RUN_CALL_ID], item[RUN_INDEX], item[RUN_ATTEMPT]
            if msg.confirm:  # a suspect: say so first (no worker is lost here, so never)
                self._send(protocol.Started(wid, call_id, index, attempt))
            count = item[RUN_COUNT]  # a run: its results go back as one row, as a worker's
            begun = time.perf_counter()
            if count:
                pairs = load_inputs(data, buffers, item[RUN_SKIP], count, item[RUN_PACKED])
                where, sizes = writer.add_run([self.fn(*args, **kwargs) for args, kwargs in pairs])
            else:
                args, kwargs = load(data, buffers)
                where, sizes = writer.add(self.fn(*args, **kwargs)), []
            seconds = time.perf_counter() - begun
            each = seconds / (count or 1)
            avg = self.avg_seconds
            self.avg_seconds = each if avg is None else 0.8 * avg + 0.2 * each
            rows.append(
                protocol.output_row(
                    call_id,
                    index,
                    attempt,
                    STATUS_OK,
                    where,
                    seconds,
                    wid,
                    count=count,
                    sizes=sizes,
                )
            )
            ran += count or 1
        self.demand = max(0, self.demand - ran)
        self.ran += ran
        self._send(protocol.Outputs(rows, self._more_wanted()), writer.frames())

    async def _beat(self) -> None:
        cfg = self.cfg
        last_heard = time.monotonic()
        while True:
            self.pulse.send_multipart(protocol.encode(protocol.Heartbeat(cfg.worker_id, [], {})))
            deadline = time.monotonic() + cfg.heartbeat_interval
            while (left := deadline - time.monotonic()) > 0:
                if not await self.pulse.poll(int(left * 1000) + 1):
                    continue
                last_heard = time.monotonic()
                msg, _ = protocol.decode(await self.pulse.recv_multipart(copy=False))
                if isinstance(msg, protocol.Shutdown):
                    self.stop(graceful=True)
                    return
            timeout = cfg.heartbeat_timeout
            if timeout is not None and time.monotonic() - last_heard > timeout:
                self.stop(graceful=False)  # our control plane is gone
                return

    def stop(self, graceful: bool) -> None:
        """Leave: with a goodbye (drained, as after SIGTERM), or at once (killed)."""
        if self.draining:
            return
        self.draining = True
        for task in self.tasks:
            if task is not asyncio.current_task():
                task.cancel()
        if graceful:
            self._send(protocol.Goodbye(self.cfg.worker_id, "drained"))
        for sock in (self.data, self.pulse):
            sock.close(linger=2000 if graceful else 0)
        self.host.exited(self.cfg.worker_id, 0 if graceful else -9)


class Host:
    """A process of simulated workers, started and stopped by ``SimLauncher``."""

    def __init__(self, launcher: str) -> None:
        self.ctx = zmq.asyncio.Context()
        self.ctx.set(zmq.MAX_SOCKETS, 16384)  # two per worker; the default is 1,023
        self.control = self.ctx.socket(zmq.DEALER)
        self.control.connect(launcher)
        self.workers: dict[str, SimWorker] = {}
        self._functions: dict[bytes, Any] = {}

    def function(self, pickled: bytes, sys_path: list[str]) -> Any:
        """The function of a pickle, loaded once per host (a real worker loads it once)."""
        fn = self._functions.get(pickled)
        if fn is None:
            for path in sys_path:
                if path not in sys.path:
                    sys.path.append(path)
            fn = self._functions[pickled] = load(pickled)
        return fn

    def exited(self, worker_id: str, code: int) -> None:
        self.workers.pop(worker_id, None)
        self.control.send_multipart([EXIT, worker_id.encode(), str(code).encode()])

    async def run(self) -> None:
        await self.control.send_multipart([HELLO])
        while True:
            verb, *args = await self.control.recv_multipart()
            if verb == START:
                cfg = WorkerConfig(**json.loads(args[0]))
                self.workers[cfg.worker_id] = SimWorker(self, cfg)
            elif verb == STOP:
                worker = self.workers.get(args[0].decode())
                if worker is not None:
                    worker.stop(graceful=args[1] == b"graceful")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--launcher", required=True, help="SimLauncher's endpoint")
    args = parser.parse_args()
    asyncio.run(Host(args.launcher).run())


if __name__ == "__main__":
    main()
