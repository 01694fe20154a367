"""A fake launcher, fake workers, a fake caller and a fake clock, to test the control plane's
own decisions with no process, no socket and no sleep.

The control plane is the real one (``ControlPlane``, its rooms and cores). Only what lies
at its edges is fake: workers are in-process objects that the launcher "starts", speaking
the real wire protocol (messages encoded and decoded, payloads pickled) through the
control plane's own receivers; the caller is linked in-process as the embedded client is;
time is a number the test moves; housekeeping runs when the test calls ``tick``.

A fake worker runs inputs only when the test says so (``finish``, or ``finish(error=...)``
to fail them), and hangs or dies on command (``hang``; ``die``, killed from outside;
``crash``, killed by its own input). Like a real one, it keeps its register (the file that
says which inputs it runs: its first ``max_inputs`` held ones) up to date, unless its
launcher shares no files with the control plane (``FakeLauncher(register=False)``). One the
launcher was told to queue (``queue_next``) waits, as a pending Slurm job does, doing
nothing until the test lets it run (``run``); stopped while queued, it leaves at once.
In ``auto`` mode (the default) it does the rest on each tick, as a real worker does: it
registers once started, asks for inputs while it has none, heartbeats, reports inputs
cancelled while running, and leaves when told to stop once it has nothing left to run;
otherwise the test also calls
``register``, ``ask`` and ``heartbeat`` itself.
"""

from __future__ import annotations

import itertools
import shutil
import sys
from collections.abc import Callable, Iterable
from typing import Any

import cloudpickle

from nbscale._outcomes import Output, decode
from nbscale._pickling import add_input
from nbscale_runtime import protocol
from nbscale_runtime.packed_inputs import dump_values, load_inputs
from nbscale_runtime.protocol import (
    RUN_ATTEMPT,
    RUN_CALL_ID,
    RUN_COUNT,
    RUN_INDEX,
    RUN_PACKED,
    RUN_SKIP,
    RUN_WHERE,
    STATUS_ERROR,
    STATUS_OK,
    output_row,
)
from nbscale_runtime.register import RegisterWriter
from nbscale_runtime.serialization import (
    PayloadWriter,
    dump_exception,
    load,
    split_payload,
)
from nbscale_server.control_plane import ControlPlane
from nbscale_server.launchers import Launcher, LaunchFailed, WorkerHandle, WorkerSpec
from nbscale_server.launchers.base import WorkerStatus
from nbscale_server.options import FunctionOptions
from nbscale_server.settings import ControlPlaneConfig

VERSIONS = {"python": ".".join(map(str, sys.version_info[:3])), "cloudpickle": "3.1.1"}


