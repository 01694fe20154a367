"""The ``nbscale`` command: ``nbscale demo`` shows a real map on an autoscaled pool."""

from __future__ import annotations

import argparse
import json
import random
import sys
import threading
import time
from typing import Any

import cloudpickle

import nbscale

from . import _cli_config, _cli_images


def _demo_task(x: int) -> int:
    time.sleep(random.uniform(0.02, 0.12))  # stands in for real work
    return x * x


def _pool_line(stats: nbscale.FunctionStats) -> str:
    c = stats.containers
    return (
        f"pool {stats.num_total_runners} workers "
        f"({c['starting']} starting, {c['busy']} busy, {c['idle']} idle) · "
        f"{stats.backlog} pending"
    )


def demo(inputs: int, max_containers: int, scaledown_window: float) -> int:
    # Docker workers have nbscale's runtime, not this module: send the task's code itself.
    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    app = nbscale.App("demo")
    task = app.function(
        max_containers=max_containers,
        buffer_containers=1,
        scaledown_window=scaledown_window,
        name="square",
    )(_demo_task)
    info = nbscale.status()
    print(
        f"nbscale demo: {inputs} inputs on up to {max_containers} workers "
        f"(launcher: {info['launcher']}, control plane: {info['mode']})"
    )
    start = time.monotonic()
    done = 0
    finished = threading.Event()

    def watch() -> None:  # print the pool whenever it changes, as it grows and shrinks
        shown = ""
        while not finished.wait(0.1):
            line = _pool_line(task.get_current_stats())
            if line != shown:
                shown = line
                print(f"[{100 * done // inputs:3d}%] {done}/{inputs} done · {line}", flush=True)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    results = []
    for value in task.map(range(inputs), order_outputs=False):
        results.append(value)
        done += 1
    finished.set()
    watcher.join()
    total = sum(results)
    elapsed = time.monotonic() - start
    assert sorted(results) == [x * x for x in range(inputs)]
    print(f"done: {inputs} results in {elapsed:.1f} s (sum of squares {total})")
    print(f"the pool scales back to zero after {scaledown_window:g} s idle:", flush=True)
    deadline = time.monotonic() + scaledown_window + 10
    while time.monotonic() < deadline:
        stats = task.get_current_stats()
        print(f"       {_pool_line(stats)}", flush=True)
        if stats.num_total_runners == 0:
            break
        time.sleep(1.0)
    nbscale.shutdown()
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="nbscale", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    p_demo = sub.add_parser("demo", help="run a .map() over an autoscaled pool and watch it")
    p_demo.add_argument("--inputs", type=int, default=200)
    p_demo.add_argument("--max-containers", type=int, default=4)
    p_demo.add_argument("--scaledown-window", type=float, default=2.0)
    sub.add_parser("status", help="print this process's control plane and pools as JSON")
    _cli_images.add_parser(sub)
    _cli_config.add_parser(sub)
    args = parser.parse_args(argv)
    if args.command == "demo":
        return demo(args.inputs, args.max_containers, args.scaledown_window)
    if args.command == "images":
        return _cli_images.run(args)
    if args.command == "config":
        return _cli_config.run(args)
    status: dict[str, Any] = nbscale.status()
    json.dump(status, sys.stdout, indent=2)
    print()
    return 0
