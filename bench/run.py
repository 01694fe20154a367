"""Benchmark nbscale against ProcessPoolExecutor, joblib, ipyparallel, dask and ray.

    python bench/run.py [--peers a,b,c] [--workloads W1,W2,...] [--quick]

Each peer runs W1-W4 in a subprocess of its own (its cluster started once, shut down at the end)
and W5 in fresh subprocesses. Every step has a timeout, after which the subprocess and its
process group are killed, so a failing or hanging peer costs an error line, not the run.
See bench/README.md for what the workloads measure.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import os
import platform
import queue
import signal
import statistics
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import asdict, dataclass
from functools import partial
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import psutil
import workloads
from peers import PEERS, Peer

BENCH_DIR = Path(__file__).resolve().parent
RESULTS_DIR = BENCH_DIR / "results"
LOG_DIR = RESULTS_DIR / "logs"
TAG = "@@nbscale-bench "
WORKLOADS = ("W1", "W2", "W3", "W4", "W5", "W5-scale")
# Old names still taken on the command line: W5-scale was W5-docker before it measured every
# launcher of nbscale (processes, Docker, Slurm), each in its own column.
WORKLOAD_ALIASES = {"W5-docker": "W5-scale"}
LIBRARIES = ("numpy", "joblib", "dask", "distributed", "ipyparallel", "ray", "nbscale")
TIMEOUTS_S = {"start": 180, "W1": 180, "W2": 60, "W3": 60, "W4": 120, "W5": 120, "stop": 60}
TIMEOUTS_S["W5-scale"] = 120
SCALE_WORKERS = 8  # W5-scale: a pool grows from 0 to this many workers
EXIT_GRACE_S = 30

W1_INPUTS = 10_000
W2_WARMUP_CALLS = 20
W3_INPUTS = 100
W3_IDEAL_S = W3_INPUTS * 0.01 / 2
W4_INPUTS = 20
W4_ELEMENTS = 2 * 1024 * 1024  # float64: 16 MiB per array
W4_BYTES = W4_INPUTS * W4_ELEMENTS * 8

Result = dict[str, Any]


@dataclass(frozen=True)
class Settings:
    repeats: int  # timed runs after one warm-up, best one reported (W1, W3, W4)
    w1_most_runs: int  # W1 runs on, up to this many, while its runs total under W1_MORE_S
    latency_calls: int  # W2
    cold_runs: int  # W5, median reported


FULL = Settings(repeats=3, w1_most_runs=10, latency_calls=500, cold_runs=3)
QUICK = Settings(repeats=1, w1_most_runs=1, latency_calls=100, cold_runs=1)
# A W1 run of a fast peer lasts ~10 ms, a hiccup's length on a VM: more runs for those.
W1_MORE_S = 2.0


@dataclass(frozen=True)
class Metric:
    workload: str
    key: str
    label: str
    higher_is_better: bool
    target: str  # nbscale's target with the process launcher


METRICS = (
    Metric("W1", "inputs_per_s", "W1 throughput (inputs/s)", True, ">= 100,000"),
    Metric("W2", "p50_us", "W2 p50 latency (us)", False, "<= 300"),
    Metric("W2", "p99_us", "W2 p99 latency (us)", False, ""),
    Metric("W3", "efficiency", "W3 efficiency (ideal/wall)", True, ">= 0.95"),
    Metric("W4", "mb_per_s", "W4 bandwidth (MB/s)", True, ">= 1,000"),
    Metric("W5", "seconds", "W5 cold start (s)", False, "<= 0.3"),
    Metric("W5", "import_s", "W5 import, before it (s)", False, ""),
    Metric("W5-scale", "scale_s", "W5-scale 0 -> 8 workers serving (s)", False, "docker <= 2"),
    Metric("W5-scale", "rebuild_s", "W5-scale unchanged image (s)", False, "docker <= 0.5"),
    Metric("W5-scale", "new_pool_s", "W5 new function, plane up (s)", False, "docker <= 0.3"),
)


# --- Workloads, run inside a peer's subprocess ------------------------------------------------


def check(actual: Any, expected: Any) -> None:
    if actual != expected:
        raise AssertionError(
            f"wrong results: got {str(actual)[:80]}, expected {str(expected)[:80]}"
        )


FRESH_INPUTS = itertools.count()


def fresh_ints(n: int) -> list[int]:
    """Inputs never used before in this process.

    Dask keys tasks by their function and arguments (`pure=True` by default) and can hand back a
    result it still holds instead of running the call again, so no two calls get equal inputs.
    """
    return list(itertools.islice(FRESH_INPUTS, n))


def fresh_arrays(n: int) -> list[np.ndarray]:
    """`n` distinct 16 MiB float64 arrays (equal arrays would share one dask task)."""
    return [np.full(W4_ELEMENTS, float(v)) for v in fresh_ints(n)]


def nbytes_of(arrays: list[np.ndarray]) -> list[int]:
    return [a.nbytes for a in arrays]


def map_runs(
    peer: Peer,
    fn: Callable[[Any], Any],
    make_items: Callable[[], list[Any]],
    expected: Callable[[list[Any]], list[Any]],
    repeats: int,
    most: int = 0,
    more_s: float = 0.0,
) -> list[float]:
    """Map `fn` over new items once to warm up, then `repeats` timed times, then on, up to
    `most` times, while the timed runs total under `more_s`; wall times in s."""
    runs: list[float] = []
    while len(runs) < repeats + 1 or (len(runs) < most + 1 and sum(runs[1:]) < more_s):
        items = make_items()
        start = time.perf_counter()
        results = peer.map(fn, items)
        runs.append(time.perf_counter() - start)
        check(results, expected(items))
    return runs[1:]


def call_us(peer: Peer, x: int) -> float:
    start = time.perf_counter()
    result = peer.call(workloads.noop, x)
    elapsed = time.perf_counter() - start
    check(result, x)
    return elapsed * 1e6


def w1_throughput(peer: Peer, settings: Settings) -> Result:
    make_items = partial(fresh_ints, W1_INPUTS)
    most = settings.w1_most_runs
    runs = map_runs(peer, workloads.noop, make_items, list, settings.repeats, most, W1_MORE_S)
    return {"inputs_per_s": W1_INPUTS / min(runs), "runs_s": runs}


def w2_latency(peer: Peer, settings: Settings) -> Result:
    for x in fresh_ints(W2_WARMUP_CALLS):
        call_us(peer, x)
    samples = [call_us(peer, x) for x in fresh_ints(settings.latency_calls)]
    p50, p99 = np.percentile(samples, [50, 99])
    return {"p50_us": float(p50), "p99_us": float(p99), "samples_us": samples}


def w3_efficiency(peer: Peer, settings: Settings) -> Result:
    inputs = partial(fresh_ints, W3_INPUTS)
    runs = map_runs(peer, workloads.sleep10ms, inputs, list, settings.repeats)
    return {"efficiency": W3_IDEAL_S / min(runs), "runs_s": runs}


def w4_bandwidth(peer: Peer, settings: Settings) -> Result:
    arrays = partial(fresh_arrays, W4_INPUTS)
    runs = map_runs(peer, workloads.array_nbytes, arrays, nbytes_of, settings.repeats)
    return {"mb_per_s": W4_BYTES / min(runs) / 1e6, "total_bytes": W4_BYTES, "runs_s": runs}


MEASURES: dict[str, Callable[[Peer, Settings], Result]] = {
    "W1": w1_throughput,
    "W2": w2_latency,
    "W3": w3_efficiency,
    "W4": w4_bandwidth,
}


# --- Subprocess side: report each step on stdout ------------------------------------------------


def emit(step: str, **fields: Any) -> None:
    print(TAG + json.dumps({"step": step, **fields}), flush=True)


def fail(step: str, exc: Exception, fatal: bool = False) -> None:
    traceback.print_exc()
    emit(step, error=f"{type(exc).__name__}: {exc}", fatal=fatal)


def run_step(step: str, fn: Callable[[], Result | None]) -> None:
    try:
        result = fn()
    except Exception as exc:
        fail(step, exc)
    else:
        emit(step, result=result or {})


def pool_child(name: str, names: list[str], settings: Settings) -> None:
    """Start the peer once, run the workloads `names` on it, stop it."""
    try:
        peer = PEERS[name]()
        peer.start()
    except Exception as exc:
        fail("start", exc, fatal=True)
        return
    emit("start", result={})
    for workload in names:
        run_step(workload, partial(MEASURES[workload], peer, settings))
    run_step("stop", peer.stop)


def cold_child(name: str) -> None:
    """W5: import the peer's library, then time the start of its pool and one call (and,
    apart, the import: what a library does at import is not hidden from W5)."""
    try:
        start = time.perf_counter()
        peer = PEERS[name]()
        import_s = time.perf_counter() - start
        start = time.perf_counter()
        peer.cold_start()
        seconds = time.perf_counter() - start
    except Exception as exc:
        fail("W5", exc, fatal=True)
        return
    emit("W5", result={"seconds": seconds, "import_s": import_s})
    run_step("stop", peer.stop)


def scale_child(name: str) -> None:
    """W5-scale: import the peer's library, then time a pool growing from 0 to 8 workers."""
    try:
        peer = PEERS[name]()
        result = peer.scale_up(SCALE_WORKERS)  # type: ignore[attr-defined]
    except Exception as exc:
        fail("W5-scale", exc, fatal=True)
        return
    emit("W5-scale", result=result)
    run_step("stop", peer.stop)


