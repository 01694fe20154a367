"""The autoscaler: a pure decision core with Modal's semantics.

Given the time, a pool's load and its workers, :meth:`AutoscalerCore.decide` returns what to
do: launch workers, stop idle ones, or nothing. It never touches a process or a container.

- Under load the pool wants ``ceil((pending + running) / slots) + buffer_containers``
  workers; without load it wants ``min_containers`` (scale to zero by default).
- Never more than ``max_containers`` (nor the control plane's total cap), never fewer than
  ``min_containers``.
- Scale up at once; scale down only workers idle for ``scaledown_window`` seconds, except
  those still waiting in a scheduler's queue (Slurm's), which a pool that wants fewer stops
  at once: they are not warm, and would only start later to do nothing. Waiting workers
  count as launched (no second job is submitted for the same work), never as serving.
- After a launch failure, wait (1 s, 2 s, 4 s ... capped at 30 s) before launching again and
  say why in :attr:`AutoscalerCore.status`. Failures that will happen again (the launcher
  refuses, the worker exits with an error before registering) fail the pool's waiting
  inputs after ``MAX_LAUNCH_FAILURES`` in a row; transient ones (workers killed from outside
  before they registered: a launch storm) only after ``MAX_TRANSIENT_LAUNCH_FAILURES``
  (:attr:`AutoscalerCore.out_of_launches`); one that cannot be waited out (no GPU on this
  host) at once. This core is the one that counts launch failures;
  ``losses.launch_failure_is_transient`` tells the first two kinds apart.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, fields, replace
from typing import Any

from .values import is_int, is_number

BACKOFF_INITIAL = 1.0
BACKOFF_MAX = 30.0
# Launches in a row that may fail before the pool's waiting inputs are failed: failures
# that will recur, and transient ones (about 5 minutes of backoff).
MAX_LAUNCH_FAILURES = 3
MAX_TRANSIENT_LAUNCH_FAILURES = 12


_UNCOUNTED = ("draining", "lent")  # workers that count against no limit
# Far past any pool one control plane can run (W8 measured 1,000 workers); a larger count is
# a slip, and would lose its digits in the sidebar's JavaScript numbers.
MAX_CONTAINERS = 100_000


def _count_in(value: object, low: int) -> bool:
    return is_int(value) and low <= value <= MAX_CONTAINERS  # type: ignore[operator]


@dataclass(frozen=True, slots=True)
class AutoscalerSettings:
    min_containers: int = 0
    max_containers: int | None = None
    buffer_containers: int = 0
    scaledown_window: float = 60.0

    def __post_init__(self) -> None:
        for name in ("min_containers", "buffer_containers"):
            value = getattr(self, name)
            if not _count_in(value, 0):
                raise ValueError(f"{name} must be an int in 0..{MAX_CONTAINERS}, got {value!r}")
        mx = self.max_containers
        if mx is not None and not _count_in(mx, 1):
            raise ValueError(
                f"max_containers must be an int in 1..{MAX_CONTAINERS} or None, got {mx!r}"
            )
        if mx is not None and self.min_containers > mx:
            raise ValueError(
                f"min_containers ({self.min_containers}) cannot exceed max_containers ({mx})"
            )
        sw = self.scaledown_window
        if not is_number(sw) or not sw > 0:
            raise ValueError(f"scaledown_window must be a finite number of seconds > 0, got {sw!r}")

    def updated(self, changes: dict[str, Any]) -> AutoscalerSettings:
        """A copy with ``changes`` applied; None leaves a setting as it is."""
        known = {f.name for f in fields(self)}
        unknown = set(changes) - known
        if unknown:
            raise ValueError(f"unknown autoscaler setting(s): {', '.join(sorted(unknown))}")
        return replace(self, **{k: v for k, v in changes.items() if v is not None})

    def as_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


@dataclass(frozen=True, slots=True)
class WorkerView:
    """What the autoscaler needs to know of one worker."""

    worker_id: str
    # "waiting" (in a scheduler's queue) | "starting" | "idle" | "busy" | "draining" (an
    # unresponsive worker is busy) | "lent" (busy, its input waiting on nested calls: it
    # counts against no limit)
    state: str
    idle_since: float | None = None  # when it became idle, for the scaledown window


@dataclass(frozen=True, slots=True)
class PoolLoad:
    pending: int  # inputs waiting for a worker, retries waiting for their delay excluded
    running: int  # inputs on workers
    slots_per_worker: int = 1  # inputs one worker is meant to run at once


@dataclass(frozen=True, slots=True)
class CapHolder:
    """One pool's share of the total cap: its workers that count against it."""

    pool_id: str
    function: str
    starting: int
    idle: int
    busy: int
    waiting: int = 0  # queued by a scheduler

    @property
    def workers(self) -> int:
        return self.waiting + self.starting + self.idle + self.busy

    def describe(self) -> str:
        """``evaluate_model 3 busy, 1 idle``"""
        counts = [(self.busy, "busy"), (self.idle, "idle"), (self.starting, "starting")]
        counts.append((self.waiting, "waiting"))
        return self.function + " " + ", ".join(f"{n} {what}" for n, what in counts if n)