class FakeClock:
    """The control plane's clock: time moves only when the test says so."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class FakeWorker:
    """One worker, in-process. ``held`` are the inputs it was sent and has not reported,
    as (call id, index, attempt, args, kwargs), the first ones running."""

    def __init__(self, launcher: FakeLauncher, spec: WorkerSpec, auto: bool) -> None:
        self.launcher = launcher
        self.worker_id = spec.worker_id
        self.pool_id = spec.pool_id
        self.options = spec.options
        self.auto = auto
        self.registered = False
        self.fn: Callable[..., Any] | None = None
        self.held: list[tuple[str, int, int, tuple[Any, ...], dict[str, Any]]] = []
        self.asked = 0  # inputs asked for and not yet sent
        self.cancelled: list[str] = []  # calls the control plane cancelled
        self.interrupted: list[tuple[str, int, int, Any, Any]] = []  # cancelled while running
        self.stop: str | None = None  # "graceful" or "kill", as the launcher was told
        self.shutdown = False  # a Shutdown message arrived
        self.hung = False
        self.queued = False  # waiting in the launcher's queue, with ``reason``
        self.reason: str | None = None
        self.exit_code: int | None = None
        self.log: list[str] = [f"worker {spec.worker_id} starting"]
        self.slots_file = RegisterWriter(spec.register_path)
        self.register_path = spec.register_path
        self._running: list[tuple[str, int, int]] = []  # in the register, by slot
        self.unsent: list[tuple[protocol.Outputs, list[Any]]] = []  # see ``finish``
        self.confirming: list[tuple[str, int, int]] = []  # suspects to say it starts

    def _sync_register(self) -> None:
        """Its first ``max_inputs`` held inputs run; each started when it got its slot."""
        slots = self.options.max_inputs
        now = self.launcher.plane.clock()
        running = [h[:3] for h in self.held[:slots]]
        for slot in range(slots):
            key = running[slot] if slot < len(running) else None
            before = self._running[slot] if slot < len(self._running) else None
            if key == before:
                continue
            start, finish = self.slots_file.slot(slot)
            if key is None:
                finish()
            else:
                start(key[0], key[1], key[2], now)
        self._running = running

    def __repr__(self) -> str:
        return f"<FakeWorker {self.worker_id} held={len(self.held)} exit={self.exit_code}>"

    # --- what the control plane sends ---------------------------------------------------

    def receive(self, msg: protocol.Message, payload: list[Any]) -> None:
        if isinstance(msg, protocol.FunctionDef):
            self.fn = load(payload[0])
        elif isinstance(msg, protocol.RunInputs):
            parts = split_payload(payload, [row[RUN_WHERE] for row in msg.items])
            received = 0
            for row, (data, bufs) in zip(msg.items, parts, strict=True):
                count = row[RUN_COUNT]  # a run: its inputs held one by one here
                pairs = (
                    load_inputs(data, bufs, row[RUN_SKIP], count, row[RUN_PACKED])
                    if count
                    else [load(data, bufs)]
                )
                for k, (args, kwargs) in enumerate(pairs):
                    call_id, index, attempt = row[RUN_CALL_ID], row[RUN_INDEX] + k, row[RUN_ATTEMPT]
                    self.held.append((call_id, index, attempt, args, kwargs))
                    if msg.confirm:  # it says so before it runs it (on its next step)
                        self.confirming.append((call_id, index, attempt))
                received += len(pairs)
            self.asked = max(0, self.asked - received)
            self._sync_register()
        elif isinstance(msg, protocol.CancelInputs):
            # Those running end as cancelled (reported on its next step); the rest are dropped.
            self.cancelled.append(msg.call_id)
            slots = self.options.max_inputs
            self.interrupted += [h for h in self.held[:slots] if h[0] == msg.call_id]
            self.held = [h for h in self.held if h[0] != msg.call_id]
            self._sync_register()
        elif isinstance(msg, protocol.Shutdown):
            self.shutdown = True
        elif isinstance(msg, protocol.SlotLent):  # it lent its slot: these were taken back
            taken = {(c, index + k) for c, index, count in msg.taken for k in range(count)}
            self.held = [h for h in self.held if (h[0], h[1]) not in taken]
            self.asked = 0

    # --- what it says, when the test tells it -------------------------------------------

    def send(self, msg: protocol.Message, payload: list[Any] | tuple[Any, ...] = ()) -> None:
        frames = [self.worker_id.encode(), *protocol.encode(msg, payload)]
        self.launcher.plane.receive_from_worker(frames)

    def register(self, **versions: str) -> None:
        v = {**VERSIONS, **versions}
        self.send(
            protocol.Register(
                self.worker_id,
                self.pool_id,
                protocol.PROTOCOL_VERSION,
                v["python"],
                v["cloudpickle"],
                4242,
                [],
            )
        )
        self.registered = True

    def ask(self, n: int | None = None) -> None:
        n = self.options.max_inputs if n is None else n
        self.asked += n
        self.send(protocol.GetInputs(self.worker_id, n))

    def heartbeat(self) -> None:
        running = [[h[0], h[1], h[2]] for h in self.held[: self.options.max_inputs]]
        self.send(protocol.Heartbeat(self.worker_id, running, {}))

    def finish(
        self,
        n: int | None = None,
        want: int = 0,
        error: Exception | None = None,
        send: bool = True,
    ) -> list[int]:
        """Run its first ``n`` held inputs (all by default) and report them in one batch;
        returns their indices; ``want`` asks for more inputs in the same message. With
        ``error``, each of them raises it instead of running. ``send=False``: the batch
        waits (as a real worker's does, a few ms) until ``flush``, and is lost if it dies."""
        count = len(self.held) if n is None else min(n, len(self.held))
        done, self.held = self.held[:count], self.held[count:]
        self._sync_register()
        writer = PayloadWriter()
        rows = []
        assert self.fn is not None, "the worker has no function yet"
        for call_id, index, attempt, args, kwargs in done:
            try:
                if error is not None:
                    raise error
                where = writer.add(self.fn(*args, **kwargs))
                status = STATUS_OK
            except Exception as exc:
                where, status = writer.add_raw(dump_exception(exc)), STATUS_ERROR
            rows.append(output_row(call_id, index, attempt, status, where, 0.01, self.worker_id))
        self.asked += want
        if send:
            self.send(protocol.Outputs(rows, want), writer.frames())
        else:
            self.unsent.append((protocol.Outputs(rows, want), writer.frames()))
        return [row[protocol.OUT_INDEX] for row in rows]

    def flush(self) -> None:
        """Send the batches ``finish(send=False)`` kept."""
        for msg, frames in self.unsent:
            self.send(msg, frames)
        self.unsent = []

    def goodbye(self, reason: str = "drained", payload: Iterable[Any] = ()) -> None:
        self.send(protocol.Goodbye(self.worker_id, reason), list(payload))

    def hang(self, between_inputs: bool = False) -> None:
        """Stop answering (and heartbeating), as a worker stuck in C code does;
        ``between_inputs``: frozen while running none (SIGSTOP between two inputs)."""
        self.hung = True
        if between_inputs:
            for slot in range(len(self._running)):
                self.slots_file.slot(slot)[1]()
            self._running = []

    def run(self) -> None:
        """Leave the queue: resources were found."""
        self.queued = False

    def die(self, exit_code: int = -9) -> None:
        """Exit now, without a word: killed from outside (by default SIGKILL, which is then
        the infrastructure's loss), or crashed (a fault signal, an exit code)."""
        self.exit_code = exit_code
        self.unsent = []
        self.log.append(f"worker {self.worker_id} died ({exit_code})")

    def crash(self, signum: int = 9) -> None:
        """Its running input kills its own process (``os.kill(os.getpid(), 9)``): the
        worker's audit hook records the signal in the register first."""
        if self.register_path:
            with open(self.register_path, "r+b") as f:
                f.seek(8)
                f.write(signum.to_bytes(4, "little", signed=True))
        self.die(-signum)

    # --- a tick of its own life, in auto mode -------------------------------------------

    def step(self) -> None:
        if self.exit_code is not None or self.hung:
            return
        if self.queued:
            if self.stop is not None:  # a queued job is cancelled: nothing ran
                self.die(-15)
            return
        for call_id, index, attempt in self.confirming:
            self.send(protocol.Started(self.worker_id, call_id, index, attempt))
        self.confirming = []
        if self.interrupted:
            rows = [
                output_row(c, i, a, protocol.STATUS_CANCELLED, (0, 0, 0), 0.0, self.worker_id)
                for c, i, a, _, _ in self.interrupted
            ]
            self.interrupted = []
            self.send(protocol.Outputs(rows), [b""])
        if self.stop == "kill":
            self.die(-9)
            return
        if (self.stop == "graceful" or self.shutdown) and not self.held:
            if self.registered:
                self.goodbye("drained")
            self.exit_code = 0
            return
        if not self.auto:
            return
        if not self.registered:
            self.register()
        if self.fn is not None and not self.held and not self.asked and not self.shutdown:
            self.ask()
        self.heartbeat()


class FakeLauncher(Launcher):
    """Starts ``FakeWorker``s; ``fail_next(n, reason)`` makes the next ``n`` starts fail.
    ``register=False``: its workers share no files with the control plane (as on a cluster's
    nodes), so their heartbeats are all it knows of what they run."""

    name = "fake"

    def __init__(self, auto: bool = True, register: bool = True) -> None:
        self.auto = auto
        self.shares_files = register
        self.plane: ControlPlane  # set by the harness
        self.workers: dict[str, FakeWorker] = {}  # every worker started, by id
        self._failures: list[str] = []
        self._queued: list[str | None] = []  # the reasons the next starts wait for

    def fail_next(self, n: int, reason: str = "no such image") -> None:
        self._failures += [reason] * n

    def queue_next(self, n: int, reason: str | None = "Resources") -> None:
        """The next ``n`` workers started wait in a queue, for ``reason``, until ``run``."""
        self._queued += [reason] * n

    def start(self, spec: WorkerSpec) -> WorkerHandle:
        if self._failures:
            raise LaunchFailed(self._failures.pop(0))
        worker = FakeWorker(self, spec, self.auto)
        if self._queued:
            worker.queued, worker.reason = True, self._queued.pop(0)
        self.workers[spec.worker_id] = worker
        return WorkerHandle(spec.worker_id, spec.pool_id, self.name, worker)

    def worker_status(self, handle: WorkerHandle) -> WorkerStatus:
        worker: FakeWorker = handle.ref
        if worker.exit_code is not None:
            return WorkerStatus("exited")
        return WorkerStatus("pending", worker.reason) if worker.queued else WorkerStatus("running")

    def stop(self, handle: WorkerHandle, *, graceful: bool = True) -> None:
        worker: FakeWorker = handle.ref
        if worker.stop != "kill":
            worker.stop = "graceful" if graceful else "kill"

    def exit_code(self, handle: WorkerHandle) -> int | None:
        worker: FakeWorker = handle.ref
        return worker.exit_code

    def logs(self, handle: WorkerHandle, tail: int = 20) -> str:
        worker: FakeWorker = handle.ref
        return "\n".join(worker.log[-tail:])

    def register_in_worker(self, path: str) -> str | None:
        return path if self.shares_files else None


class FakeWire:
    """The workers' channel: delivers what the control plane sends to the fake workers."""

    def __init__(self, launcher: FakeLauncher) -> None:
        self.launcher = launcher

    def send(self, frames: list[Any]) -> None:
        worker_id = bytes(frames[0]).decode().partition(":")[0]
        msg, payload = protocol.decode(frames[1:])
        worker = self.launcher.workers.get(worker_id)
        if worker is not None and worker.exit_code is None:
            worker.receive(msg, payload)

    def drain(self) -> None:
        """Nothing waits: fake workers' messages are handled as they are sent."""

    def close(self) -> None:
        pass


class RequestRefused(Exception):
    def __init__(self, kind: str, message: str) -> None:
        super().__init__(f"{kind}: {message}")
        self.kind = kind


class FakeCaller:
    """A caller linked in-process, as the embedded client is; requests are answered within
    the send. Outputs arrive decoded by the client's own ``decode``, in ``outputs``."""

    def __init__(self, plane: ControlPlane, owner: dict[str, Any] | None = None) -> None:
        """``owner``: who it says it is at hello (kernel_id, name, pid, host)."""
        self._send = plane.connect_local(self._deliver)
        self._rids = itertools.count(1)
        self._replies: dict[int, tuple[protocol.Reply, list[Any]]] = {}
        self.outputs: dict[str, list[Output]] = {}  # by call id, in arrival order
        self.progress: list[protocol.Progress] = []
        self.packed = False  # submit inputs as one packed run, as a map's client does
        self.request(
            protocol.Hello(
                protocol.PROTOCOL_VERSION, VERSIONS["python"], VERSIONS["cloudpickle"], 0, owner
            )
        )

    def _deliver(self, msg: protocol.Message, payload: list[Any]) -> None:
        if isinstance(msg, protocol.Reply):
            self._replies[msg.rid] = (msg, payload)
        elif isinstance(msg, protocol.Outputs):
            parts = split_payload(payload, [row[protocol.OUT_WHERE] for row in msg.items])
            for row, (data, bufs) in zip(msg.items, parts, strict=True):
                out = decode(row, data, bufs, "f", 300.0)
                self.outputs.setdefault(row[protocol.OUT_CALL_ID], []).append(out)
        elif isinstance(msg, protocol.Progress):
            self.progress.append(msg)

    def send(self, msg: protocol.Message, payload: list[Any] | tuple[Any, ...] = ()) -> int:
        """Send a request; returns its id, for ``answer``."""
        rid = next(self._rids)
        object.__setattr__(msg, "rid", rid)
        self._send(msg, list(payload))
        return rid

    def answer(self, rid: int) -> protocol.Reply | None:
        """The reply to request ``rid``, or None while there is none."""
        reply = self._replies.pop(rid, None)
        return None if reply is None else reply[0]

    def request(self, msg: protocol.Message, payload: list[Any] | tuple[Any, ...] = ()) -> Any:
        """Send a request and return the value of its reply (answered within the send)."""
        reply = self.answer(self.send(msg, payload))
        assert reply is not None, f"{msg.op} was not answered at once"
        if reply.error:
            raise RequestRefused(reply.error[0], reply.error[1])
        return reply.value

    def register(
        self, fn: Callable[..., Any], options: FunctionOptions | None = None, name: str = ""
    ) -> str:
        """Register ``fn``; returns its pool id."""
        options = options or FunctionOptions()
        msg = protocol.RegisterFunction(
            0, f"fn-{fn.__name__}", name or fn.__name__, options.to_wire(), []
        )
        return str(self.request(msg, [cloudpickle.dumps(fn)])["pool_id"])

    def submit(
        self,
        pool_id: str,
        inputs: Iterable[Any],
        kind: str = "map",
        call_id: str | None = None,
        start: int = 0,
        last: bool = True,
    ) -> str:
        """Submit ``inputs`` (one argument each) as a call of ``kind``, one by one or (when
        ``packed`` and they are) as one packed run; returns its id."""
        call_id = call_id or f"fc-{next(_call_numbers)}"
        writer = PayloadWriter()
        items = []
        values = list(inputs)
        data = dump_values(values) if self.packed and len(values) > 1 else None
        if data is not None:
            items.append([start, *writer.add_raw(data), len(values), []])
        else:
            for index, x in enumerate(values, start):
                items.append([index, *add_input(writer, index, (x,), {}), 0, []])
        total = start + len(values) if last else None
        value = self.request(
            protocol.SubmitInputs(0, call_id, pool_id, kind, items, total, progress=True),
            writer.frames(),
        )
        assert value["accepted"] == len(values), value
        self.outputs.setdefault(call_id, [])
        return call_id

    def cancel(self, call_id: str) -> None:
        self.request(protocol.CancelCall(0, call_id))

    def update_autoscaler(self, pool_id: str, **changes: Any) -> dict[str, Any]:
        return dict(self.request(protocol.UpdateAutoscaler(0, pool_id, changes)))

    def values(self, call_id: str) -> dict[int, Any]:
        """The call's outputs so far: index -> value (or the exception)."""
        return {out.index: out.value for out in self.outputs[call_id]}


_call_numbers = itertools.count(1)


class Harness:
    """A real control plane over a fake launcher, a fake clock and a fake caller."""

    def __init__(self, auto: bool = True, register: bool = True, **config: Any) -> None:
        self.clock = FakeClock()
        self.launcher = FakeLauncher(auto, register)
        self.plane = ControlPlane(ControlPlaneConfig(**config), self.launcher, clock=self.clock)
        self.launcher.plane = self.plane
        self.plane.outbox.attach(FakeWire(self.launcher))
        self.caller = FakeCaller(self.plane)

    def close(self) -> None:
        shutil.rmtree(self.plane.dir, ignore_errors=True)
        self.plane.ctx.term()

    def tick(self, seconds: float = 0.0, steps: int = 1) -> None:
        """Let ``seconds`` pass, then, ``steps`` times: every worker acts, then the control
        plane's housekeeping runs."""
        self.clock.advance(seconds)
        for _ in range(steps):
            for worker in list(self.launcher.workers.values()):
                worker.step()
            self.plane.tick()

    def workers(self, pool_id: str | None = None) -> list[FakeWorker]:
        """The workers not exited (of one pool), in launch order."""
        return [
            w
            for w in self.launcher.workers.values()
            if w.exit_code is None and (pool_id is None or w.pool_id == pool_id)
        ]

    def pool(self, pool_id: str) -> dict[str, Any]:
        return dict(self.plane.api.pool_info(pool_id))
