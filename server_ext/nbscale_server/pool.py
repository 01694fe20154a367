"""The control plane's records of pools and workers (state only, no I/O); calls' records
are in ``calls.py``.

A worker's states and the events that move it between them are here, as methods of
``WorkerState``; the rooms of the control plane call them and never set ``state`` by hand:

    waiting <--queued / left the queue--> starting   (a scheduler's queue: Slurm's)
    starting --registered--> idle <--took inputs / settled--> busy
    busy     --silent------> unresponsive (alive, running an input, saying nothing: user code
                             holding the GIL) --heard from--> busy
    any      --drain-------> draining (told to stop, or said goodbye) --exit--> gone

A waiting worker was launched (the autoscaler counts it, and so does the total cap) but
runs nowhere yet: it serves nothing, and its startup timeout only starts once it leaves the
queue; the pending timeout bounds its wait.

A busy worker whose input waits on nested calls may be ``lent`` (``lend``/``rejoin``): it
keeps its state but counts out of its pool's ``max_containers`` and the total cap, and is
sent nothing, until it rejoins.
"""

from __future__ import annotations

import collections
import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from nbscale_runtime.protocol import ERROR_NOT_FOUND

from .autoscaler import AutoscalerCore, CapHolder, PoolLoad, WorkerView
from .errors import RequestError
from .launchers.base import WorkerHandle
from .models import OwnerModel
from .options import FunctionOptions
from .owners import owner_key, unknown_owner
from .queue import QueueCore

# Each dispatch to a worker carries at least this much estimated work, so that short inputs
# travel hundreds per message (a message costs tens of microseconds), while inputs longer
# than this still go one by one.
_BATCH_SECONDS = 0.001
# The most inputs that floor makes one worker hold, so that an estimate of nearly nothing
# per input cannot send the lot. It binds only below 0.1 us an input: at 1,000 it bound from
# 1 us, and packed noop inputs take 0.3-0.5 us, so a batch was 0.3-0.5 ms of work and each
# worker waited a round trip per batch, a longer one over ZeroMQ (Docker W1 0.8x of processes).
_MAX_BATCH_FLOOR = 10_000
_INPUTS_SHOWN = 8  # a worker's inputs listed in its model (it may hold many more queued)
_EVENTS_KEPT = 50  # a pool's latest events, in its model


