"""Where W2's round trip goes: timestamps at each hop of sequential ``f.remote(x)`` calls.

    python bench/w2_hops.py [-n 2000]

Runs ``noop`` on two warm local workers (as ``run.py``'s W2), with ``bench/hops`` on the
``PYTHONPATH`` of this process and its workers, whose ``sitecustomize`` notes
``perf_counter_ns`` (CLOCK_MONOTONIC: one clock for all processes) at each hop. Prints, per
hop, the median and p90 microseconds over the calls, and the whole round trip's.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
# (note, what the time since the previous one is spent on)
HOPS = [
    ("call", ""),
    ("remote", "calling thread -> the loop runs Function.remote"),
    ("cp.submit", "Function.remote builds the call -> the control plane admits it"),
    ("cp.send_worker", "admit, queue, dispatch to a worker"),
    ("cp.send_worker.end", "encode and write RunInputs to the worker's socket"),
    ("w.receive", "the worker wakes (poll) and starts reading"),
    ("w.run", "read, decode, queue the input"),
    ("w.run.end", "run noop (unpickle args, call, register, capture)"),
    ("w.send", "worker: record, pickle the result, build Outputs"),
    ("w.send.end", "worker: encode and write Outputs"),
    ("cp.readable", "the control plane's loop wakes on the socket"),
    ("cp.outputs", "read and decode Outputs"),
    ("client.outputs", "settle the input, forward to the client"),
    ("remote.end", "decode the result, print, answer the blocked thread"),
    ("call.end", "the loop -> the calling thread"),
]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("-n", type=int, default=2000)
    args = parser.parse_args()
    if not os.environ.get("NBSCALE_HOPS"):  # again, with the notes on in every process
        os.environ["NBSCALE_HOPS"] = tempfile.mkdtemp(prefix="nbscale-hops-")
        os.environ["PYTHONPATH"] = os.pathsep.join(
            [str(HERE / "hops"), str(HERE), os.environ.get("PYTHONPATH", "")]
        )
        os.execv(sys.executable, [sys.executable, *sys.argv])
    os.environ["NBSCALE_LAUNCHER"] = "process"
    import sitecustomize as hops  # bench/hops/sitecustomize.py
    import workloads

    import nbscale
    from nbscale import _loop, _remote
    from nbscale._function import Function

    # Function.remote's first await, and the answer to the blocked thread (from the
    # handler of the output, or as the coroutine ends)
    hops._wrap(Function, "_pool_in_use", "remote")
    hops._wrap(_loop.Blocked, "answer", "remote.end")
    hops._wrap(_remote.SingleCall, "_on_outputs", "client.outputs")

    app = nbscale.App("hops")
    fn = app.function(max_containers=2, min_containers=2)(workloads.noop)
    for x in range(50):  # warm up
        fn.remote(x)
    hops.notes.clear()
    for x in range(args.n):
        hops.note("call")
        fn.remote(x)
        hops.note("call.end")
    nbscale.shutdown()
    hops._write()
    report(Path(os.environ["NBSCALE_HOPS"]), os.getpid())


def report(folder: Path, me: int) -> None:
    notes: list[tuple[int, str, int]] = []  # (ns, name, pid)
    for path in folder.glob("*.txt"):
        pid = int(path.stem)
        for line in path.read_text().splitlines():
            name, ns = line.split()
            notes.append((int(ns), name, pid))
    notes.sort()
    spans: dict[str, list[float]] = {name: [] for name, _ in HOPS}
    totals: list[float] = []
    calls = [i for i, (_, name, pid) in enumerate(notes) if name == "call" and pid == me]
    for i in calls:
        at, worker = notes[i][0], None
        j = i
        times = [at]
        for name, _ in HOPS[1:]:
            j += 1
            while j < len(notes):
                _, n, pid = notes[j]
                wanted = n == name and (
                    (pid != me and worker in (None, pid)) if n.startswith("w.") else pid == me
                )
                if wanted:
                    break
                if n == "call":
                    j = len(notes)
                j += 1
            if j >= len(notes):
                break
            if name.startswith("w."):
                worker = notes[j][2]
            times.append(notes[j][0])
        if len(times) != len(HOPS):
            continue
        for (name, _), prev, t in zip(HOPS[1:], times, times[1:], strict=False):
            spans[name].append((t - prev) / 1000)
        totals.append((times[-1] - times[0]) / 1000)
    print(f"{len(totals)} calls traced; microseconds, median and p90")
    for name, what in HOPS[1:]:
        xs = sorted(spans[name])
        print(f"  {name:<20} {statistics.median(xs):7.1f} {xs[int(len(xs) * 0.9)]:7.1f}  {what}")
    totals.sort()
    p90 = totals[int(len(totals) * 0.9)]
    print(f"  {'round trip':<20} {statistics.median(totals):7.1f} {p90:7.1f}")
    print(f"  {'sum of medians':<20} {sum(statistics.median(spans[n]) for n, _ in HOPS[1:]):7.1f}")


if __name__ == "__main__":
    main()
