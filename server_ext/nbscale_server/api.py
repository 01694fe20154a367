"""The control plane's API: what callers may ask, and the admin methods that the REST API
(``handlers.py``), the events feed (``events.py``) and the callers' own requests share.

``Api.handlers`` is the one table from a request's message type to the method that answers
it. A method returns ``(value, payload)`` for the reply, or
None when the reply comes later (``get-outputs``); a refusal is a ``RequestError`` raised,
which the caller receives as the exception it names.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from nbscale_runtime import protocol
from nbscale_runtime.protocol import (
    ERROR_INVALID,
    ERROR_NOT_FOUND,
    ERROR_VERSION_MISMATCH,
    SPAWN_CALL_ID,
)

from . import reports
from .callers import Callers
from .calls import CallState
from .delivery import Delivery
from .deployed import DeployedApps, pool_label
from .errors import RequestError
from .fleet import Fleet
from .liveness import Liveness
from .models import CallDetailModel, CallModel, LogsModel, OwnerModel, PoolModel
from .nesting import Nesting
from .outbox import Outbox, Subscriber
from .owners import owner_from_wire
from .pool import Pool, Records
from .registration import Registration
from .shared_objects import SharedObjects
from .spawn_batches import first_outputs, spawn_calls
from .watching import Watching

CALLS_PAGE = 500  # calls listed when no limit is asked for (a WebSocket's first message too)
log = logging.getLogger("nbscale.control_plane")

Answer = tuple[Any, Any] | None  # (reply value, reply payload), or None: answered later
Handler = Callable[[bytes, Any, list[Any]], Answer]


class Api:
    def __init__(
        self,
        records: Records,
        outbox: Outbox,
        delivery: Delivery,
        fleet: Fleet,
        liveness: Liveness,
        clock: Callable[[], float],
        connection_info: Callable[[], dict[str, Any]],
        nesting: Nesting,
        watching: Watching | None = None,
        shared: SharedObjects | None = None,
        deployed: DeployedApps | None = None,
    ) -> None:
        self.records = records
        self.outbox = outbox
        self.delivery = delivery
        self.fleet = fleet
        self.liveness = liveness
        self.watching = watching or Watching(delivery, outbox)
        self.clock = clock
        self._connection_info = connection_info
        self.nesting = nesting
        self.shared = shared or SharedObjects(outbox, delivery.store, clock)
        self.deployed = deployed or DeployedApps(outbox, delivery.store)
        self.callers = Callers()
        self._next_callers_check = 0.0
        # Told each owner at hello: the Jupyter server fills in its notebook (extension.py).
        self.resolve_owner: Callable[[OwnerModel], None] | None = None
        self.registration = Registration(
            records, outbox, fleet, nesting, self.deployed, self.callers, self._apply, self._resolve
        )
        self.handlers: dict[type[protocol.Message], Handler] = {
            protocol.Hello: self._hello,
            protocol.Ping: self._ping,
            protocol.RegisterFunction: self.registration.register,
            protocol.SubmitInputs: self._submit_inputs,
            protocol.SpawnCalls: self._spawn_calls,
            protocol.GetFirstOutputs: self._get_first_outputs,
            protocol.CancelCall: self._cancel_call,
            protocol.DetachCall: self._detach_call,
            protocol.GetOutputs: self._get_outputs,
            protocol.UpdateAutoscaler: self._update_autoscaler,
            protocol.StopPool: self._stop_pool,
            protocol.GetCall: self._get_call,
            protocol.GetLogs: self._get_logs,
            protocol.GetStats: self._get_stats,
            protocol.ObjectLookup: self.shared.on_lookup,
            protocol.ObjectDelete: self.shared.on_delete,
            protocol.DictRequest: self.shared.on_dict,
            protocol.QueueRequest: self.shared.on_queue,
            protocol.DeployApp: self._deploy_app,
            protocol.LookupDeployed: self.deployed.on_lookup,
            protocol.ListApps: self.deployed.on_list,
            protocol.StopApp: self._stop_app,
        }

    def handle(self, identity: bytes, msg: protocol.Message, payload: list[Any]) -> None:
        """Answer one request from the caller ``identity``."""
        self.callers.heard(identity, self.clock())
        handler = self.handlers.get(type(msg))
        rid = getattr(msg, "rid", 0)
        try:
            if handler is None:
                raise RequestError(ERROR_INVALID, f"{msg.op} is not a request")
            answer = handler(identity, msg, payload)
        except RequestError as exc:
            self.outbox.refuse(identity, rid, exc)
            return
        if answer is not None:
            value, frames = answer
            self.outbox.reply(identity, rid, value, frames)

    # --- requests -----------------------------------------------------------------------

    def _hello(self, identity: bytes, msg: protocol.Hello, payload: list[Any]) -> Answer:
        if msg.protocol_version != protocol.PROTOCOL_VERSION:
            raise RequestError(
                ERROR_VERSION_MISMATCH,
                f"client speaks protocol {msg.protocol_version}, the control plane "
                f"{protocol.PROTOCOL_VERSION}: upgrade nbscale on both sides",
            )
        try:
            owner = owner_from_wire(msg.owner)
        except ValueError as exc:
            raise RequestError(ERROR_INVALID, str(exc)) from None
        # code on a worker calls as whoever started its pool: same pools, limits, calls
        owner = self.nesting.owner(identity) or owner
        versions = {"python": msg.python, "cloudpickle": msg.cloudpickle}
        self.callers.hello(identity, versions, owner["pid"], owner["host"], self.clock())
        self.records.owners[identity] = owner
        self._resolve(owner)
        return self._connection_info(), ()

    def _ping(self, identity: bytes, msg: protocol.Ping, payload: list[Any]) -> Answer:
        return {}, ()  # heard (in ``handle``): that is all a ping is for

    def _resolve(self, owner: OwnerModel) -> None:
        if self.resolve_owner is not None:
            try:
                self.resolve_owner(owner)
            except Exception:
                log.exception("could not resolve the notebook of %s", owner["name"])

    def _submit_inputs(
        self, identity: bytes, msg: protocol.SubmitInputs, payload: list[Any]
    ) -> Answer:
        value, grown = self.delivery.submit(identity, msg, payload)
        if msg.parent:
            self.nesting.link_parent(msg.call_id, msg.parent)
        # Scaling up may not wait for the tick; all else may (a call that its workers took
        # at once, as a warm ``.remote()``'s, leaves nothing to decide now).
        if grown is not None and (grown.queue.pending or grown.short_of_workers()):
            self.fleet.autoscale(grown, self.clock())
        return None if value is None else (value, ())  # None: a spawn, answered once kept

    def _spawn_calls(self, identity: bytes, msg: protocol.SpawnCalls, payload: list[Any]) -> Answer:
        grown = spawn_calls(self.delivery, identity, msg, payload)
        if msg.parent:
            for row in msg.items:
                self.nesting.link_parent(row[SPAWN_CALL_ID], msg.parent)
        if grown is not None:
            self.fleet.autoscale(grown, self.clock())
        return None  # answered once the store has kept them

    def _get_first_outputs(
        self, identity: bytes, msg: protocol.GetFirstOutputs, payload: list[Any]
    ) -> Answer:
        return first_outputs(self.delivery, msg)

    def _cancel_call(self, identity: bytes, msg: protocol.CancelCall, payload: list[Any]) -> Answer:
        # A caller cancelling a call the REST API cancelled (and forgot) already: nothing to do.
        if not self.delivery.cancelled_before(msg.call_id):
            self.cancel_call(msg.call_id, requester=identity)
        return {"cancelled": True}, ()

    def _detach_call(self, identity: bytes, msg: protocol.DetachCall, payload: list[Any]) -> Answer:
        self.watching.on_detach_call(msg, payload)
        return {"detached": True}, ()

    def _get_outputs(self, identity: bytes, msg: protocol.GetOutputs, payload: list[Any]) -> Answer:
        self.delivery.wait_for_outputs(identity, msg)
        return None  # answered by the delivery, now or later

    def _update_autoscaler(
        self, identity: bytes, msg: protocol.UpdateAutoscaler, payload: list[Any]
    ) -> Answer:
        model = self.update_autoscaler(msg.pool_id, msg.changes, by="update_autoscaler")
        return model["settings"], ()

    def _stop_pool(self, identity: bytes, msg: protocol.StopPool, payload: list[Any]) -> Answer:
        return self.stop_pool(msg.pool_id), ()

    def _get_call(self, identity: bytes, msg: protocol.GetCall, payload: list[Any]) -> Answer:
        return self.call_info(msg.call_id, msg.start, msg.limit), ()

    def _get_logs(self, identity: bytes, msg: protocol.GetLogs, payload: list[Any]) -> Answer:
        return self.worker_logs(msg.worker_id, msg.tail), ()

    def _get_stats(self, identity: bytes, msg: protocol.GetStats, payload: list[Any]) -> Answer:
        if msg.pool_id is None:
            return {"pools": self.list_pools(), "spares": self.list_spares()}, ()
        return self.pool_info(msg.pool_id), ()

    def _deploy_app(self, identity: bytes, msg: protocol.DeployApp, payload: list[Any]) -> Answer:
        versions = self.callers.versions(identity)
        if versions is None:
            raise RequestError(ERROR_INVALID, "say hello first")
        return self.deployed.deploy(identity, msg, payload, versions)

    def _stop_app(self, identity: bytes, msg: protocol.StopApp, payload: list[Any]) -> Answer:
        labels = [pool_label(msg.app, n) for n in self.deployed.stop(identity, msg.rid, msg.app)]
        for pool in list(self.records.pools.values()):
            named = any(pool.name == n or pool.name.startswith(f"{n}(") for n in labels)
            if named and not pool.stopped:
                self.stop_pool(pool.pool_id)
        return None  # answered once the store forgot it

    # --- the admin methods: the requests above and the REST API share them --------------

    # Each raises RequestError (kind NotFoundError or InvalidError) for a bad request.

    def connection_info(self) -> dict[str, Any]:
        """What a client learns at hello: endpoints, version, launcher and why, limits."""
        return self._connection_info()

    def list_pools(self) -> list[PoolModel]:
        now = self.clock()
        return [reports.pool_model(p, now) for p in self.records.pools.values()]

    def list_spares(self) -> list[str]:
        """The idle warm spare containers' names (the Docker launcher's ``docker_spares``)."""
        return self.fleet.launcher.spares()

    def pool_info(self, pool_id: str) -> PoolModel:
        return reports.pool_model(self.records.pool(pool_id), self.clock())

    def update_autoscaler(
        self, pool_id: str, changes: dict[str, Any], by: str = "the REST API"
    ) -> PoolModel:
        """Change a pool's autoscaler settings (None keeps a setting) and act on them now;
        ``by`` says who, in the pool's event log."""
        pool = self.records.pool(pool_id)
        self._apply(pool, changes, by)
        return self.pool_info(pool_id)

    def _apply(self, pool: Pool, changes: dict[str, Any], by: str) -> None:
        """Apply settings ``changes``; what moved is noted, announced and acted on now."""
        old = pool.autoscaler.settings
        try:
            new = pool.autoscaler.settings = old.updated(changes)
        except (TypeError, ValueError) as exc:
            raise RequestError(ERROR_INVALID, str(exc)) from None
        before, after = old.as_dict(), new.as_dict()
        moved = [f"{k} {before[k]} -> {after[k]}" for k in after if before[k] != after[k]]
        if moved:
            pool.note(f"{', '.join(moved)} (set by {by})", time.time())
            self.outbox.emit("pool-updated", pool.pool_id)
            self.fleet.autoscale(pool, self.clock())

    def stop_pool(self, pool_id: str) -> PoolModel:
        """Cancel the pool's unfinished calls and stop its workers. The pool stays
        registered, idle: the kernels that use it may call it again, and then it scales up
        as usual."""
        pool = self.records.pool(pool_id)
        calls = self.delivery.calls.values()
        for call in [c for c in calls if c.pool_id == pool_id and not c.finished]:
            self.cancel_call(call.call_id)
        pool.stopped = True
        pool.autoscaler.status = "stopped"
        pool.note("stopped: its calls cancelled, its workers stopping", time.time())
        for w in list(pool.workers.values()):
            if w.state != "draining":
                self.fleet.stop_worker(w, graceful=True)
        self.outbox.emit("pool-stopped", pool_id)
        return self.pool_info(pool_id)

    def listed_calls(self, limit: int | None = None) -> dict[str, CallState]:
        """The calls in memory: those running, then the latest finished ones (see
        ``Delivery.listed_calls``)."""
        return self.delivery.listed_calls(limit)

    def list_calls(self, limit: int = CALLS_PAGE, before: int | None = None) -> list[CallModel]:
        """The ``limit`` latest calls opened before ``before`` (a call's ``seq``: pass the
        last one's to page on), newest first: those in memory and spawned ones stored."""
        in_memory = self.listed_calls() if before is not None else self.listed_calls(limit)
        calls = {c.call_id: c for c in in_memory.values() if before is None or c.seq < before}
        for stored in self.delivery.store.finished_calls(limit, before):
            calls.setdefault(stored.call_id, stored)
        newest = sorted(calls.values(), key=lambda c: c.seq, reverse=True)[:limit]
        return [self.call_model(c) for c in newest]

    def call_model(self, call: CallState) -> CallModel:
        return reports.call_model(call, self.records.pools.get(call.pool_id))

    def call_info(self, call_id: str, start: int = 0, limit: int = 1000) -> CallDetailModel:
        call = self.delivery.call(call_id)
        pool = self.records.pools.get(call.pool_id)  # None: a stored call of an earlier run
        # running: what its workers say they run; the rest they hold waits there, pending
        workers = pool.workers.values() if pool is not None else ()
        started = {r.key for w in workers for r in self.liveness.running(w)}
        return reports.call_detail(call, pool, start, limit, started)

    def check_callers(self, now: float, grace: float) -> None:
        """Cancel the maps and remotes of callers that are gone (checked once a second):
        nobody waits for their results. Spawned and detached calls stay: they outlive their
        caller (a detached map with the inputs it was sent)."""
        if now < self._next_callers_check:
            return
        self._next_callers_check = now + 1.0
        for identity in self.callers.identities():
            if identity in self.outbox.local_clients:
                continue  # in this process: gone only with it
            if self.nesting.knows(identity):  # code on a worker: gone with its worker
                why = self.nesting.gone(identity)
            else:
                why = self.callers.gone(identity, now, grace)
            if why is None:
                continue
            self.callers.forget(identity)
            self.shared.caller_gone(identity)
            calls = self.delivery.calls.values()
            for call in [c for c in calls if c.owner == identity and c.kind != "spawn"]:
                if call.finished and not call.detaching:
                    continue
                pool = self.records.pools[call.pool_id]
                if call.detached:
                    self.watching.orphan(call)
                    note = (
                        f"{call.call_id} runs on detached: its caller {why}; "
                        f"its {call.submitted:,} inputs sent stay"
                    )
                    pool.note(note, time.time())
                    continue
                pool.note(f"cancelled {call.kind} {call.call_id}: its caller {why}", time.time())
                self.delivery.cancel(call, requester=None)

    def cancel_call(self, call_id: str, requester: bytes | None = None) -> CallModel:
        """Cancel a call's pending and running inputs (see ``Delivery.cancel``)."""
        call = self.delivery.call(call_id)
        if call.call_id in self.delivery.calls:  # else it finished: nothing to cancel
            self.delivery.cancel(call, requester)
        return self.call_model(call)

    def detach_call(self, call_id: str) -> CallModel:
        """Detach a running map from its caller, which stops waiting: the call runs on and
        keeps its results, for ``FunctionCall.from_id`` (see ``watching.py``)."""
        call = self.delivery.call(call_id)
        if call.kind != "map":
            raise RequestError(ERROR_INVALID, f"{call_id} is a {call.kind} call: only maps detach")
        if call.finished:
            raise RequestError(ERROR_INVALID, f"{call_id} has ended: nothing to detach")
        if not call.detached:
            self.watching.detach(call)
        return self.call_model(call)

    def worker_logs(self, worker_id: str, tail: int = 200, after: int | None = None) -> LogsModel:
        """The last ``tail`` lines of a worker's output, also for one that exited lately, or
        the lines since the cursor ``after`` of an earlier answer."""
        handle = self.fleet.handle(worker_id)
        if handle is None:
            raise RequestError(ERROR_NOT_FOUND, f"no container {worker_id}")
        chunk = self.fleet.launcher.follow_logs(handle, after, tail)
        return reports.logs_model(handle, tail, chunk)

    def subscribe(self, callback: Subscriber) -> Callable[[], None]:
        """See ``Outbox.subscribe``."""
        return self.outbox.subscribe(callback)
