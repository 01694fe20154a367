"""Liveness: which workers are gone, silent, or running an input past its timeout, and what
becomes of their inputs. The housekeeping tick runs ``check_workers``, which also follows
workers still waiting in a scheduler's queue (``Fleet.follow_queue``, ``pending_timeout``).

A worker is lost when its launcher says its process, container or job is gone. Then its
register (``nbscale_runtime.register``), read after what it sent before it died was
handled, says exactly which inputs it was running: only those lost an attempt, charged to
the user or to the infrastructure (``losses.py``); results that arrived are kept, and the
rest of its inputs go back to the queue untouched. A worker without a register (it shares
no files with the control plane) cannot say exactly: its inputs become suspects, each then
run alone with a confirmed start (``queue.py``), so that the next death blames exactly.

A worker that is alive but silent (no heartbeat for ``heartbeat_timeout``) is judged by what
it runs, since its pulse thread needs the GIL that user code may hold for minutes:

- an input running past the function's ``timeout`` (by the register's clock): the input
  times out (``FunctionTimeoutError``) and the worker is killed: the timeout is enforced
  from outside, as the worker cannot enforce it itself;
- an input running within its timeout: the worker is ``unresponsive`` and left alone;
- nothing running: it is wedged (stopped, frozen between inputs): killed, its inputs
  requeued.
"""

from __future__ import annotations

import logging
import pickle
import signal
import time
from collections.abc import Callable

from nbscale_runtime import register
from nbscale_runtime.protocol import STATUS_TIMEOUT
from nbscale_runtime.register import RunningInput

from .delivery import Delivery
from .fleet import Fleet
from .launchers import Launcher
from .losses import INFRASTRUCTURE, cause_of_loss, describe_cause, launch_failure_is_transient
from .pool import Pool, Records, WorkerState
from .queue import InputRecord, Outcome
from .settings import ControlPlaneConfig

log = logging.getLogger("nbscale.control_plane")