# --- Parent side: run the subprocesses with timeouts --------------------------------------------


def child_env() -> dict[str, str]:
    """Let the subprocess and every worker it starts import `workloads` by name; no live
    progress views (they would time themselves, not the peers)."""
    env = dict(os.environ)
    env["NBSCALE_PROGRESS"] = "off"
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(BENCH_DIR), env.get("PYTHONPATH")]))
    return env


class Child:
    """A benchmark subprocess in its own process group, read step by step with timeouts."""

    def __init__(self, args: list[str], log_path: Path) -> None:
        self.log_path = log_path
        self._log = log_path.open("w")
        self._proc = subprocess.Popen(
            [sys.executable, str(BENCH_DIR / "run.py"), *args],
            stdout=subprocess.PIPE,
            stderr=self._log,
            text=True,
            env=child_env(),
            start_new_session=True,
        )
        self._messages: queue.Queue[Result | None] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self._proc.stdout is not None
        for line in self._proc.stdout:
            if line.startswith(TAG):
                self._messages.put(json.loads(line.removeprefix(TAG)))
            else:
                self._log.write(line)
                self._log.flush()
        self._messages.put(None)

    def receive(self, timeout_s: float) -> Result:
        """The next step's message; a fatal error if it does not come within `timeout_s`."""
        try:
            message = self._messages.get(timeout=timeout_s)
        except queue.Empty:
            return {"error": f"timed out after {timeout_s} s", "fatal": True}
        if message is None:
            code = self._proc.wait()
            return {"error": f"subprocess exited with code {code}", "fatal": True}
        return message

    def close(self, grace_s: float) -> bool:
        """Wait up to `grace_s` for an exit, then kill what is left; whether it exited in time."""
        try:
            self._proc.wait(grace_s)
            exited = True
        except subprocess.TimeoutExpired:
            exited = False
            with contextlib.suppress(psutil.NoSuchProcess):
                for process in psutil.Process(self._proc.pid).children(recursive=True):
                    process.kill()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self._proc.pid, signal.SIGKILL)
        self._proc.wait()
        self._log.close()
        return exited


