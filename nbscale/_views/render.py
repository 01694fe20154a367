"""What every view of a map says, as text and HTML: counts, the pool, the rows, the summary.

Pure functions of a :class:`CallProgress` and a pool model, shared by the widget, the text bar
and the summary that stays in a saved notebook, so that all three say the same thing.
"""

from __future__ import annotations

import html
from collections.abc import Mapping, Sequence
from typing import Any

from nbscale_server.models import ContainersByState, PoolModel

from .._progress import CallProgress, InputRow

MAX_RUNNING_SHOWN = 10  # rows of running inputs in the table (a map may run 1,000 at once)
MAX_FAILED_SHOWN = 20  # the most recent failures
MAX_DONE_SHOWN = 20  # the most recent results


def duration(seconds: float) -> str:
    """``0.4 s``, ``12 s``, ``3 min 20 s``, ``2 h 5 min``."""
    if seconds < 10:
        return f"{seconds:.1f} s"
    if seconds < 60:
        return f"{seconds:.0f} s"
    minutes, secs = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {secs} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min"


def _rate(per_second: float) -> str:
    return f"{per_second:,.0f}/s" if per_second >= 100 else f"{per_second:.3g}/s"


_WORKER_KINDS = {"docker": "Docker containers", "slurm": "Slurm jobs"}


def workers_text(info: Mapping[str, Any]) -> str:
    """``local processes (no Docker engine answers at ...)``: what runs the workers of a
    control plane, and why, from its connection info (as ``nbscale.status()`` gives it)."""
    kind = _WORKER_KINDS.get(str(info.get("launcher")), "local processes")
    reason = info.get("launcher_reason")
    return f"{kind} ({reason})" if reason else kind


def workers_line(info: Mapping[str, Any]) -> str:
    """``workers: local processes (...)``, the line the demo and the widget show."""
    return f"workers: {workers_text(info)}"


def counts_line(p: CallProgress) -> str:
    """``42/100 done · 3 failed · 4 running · 51 pending · 12.3/s · ETA 4.0 s``, or what
    the call waits for before its first input goes out (``building worker image ...``)."""
    if p.preparing is not None:
        return p.preparing
    of = f"{p.total:,}" if p.total is not None else f"{p.submitted:,}+"
    parts = [f"{p.done:,}/{of} done"]
    if p.failed:
        parts.append(f"{p.failed:,} failed")
    if p.finished_at is None:
        parts += [f"{len(p.running):,} running", f"{p.pending:,} pending"]
    if p.retries:
        parts.append(f"{p.retries:,} retried")
    parts.append(_rate(p.rate))
    eta = p.eta
    if p.finished_at is None and eta is not None and p.completed:
        parts.append(f"ETA {duration(eta)}")
    return " · ".join(parts)


def gpus_text(gpus: Sequence[Mapping[str, Any]]) -> str:
    """``2 x NVIDIA A100 (35% busy)`` from the GPUs a pool's workers report."""
    if not gpus:
        return ""
    names: dict[str, int] = {}
    for gpu in gpus:
        name = str(gpu.get("name") or "GPU")
        names[name] = names.get(name, 0) + 1
    text = ", ".join(f"{n} x {name}" for name, n in names.items())
    busy = [float(g["utilization"]) for g in gpus if g.get("utilization") is not None]
    if busy:
        text += f" ({sum(busy) / len(busy):.0f}% busy)"
    return text


def by_state(c: ContainersByState) -> str:
    """``1 starting, 3 busy, 0 idle`` (how many wait for resources in a scheduler's queue
    first, and how many are unresponsive last, when some are)."""
    text = f"{c['starting']} starting, {c['busy']} busy, {c['idle']} idle"
    waiting = c.get("waiting", 0)
    if waiting:
        text = f"{waiting} waiting for resources, {text}"
    unresponsive = c.get("unresponsive", 0)
    return f"{text}, {unresponsive} unresponsive" if unresponsive else text


def pool_line(pool: PoolModel | None, throttled_by: str | None, workers: str = "") -> str:
    """``pool: 4 containers (1 starting, 3 busy, 0 idle) · 12 waiting · GPUs: ... ·
    throttled by ...``, then what the autoscaler is doing (and why workers wait for
    resources), then ``workers`` (what runs them and why) when given."""
    parts = []
    if pool is not None:
        parts.append(
            f"pool: {pool['num_total_runners']} containers ({by_state(pool['containers'])})"
        )
        parts.append(f"{pool['backlog']:,} waiting")
        gpus = gpus_text(pool["gpus"])
        if gpus:
            parts.append(f"GPUs: {gpus}")
    if throttled_by:
        parts.append(f"throttled by the limit of {throttled_by}")
    if pool is not None and pool["status"]:
        parts.append(pool["status"])
    if workers:
        parts.append(workers)
    return " · ".join(parts)


