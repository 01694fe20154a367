"""Calls made from inside workers: their callers, and the slots their workers lend.

Code running on a worker that calls a function (``.remote``, ``.map``, ``.spawn``,
``FunctionCall.from_id``...) reaches this control plane over a connection of its worker's
own, named ``<worker id>:client`` (``nbscale_runtime.nested``), on the workers' channel:
the Unix socket in the private directory, or CurveZMQ with the worker's allow-listed key.
So the control plane knows the worker behind each nested caller, and with it:

- its owner: the owner of the worker's pool (the kernel or script whose call started it),
  so a nested call uses the same pools, limits and call ids as a call made there;
- its image, on Docker, for a function that names none: the worker's own (a container
  cannot build images, and its caller's image already holds the code it runs);
- whether it is gone: when its worker is (nobody waits for its maps then).

A worker whose input blocks on nested calls lends its slot (``on_lend_slot``): it keeps
its input but is sent nothing more, the inputs it held without running them go back to
the queue, and it counts against neither ``max_containers`` nor the total cap until it
rejoins, so that a function calling itself with ``max_containers=1`` completes. Where a
worker cannot lend (``@concurrent``: its other inputs keep running), a pool whose every
slot waits on calls to that same pool, at its ``max_containers``, is a deadlock: the
nested calls waiting there fail at once with ``DeadlockError`` (``check_deadlock``).
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any

from nbscale_runtime import protocol
from nbscale_runtime.nested import CLIENT_SUFFIX
from nbscale_runtime.protocol import ERROR_DEADLOCK, STATUS_REJECTED

from .calls import CallState
from .delivery import Delivery
from .errors import rejection
from .models import OwnerModel
from .options import FunctionOptions
from .outbox import Outbox
from .pool import Pool, Records, WorkerState
from .queue import Outcome

_SUFFIX = CLIENT_SUFFIX.encode()
# How long a pool must look deadlocked before its nested calls fail: a worker that can
# lend its slot does so within tens of milliseconds of blocking.
DEADLOCK_GRACE = 3.0


def nested_worker_id(identity: bytes) -> str | None:
    """The worker behind a caller's identity, when the caller is code on a worker."""
    if identity.endswith(_SUFFIX):
        return identity[: -len(_SUFFIX)].decode(errors="replace")
    return None


