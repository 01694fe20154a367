"""W2 under two values of one client setting, in one process: alternating blocks of
sequential ``noop.remote(x)`` calls on ``bench/run.py``'s nbscale peer (its W2 set-up and
timing: ``call_us``, percentiles as there), so that the machine's drift between runs does
not pass for the setting's effect. Prints each value's p50 and p99 and the calling process's
CPU per call (user and system), then ProcessPoolExecutor's W2 measured the same way.

    python bench/w2_blocks.py busy_poll_us 0 150 [--rounds 16] [--block 250]
"""

from __future__ import annotations

import argparse
import os
import resource
from typing import Any

import numpy as np
from peers import PEERS
from run import W2_WARMUP_CALLS, call_us, fresh_ints


def percentiles(samples_us: list[float]) -> str:
    p50, p99 = np.percentile(samples_us, [50, 99])
    return f"p50 {p50:.0f} us, p99 {p99:.0f} us"


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
    nbscale: Any = PEERS["nbscale"]()
    nbscale.start()
    for x in fresh_ints(W2_WARMUP_CALLS):
        call_us(nbscale, x)
    import nbscale as api

    samples: dict[str, list[float]] = {v: [] for v in args.values}
    used = {v: [0.0, 0.0] for v in args.values}
    for _ in range(args.rounds):
        for value in args.values:
            api.config(**{args.setting: value})
            user, system = cpu()
            samples[value] += [call_us(nbscale, x) for x in fresh_ints(args.block)]
            after = cpu()
            used[value][0] += after[0] - user
            used[value][1] += after[1] - system
    nbscale.stop()
    for value, values in samples.items():
        user, system = (1e6 * t / len(values) for t in used[value])
        print(
            f"{args.setting}={value}: {percentiles(values)}; "
            f"CPU per call {user:.0f} us user, {system:.0f} us system"
        )
    ppe = PEERS["ppe"]()
    ppe.start()
    for x in fresh_ints(W2_WARMUP_CALLS):
        call_us(ppe, x)
    ppe_samples = [call_us(ppe, x) for x in fresh_ints(args.rounds * args.block)]
    ppe.stop()
    print(f"ProcessPoolExecutor: {percentiles(ppe_samples)}")


if __name__ == "__main__":
    main()