def shown_rows(p: CallProgress) -> list[InputRow]:
    """The rows a view shows: some running inputs, the latest failures, the latest results."""
    running = sorted(list(p.running.values()), key=lambda r: r.index)[:MAX_RUNNING_SHOWN]
    failed = list(p.failures)[-MAX_FAILED_SHOWN:][::-1]
    recent = [r for r in reversed(list(p.recent)) if r.status != "failed"][:MAX_DONE_SHOWN]
    return running + failed + recent


def _td(text: str) -> str:
    return f"<td style='padding:0 8px;font-family:monospace'>{html.escape(text)}</td>"


def rows_html(rows: Sequence[InputRow]) -> str:
    """The per-input table; each row carries its index and status as data attributes."""
    if not rows:
        return ""
    head = "".join(
        f"<th style='text-align:left;padding:0 8px'>{h}</th>"
        for h in ("input", "status", "worker", "attempt", "time", "result")
    )
    body = []
    for r in rows:
        color = {"failed": "#c62828", "retrying": "#ef6c00"}.get(r.status, "inherit")
        cells = (
            str(r.index),
            r.status,
            r.worker_id,
            str(r.attempt) if r.attempt else "",
            duration(r.duration) if r.duration is not None else "",
            r.summary,
        )
        tds = "".join(_td(c) for c in cells)
        body.append(
            f"<tr data-index='{r.index}' data-status='{r.status}' style='color:{color}'>{tds}</tr>"
        )
    return (
        "<table style='border-collapse:collapse;font-size:12px'>"
        f"<thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"
    )


_COLUMNS = ("pool", "function", "containers", "waiting", "running", "done", "failed", "GPUs")


def pool_cells(pool: PoolModel) -> tuple[str, ...]:
    cap = pool["settings"]["max_containers"]
    containers = (
        f"{pool['num_total_runners']}/{cap if cap is not None else '∞'} "
        f"({by_state(pool['containers'])})"
    )
    return (
        pool["id"],
        pool["function"],
        containers,
        f"{pool['backlog']:,}",
        f"{pool['num_running_inputs']:,}",
        f"{pool['done']:,}",
        f"{pool['failed']:,}",
        gpus_text(pool["gpus"]),
    )


def pools_html(pools: list[PoolModel]) -> str:
    """A table of pools; hovering a row shows what its autoscaler is doing."""
    if not pools:
        return "<i>no pools yet: call a function to create one</i>"
    head = "".join(f"<th style='text-align:left;padding:0 8px'>{h}</th>" for h in _COLUMNS)
    rows = []
    for pool in pools:
        tds = "".join(_td(c) for c in pool_cells(pool))
        rows.append(
            f"<tr data-pool='{pool['id']}' title='{html.escape(pool['status'])}'>{tds}</tr>"
        )
    return (
        "<table style='border-collapse:collapse'>"
        f"<thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"
    )


def pools_text(pools: list[PoolModel]) -> str:
    """One line per pool: its cells with their names, and what its autoscaler is doing."""
    if not pools:
        return "no pools yet"
    lines = []
    for pool in pools:
        cells = dict(zip(_COLUMNS, pool_cells(pool), strict=True))
        line = (
            f"{cells['pool']} {cells['function']}: {cells['containers']} containers · "
            f"{cells['waiting']} waiting · {cells['running']} running · {cells['done']} done · "
            f"{cells['failed']} failed"
        )
        if cells["GPUs"]:
            line += f" · GPUs: {cells['GPUs']}"
        lines.append(f"{line} · {pool['status']}" if pool["status"] else line)
    return "\n".join(lines)


def summary_text(p: CallProgress, outcome: str | None) -> str:
    """The one line that stays: ``square: 100 inputs · 98 done · 2 failed in 3.2 s (31/s)``,
    with how it ended when it did not finish (``outcome``)."""
    total = p.total if p.total is not None else p.submitted
    text = f"{p.function}: {total:,} inputs · {p.done:,} done"
    if p.failed:
        text += f" · {p.failed:,} failed"
    if p.retries:
        text += f" · {p.retries:,} retried"
    text += f" in {duration(p.elapsed)} ({_rate(p.rate)})"
    if outcome:
        text += f" · {outcome}"
    return text


def summary_html(p: CallProgress, outcome: str | None) -> str:
    ok = not p.failed and not outcome
    mark, color = ("✔", "#2e7d32") if ok else ("✘", "#c62828")
    return (
        f"<div style='font-family:monospace'><span style='color:{color}'>{mark}</span> "
        f"{html.escape(summary_text(p, outcome))}</div>"
    )


class Summary:
    """What stays in a saved notebook after a map: one line, as HTML and as plain text, so
    that a viewer without a widget manager (nbviewer, GitHub) still shows the outcome."""

    def __init__(self, progress: CallProgress, outcome: str | None) -> None:
        self.text = summary_text(progress, outcome)
        self.html = summary_html(progress, outcome)

    def __repr__(self) -> str:
        return self.text

    def _repr_html_(self) -> str:
        return self.html