@dataclass(slots=True)
class WorkerState:
    worker_id: str
    pool_id: str
    handle: WorkerHandle
    public_key: str | None
    config_path: str
    launched_at: float
    state: str = "starting"  # waiting | starting | idle | busy | unresponsive | draining
    started_at: float | None = None  # when it began to run (left the queue); startup counts
    waiting_reason: str | None = None  # while waiting: the scheduler's ("Resources", ...)
    registered_at: float | None = None
    last_seen: float = 0.0
    ponged_at: float | None = None  # when we last answered its heartbeat
    idle_since: float | None = None
    want: int = 0  # inputs the worker asked for and has not been sent
    pid: int | None = None
    clean_exit: bool = False
    python: str = ""
    gpus: list[dict[str, Any]] = field(default_factory=list)
    stats: dict[str, Any] = field(default_factory=dict)  # the last heartbeat's sample
    register_path: str | None = None  # its register (which inputs it runs), where it has one
    # for a worker without a register: the inputs its heartbeats say it runs, as
    # (call id, index, attempt) -> when first said (by our clock)
    reported_running: dict[tuple[str, int, int], float] = field(default_factory=dict)
    killed_by_us: str | None = None  # why the control plane killed it, if it did
    lent: bool = False  # its input waits on nested calls: it lent its slot

    def view(self) -> WorkerView:
        state = "busy" if self.state == "unresponsive" else self.state  # for the autoscaler
        if self.lent and state != "draining":
            state = "lent"
        return WorkerView(self.worker_id, state, self.idle_since)

    @property
    def serving(self) -> bool:
        """Registered, not told to stop, not lent: it may be sent inputs."""
        return (self.state == "idle" or self.state == "busy") and not self.lent

    @property
    def counted(self) -> bool:
        """Counts against its pool's ``max_containers`` and the total cap."""
        return self.state != "draining" and not self.lent

    def lend(self) -> None:
        """Its input waits on nested calls: it lends its slot."""
        self.lent = True
        self.want = 0

    def rejoin(self) -> None:
        self.lent = False

    def queued(self, reason: str | None) -> None:
        """Its launcher says it waits in a scheduler's queue, for ``reason``."""
        if self.registered_at is None and self.state in ("starting", "waiting"):
            self.state, self.started_at, self.waiting_reason = "waiting", None, reason

    def started(self, now: float) -> None:
        """It began to run: the startup timeout counts from now."""
        if self.state == "waiting":
            self.state, self.waiting_reason = "starting", None
        if self.started_at is None:
            self.started_at = now

    def registered(self, now: float, pid: int, python: str, gpus: list[dict[str, Any]]) -> None:
        self.registered_at = now
        self.pid, self.python, self.gpus = pid, python, gpus
        self.state, self.idle_since = "idle", now

    def took_inputs(self) -> None:
        self.state, self.idle_since = "busy", None

    def heard(self, now: float) -> None:
        """It said something: alive and responsive."""
        self.last_seen = now
        if self.state == "unresponsive":
            self.state = "busy"

    def unresponsive(self) -> None:
        """Alive, running an input, and silent: left alone until that input's timeout."""
        if self.serving:
            self.state, self.idle_since = "unresponsive", None

    def settled(self, running: int, now: float) -> None:
        """Some of its inputs ended; ``running`` it still holds."""
        if self.state == "unresponsive":
            self.state = "busy"
        if not self.serving:
            return
        if running:
            self.state, self.idle_since = "busy", None
        elif self.state != "idle":
            self.state, self.idle_since = "idle", now

    def drain(self) -> None:
        """Told to stop (or leaving): it gets no more inputs."""
        self.state = "draining"
        self.want = 0

    def overdue(self, now: float, startup_timeout: float, stop_grace: float) -> str | None:
        """Why it must be killed now, if it must: it never registered once running, or
        outstayed its stop. (A silent worker is judged by what it runs: ``Liveness``;
        waiting in a queue is bounded by ``waited_too_long``.)"""
        started = self.started_at
        starting = self.registered_at is None and self.state != "draining"
        if starting and started is not None and now - started > startup_timeout:
            return f"did not register within {startup_timeout:g} s"
        if self.state == "draining" and now - self.last_seen > stop_grace:
            return f"did not stop within {stop_grace:g} s"
        return None

    def waited_too_long(self, now: float, pending_timeout: float) -> bool:
        """Still queued ``pending_timeout`` seconds after its launch."""
        return self.state == "waiting" and now - self.launched_at > pending_timeout

    def as_dict(self, now: float, running: list[tuple[str, int]]) -> dict[str, Any]:
        """``running``: the (call id, index) of the inputs it holds, in dispatch order."""
        return {
            "id": self.worker_id,
            "name": self.handle.name,
            "image": self.handle.image,
            "state": self.state,
            "waiting_reason": self.waiting_reason,
            "pid": self.pid,
            "uptime": round(now - self.launched_at, 3),
            "running_inputs": len(running),
            "inputs": [{"call_id": c, "index": i} for c, i in running[:_INPUTS_SHOWN]],
            "waiting_on_calls": self.lent,
            "gpus": self.gpus,
            "stats": self.stats,
        }