def run_child(name: str, args: list[str], steps: list[str], log_name: str) -> dict[str, Result]:
    """Run one subprocess through `steps`, printing progress; step -> result or {"error": ...}."""
    out: dict[str, Result] = {}
    child = Child(args, LOG_DIR / log_name)
    clean = False
    try:
        for i, step in enumerate(steps):
            start = time.perf_counter()
            message = child.receive(TIMEOUTS_S[step])
            out[step] = message.get("result", {"error": message.get("error")})
            print_progress(name, step, out[step], time.perf_counter() - start)
            if message.get("fatal"):
                print(f"    log: {child.log_path}", flush=True)
                skipped = [s for s in steps[i + 1 :] if s in WORKLOADS]
                out |= {s: {"error": f"not run: {step} failed"} for s in skipped}
                break
        else:
            clean = True
    finally:
        exited = child.close(EXIT_GRACE_S if clean else 0)
    if clean and not exited:
        out["exit"] = {"error": f"still running {EXIT_GRACE_S} s after stop; killed"}
    return out


def run_pool(name: str, names: list[str], quick: bool) -> dict[str, Result]:
    args = ["--child", name, "--workloads", ",".join(names), *(["--quick"] if quick else [])]
    return run_child(name, args, ["start", *names, "stop"], f"{name}.log")


