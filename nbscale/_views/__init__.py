"""Live views of maps and pools: the widget in a notebook, a text bar elsewhere.

``render`` says what every view shows, ``live`` drives one view of one map, ``choice`` picks
the view, ``widget`` and ``text`` are the two views, ``monitor`` is ``nbscale.monitor()``.
The ipywidgets-based modules are imported only when a widget is wanted, so that scripts and
workers never pay for IPython.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .choice import open_view
from .live import LiveMap, MapView

if TYPE_CHECKING:
    from .monitor import PoolMonitor

__all__ = ["LiveMap", "MapView", "monitor", "open_view"]


def monitor(interval: float = 1.0) -> PoolMonitor:
    """Display a live widget of every pool of this process's control plane (containers by
    state, inputs waiting and running, done, failed, GPUs), refreshed every ``interval``
    seconds by a background thread until ``.stop()``. Returns the monitor."""
    from .monitor import monitor as show

    return show(interval)