@dataclass(frozen=True, slots=True)
class LaunchWorkers:
    count: int
    reason: str


@dataclass(frozen=True, slots=True)
class StopWorkers:
    worker_ids: tuple[str, ...]
    reason: str


Instruction = LaunchWorkers | StopWorkers


class AutoscalerCore:
    def __init__(self, settings: AutoscalerSettings, total_cap: int | None = None) -> None:
        self.settings = settings
        self.total_cap = total_cap  # the control plane's cap, shared by all pools
        self.status = "idle"
        self._failures = 0  # in a row, of either kind
        self._recurring = 0  # of those, the ones that will recur
        self._retry_at = 0.0

    def desired(self, load: PoolLoad) -> int:
        s = self.settings
        work = load.pending + load.running
        want = s.min_containers
        if work:
            want = max(want, math.ceil(work / max(1, load.slots_per_worker)) + s.buffer_containers)
        if s.max_containers is not None:
            want = min(want, s.max_containers)
        return want

    def decide(
        self,
        now: float,
        load: PoolLoad,
        workers: list[WorkerView],
        room: int | None = None,
        holders: Sequence[CapHolder] = (),
    ) -> list[Instruction]:
        """What to do now. ``room`` is how many more workers the total cap allows, and
        ``holders`` the pools whose workers fill it (to say so while it holds this one)."""
        live = [w for w in workers if w.state not in _UNCOUNTED]
        want = self.desired(load)
        if len(live) < want:
            count = want - len(live)
            if room is not None:
                count = min(count, room)
            if now < self._retry_at:
                return []
            if count <= 0:
                self.status = self._waiting_for_cap(holders)
                return []
            self.status = f"scaling up to {len(live) + count}"
            return [LaunchWorkers(count, f"{load.pending} pending, {load.running} running")]
        mx = self.settings.max_containers
        if mx is not None and len(live) > mx:
            return [self._drain_to(mx, live)]
        if len(live) > want:
            # The latest launched first: the earlier ones are further ahead in the queue.
            queued = [w for w in live if w.state == "waiting"][::-1][: len(live) - want]
            if queued:
                self.status = f"scaling down to {len(live) - len(queued)}"
                ids = tuple(w.worker_id for w in queued)
                return [StopWorkers(ids, "no longer needed while waiting for resources")]
            window = self.settings.scaledown_window
            expired = sorted(
                (
                    w
                    for w in live
                    if w.state == "idle"
                    and w.idle_since is not None
                    and now - w.idle_since >= window
                ),
                key=lambda w: w.idle_since or 0.0,
            )
            surplus = expired[: len(live) - want]
            if surplus:
                self.status = f"scaling down to {len(live) - len(surplus)}"
                return [
                    StopWorkers(
                        tuple(w.worker_id for w in surplus),
                        f"idle for {window:g} s (scaledown_window)",
                    )
                ]
        lent = sum(1 for w in workers if w.state == "lent")
        self.status = "steady" if live else f"{lent} waiting on nested calls" if lent else "idle"
        return []

    def _drain_to(self, mx: int, live: list[WorkerView]) -> StopWorkers:
        """Above ``max_containers`` (it was lowered): stop the surplus now, those waiting in
        a queue first, then those starting, then the idle (longest idle first), then busy
        ones, which finish their current input before they stop."""
        rank = {"waiting": 0, "starting": 1, "idle": 2, "busy": 3}
        order = sorted(live, key=lambda w: (rank.get(w.state, 1), w.idle_since or 0.0))
        self.status = f"draining to {mx} (max_containers)"
        surplus = tuple(w.worker_id for w in order[: len(live) - mx])
        return StopWorkers(surplus, f"stopping {len(surplus)}, busy ones after their input")

    def _waiting_for_cap(self, holders: Sequence[CapHolder]) -> str:
        if not holders:
            return f"waiting: the total cap of {self.total_cap} workers is reached"
        used = sum(h.workers for h in holders)
        held = ", ".join(h.describe() for h in holders)
        return f"waiting: {used} of {self.total_cap} workers in use: {held}"

    def may_launch(self, now: float) -> bool:
        """Not backing off after a failed launch."""
        return now >= self._retry_at

    @property
    def launch_failures(self) -> int:
        """Launches that failed in a row."""
        return self._failures

    @property
    def out_of_launches(self) -> bool:
        """So many launches failed in a row that waiting inputs should fail, not wait."""
        return (
            self._recurring >= MAX_LAUNCH_FAILURES
            or self._failures >= MAX_TRANSIENT_LAUNCH_FAILURES
        )

    def why_out_of_launches(self) -> str:
        if self._recurring >= MAX_LAUNCH_FAILURES:
            return f"{self._recurring} workers in a row failed to start"
        return (
            f"{self._failures} workers in a row were lost before they registered "
            "(killed from outside, or lost with their host)"
        )

    def launch_failed(
        self, now: float, error: str, transient: bool = False, lasting: bool = False
    ) -> float:
        """Record a failed launch; returns the backoff before the next one, in seconds.
        ``transient``: it may well work next time (``losses.launch_failure_is_transient``).
        ``lasting``: trying again cannot help soon (no GPU on this host; a worker that waited
        out its pending timeout in a queue): out of launches at once."""
        self._failures += 1
        self._recurring += not transient
        if lasting:
            self._recurring = max(self._recurring, MAX_LAUNCH_FAILURES)
        delay = min(BACKOFF_MAX, BACKOFF_INITIAL * 2 ** (self._failures - 1))
        self._retry_at = now + delay
        self.status = f"launch failed ({error}); retrying in {delay:g} s"
        return delay

    def reset_launch_failures(self) -> None:
        """A worker registered, or the function was registered again: start afresh."""
        self._failures = self._recurring = 0
        self._retry_at = 0.0


@dataclass(frozen=True, slots=True)
class OtherPool:
    """Another pool, as reclaiming sees it."""

    desired: int  # the workers it wants now
    waiting: bool  # it has inputs waiting too: its idle workers are about to be busy
    workers: Sequence[WorkerView]


def reclaim(others: Sequence[OtherPool], count: int) -> list[str]:
    """Idle workers of other pools to stop, at most ``count``, so that a pool held back by
    the total cap can grow. Those kept only until their scaledown window ends (their pool
    has more than it wants) go first, then those kept warm by ``min_containers`` (the warm
    pool refills when there is room again); the longest idle first. Never a busy worker,
    nor one of a pool that has inputs waiting itself."""
    candidates = []
    for other in others:
        if other.waiting:
            continue
        live = [w for w in other.workers if w.state not in _UNCOUNTED]
        warm = len(live) <= other.desired
        idle = [w for w in live if w.state == "idle"]
        candidates += [(warm, w.idle_since or 0.0, w.worker_id) for w in idle]
    return [worker_id for *_, worker_id in sorted(candidates)[:count]]
