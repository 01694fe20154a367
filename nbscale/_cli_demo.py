"""``nbscale demo``: a real ``.map()`` on an autoscaled pool, watched as it grows and shrinks.

It says what runs the workers and why, shows the map's progress line (redrawn in place on a
terminal, a line per update when piped) and then the pool scaling back to zero.
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from typing import Any

import cloudpickle

import nbscale

from ._map_results import MapResults, zip_inputs
from ._views.render import containers_count, workers_line
from ._views.text import StatusLine, TextBar


def _demo_task(x: int) -> int:
    time.sleep(random.uniform(0.02, 0.12))  # stands in for real work
    return x * x


def add_parser(sub: Any) -> None:
    p_demo = sub.add_parser("demo", help="run a .map() over an autoscaled pool and watch it")
    p_demo.add_argument("--inputs", type=int, default=200, help="how many inputs (200)")
    p_demo.add_argument("--max-containers", type=int, default=4, help="most workers (4)")
    p_demo.add_argument(
        "--scaledown-window", type=float, default=2.0, help="seconds idle before a worker stops"
    )
    p_demo.set_defaults(run=run)


def _pool_line(stats: nbscale.FunctionStats) -> str:
    c = stats.containers
    line = (
        f"pool: {containers_count(stats.num_total_runners)} "
        f"({c['starting']} starting, {c['busy']} busy, {c['idle']} idle)"
    )
    return f"{line} · {stats.status}" if stats.status else line


def run(args: argparse.Namespace) -> int:
    inputs, window = args.inputs, args.scaledown_window
    # Docker workers have nbscale's runtime, not this module: send the task's code itself.
    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    app = nbscale.App("demo")
    task = app.function(
        max_containers=args.max_containers,
        buffer_containers=1,
        scaledown_window=window,
        name="square",
    )(_demo_task)
    info = nbscale.status()
    print(
        f"nbscale {nbscale.__version__} demo: {inputs} inputs on up to {args.max_containers} "
        f"workers ({info['mode']} control plane)"
    )
    print(workers_line(info), flush=True)
    start = time.monotonic()
    mapped = MapResults(
        task,
        zip_inputs((range(inputs),), None),
        False,
        False,
        None,
        TextBar(sys.stdout),
        total=inputs,
    )
    results = list(mapped)
    elapsed = time.monotonic() - start
    if sorted(results) != [x * x for x in range(inputs)]:
        raise RuntimeError("the demo's results are wrong")  # a bug, shown with its traceback
    print(f"done: {inputs} results in {elapsed:.1f} s (sum of squares {sum(results)})")
    print(f"the pool scales back to zero after {window:g} s idle:", flush=True)
    line = StatusLine(sys.stdout)
    deadline = time.monotonic() + window + 10
    stats = task.get_current_stats()
    while stats.num_total_runners and time.monotonic() < deadline:
        line.update(_pool_line(stats))
        time.sleep(0.5)
        stats = task.get_current_stats()
    line.finish(_pool_line(stats))
    nbscale.shutdown()
    return 0