class Liveness:
    def __init__(
        self,
        records: Records,
        fleet: Fleet,
        delivery: Delivery,
        launcher: Launcher,
        config: ControlPlaneConfig,
        clock: Callable[[], float],
    ) -> None:
        self.records = records
        self.fleet = fleet
        self.delivery = delivery
        self.launcher = launcher
        self.config = config
        self.clock = clock

    def _stop_grace(self, w: WorkerState) -> float:
        """How long a stopping worker may stay silent: ``stop_grace``, plus ``exit_grace``
        for a class with ``@exit`` hooks (as ``Fleet.kill_past_grace`` gives it)."""
        pool = self.records.pools.get(w.pool_id)
        if pool is not None and pool.options.has_exit:
            return self.config.stop_grace + self.config.exit_grace
        return self.config.stop_grace

    def check_workers(self, now: float) -> None:
        cfg = self.config
        for w in list(self.records.workers.values()):
            code = self.launcher.exit_code(w.handle)
            if code is not None:
                self._worker_gone(w, code, now)
                continue
            self.fleet.follow_queue(w, now)
            if w.waited_too_long(now, cfg.pending_timeout):
                self.fleet.pending_timeout(w, now)
                continue
            why = w.overdue(now, cfg.startup_timeout, self._stop_grace(w))
            if why is not None:
                if w.killed_by_us is None:
                    self.fleet.kill(w, why)
            elif w.registered_at is not None and now - w.last_seen > cfg.heartbeat_timeout:
                self._silent(w, now)

    def running(self, w: WorkerState) -> list[RunningInput]:
        """The inputs ``w`` runs now, by its own word."""
        return self._word(w)[0]

    def _word(self, w: WorkerState) -> tuple[list[RunningInput], int]:
        """What ``w`` runs now, by its register, else by its heartbeats (then ``started`` is
        when one first said so); and the deadly signal its code sent itself (0: none)."""
        if w.register_path is not None:
            snapshot = register.read(w.register_path)
            if snapshot is None:
                return [], 0
            return list(snapshot.running), snapshot.self_signal
        return [RunningInput(c, i, a, at) for (c, i, a), at in w.reported_running.items()], 0

    # --- silent workers -------------------------------------------------------------------

    def _silent(self, w: WorkerState, now: float) -> None:
        if w.killed_by_us is not None:
            return  # killed already; waiting for the launcher to see it gone
        pool = self.records.pools[w.pool_id]
        held = pool.queue.held_inputs(w.worker_id)
        running = [r for r in self.running(w) if _current(held, r)]
        silent = now - w.last_seen
        overdue = [r for r in running if now - r.started > pool.timeout]
        if overdue:
            outcomes = [
                o
                for r in overdue
                if (o := pool.queue.report(w.worker_id, *r.key, r.attempt, STATUS_TIMEOUT, now))
            ]
            self._settle(pool, outcomes)
            indices = ", ".join(str(r.index) for r in overdue)
            self.fleet.kill(
                w,
                f"ran input {indices} past its timeout of {pool.timeout:g} s without a word for "
                f"{silent:.0f} s",
            )
        elif running:
            if w.state != "unresponsive":
                w.unresponsive()
                pool.note(
                    f"worker {w.worker_id} unresponsive for {silent:.0f} s while running input "
                    f"{running[0].index} (code holding the GIL?); left alone until its timeout "
                    f"of {pool.timeout:g} s",
                    time.time(),
                )
        else:
            self.fleet.kill(w, f"missed its heartbeats for {silent:.0f} s with no input running")

    # --- exits ------------------------------------------------------------------------------

    def _worker_gone(self, w: WorkerState, exit_code: int | None, now: float) -> None:
        # What it was running, by its own last word: read before its files are removed.
        running, self_signal = self._word(w)
        # One stopped before it ever ran (a queued job no longer needed) has no exit to show.
        never_ran = w.state == "draining" and w.started_at is None
        pool = self.fleet.forget(w, None if never_ran else exit_code)
        # What the launcher knows beyond the code (out of memory, never started, ...).
        reason = self.launcher.exit_reason(w.handle) or describe_exit(exit_code)
        launcher_cause = self.launcher.exit_cause(w.handle)
        exit_signal = self.launcher.exit_signal(w.handle)
        killed_by_us = w.killed_by_us is not None
        if w.registered_at is None and not w.clean_exit and w.state != "draining":
            tail = self.launcher.logs(w.handle, 10).strip()
            said = f":\n{tail}" if tail else ""
            transient = launch_failure_is_transient(launcher_cause, killed_by_us, exit_signal)
            self.fleet.launch_failed(
                pool, f"worker {reason} before registering{said}", now, transient
            )
        cause = cause_of_loss(launcher_cause, killed_by_us, exit_signal, self_signal)
        ran: set[tuple[str, int, int]] | None = {(r.call_id, r.index, r.attempt) for r in running}
        if w.clean_exit:
            ran = set()  # it said goodbye: what it had not reported is not its inputs' fault
        elif w.register_path is None and launcher_cause != INFRASTRUCTURE:
            ran = None  # its heartbeats are not exact enough to blame: suspects (queue.py)
        elif w.register_path is None:
            ran = set()  # taken away (preempted, removed): none of its inputs' doing
        outcomes = pool.queue.worker_gone(
            w.worker_id, now, ran, infrastructure=cause == INFRASTRUCTURE
        )
        if outcomes:
            why = f"; killed by nbscale: it {w.killed_by_us}" if killed_by_us else ""
            pool.note(
                f"worker {w.worker_id} {reason} while running input(s) "
                f"{', '.join(str(o.record.index) for o in outcomes)} ({cause}'s loss{why})",
                time.time(),
            )
        self.delivery.settling.report_retries(outcomes)
        final = [o for o in outcomes if o.final]
        if final:
            tail = self.launcher.logs(w.handle, 20)
            rows = []
            for o in final:
                losses = o.record.infrastructure_streak
                info = {
                    "message": f"worker {w.worker_id} {reason} while running input "
                    f"{o.record.index} (attempt {o.record.attempt}; "
                    f"{describe_cause(cause, losses, o.record.yielded)})",
                    "exit_code": exit_code,
                    "logs": tail,
                }
                rows.append((o, pickle.dumps(info)))
            self.delivery.settling.deliver_made(pool, rows)
        self.delivery.dispatch(pool)

    def _settle(self, pool: Pool, outcomes: list[Outcome]) -> None:
        """Deliver outcomes the control plane decided (timeouts), or report their retries."""
        self.delivery.settling.report_retries(outcomes)
        final = [(o, b"") for o in outcomes if o.final]
        if final:
            self.delivery.settling.deliver_made(pool, final)


def _current(held: dict[tuple[str, int], InputRecord], r: RunningInput) -> bool:
    """Whether the queue still has ``r``'s attempt on this worker (not reported since)."""
    record = held.get(r.key)
    return record is not None and record.attempt == r.attempt


def describe_exit(code: int | None) -> str:
    """How a worker ended, following "worker wk-...": its exit code in words."""
    if code is None:
        return "stopped answering"
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = str(-code)
        return f"was killed by {name}"
    if code == 137:
        return "was killed (exit code 137: out of memory or SIGKILL)"
    return f"exited with code {code}"
