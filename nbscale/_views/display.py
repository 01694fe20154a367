"""The view of a map under a notebook cell: one output, updated in place.

The kernel cannot answer the browser while a cell runs (widget messages wait on the busy
shell channel), but what it sends goes out at once. So the view is a display with a
``display_id`` that the consuming thread updates a few times a second, each update a whole
MIME bundle: the view's state (``state.MIME``, drawn by nbscale's JupyterLab renderer, whose
Cancel and Detach buttons go to the Jupyter server's control plane, not to the kernel), a
static HTML rendering of the same state and a line of text. When the map ends, the last
update is its static summary, which a saved notebook keeps: no widget model to lose.
"""

from __future__ import annotations

import uuid
from typing import Any

from IPython.display import display, update_display

from nbscale_server.models import MapStateModel, PoolModel

from .._progress import Snapshot
from .html import map_html, map_text
from .live import CallInfo, Outcome
from .state import MIME, map_state


def bundle(state: MapStateModel) -> dict[str, Any]:
    """The MIME bundle of a state: the state itself, its HTML and its text."""
    return {MIME: state, "text/html": map_html(state), "text/plain": map_text(state)}


class MapDisplay:
    """One map's display. ``show`` puts it under the cell; the consuming thread updates it."""

    def __init__(self) -> None:
        self.display_id = f"nbscale-{uuid.uuid4().hex}"
        self.state: MapStateModel | None = None  # the last one shown

    def _publish(self, state: MapStateModel, first: bool = False) -> None:
        self.state = state
        if first:
            display(bundle(state), raw=True, display_id=self.display_id)
        else:
            update_display(bundle(state), raw=True, display_id=self.display_id)

    # --- the MapView protocol -----------------------------------------------------------

    def show(self, snap: Snapshot) -> None:
        self._publish(map_state(snap, None, CallInfo()), first=True)

    def draw(self, snap: Snapshot, pool: PoolModel | None, call: CallInfo) -> None:
        self._publish(map_state(snap, pool, call))

    def finish(
        self, snap: Snapshot, pool: PoolModel | None, call: CallInfo, outcome: Outcome
    ) -> None:
        self._publish(map_state(snap, pool, call, outcome))
