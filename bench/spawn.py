"""W7-spawn: how fast ``.spawn()`` goes, and how fast spawned results are read back.

nbscale only (no peer has durable spawned calls on the user's machine). Two control planes:

- ``embedded``: the client's own control plane, spawned results kept in memory;
- ``server``: a ``jupyter server`` subprocess hosting the control plane, spawned calls'
  inputs and results in its SQLite store (the durable path); the client talks to it over
  ZeroMQ as a kernel of that server would.

For each, with ``noop`` on 2 worker processes: ``N`` spawns one after the other
(``f.spawn(x)``), then, once those ran, ``N`` spawns in flight together (``asyncio.gather``
of ``f.spawn.aio`` in groups of 512), then every result read back (``FunctionCall.get``, one
after the other, then 512 at a time, then all ``2N`` with one ``FunctionCall.gather(*calls)``,
which fetches a thousand calls' results per request). Figures are calls or results per
second, and the calling process's full garbage collections meanwhile (``gc_full``, and
their seconds): the embedded control plane's calls are objects of that process.

    python bench/spawn.py                      # both, N = 20,000
    python bench/spawn.py --modes server -n 5000
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
ROOT = BENCH_DIR.parent
GROUP = 512  # spawns or reads in flight together


def collections_timed() -> dict[str, float]:
    """The garbage collector's full collections from now on: how many, and their seconds
    (the embedded control plane lives in the caller's process, so they walk its calls)."""
    seen = {"gc_full": 0.0, "gc_full_s": 0.0}
    started = [0.0]

    def note(phase: str, info: dict[str, int]) -> None:
        if info["generation"] != 2:
            return
        if phase == "start":
            started[0] = time.perf_counter()
        else:
            seen["gc_full"] += 1
            seen["gc_full_s"] += time.perf_counter() - started[0]

    gc.callbacks.append(note)
    return seen


def child(n: int) -> None:
    """In a subprocess: time the spawns and read-backs; print one JSON line."""
    import workloads

    import nbscale

    app = nbscale.App("bench-spawn")
    noop = app.function(max_containers=2, min_containers=2)(workloads.noop)
    noop.remote(0)  # the pool is up and the function registered before timing
    collections = collections_timed()

    def timed(fn: Any) -> tuple[float, Any]:
        start = time.perf_counter()
        value = fn()
        return time.perf_counter() - start, value

    async def gathered(coroutines: list[Any]) -> list[Any]:
        out: list[Any] = []
        for i in range(0, len(coroutines), GROUP):
            out += await asyncio.gather(*coroutines[i : i + GROUP])
        return out

    seconds_seq, calls = timed(lambda: [noop.spawn(x) for x in range(n)])
    nbscale.FunctionCall.gather(*calls)  # each phase timed on an idle pool
    seconds_par, more = timed(
        lambda: asyncio.run(gathered([noop.spawn.aio(x) for x in range(n, 2 * n)]))
    )
    calls += more
    calls[-1].get(timeout=600)
    for call in calls:  # every result stored before the reads are timed
        call.get(timeout=600)
    seconds_read, values = timed(lambda: [c.get() for c in calls[:n]])
    assert values == list(range(n)), "wrong results"
    seconds_read_par, values = timed(
        lambda: asyncio.run(gathered([c.get.aio() for c in calls[n:]]))
    )
    assert values == list(range(n, 2 * n)), "wrong results"
    seconds_read_all, values = timed(lambda: nbscale.FunctionCall.gather(*calls))
    assert values == list(range(2 * n)), "wrong results"
    print(
        json.dumps(
            {
                "spawn_per_s": n / seconds_seq,
                "spawn_gathered_per_s": n / seconds_par,
                "read_per_s": n / seconds_read,
                "read_gathered_per_s": n / seconds_read_par,
                "read_gather_call_per_s": 2 * n / seconds_read_all,
                **collections,
            }
        ),
        flush=True,
    )
    nbscale.shutdown()


def child_env(extra: dict[str, str]) -> dict[str, str]:
    env = dict(os.environ, NBSCALE_PROGRESS="off", NBSCALE_LAUNCHER="process", **extra)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(BENCH_DIR), env.get("PYTHONPATH")]))
    env.pop("NBSCALE_CONNECTION_FILE", None)
    return env


def run_child(n: int, env: dict[str, str]) -> dict[str, float]:
    out = subprocess.run(
        [sys.executable, __file__, "--child", str(n)],
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    if out.returncode != 0:
        raise RuntimeError(out.stderr[-3000:])
    return json.loads(out.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def run_server(n: int) -> dict[str, float]:
    sys.path.insert(0, str(ROOT / "tests"))
    from jupyter_process import JupyterProcess

    tmp = Path(tempfile.mkdtemp(prefix="nbscale-bench-"))
    env = child_env({})
    config = {"NbScale": {"launcher": "process"}}
    server = JupyterProcess(tmp, ["jupyter", "server"], config, "nbscale/api/status")
    try:
        [connection] = (tmp / "runtime").glob("nbscale-*.json")
        env["NBSCALE_CONNECTION_FILE"] = str(connection)
        return run_child(n, env)
    finally:
        server.stop()
        shutil.rmtree(tmp, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=20_000, help="spawns of each kind")
    parser.add_argument("--modes", default="embedded,server")
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child)
        return
    for mode in args.modes.split(","):
        figures = run_server(args.n) if mode == "server" else run_child(args.n, child_env({}))
        shown = ", ".join(f"{k} {v:,.0f}" if v >= 100 else f"{k} {v:g}" for k, v in figures.items())
        print(f"W7-spawn {mode:8} n={args.n:,}: {shown}", flush=True)


if __name__ == "__main__":
    main()