def run_cold(name: str, runs: int) -> dict[str, Result]:
    """W5 in `runs` fresh subprocesses: the median, or the first error."""
    outs = [
        run_child(name, ["--cold", name], ["W5", "stop"], f"{name}-W5-{i}.log") for i in range(runs)
    ]
    w5 = [o.pop("W5") for o in outs]
    failures = [r["error"] for r in w5 if "error" in r]
    seconds = [r["seconds"] for r in w5 if "seconds" in r]
    imports = [r["import_s"] for r in w5 if "import_s" in r]
    out: dict[str, Result] = {
        "W5": {"error": failures[0]}
        if failures
        else {
            "seconds": statistics.median(seconds),
            "runs_s": seconds,
            "import_s": statistics.median(imports),
        }
    }
    cleanup_failures = [r["error"] for o in outs for r in o.values() if "error" in r]
    if cleanup_failures:
        out["W5 cleanup"] = {"error": cleanup_failures[0]}
    return out


def run_scale(name: str, runs: int) -> dict[str, Result]:
    """W5-scale in `runs` fresh subprocesses: the median of each figure, or the first error."""
    outs = [
        run_child(name, ["--scale", name], ["W5-scale", "stop"], f"{name}-W5-scale-{i}.log")
        for i in range(runs)
    ]
    results = [o.pop("W5-scale") for o in outs]
    failures = [r["error"] for r in results if "error" in r]
    if failures:
        return {"W5-scale": {"error": failures[0]}}
    medians = {key: statistics.median(r[key] for r in results) for key in results[0]}
    return {"W5-scale": {**medians, "runs": results}}


def run_peer(name: str, names: list[str], quick: bool) -> dict[str, Result]:
    settings = QUICK if quick else FULL
    pool_names = [n for n in names if n not in ("W5", "W5-scale")]
    out = run_pool(name, pool_names, quick) if pool_names else {}
    if "W5" in names:
        out |= run_cold(name, settings.cold_runs)
    if "W5-scale" in names and hasattr(PEERS[name], "scale_up"):  # nbscale's launchers
        out |= run_scale(name, settings.cold_runs)
    return out


# --- Report -------------------------------------------------------------------------------------


def fmt(value: float) -> str:
    return f"{value:,.0f}" if value >= 100 else f"{value:.3g}"


def print_progress(name: str, step: str, result: Result, elapsed_s: float) -> None:
    if "error" in result:
        summary = f"ERROR {result['error']}"
    else:
        shown = [m for m in METRICS if m.workload == step and m.key in result]
        summary = " ".join(f"{m.key}={fmt(result[m.key])}" for m in shown)
    print(f"  {name:<12} {step:<6} {elapsed_s:6.1f} s  {summary}", flush=True)


def value(results: dict[str, Result], metric: Metric) -> float | None:
    return results.get(metric.workload, {}).get(metric.key)


def cell(results: dict[str, Result], metric: Metric) -> str:
    number = value(results, metric)
    if number is not None:
        return fmt(number)
    return "error" if "error" in results.get(metric.workload, {}) else "-"


def ratio(nbscale: float | None, peer: float | None, metric: Metric) -> str:
    if not nbscale or not peer:
        return "-"
    better = nbscale / peer if metric.higher_is_better else peer / nbscale
    return f"{better:.3g}x"


