"""The fleet: every worker of every pool, from launch to exit.

It launches workers when a pool's autoscaler says so (within the total cap, reclaiming idle
workers of other pools when the cap holds a pool back), gives each a register (the file
where it says which inputs it runs), follows those that wait in a scheduler's queue
(Slurm's: "waiting for resources", with its reason, until they run or their pending timeout
ends the wait), stops and kills them, and forgets them once they exit. The decisions
themselves are the pure cores' (``AutoscalerCore``, ``reclaim``); this room carries them out
with the launcher. What workers say of themselves (register, heartbeat, goodbye) is
``WorkerEvents``'s; what happens when a worker dies or goes silent is ``Liveness``'s.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable
from typing import Any, Protocol

from nbscale_runtime import protocol, register
from nbscale_runtime.protocol import ERROR_LAUNCH, STATUS_REJECTED

from .autoscaler import CapHolder, LaunchWorkers, OtherPool, StopWorkers, reclaim
from .delivery import Delivery
from .errors import rejection
from .launchers import Launcher, LaunchFailed, WorkerHandle, WorkerSpec
from .outbox import Outbox
from .pool import Pool, Records, WorkerState
from .security import KeyPair, WorkerAllowList, write_secret_json
from .settings import ControlPlaneConfig

log = logging.getLogger("nbscale.control_plane")

_CPUS = os.cpu_count() or 1  # read once: it is a file read, and room() runs per submission
_GONE_KEPT = 64  # workers that exited whose logs stay reachable through handle()


class WorkerSockets(Protocol):
    """Listening sockets of one worker's own (``StreamChannel``), for launchers that mount
    one into each worker (``Launcher.socket_in_worker``)."""

    def listen(self, path: str, worker_id: str) -> None: ...

    def unlisten(self, worker_id: str) -> None: ...


class Fleet:
    def __init__(
        self,
        records: Records,
        outbox: Outbox,
        delivery: Delivery,
        launcher: Launcher,
        config: ControlPlaneConfig,
        clock: Callable[[], float],
        work_dir: str,
    ) -> None:
        self.records = records
        self.outbox = outbox
        self.delivery = delivery
        self.launcher = launcher
        self.config = config
        self.clock = clock
        self.dir = work_dir  # the private directory: workers' config files live here
        self.server_keys = KeyPair()
        self.allow_list: WorkerAllowList | None = None  # set when workers come over TCP
        self.endpoint = ""  # where workers reach us, set once the channel is bound
        self.worker_sockets: WorkerSockets | None = None  # set when each worker has its own
        self.closing = False
        self._gone: OrderedDict[str, WorkerHandle] = OrderedDict()  # recently exited workers

    # --- capacity -----------------------------------------------------------------------

    def total_cap(self) -> int:
        return self.config.max_workers_total or max(4, 2 * _CPUS)

    def room(self) -> int:
        """How many more workers the total cap allows now."""
        live = sum(1 for w in self.records.workers.values() if w.counted)
        return self.total_cap() - live

    def autoscale(self, pool: Pool, now: float) -> None:
        if pool.broken or self.closing:
            return
        if pool.stopped:
            if not pool.queue.pending:
                return
            pool.stopped = False  # called again after a stop: it scales as usual
        autoscaler = pool.autoscaler
        load = pool.load()
        short = autoscaler.desired(load) - pool.live_workers()  # workers it wants and lacks
        room = self.room()
        holders: tuple[CapHolder, ...] = ()
        if short > room and load.pending and autoscaler.may_launch(now):  # held by the cap
            self._reclaim_for(pool, short - max(0, room))
            room = self.room()
            if short > room:
                holders = self._cap_holders()
        instructions = autoscaler.decide(now, load, pool.views(), room, holders)
        pool.cap_holders = holders
        if holders and not instructions and pool.last_event() != autoscaler.status:
            pool.note(autoscaler.status, time.time())  # who holds the cap, when it changes
        for instruction in instructions:
            pool.note(f"{autoscaler.status}: {instruction.reason}", time.time())
            if isinstance(instruction, LaunchWorkers):
                for _ in range(instruction.count):
                    if not self._launch(pool, now):
                        break
            elif isinstance(instruction, StopWorkers):
                for worker_id in instruction.worker_ids:
                    self.stop_worker(pool.workers[worker_id], graceful=True)

    def _reclaim_for(self, pool: Pool, count: int) -> None:
        """Stop up to ``count`` idle workers of other pools to make room for ``pool``."""
        pools = self.records.pools
        others = [
            OtherPool(other.autoscaler.desired(other.load()), bool(other.queue.pending), views)
            for other in pools.values()
            if other is not pool and (views := other.views())
        ]
        victims = [self.records.workers[worker_id] for worker_id in reclaim(others, count)]
        cap = self.total_cap()
        for w in victims:
            why = f"to make room for {pool.name} (the total cap of {cap} workers is in use)"
            pools[w.pool_id].note(f"stopping idle worker {w.worker_id} {why}", time.time())
            self.stop_worker(w, graceful=True)
        if victims:
            owners = sorted({pools[w.pool_id].name for w in victims})
            taken = f"stopping {len(victims)} idle worker(s) of {', '.join(owners)}"
            pool.note(f"{taken} to make room under the total cap of {cap}", time.time())

    def _cap_holders(self) -> tuple[CapHolder, ...]:
        """Every pool's workers that count against the total cap, the largest share first."""
        holders = []
        for p in self.records.pools.values():
            count = dict.fromkeys(("waiting", "starting", "idle", "busy", "draining", "lent"), 0)
            for w in p.workers.values():
                count[w.view().state] += 1
            holder = CapHolder(
                p.pool_id, p.name, count["starting"], count["idle"], count["busy"], count["waiting"]
            )
            if holder.workers:
                holders.append(holder)
        return tuple(sorted(holders, key=lambda h: -h.workers))

    # --- launching and stopping ---------------------------------------------------------

    def _launch(self, pool: Pool, now: float) -> bool:
        # a warm spare's id, if one can take this worker (docker_spares.py)
        worker_id = self.launcher.spare_worker_id(pool.options) or f"wk-{uuid.uuid4().hex[:12]}"
        config: dict[str, Any] = {
            "worker_id": worker_id,
            "pool_id": pool.pool_id,
            "endpoint": self.endpoint,
            "parent_pid": os.getpid() if self.launcher.name == "process" else None,
            "heartbeat_interval": self.config.heartbeat_interval,
            "max_result_mib": self.config.max_input_mib,
            "shared_min": self.config.shared_min_bytes,
        }
        # Remote workers read their files from a directory their hosts share (the launcher's).
        files_dir = self.launcher.worker_config_dir() or self.dir
        register_path = os.path.join(files_dir, f"{worker_id}.register")
        in_worker = self.launcher.register_in_worker(register_path)
        shared = register_path if in_worker is not None else None
        config["register_path"] = in_worker
        config["heartbeat_timeout"] = self.config.heartbeat_timeout
        config["exit_grace"] = self.config.exit_grace if pool.options.has_exit else None
        if pool.env:  # the secrets' values: in this 0600 file only, never argv or labels
            config["env"] = pool.env
        keys = None
        if self.allow_list is not None:
            keys = KeyPair()
            config.update(
                server_public_key=self.server_keys.public,
                public_key=keys.public,
                secret_key=keys.secret,
            )
            self.allow_list.allow(keys.public)
        config_path = os.path.join(files_dir, f"{worker_id}.json")
        socket_path = None
        if self.worker_sockets is not None and (in_worker := self.launcher.socket_in_worker()):
            socket_path = os.path.join(files_dir, f"{worker_id}.sock")
            config["endpoint"] = f"unix://{in_worker}"
        writing = shared or config_path
        try:
            if shared is not None:
                register.create(shared, pool.slots)
            writing = config_path
            write_secret_json(config_path, config)
            if socket_path is not None and self.worker_sockets is not None:
                writing = socket_path
                self.worker_sockets.listen(socket_path, worker_id)
        except OSError as exc:  # a full disk fails this launch, not the housekeeping
            if keys is not None and self.allow_list is not None:
                self.allow_list.revoke(keys.public)
            self._remove_files(config_path, shared)
            why = f"cannot write the worker's file {writing}: {exc.strerror or exc}"
            self.launch_failed(pool, why, now, transient=False)
            return False
        spec = WorkerSpec(
            worker_id, pool.pool_id, config_path, pool.options, shared, pool.name, socket_path
        )
        try:
            handle = self.launcher.start(spec)
        except LaunchFailed as exc:
            self._remove_files(config_path, shared)
            self._unlisten(worker_id)
            self.launch_failed(pool, str(exc), now, transient=False, lasting=exc.lasting)
            return False
        public_key = keys.public if keys else None
        w = WorkerState(
            worker_id, pool.pool_id, handle, public_key, config_path, now, last_seen=now
        )
        w.register_path = shared
        pool.workers[worker_id] = w
        self.records.workers[worker_id] = w
        self.outbox.emit("container-starting", pool.pool_id, container_id=worker_id)
        self.follow_queue(w, now)
        return True

    def launch_failed(
        self, pool: Pool, reason: str, now: float, transient: bool, lasting: bool = False
    ) -> None:
        """A worker could not start: back off; fail the waiting inputs once the pool looks
        broken for good (``AutoscalerCore.out_of_launches``). ``lasting``: trying again
        cannot help (no GPU on this host), so they fail now rather than after the backoff."""
        autoscaler = pool.autoscaler
        autoscaler.launch_failed(now, reason, transient, lasting)
        log.warning("%s: %s", pool.name, autoscaler.status)
        pool.note(autoscaler.status, time.time())
        # A pool whose running workers serve its inputs is capped, not broken (e.g. by GPUs).
        # Waiting workers serve nothing: they do not keep a pool from being broken.
        serving = any(w.serving for w in pool.workers.values())
        if autoscaler.out_of_launches and not serving:
            message = (
                f"{pool.name}: cannot start a worker: {reason}"
                if lasting
                else f"{pool.name}: {autoscaler.why_out_of_launches()}; the last: {reason}"
            )
            pool.note(message, time.time())
            record = rejection(ERROR_LAUNCH, message)
            if lasting:  # so will new inputs, at once, until the function is registered again
                self.delivery.settling.break_pool(pool, STATUS_REJECTED, record)
            else:
                self.delivery.settling.fail_waiting(pool, STATUS_REJECTED, record)

    def stop_worker(self, w: WorkerState, graceful: bool) -> None:
        w.drain()
        if graceful:
            self.outbox.send_worker(w.worker_id, protocol.Shutdown("scaled down"))
        self.launcher.stop(w.handle, graceful=graceful)
        self.outbox.emit("container-stopping", w.pool_id, container_id=w.worker_id)

    def stop_all(self, graceful: bool) -> None:
        """Ask every worker to stop (the control plane is stopping), or kill them all."""
        for w in list(self.records.workers.values()):
            if graceful:
                self.outbox.send_worker(w.worker_id, protocol.Shutdown("control plane stopping"))
            self.launcher.stop(w.handle, graceful=graceful)

    def all_exited(self) -> bool:
        return all(
            self.launcher.exit_code(w.handle) is not None for w in self.records.workers.values()
        )

    def kill_past_grace(self, elapsed: float) -> bool:
        """``elapsed`` seconds after ``stop_all(graceful=True)``, kill the workers past
        their grace: ``stop_grace``, plus ``exit_grace`` for a class with ``@exit`` hooks.
        Returns whether some worker is still within its grace."""
        within = False
        for w in list(self.records.workers.values()):
            if self.launcher.exit_code(w.handle) is not None:
                continue
            grace = self.config.stop_grace
            if self.records.pools[w.pool_id].options.has_exit:
                grace += self.config.exit_grace
            if elapsed > grace:
                self.launcher.stop(w.handle, graceful=False)
            else:
                within = True
        return within

    def kill_all(self) -> None:
        """Kill every worker and wait briefly for each; release what the launcher holds."""
        workers = self.records.workers
        for w in workers.values():
            self.launcher.stop(w.handle, graceful=False)
        for w in workers.values():
            wait = getattr(self.launcher, "wait", None)
            if wait is not None:
                wait(w.handle, 2.0)
        workers.clear()
        self.launcher.close()  # removes what is left: containers, their network

    def handle(self, worker_id: str) -> WorkerHandle | None:
        """A worker's handle, also for one that exited lately (for its logs)."""
        w = self.records.workers.get(worker_id)
        return w.handle if w is not None else self._gone.get(worker_id)

    # --- waiting in a scheduler's queue -------------------------------------------------

    def follow_queue(self, w: WorkerState, now: float) -> None:
        """Until it registers: whether it waits in a scheduler's queue (and why), or runs.
        The launcher answers from what it last heard (Slurm's: a poll of its own thread)."""
        if w.registered_at is not None or w.state not in ("waiting", "starting"):
            return
        status = self.launcher.worker_status(w.handle)
        if status.phase == "pending":
            if w.state != "waiting" or w.waiting_reason != status.reason:
                w.queued(status.reason)
                self.outbox.emit("container-waiting", w.pool_id, container_id=w.worker_id)
        else:
            self.started(w, now)

    def started(self, w: WorkerState, now: float) -> None:
        """It runs (its launcher says so, or it registered before the launcher noticed)."""
        if w.state == "waiting":
            if w.waiting_reason:  # a wait the scheduler explained, not a job's first moment
                waited = f"{now - w.launched_at:.0f} s waiting ({w.waiting_reason})"
                note = f"worker {w.worker_id} started after {waited}"
                self.records.pools[w.pool_id].note(note, time.time())
            self.outbox.emit("container-starting", w.pool_id, container_id=w.worker_id)
        w.started(now)

    def pending_timeout(self, w: WorkerState, now: float) -> None:
        """A worker waited ``pending_timeout`` in the queue: cancel it, and count it as a
        launch failure that fails the pool's waiting inputs (unless others serve them)."""
        pool = self.records.pools[w.pool_id]
        timeout = self.config.pending_timeout
        why = f"the scheduler's reason: {w.waiting_reason}" if w.waiting_reason else "no reason"
        reason = (
            f"worker {w.worker_id} waited {timeout:g} s for resources without starting "
            f"({why}); it was cancelled (pending_timeout)"
        )
        log.warning("%s: %s", pool.name, reason)
        self.stop_worker(w, graceful=False)  # draining: its exit is no second failure
        self.launch_failed(pool, reason, now, transient=False, lasting=True)

    # --- exits -------------------------------------------------------------------------

    def kill(self, w: WorkerState, why: str) -> None:
        """Kill a worker for a reason of the control plane's: whatever is still running on it
        when it dies is the infrastructure's loss, not its inputs'."""
        log.warning("worker %s %s; killing it", w.worker_id, why)
        self.records.pools[w.pool_id].note(f"killing worker {w.worker_id}: it {why}", time.time())
        w.killed_by_us = why
        self.launcher.stop(w.handle, graceful=False)

    def forget(self, w: WorkerState, exit_code: int | None) -> Pool:
        """An exited worker leaves the records (its logs stay reachable a while); returns
        its pool."""
        pool = self.records.pools[w.pool_id]
        pool.workers.pop(w.worker_id, None)
        self.records.workers.pop(w.worker_id, None)
        self._gone[w.worker_id] = w.handle
        if len(self._gone) > _GONE_KEPT:
            self._gone.popitem(last=False)
        self.outbox.emit(
            "container-stopped", pool.pool_id, container_id=w.worker_id, exit_code=exit_code
        )
        if w.public_key and self.allow_list:
            self.allow_list.revoke(w.public_key)
        self._remove_files(w.config_path, w.register_path)
        self._unlisten(w.worker_id)
        return pool

    def _unlisten(self, worker_id: str) -> None:
        if self.worker_sockets is not None:
            self.worker_sockets.unlisten(worker_id)

    def _remove_files(self, *paths: str | None) -> None:
        for path in paths:
            if path:
                with contextlib.suppress(OSError):
                    os.unlink(path)
