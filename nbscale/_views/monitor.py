"""``nbscale.monitor()``: a live widget of every pool of this process's control plane.

A daemon thread asks the control plane for its pools every ``interval`` seconds and updates
the widget (ipywidgets supports updates from a thread, and the kernel stays free for other
cells). It stops on ``stop()``, on its button, or when the control plane it watched is shut
down, so that it never starts a new one by asking.
"""

from __future__ import annotations

import html
import threading
from typing import Any

import ipywidgets as widgets
from IPython.display import display

from nbscale_server.models import PoolModel

from .. import _client
from .._loop import get_loop
from ..exceptions import NbscaleError
from . import render

_MONO = "font-family:monospace;font-size:12px"


class PoolMonitor:
    """The live pools widget; ``stop()`` ends its refreshing (the last state stays)."""

    def __init__(self, interval: float = 1.0) -> None:
        self.interval = interval
        self.pools: list[PoolModel] = []
        self.refreshes = 0
        self.header = widgets.HTML()
        self.table = widgets.HTML()
        self.stop_button = widgets.Button(description="stop monitoring")
        self.stop_button.on_click(lambda _button: self.stop())
        self.box = widgets.VBox([widgets.HBox([self.header, self.stop_button]), self.table])
        self._stopped = threading.Event()
        self._client = get_loop().run(_client.get_client())
        self._thread = threading.Thread(target=self._run, name="nbscale-monitor", daemon=True)

    def __repr__(self) -> str:
        state = "stopped" if self._stopped.is_set() else f"every {self.interval:g} s"
        return f"<nbscale.PoolMonitor: {_pools(len(self.pools))}, refreshing {state}>"

    def _repr_mimebundle_(self, **kwargs: Any) -> dict[str, Any]:
        bundle: dict[str, Any] = self.box._repr_mimebundle_(**kwargs)
        bundle["text/plain"] = render.pools_text(self.pools)
        bundle["text/html"] = render.pools_html(self.pools)
        return bundle

    @property
    def running(self) -> bool:
        return self._thread.is_alive() and not self._stopped.is_set()

    def start(self) -> None:
        self.refresh()
        self._thread.start()

    def refresh(self) -> None:
        """Read the pools now and show them."""
        if _client._client is not self._client:
            self._stop_with("the control plane was shut down")
            return
        try:
            info = _client.status(all_pools=True)
        except NbscaleError as exc:
            self._stop_with(f"cannot reach the control plane: {exc}")
            return
        self.pools = info["pools"]
        self.refreshes += 1
        self.header.value = (
            f"<span style='{_MONO}'><b>nbscale</b> · {_pools(len(self.pools))} · "
            f"{info['mode']} control plane · launcher {html.escape(str(info['launcher']))}</span>"
        )
        self.table.value = render.pools_html(self.pools)

    def _stop_with(self, reason: str) -> None:
        self._stopped.set()
        self.header.value = f"<span style='{_MONO}'><b>nbscale</b> · {html.escape(reason)}</span>"

    def _run(self) -> None:
        while not self._stopped.wait(self.interval):
            self.refresh()

    def stop(self) -> None:
        """Stop refreshing; the widget keeps showing the last state."""
        self._stopped.set()
        self.stop_button.disabled = True
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout=10)
        if "stopped" not in self.header.value:  # else the figures read as live ones
            self.header.value = self.header.value.replace("</span>", " · stopped</span>", 1)


def monitor(interval: float = 1.0) -> PoolMonitor:
    """Display a live widget of every pool of this process's control plane, refreshed every
    ``interval`` seconds until ``.stop()`` (or its button). Returns the monitor."""
    view = PoolMonitor(interval)
    view.start()
    display(view)
    return view


def _pools(n: int) -> str:
    """``1 pool``, ``3 pools``."""
    return f"{n} pool{'' if n == 1 else 's'}"