def table(peers: list[str], names: list[str], results: dict[str, dict[str, Result]]) -> str:
    compare = "nbscale" in peers
    others = [p for p in peers if p != "nbscale"]
    rows = [["metric", *peers]]
    if compare:
        rows[0] += ["nbscale target", *(f"nbscale/{p}" for p in others)]
    for metric in (m for m in METRICS if m.workload in names):
        row = [metric.label, *(cell(results[p], metric) for p in peers)]
        if compare:
            nbscale = value(results["nbscale"], metric)
            row += [
                metric.target,
                *(ratio(nbscale, value(results[p], metric), metric) for p in others),
            ]
        rows.append(row)
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join(aligned(row, widths) for row in rows)


def aligned(row: list[str], widths: list[int]) -> str:
    """The label left-aligned, the figures right-aligned."""
    cells = (c.rjust(w) for c, w in zip(row[1:], widths[1:], strict=True))
    return "  ".join([row[0].ljust(widths[0]), *cells])


def library_versions() -> dict[str, str]:
    versions = {}
    for library in LIBRARIES:
        try:
            versions[library] = metadata.version(library)
        except metadata.PackageNotFoundError:
            versions[library] = "not installed"
    return versions


def machine() -> dict[str, Any]:
    return {
        "cores": os.cpu_count(),
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "platform": platform.platform(),
    }


def errors(results: dict[str, dict[str, Result]]) -> list[str]:
    return [
        f"  {peer} {step}: {result['error']}"
        for peer, steps in results.items()
        for step, result in steps.items()
        if "error" in result
    ]


# --- Entry point --------------------------------------------------------------------------------


def csv_list(
    choices: tuple[str, ...], aliases: dict[str, str] | None = None
) -> Callable[[str], list[str]]:
    def parse(text: str) -> list[str]:
        items = [item.strip() for item in text.split(",") if item.strip()]
        items = [(aliases or {}).get(item, item) for item in items]
        unknown = sorted(set(items) - set(choices))
        if unknown:
            raise argparse.ArgumentTypeError(f"unknown {unknown}; choose from {','.join(choices)}")
        return items

    return parse


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--peers", type=csv_list(tuple(PEERS)), default=list(PEERS))
    parser.add_argument(
        "--workloads", type=csv_list(WORKLOADS, WORKLOAD_ALIASES), default=list(WORKLOADS)
    )
    parser.add_argument("--quick", action="store_true", help="one timed run, fewer calls")
    parser.add_argument("--child", choices=PEERS, help=argparse.SUPPRESS)
    parser.add_argument("--cold", choices=PEERS, help=argparse.SUPPRESS)
    parser.add_argument("--scale", choices=PEERS, help=argparse.SUPPRESS)
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    settings = QUICK if args.quick else FULL
    if args.child:
        pool_child(args.child, args.workloads, settings)
        return
    if args.cold:
        cold_child(args.cold)
        return
    if args.scale:
        scale_child(args.scale)
        return
    LOG_DIR.mkdir(parents=True, exist_ok=True)
    host, versions = machine(), library_versions()
    print(f"machine: {host['cores']} cores, {host['python']}, {host['platform']}")
    print("libraries: " + ", ".join(f"{lib} {v}" for lib, v in versions.items()))
    print(f"settings: {'quick' if args.quick else 'full'} {asdict(settings)}", flush=True)
    start = time.perf_counter()
    results = {peer: run_peer(peer, args.workloads, args.quick) for peer in args.peers}
    print()
    if "nbscale" in args.peers:
        print(
            "nbscale/<peer> columns: > 1 means nbscale is better "
            "(throughput, efficiency: nbscale/peer; latency, cold start: peer/nbscale)"
        )
    print(table(args.peers, args.workloads, results))
    problems = errors(results)
    if problems:
        print("\nerrors:\n" + "\n".join(problems))
    report = {"machine": host, "libraries": versions, "settings": asdict(settings)}
    (RESULTS_DIR / "latest.json").write_text(json.dumps(report | {"results": results}, indent=1))
    print(f"\n{time.perf_counter() - start:.0f} s; raw figures in {RESULTS_DIR / 'latest.json'}")


if __name__ == "__main__":
    main()