@dataclass(slots=True)
class Pool:
    pool_id: str
    function_id: str
    name: str
    function: bytes
    options: FunctionOptions
    sys_path: list[str]
    client_versions: dict[str, str]
    autoscaler: AutoscalerCore
    queue: QueueCore
    owner: OwnerModel = field(default_factory=unknown_owner)  # who created it
    # what its secrets give its workers' environment: only ever written to their config files
    env: dict[str, str] = field(default_factory=dict, repr=False)
    workers: dict[str, WorkerState] = field(default_factory=dict)
    broken: tuple[str, bytes] | None = None  # (status, payload) every new input fails with
    enter_failures: int = 0  # workers in a row whose class @enter raised
    done: int = 0
    failed: int = 0
    stopped: bool = False  # stopped from the REST API: no launches until new inputs arrive
    input_seconds: float | None = None  # moving average of how long an attempt runs
    # while the total cap holds the pool back: the pools whose workers fill it
    cap_holders: tuple[CapHolder, ...] = ()
    # what happened to it, for people: (wall-clock time, text), the latest _EVENTS_KEPT
    events: collections.deque[tuple[float, str]] = field(
        default_factory=lambda: collections.deque(maxlen=_EVENTS_KEPT)
    )

    @classmethod
    def create(
        cls,
        function_id: str,
        name: str,
        function: bytes,
        options: FunctionOptions,
        sys_path: list[str],
        client_versions: dict[str, str],
        total_cap: int | None,
        owner: OwnerModel | None = None,
    ) -> Pool:
        owner = owner or unknown_owner()
        return cls(
            pool_id=options.pool_id(function_id, owner_key(owner)),
            function_id=function_id,
            name=name,
            function=function,
            options=options,
            sys_path=sys_path,
            client_versions=client_versions,
            autoscaler=AutoscalerCore(options.autoscaler_settings(), total_cap),
            queue=QueueCore(options.retries),
            owner=owner,
        )

    @property
    def slots(self) -> int:
        return self.options.max_inputs

    @property
    def timeout(self) -> float:
        return self.options.timeout

    def observe_durations(self, total_seconds: float, count: int) -> None:
        mean = total_seconds / count
        old = self.input_seconds
        self.input_seconds = mean if old is None else 0.8 * old + 0.2 * mean

    def share(self, pending: int, live: int, others_idle: bool = True) -> int:
        """How many inputs one worker may hold. Guided self-scheduling: big batches while
        there is much work, smaller ones towards the end, and no worker holds more than its
        share, so that no input waits behind a slow one while another worker is free. Short
        inputs go in batches of about a millisecond of work, but never more than an even
        split of what is pending: a batch must not keep work from an idle worker. When no
        other worker is idle (``others_idle``) and all that is pending is less than one
        batch, the worker takes it all: halving it at each request cost a round trip per
        half (a map's last thousand noop inputs went in ten messages each way)."""
        live = max(1, live)
        floor = 1
        if self.input_seconds is not None:
            floor = min(_MAX_BATCH_FLOOR, int(_BATCH_SECONDS / max(self.input_seconds, 1e-7)))
            if others_idle or pending > floor:
                floor = min(floor, math.ceil(pending / live))
        return max(self.slots, floor, math.ceil(pending / (2 * live)))

    def note(self, message: str, at: float) -> None:
        """Add to the pool's event log (``at``: seconds since the epoch)."""
        self.events.append((at, message))

    def last_event(self) -> str | None:
        return self.events[-1][1] if self.events else None

    def live_workers(self) -> int:
        """Its workers that count against the total cap (all but those draining or lent)."""
        return sum(1 for w in self.workers.values() if w.counted)

    def short_of_workers(self) -> bool:
        """Whether its autoscaler wants workers it lacks now."""
        live = self.live_workers()
        most = self.autoscaler.settings.max_containers
        return (most is None or live < most) and self.autoscaler.desired(self.load()) > live

    def load(self) -> PoolLoad:
        target = self.options.slots_target
        # a lent worker's input waits on others: it needs no worker of its own meanwhile
        lent = sum(self.queue.running_on(w.worker_id) for w in self.workers.values() if w.lent)
        return PoolLoad(self.queue.num_ready, self.queue.num_running - lent, target)

    def views(self) -> list[WorkerView]:
        return [w.view() for w in self.workers.values()]

    def stats(self, now: float) -> dict[str, Any]:
        by_state = dict.fromkeys(
            ("waiting", "starting", "idle", "busy", "unresponsive", "draining"), 0
        )
        for w in self.workers.values():
            by_state[w.state] += 1
        live = by_state["idle"] + by_state["busy"] + by_state["unresponsive"]
        status = self.autoscaler.status
        waiting = waiting_note(self.workers.values())
        return {
            "id": self.pool_id,
            "function": self.name,
            "function_id": self.function_id,
            "settings": self.autoscaler.settings.as_dict(),
            "status": f"{status}; {waiting}" if waiting else status,
            "backlog": self.queue.num_pending,
            "num_running_inputs": self.queue.num_running,
            "num_total_runners": len(self.workers) - by_state["draining"],
            "input_headroom": max(0, live * self.slots - self.queue.num_running),
            "containers": by_state,
            "done": self.done,
            "failed": self.failed,
            "workers": [
                w.as_dict(now, list(self.queue.held_inputs(w.worker_id)))
                for w in self.workers.values()
            ],
            "image": self.options.image,
            "gpu": list(gpu) if isinstance(gpu := self.options.gpu, tuple) else gpu,
            "gpus": [gpu for w in self.workers.values() for gpu in w.gpus],
            "stopped": self.stopped,
            "cap_holders": [
                {
                    "pool_id": h.pool_id,
                    "function": h.function,
                    "waiting": h.waiting,
                    "starting": h.starting,
                    "idle": h.idle,
                    "busy": h.busy,
                }
                for h in self.cap_holders
            ],
            "events": [{"time": at, "message": message} for at, message in self.events],
            "owner": dict(self.owner),
        }


def waiting_note(workers: Iterable[WorkerState]) -> str | None:
    """``2 waiting for resources (reason: Resources)`` for a pool's workers queued by a
    scheduler, with its reasons; None when none waits."""
    waiting = [w for w in workers if w.state == "waiting"]
    if not waiting:
        return None
    reasons = list(dict.fromkeys(w.waiting_reason for w in waiting if w.waiting_reason))
    said = f" (reason{'s' if len(reasons) > 1 else ''}: {', '.join(reasons)})" if reasons else ""
    return f"{len(waiting)} waiting for resources{said}"


@dataclass(slots=True)
class Records:
    """The pools and workers of one control plane, which its rooms share."""

    pools: dict[str, Pool] = field(default_factory=dict)
    workers: dict[str, WorkerState] = field(default_factory=dict)
    # who each client is (by socket identity), as it said at hello
    owners: dict[bytes, OwnerModel] = field(default_factory=dict)

    def pool(self, pool_id: str) -> Pool:
        pool = self.pools.get(pool_id)
        if pool is None:
            raise RequestError(ERROR_NOT_FOUND, f"no pool {pool_id}")
        return pool
