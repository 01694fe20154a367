"""W2 under two values of one client setting, in one process: alternating blocks of
sequential ``noop.remote(x)`` calls (two local workers, as W2), so that the machine's drift
between runs does not pass for the setting's effect. Prints each value's p50 and p99 and
the calling process's CPU per call (user and system), then ProcessPoolExecutor's W2.

    python bench/w2_blocks.py busy_poll_us 0 150 [--rounds 16] [--block 250]
"""

from __future__ import annotations

import argparse
import os
import resource
import time
from concurrent.futures import ProcessPoolExecutor
from typing import Any

import workloads

BLOCK_WARMUP = 200


def percentiles(latencies: list[float]) -> str:
    ordered = sorted(latencies)
    p50, p99 = ordered[len(ordered) // 2], ordered[int(len(ordered) * 0.99)]
    return f"p50 {p50 * 1e6:.0f} us, p99 {p99 * 1e6:.0f} us"


def cpu() -> tuple[float, float]:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime, usage.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("setting")
    parser.add_argument("values", nargs="+")
    parser.add_argument("--rounds", type=int, default=16)
    parser.add_argument("--block", type=int, default=250)
    args = parser.parse_args()
    os.environ["NBSCALE_LAUNCHER"] = "process"
    import nbscale

    app = nbscale.App("w2-blocks")
    noop: Any = app.function(max_containers=2, min_containers=2)(workloads.noop)
    for x in range(BLOCK_WARMUP):
        noop.remote(x)
    latencies: dict[str, list[float]] = {v: [] for v in args.values}
    used = {v: [0.0, 0.0] for v in args.values}
    for _ in range(args.rounds):
        for value in args.values:
            nbscale.config(**{args.setting: value})
            user, system = cpu()
            for x in range(args.block):
                start = time.perf_counter()
                noop.remote(x)
                latencies[value].append(time.perf_counter() - start)
            after = cpu()
            used[value][0] += after[0] - user
            used[value][1] += after[1] - system
    nbscale.shutdown()
    for value, values in latencies.items():
        user, system = (1e6 * t / len(values) for t in used[value])
        print(
            f"{args.setting}={value}: {percentiles(values)}; "
            f"CPU per call {user:.0f} us user, {system:.0f} us system"
        )
    with ProcessPoolExecutor(2) as pool:
        for x in range(BLOCK_WARMUP):
            pool.submit(workloads.noop, x).result()
        ppe = []
        for x in range(args.rounds * args.block):
            start = time.perf_counter()
            pool.submit(workloads.noop, x).result()
            ppe.append(time.perf_counter() - start)
    print(f"ProcessPoolExecutor: {percentiles(ppe)}")


if __name__ == "__main__":
    main()