class Nesting:
    def __init__(self, records: Records, outbox: Outbox, delivery: Delivery) -> None:
        self.records = records
        self.outbox = outbox
        self.delivery = delivery
        self._workers_seen: dict[bytes, str] = {}  # nested callers' identity -> worker id
        self._stuck_since: dict[str, float] = {}  # pools that look deadlocked, since when

    # --- nested callers -----------------------------------------------------------------

    def owner(self, identity: bytes) -> OwnerModel | None:
        """The owner of a nested caller's worker's pool; None for a caller that is not on
        a worker (or on one the control plane does not know)."""
        worker_id = nested_worker_id(identity)
        w = self.records.workers.get(worker_id) if worker_id else None
        if w is None:
            return None
        self._workers_seen[identity] = w.worker_id
        return self.records.pools[w.pool_id].owner

    def knows(self, identity: bytes) -> bool:
        """Whether ``identity`` is a nested caller that said hello."""
        return identity in self._workers_seen

    def gone(self, identity: bytes) -> str | None:
        """Why a nested caller is gone (its worker is), or None while it is there."""
        worker_id = self._workers_seen.get(identity)
        if worker_id is None:
            return None
        w = self.records.workers.get(worker_id)
        if w is None:
            del self._workers_seen[identity]
            return f"is gone (its worker {worker_id} exited)"
        return None

    def options_for(
        self, identity: bytes, options: FunctionOptions, in_containers: bool
    ) -> FunctionOptions:
        """A nested caller's function options: on containers (Docker, Kubernetes), without
        an image, its worker's (a worker cannot build one, and its own holds the code)."""
        worker_id = nested_worker_id(identity)
        w = self.records.workers.get(worker_id) if worker_id else None
        if not in_containers or w is None or options.image is not None:
            return options
        return dataclasses.replace(options, image=self.records.pools[w.pool_id].options.image)

    def link_parent(self, call_id: str, parent: list[Any]) -> None:
        """Record the input whose code made a call (the call graph), once."""
        call = self.delivery.calls.get(call_id)
        if call is None or call.parent is not None:
            return
        call.parent = (str(parent[0]), int(parent[1]))
        delivery = self.delivery
        parent_call = delivery.calls.get(call.parent[0]) or delivery.finished_calls.get(
            call.parent[0]
        )
        if parent_call is not None:
            parent_call.add_child(call_id)

    # --- slots lent while an input waits on its children ----------------------------------

    def on_lend_slot(
        self, w: WorkerState, msg: protocol.LendSlot, payload: list[Any], now: float
    ) -> None:
        pool = self.records.pools[w.pool_id]
        running = {(row[0], row[1]) for row in msg.running}
        taken = pool.queue.give_back(w.worker_id, running)
        if w.serving:
            w.lend()
        # after every run-inputs sent before: the worker drops what was taken back
        self.outbox.send_worker(w.worker_id, protocol.SlotLent([[*r.key, r.count] for r in taken]))
        self.delivery.dispatch(pool)

    def on_rejoin(
        self, w: WorkerState, msg: protocol.Rejoin, payload: list[Any], now: float
    ) -> None:
        w.rejoin()

    # --- deadlocks where slots cannot be lent -----------------------------------------------

    def check_deadlock(self, pool: Pool, now: float) -> None:
        """Fail the nested calls waiting in ``pool`` when none of them can ever run: for
        ``DEADLOCK_GRACE`` seconds, the pool is at its ``max_containers``, every slot of its
        workers runs an input that waits on calls to this same pool only, and none of those
        workers lent its slot."""
        stuck = self._stuck_calls(pool)
        if not stuck:
            self._stuck_since.pop(pool.pool_id, None)
            return
        since = self._stuck_since.setdefault(pool.pool_id, now)
        if now - since < DEADLOCK_GRACE:
            return
        del self._stuck_since[pool.pool_id]
        failed = pool.queue.fail_pending(stuck)
        if not failed:
            return
        mx = pool.autoscaler.settings.max_containers
        message = (
            f"{pool.name}: deadlock: all input slots of its max_containers={mx} worker(s) "
            f"run inputs that wait on calls to {pool.name} itself, and a worker lends its "
            "slot only while a plain (sync, one input at a time) function waits; raise "
            "max_containers or max_inputs, or nest fewer levels"
        )
        pool.note(message, time.time())
        payload = rejection(ERROR_DEADLOCK, message)
        self.delivery.settling.deliver_made(
            pool, [(Outcome(r, STATUS_REJECTED, True), payload) for r in failed]
        )

    def _stuck_calls(self, pool: Pool) -> set[str]:
        """The nested calls waiting in ``pool`` that no slot of it can run, as things are."""
        mx = pool.autoscaler.settings.max_containers
        counted = [w for w in pool.workers.values() if w.counted]
        if not pool.queue.pending or mx is None or len(counted) < mx:
            return set()
        held = sum(pool.queue.running_on(w.worker_id) for w in counted)
        if not held or held < len(counted) * pool.slots:
            return set()
        waiting_on: dict[tuple[str, int], list[CallState]] = {}
        for call in self.delivery.calls.values():
            if call.parent is not None and not call.finished and call.kind != "spawn":
                waiting_on.setdefault(call.parent, []).append(call)
        if not waiting_on:  # no nested call waits (a map's runs: not cut into inputs each tick)
            return set()
        running = [r for w in counted for r in pool.queue.held_inputs(w.worker_id).values()]
        stuck: set[str] = set()
        for record in running:
            children = waiting_on.get(record.key)
            if not children or any(c.pool_id != pool.pool_id for c in children):
                return set()  # this input runs, or waits on another pool, which may progress
            stuck.update(c.call_id for c in children)
        return stuck
