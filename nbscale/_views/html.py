"""A map's view as static HTML, from its state (``state.py``): the ``text/html`` of the
notebook display. Front ends without nbscale's renderer (Jupyter without the extension,
nbviewer, GitHub, VS Code) show it, updated live while the kernel runs the map, and once it
ended it is the summary a saved notebook keeps: counts, duration, throughput and the first
failures with their first lines. The words carry the meaning; styles (which some viewers
strip) only colour them.
"""

from __future__ import annotations

import html
from typing import Any

from nbscale_server.models import MapRowModel, MapStateModel

_MONO = "font-family:monospace;font-size:12px"
_COLORS = {"done": "#2e7d32", "failed": "#c62828", "cancelled": "#757575", "running": "#1565c0"}
_MARKS = {"done": ("✔", "#2e7d32"), "detached": ("⇥", "#1565c0")}
_ROWS_SHOWN = 20
_FAILURES_SHOWN = 10


def _e(text: Any) -> str:
    return html.escape(str(text))


def bar(state: MapStateModel) -> str:
    """Segments for done, failed, cancelled and running inputs, and the percentage; or,
    without a known total, the counts alone (no bar that could only guess)."""
    c = state["counts"]
    if state["percent"] is None or not c["total"]:
        return ""
    cells = []
    for name in ("done", "failed", "cancelled", "running"):
        width = 100.0 * c[name] / c["total"]
        if width > 0:
            cells.append(
                f"<span title='{c[name]:,} {name}' style='display:inline-block;height:10px;"
                f"width:{width:.2f}%;background:{_COLORS[name]}'></span>"
            )
    return (
        "<div style='display:flex;align-items:center;gap:8px;max-width:640px'>"
        "<span style='flex:1;background:#e0e0e0;height:10px;display:flex'>"
        f"{''.join(cells)}</span><span>{state['percent']:.0f}%</span></div>"
    )


def rows_table(rows: list[MapRowModel]) -> str:
    """The per-input table; each row carries its index and status as data attributes."""
    if not rows:
        return ""
    head = "".join(
        f"<th style='text-align:left;padding:0 8px'>{h}</th>"
        for h in ("input", "status", "worker", "attempt", "time", "result")
    )
    body = []
    for r in rows[:_ROWS_SHOWN]:
        color = {"failed": "#c62828", "retrying": "#ef6c00"}.get(r["status"], "inherit")
        cells = (r["index"], r["status"], r["worker"], r["attempt"] or "", r["time"], r["summary"])
        tds = "".join(f"<td style='padding:0 8px'>{_e(v)}</td>" for v in cells)
        body.append(
            f"<tr data-index='{r['index']}' data-status='{_e(r['status'])}' "
            f"style='color:{color}'>{tds}</tr>"
        )
    return (
        f"<table style='border-collapse:collapse;{_MONO}'>"
        f"<thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"
    )


def map_html(state: MapStateModel) -> str:
    """The whole view: while it runs, the bar, the counts, the pool and the table; once
    it ended, the summary, the bar and the first failures."""
    title = f"<b>{_e(state['function'])}</b>.map"
    if not state["final"]:
        status = "throttled" if state["throttled"] else state["status"]
        return (
            f"<div class='nbscale-map' style='{_MONO}' data-status='{_e(state['status'])}'>"
            f"<div>{title} · {_e(status)}</div>{bar(state)}<div>{_e(state['counts_text'])}</div>"
            f"<div>{_e(state['pool_text'])}</div>{rows_table(state['rows'])}</div>"
        )
    mark, color = _MARKS.get(state["status"], ("✘", "#c62828"))
    parts = [
        f"<div><span style='color:{color}'>{mark}</span> {_e(state['summary'])}</div>",
        bar(state),
    ]
    if state["resume"]:
        parts.append(f"<div>the rest: <code>{_e(state['resume'])}</code></div>")
    failures = state["failures"][:_FAILURES_SHOWN]
    if failures:
        items = "".join(f"<li>input {f['index']}: {_e(f['line'])}</li>" for f in failures)
        more = state["counts"]["failed"] - len(failures)
        tail = f"<li>… and {more:,} more</li>" if more > 0 else ""
        parts.append(f"<div>failures:</div><ul style='margin:0'>{items}{tail}</ul>")
    return (
        f"<div class='nbscale-map' style='{_MONO}' data-status='{_e(state['status'])}'>"
        f"{''.join(parts)}</div>"
    )


def map_text(state: MapStateModel) -> str:
    """The plain-text form: the summary once it ended, else the counts."""
    if state["final"]:
        text = str(state["summary"])
        return f"{text}\nthe rest: {state['resume']}" if state["resume"] else text
    return f"{state['function']}.map: {state['counts_text']}"
