"""Driving one view of one running map from the thread that consumes its results.

The consumer wakes at least ``REFRESH_INTERVAL`` apart even when no result arrives (it waits
for the next batch with that timeout) and calls :meth:`LiveMap.step`, which redraws at most
that often and asks the control plane for the pool's state at most every
``POOL_INTERVAL``. So a map of 100,000 fast inputs costs a few redraws a second, whatever its
rate, and the widget's messages to the browser stay bounded.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Protocol

from nbscale_runtime import protocol
from nbscale_server.models import PoolModel

from .._loop import get_loop
from .._progress import CallProgress
from ..exceptions import NbscaleError
from . import render

if TYPE_CHECKING:
    from .._map import Invocation

REFRESH_INTERVAL = 0.25  # seconds between redraws: at most four a second
POOL_INTERVAL = 0.5  # seconds between two requests for the pool's state


class MapView(Protocol):
    """A live view of a map: the widget in a notebook, the text bar elsewhere."""

    def show(self, progress: CallProgress) -> None:
        """Put the view on screen, before the first result."""

    def draw(self, progress: CallProgress, pool: PoolModel | None) -> None:
        """Show the current state (called at most every ``REFRESH_INTERVAL``)."""

    def finish(self, progress: CallProgress, pool: PoolModel | None, outcome: str | None) -> None:
        """Show the final state and the summary; ``outcome`` says how an unfinished map
        ended (None: it finished)."""


def outcome_of(error: BaseException | None) -> str | None:
    """How a map ended, in a few words, from the exception that ended it (if any)."""
    if error is None:
        return None
    if isinstance(error, GeneratorExit):
        return "stopped early (the rest was cancelled)"
    if isinstance(error, KeyboardInterrupt):
        return "interrupted (the rest was cancelled)"
    return f"stopped by {type(error).__name__}"


class LiveMap:
    """Throttles one view of one map and feeds it the progress and the pool's state."""

    def __init__(self, view: MapView, progress: CallProgress) -> None:
        self.view = view
        self.progress = progress
        self.pool: PoolModel | None = None
        self._inv: Invocation | None = None
        self._next_draw = 0.0
        self._next_poll = 0.0
        self._closed = False

    def show(self) -> None:
        """Put the view on screen, before the map starts (which may build an image)."""
        self.view.show(self.progress)

    def preparing(self, step: str) -> None:
        """Show what the map waits for before its first input goes out: an image build's
        steps, reported from the build's thread while the caller waits. Each is drawn (a
        build has a few dozen at most; a skipped one could stay on screen for minutes)."""
        self.progress.prepare(step)
        self.view.draw(self.progress, self.pool)

    def start(self, inv: Invocation) -> None:
        """The map started: from now on the pool's state is polled for the view."""
        self._inv = inv
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
            self.view.draw(self.progress, self.pool)

    async def step_aio(self, force: bool = False) -> None:
        """The same, for an ``async for`` over the map."""
        draw, poll = self._due(force)
        if poll:
            self.pool = await get_loop().run_aio(self._fetch_pool())
        if draw:
            self.view.draw(self.progress, self.pool)

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
        """Show the final state and the summary, once."""
        if self._closed:
            return
        self._closed = True
        self.view.finish(self.progress, self.pool, outcome_of(error))
