"""What every view of a map says, in words: counts, the pool, the summary; and the pools'
table of ``nbscale.monitor()`` and ``%nbscale pools``.

Pure functions of a progress :class:`Snapshot` and a pool model, shared by the notebook
display and the text bar, so that both say the same thing.
"""

from __future__ import annotations

import html
from collections.abc import Mapping, Sequence
from typing import Any

from nbscale_server.models import ContainersByState, PoolModel

from .._progress import Counts, Snapshot


def duration(seconds: float) -> str:
    """With the precision that fits: ``85 µs``, ``4.2 ms``, ``120 ms``, ``0.4 s``, ``12 s``,
    ``3 min 20 s``, ``2 h 5 min``."""
    if seconds < 0.001:
        return f"{seconds * 1e6:.0f} µs"
    if seconds < 0.01:
        return f"{seconds * 1e3:.1f} ms"
    if seconds < 1:
        return f"{seconds * 1e3:.0f} ms"
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


def percent(c: Counts) -> float | None:
    """How much of the map ran (done or failed), in percent; None while its total is
    unknown. Cancelled inputs never ran: a map cancelled after 8 of 400 says 2 %, not 100 %."""
    if c.total is None:
        return None
    return 100.0 * (c.done + c.failed) / c.total if c.total else 100.0


def counts_line(snap: Snapshot) -> str:
    """``42/100 done · 3 failed · 2 cancelled · 4 running · 49 pending · 12.3/s · ETA 4.0 s``
    (without a known total: ``42 done · ...``, no ETA), or what the call waits for before its
    first input goes out (``building worker image ...``)."""
    if snap.preparing is not None:
        return snap.preparing
    c = snap.counts
    parts = [f"{c.done:,}/{c.total:,} done" if c.total is not None else f"{c.done:,} done"]
    if c.failed:
        parts.append(f"{c.failed:,} failed")
    if c.cancelled:
        parts.append(f"{c.cancelled:,} cancelled")
    if not snap.finished or c.running or c.pending:
        parts += [f"{c.running:,} running", f"{c.pending:,} pending"]
    if c.retries:
        parts.append(f"{c.retries:,} retried")
    parts.append(_rate(snap.rate))
    if snap.eta is not None:
        parts.append(f"ETA {duration(snap.eta)}")
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


def containers_count(n: int) -> str:
    """``1 container``, ``4 containers``."""
    return f"{n} container{'' if n == 1 else 's'}"


def pool_line(pool: PoolModel | None, throttled_by: str | None, workers: str = "") -> str:
    """``pool: 4 containers (1 starting, 3 busy, 0 idle) · 12 waiting · GPUs: ... ·
    throttled by ...``, then what the autoscaler is doing (and why workers wait for
    resources), then ``workers`` (what runs them and why) when given. The pool's backlog is
    not repeated: the map's own counts say what of it is the map's."""
    parts = []
    if pool is not None:
        parts.append(
            f"pool: {containers_count(pool['num_total_runners'])} ({by_state(pool['containers'])})"
        )
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


_CELL = "padding:0 8px;font-family:monospace;white-space:nowrap"


def td(text: str) -> str:
    """A table cell of monospace text, on one line (a narrow notebook scrolls the table)."""
    return f"<td style='{_CELL}'>{html.escape(text)}</td>"


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
    head = "".join(
        f"<th style='text-align:left;padding:0 8px;white-space:nowrap'>{h}</th>" for h in _COLUMNS
    )
    rows = []
    for pool in pools:
        tds = "".join(td(c) for c in pool_cells(pool))
        rows.append(
            f"<tr data-pool='{pool['id']}' title='{html.escape(pool['status'])}'>{tds}</tr>"
        )
    return (  # one line a pool, however narrow the notebook: the table scrolls sideways
        "<div style='overflow-x:auto'><table style='border-collapse:collapse'>"
        f"<thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table></div>"
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


def summary_text(snap: Snapshot, outcome: str | None) -> str:
    """The one line that stays: ``square: 100 inputs · 98 done · 2 failed in 3.2 s (31/s)``,
    with how it ended when it did not finish (``outcome``)."""
    c = snap.counts
    total = c.total if c.total is not None else c.submitted
    text = f"{snap.function}: {total:,} inputs · {c.done:,} done"
    if c.failed:
        text += f" · {c.failed:,} failed"
    if c.cancelled:
        text += f" · {c.cancelled:,} cancelled"
    if c.retries:
        text += f" · {c.retries:,} retried"
    text += f" in {duration(snap.elapsed)} ({_rate(snap.rate)})"
    if outcome:
        text += f" · {outcome}"
    return text
