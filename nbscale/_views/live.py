"""Driving one view of one running map from the thread that consumes its results.

The consumer wakes at least ``REFRESH_INTERVAL`` apart even when no result arrives (it waits
for the next batch with that timeout) and calls :meth:`LiveMap.step`, which redraws at most
that often and asks the control plane for the pool's state at most every
``POOL_INTERVAL``. So a map of 100,000 fast inputs costs a few redraws a second, whatever its
rate, and the view's messages to the browser stay bounded. Each redraw reads one snapshot of
the map's progress, so that every number it shows comes from the same instant.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from nbscale_runtime import protocol
from nbscale_server.models import PoolModel

from .._loop import get_loop
from .._owner import this_owner
from .._progress import CallProgress, Snapshot
from ..exceptions import CallCancelledError, CallDetachedError, NbscaleError
from . import render

if TYPE_CHECKING:
    from .._map import Invocation

REFRESH_INTERVAL = 0.25  # seconds between redraws: at most four a second
POOL_INTERVAL = 0.5  # seconds between two requests for the pool's state


@dataclass(frozen=True, slots=True)
class CallInfo:
    """Which call a view shows, and whether the browser can act on it: its Cancel and
    Detach buttons go to the Jupyter server's control plane, so they work only when the
    kernel uses that one (``control_plane == "server"``)."""

    call_id: str | None = None
    control_plane: str | None = None  # "server" | "embedded"; None before the map starts
    kernel_id: str | None = None
    detached: str | None = None  # the line that gets a detached map's results


class MapView(Protocol):
    """A live view of a map: the display under a notebook cell, the text bar elsewhere."""

    def show(self, snap: Snapshot) -> None:
        """Put the view on screen, before the first result."""

    def draw(self, snap: Snapshot, pool: PoolModel | None, call: CallInfo) -> None:
        """Show the current state (called at most every ``REFRESH_INTERVAL``)."""

    def finish(
        self, snap: Snapshot, pool: PoolModel | None, call: CallInfo, outcome: Outcome
    ) -> None:
        """Show the final state and the summary, and how the map ended."""


@dataclass(frozen=True, slots=True)
class Outcome:
    """How a map ended: ``status`` (done, failed, cancelled, interrupted, stopped, detached)
    and, when it did not run to its end, ``text``, a few words on why."""

    status: str
    text: str | None = None


def outcome_of(error: BaseException | None, failed: int = 0, cancelled: int = 0) -> Outcome:
    """How a map ended, from the exception that ended it (if any), its failures and its
    cancelled inputs (``return_exceptions=True`` returns them: no exception ends it)."""
    if error is None and cancelled:
        return Outcome("cancelled", "cancelled")
    if error is None:
        return Outcome("failed" if failed else "done")
    if isinstance(error, CallDetachedError):
        return Outcome("detached", "detached (its other inputs keep running)")
    if isinstance(error, CallCancelledError):
        return Outcome("cancelled", "cancelled")
    if isinstance(error, GeneratorExit):
        return Outcome("stopped", "stopped early (the rest was cancelled)")
    if isinstance(error, KeyboardInterrupt):
        return Outcome("interrupted", "interrupted (the rest was cancelled)")
    status = "failed" if failed else "stopped"
    return Outcome(status, f"stopped by {type(error).__name__} (the rest was cancelled)")


class LiveMap:
    """Throttles one view of one map and feeds it the progress and the pool's state."""

    def __init__(self, view: MapView, progress: CallProgress) -> None:
        self.view = view
        self.progress = progress
        self.pool: PoolModel | None = None
        self.call = CallInfo(kernel_id=this_owner()["kernel_id"])
        self._inv: Invocation | None = None
        self._next_draw = 0.0
        self._next_poll = 0.0
        self._closed = False

    def show(self) -> None:
        """Put the view on screen, before the map starts (which may build an image)."""
        self.view.show(self.progress.snapshot())

    def preparing(self, step: str) -> None:
        """Show what the map waits for before its first input goes out: an image build's
        steps, reported from the build's thread while the caller waits. Each is drawn (a
        build has a few dozen at most; a skipped one could stay on screen for minutes)."""
        self.progress.prepare(step)
        self.view.draw(self.progress.snapshot(), self.pool, self.call)

    def start(self, inv: Invocation) -> None:
        """The map started: from now on the pool's state is polled for the view."""
        self._inv = inv
        self.call = CallInfo(inv.call_id, inv.client.mode, self.call.kernel_id)
        self.progress.prepare(None)
        self.progress.workers = render.workers_line(inv.client.server_info)

    def _due(self, force: bool) -> tuple[bool, bool]:
        """Whether to redraw now, and whether to ask for the pool's state first."""
        now = time.monotonic()
        if not force and now < self._next_draw:
            return False, False
        self._next_draw = now + REFRESH_INTERVAL
        poll = force or now >= self._next_poll
        if poll:
            self._next_poll = now + POOL_INTERVAL
        return True, poll

    def step(self, force: bool = False) -> None:
        """Redraw if it is time (blocking caller: polls the pool through the loop thread)."""
        draw, poll = self._due(force)
        if poll:
            self.pool = get_loop().run(self._fetch_pool())
        if draw:
            self.view.draw(self.progress.snapshot(), self.pool, self.call)

    async def step_aio(self, force: bool = False) -> None:
        """The same, for an ``async for`` over the map."""
        draw, poll = self._due(force)
        if poll:
            self.pool = await get_loop().run_aio(self._fetch_pool())
        if draw:
            self.view.draw(self.progress.snapshot(), self.pool, self.call)

    async def _fetch_pool(self) -> PoolModel | None:
        inv = self._inv
        if inv is None:
            return self.pool
        try:
            value, _ = await inv.client.request(protocol.GetStats(0, inv.pool_id))
        except NbscaleError:  # the control plane went away: keep showing what we had
            return self.pool
        return value  # type: ignore[no-any-return]

    def close(self, error: BaseException | None) -> None:
        """Show the final state and the summary, once. Inputs that did not finish are
        counted as cancelled, unless the map was detached (they keep running)."""
        if self._closed:
            return
        self._closed = True
        detached = isinstance(error, CallDetachedError)
        self.progress.close(cancelled=error is not None and not detached)
        if detached:
            assert isinstance(error, CallDetachedError)
            self.call = CallInfo(
                self.call.call_id, self.call.control_plane, self.call.kernel_id, error.resume
            )
        snap = self.progress.snapshot()
        c = snap.counts
        self.view.finish(snap, self.pool, self.call, outcome_of(error, c.failed, c.cancelled))
