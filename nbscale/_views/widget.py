"""The live widget of a map in a notebook: a progress bar, the counts, the pool, the
per-input table, an input's captured stdout on demand, and at the end a summary line.

It is a handful of ipywidgets models, updated from the consuming thread at most a few times
a second under ``hold_sync`` (one message per changed model). Traitlets send only values that
changed, so an idle redraw costs nothing on the wire. While the cell runs the kernel cannot
take button clicks; the stdout box answers them once the map is over.
"""

from __future__ import annotations

import html
from typing import Any

import ipywidgets as widgets
from IPython.display import display

from nbscale_server.models import PoolModel

from .._progress import CallProgress
from . import render

_MONO = "font-family:monospace;font-size:12px"


class MapWidget:
    """One map's widget. ``show`` displays it; the consuming thread redraws it."""

    def __init__(self) -> None:
        self.progress: CallProgress | None = None
        self.title = widgets.HTML()
        self.bar = widgets.IntProgress(
            value=0, min=0, max=1, layout=widgets.Layout(width="100%", max_width="600px")
        )
        self.counts = widgets.HTML()
        self.pool = widgets.HTML()
        self.table = widgets.HTML()
        self.index = widgets.IntText(
            value=0, description="input", layout=widgets.Layout(width="160px")
        )
        self.stdout_button = widgets.Button(
            description="show stdout", tooltip="the captured stdout of this input"
        )
        self.stdout = widgets.HTML()
        self.stdout_button.on_click(lambda _button: self.show_stdout(self.index.value))
        self.box = widgets.VBox(
            [
                self.title,
                widgets.HBox([self.bar, self.counts]),
                self.pool,
                self.table,
                widgets.HBox([self.index, self.stdout_button]),
                self.stdout,
            ]
        )
        self._text = "nbscale map"

    def _repr_mimebundle_(self, **kwargs: Any) -> dict[str, Any]:
        bundle: dict[str, Any] = self.box._repr_mimebundle_(**kwargs)
        bundle["text/plain"] = self._text
        bundle["text/html"] = f"<div style='{_MONO}'>{html.escape(self._text)}</div>"
        return bundle

    # --- the MapView protocol -----------------------------------------------------------

    def show(self, progress: CallProgress) -> None:
        self.progress = progress
        self.title.value = f"<b>{html.escape(progress.function)}</b>.map: starting"
        self._text = f"nbscale: {progress.function}.map"
        display(self)

    def draw(self, progress: CallProgress, pool: PoolModel | None) -> None:
        total = progress.total if progress.total is not None else progress.submitted
        throttled = progress.throttled_by
        with self.bar.hold_sync():
            self.bar.max = max(1, total)
            self.bar.value = progress.completed
            self.bar.bar_style = "warning" if progress.failed else ""
        self.title.value = f"<b>{html.escape(progress.function)}</b>.map" + (
            " · <span style='color:#ef6c00'>throttled</span>" if throttled else ""
        )
        counts = html.escape(render.counts_line(progress))
        self.counts.value = f"<span style='{_MONO}'>{counts}</span>"
        line = render.pool_line(pool, throttled, progress.workers)
        self.pool.value = f"<span style='{_MONO}'>{html.escape(line)}</span>"
        self.table.value = render.rows_html(render.shown_rows(progress))

    def finish(self, progress: CallProgress, pool: PoolModel | None, outcome: str | None) -> None:
        self.draw(progress, pool)
        summary = render.Summary(progress, outcome)
        self.bar.bar_style = "danger" if progress.failed or outcome else "success"
        self.title.value = render.summary_html(progress, outcome)
        self._text = summary.text
        display(summary)

    # --- on demand ----------------------------------------------------------------------

    def show_stdout(self, index: int) -> None:
        """Show what input ``index`` printed (kept for failures and the latest results)."""
        text = self.progress.stdout_of(index) if self.progress is not None else None
        if text is None:
            message = f"input {index}: not kept (the view keeps failures and the latest results)"
            self.stdout.value = f"<i>{html.escape(message)}</i>"
        elif not text:
            self.stdout.value = f"<i>input {index} printed nothing</i>"
        else:
            self.stdout.value = (
                f"<b>input {index}</b><pre style='{_MONO};max-height:300px;overflow:auto'>"
                f"{html.escape(text)}</pre>"
            )
