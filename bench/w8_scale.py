"""W8: one control plane serving 10, 100 and 1,000 simulated remote workers.

    python bench/w8_scale.py [--workers 10,100,1000] [--hosts 2] [--inputs 100000]
                             [--idle-seconds 10] [--in-flight 50000] [--profile]

For each pool size, in a fresh subprocess (``--stage N``): the real control plane in a
process of its own (``w8_plane.py``, as a Jupyter server hosts it), ``--hosts`` processes of
simulated workers speaking the real protocol over TCP with CurveZMQ (``w8_workers.py``), and
this process as the real nbscale client, connected through ``NBSCALE_CONNECTION_FILE`` as a
kernel is. It measures, from ``/proc`` (psutil):

- ramp: seconds from ``update_autoscaler(min_containers=N)`` to N workers registered, idle;
- idle: the control plane's CPU with N idle workers heartbeating (one a second each), less
  its CPU with none, per heartbeat; its RSS;
- map: ``fn.map`` of ``--inputs`` fresh integers through ``noop`` (every result checked),
  inputs/s end to end, best of 2 after a warm-up, with each process's CPU over the map;
  the control plane's CPU split by thread (the asyncio loop, ZeroMQ's I/O threads);
- with ``--profile``, at the largest size: ``py-spy`` samples of the control plane, idle and
  during a map, and their top functions (``pip install py-spy``).

The figures go to stdout as a table and to ``bench/results/w8.json``.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psutil

BENCH_DIR = Path(__file__).resolve().parent
RESULTS = BENCH_DIR / "results" / "w8.json"
TAG = "@@w8 "
HEARTBEAT_INTERVAL = 1.0  # the control plane's default: each worker beats once a second
MAP_RUNS = 2
STAGE_TIMEOUT_S = 300
IDLE_FRAME = "selectors.EpollSelector.select"


class Cpu:
    """CPU seconds a process (all its threads) used, between ``__init__`` and ``read``, from
    the scheduler's nanosecond counts (``/proc/PID/task/TID/schedstat``), not clock ticks."""

    def __init__(self, proc: psutil.Process) -> None:
        self.proc = proc
        self.start_wall = time.perf_counter()
        self.start = self._times()

    def _times(self) -> dict[str, float]:
        """CPU seconds by thread kind: the main thread (the asyncio loop) and the others."""
        pid = self.proc.pid
        by_kind: dict[str, float] = collections.defaultdict(float)
        for tid in os.listdir(f"/proc/{pid}/task"):
            try:
                with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                    ns = int(f.read().split()[0])
            except (OSError, IndexError, ValueError):
                continue  # a thread that just ended
            by_kind["loop" if int(tid) == pid else "other"] += ns / 1e9
        return by_kind

    def read(self) -> dict[str, float]:
        """CPU seconds used, in all and by thread kind, and the wall seconds elapsed."""
        now = self._times()
        used = {k: now[k] - self.start.get(k, 0.0) for k in now}
        return {
            "cpu_s": sum(used.values()),
            "loop_cpu_s": used.get("loop", 0.0),
            "wall_s": time.perf_counter() - self.start_wall,
        }


def _spawn(*args: str) -> subprocess.Popen[bytes]:
    """A process of the stage's own group: a stage killed for its timeout takes them along."""
    return subprocess.Popen([sys.executable, *args])


def _rss_mib(proc: psutil.Process) -> tuple[float, float]:
    """Resident memory now and at its peak (VmHWM), MiB."""
    peak = 0.0
    with open(f"/proc/{proc.pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                peak = int(line.split()[1]) / 1024
    return proc.memory_info().rss / 2**20, peak


def _wait_for(path: Path, procs: list[subprocess.Popen[bytes]], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if any(p.poll() is not None for p in procs):
            raise RuntimeError("a process of the simulation exited before the plane was up")
        if time.monotonic() > deadline:
            raise TimeoutError(f"no {path} within {timeout} s")
        time.sleep(0.05)


def _profile(pid: int, seconds: float, out: Path) -> subprocess.Popen[bytes] | None:
    """py-spy sampling ``pid`` for ``seconds`` into ``out`` (folded stacks), if installed."""
    spy = shutil.which("py-spy")
    if spy is None:
        print("py-spy is not installed (pip install py-spy): no profile", file=sys.stderr)
        return None
    cmd = [spy, "record", "--pid", str(pid), "--duration", str(int(seconds))]
    cmd += ["--rate", "200", "--format", "raw", "--nonblocking", "--output", str(out)]
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def top_functions(folded: Path, count: int = 12) -> dict[str, list[tuple[str, float]]]:
    """The functions the busy samples fall in most: by self time (the leaf) and by
    inclusive time (anywhere in the stack), as shares of the samples not waiting in the
    loop's ``select`` (which py-spy counts as active: it cannot tell epoll's wait)."""
    own: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    total = 0
    for line in folded.read_text().splitlines():
        stack, _, n = line.rpartition(" ")
        frames = [_short(f) for f in stack.split(";")[1:]]  # the first is the thread
        if not frames or frames[-1] == IDLE_FRAME:
            continue
        total += int(n)
        own[frames[-1]] += int(n)
        for frame in set(frames):
            inclusive[frame] += int(n)
    share = 1 / max(total, 1)
    return {
        "self": [(f, n * share) for f, n in own.most_common(count)],
        "inclusive": [(f, n * share) for f, n in inclusive.most_common(count * 2)],
    }


def _short(frame: str) -> str:
    """``fn (path/to/module.py:12)`` -> ``module.fn``."""
    name, _, where = frame.partition(" (")
    module = where.rsplit("/", 1)[-1].split(".py")[0]
    return f"{module}.{name}" if module else name


# --- one pool size, in a process of its own -------------------------------------------------


def stage(n: int, hosts: int, inputs: int, idle_s: float, in_flight: int, profile: bool) -> Any:
    work = Path(tempfile.mkdtemp(prefix="nbscale-w8-"))
    plane_args = ["--dir", str(work), "--hosts", str(hosts), "--max-workers", str(n)]
    plane = _spawn(str(BENCH_DIR / "w8_plane.py"), *plane_args, "--in-flight", str(in_flight))
    launcher = f"ipc://{work}/launcher"
    sims = [_spawn(str(BENCH_DIR / "w8_workers.py"), "--launcher", launcher) for _ in range(hosts)]
    try:
        _wait_for(work / "connection.json", [plane, *sims], 60)
        return _measure(n, work, plane, sims, inputs, idle_s, profile)
    finally:
        _stop(plane, sims)
        shutil.rmtree(work, ignore_errors=True)


def _stop(plane: subprocess.Popen[bytes], sims: list[subprocess.Popen[bytes]]) -> None:
    """The plane stops its workers (SIGTERM); then the hosts go."""
    if plane.poll() is None:
        plane.send_signal(signal.SIGTERM)
        try:
            plane.wait(30)
        except subprocess.TimeoutExpired:
            plane.kill()
            plane.wait()
    for sim in sims:
        sim.kill()
        sim.wait()


def _measure(
    n: int,
    work: Path,
    plane_popen: subprocess.Popen[bytes],
    sims: list[subprocess.Popen[bytes]],
    inputs: int,
    idle_s: float,
    profile: bool,
) -> dict[str, Any]:
    os.environ["NBSCALE_CONNECTION_FILE"] = str(work / "connection.json")
    import workloads

    import nbscale

    plane = psutil.Process(plane_popen.pid)
    hosts = [psutil.Process(s.pid) for s in sims]
    me = psutil.Process()
    out: dict[str, Any] = {"workers": n, "hosts": len(sims), "inputs": inputs}

    fn = nbscale.App("w8").function(max_containers=n, scaledown_window=3600)(workloads.noop)
    assert fn.get_current_stats().num_total_runners == 0  # registers the pool
    cpu = Cpu(plane)
    time.sleep(idle_s / 2)
    empty = cpu.read()  # the housekeeping tick alone, with no worker

    begun = time.perf_counter()
    fn.update_autoscaler(min_containers=n)
    while fn.get_current_stats().containers["idle"] < n:
        if time.perf_counter() - begun > 180:
            raise TimeoutError(f"{n} workers not all idle within 180 s")
        time.sleep(0.1)
    out["ramp_s"] = time.perf_counter() - begun
    time.sleep(2)  # the registrations' burst over, heartbeats spread

    cpu = Cpu(plane)
    time.sleep(idle_s)
    idle = cpu.read()
    spy = _profile(plane.pid, idle_s, work / "idle.txt") if profile else None
    if spy is not None:  # after the measurement: py-spy takes CPU on this small machine
        spy.wait()
        out["profile_idle"] = top_functions(work / "idle.txt")
    containers = fn.get_current_stats().containers
    assert containers["idle"] == n, f"workers not all idle after the idle phase: {containers}"
    beats = n * idle["wall_s"] / HEARTBEAT_INTERVAL
    out["idle_cpu_pct"] = 100 * idle["cpu_s"] / idle["wall_s"]
    out["empty_cpu_pct"] = 100 * empty["cpu_s"] / empty["wall_s"]
    extra = idle["cpu_s"] - empty["cpu_s"] * idle["wall_s"] / empty["wall_s"]
    out["heartbeat_cpu_us"] = 1e6 * extra / beats
    out["rss_idle_mib"] = _rss_mib(plane)[0]

    first = 0
    warm = list(range(first, first + max(10 * n, 10_000)))
    assert list(fn.map(warm)) == warm  # every worker has run inputs, knows their length
    first += len(warm)
    runs = []
    for run in range(MAP_RUNS + int(profile)):
        items = list(range(first, first + inputs))
        first += inputs
        watched = [Cpu(p) for p in (plane, me, *hosts)]
        spy = None
        if run == MAP_RUNS:  # an extra run, profiled, not timed
            spy = _profile(plane.pid, 3, work / "map.txt")
        started = time.perf_counter()
        results = list(fn.map(items))
        wall = time.perf_counter() - started
        assert results == items, "wrong or missing results"
        if spy is not None:
            spy.wait()
            out["profile_map"] = top_functions(work / "map.txt")
            continue
        used = [c.read() for c in watched]
        runs.append(
            {
                "inputs_per_s": inputs / wall,
                "plane_cpu_pct": 100 * used[0]["cpu_s"] / wall,
                "plane_loop_cpu_pct": 100 * used[0]["loop_cpu_s"] / wall,
                "client_cpu_pct": 100 * used[1]["cpu_s"] / wall,
                "hosts_cpu_pct": 100 * sum(u["cpu_s"] for u in used[2:]) / wall,
            }
        )
    out["map"] = max(runs, key=lambda r: r["inputs_per_s"])
    out["map_runs"] = runs
    out["rss_peak_mib"] = _rss_mib(plane)[1]
    return out


# --- the whole run ------------------------------------------------------------------------


def _run_stage(n: int, args: argparse.Namespace) -> dict[str, Any]:
    cmd = [sys.executable, __file__, "--stage", str(n), "--hosts", str(args.hosts)]
    cmd += ["--inputs", str(args.inputs), "--idle-seconds", str(args.idle_seconds)]
    cmd += ["--in-flight", str(args.in_flight)]
    if args.profile and n == max(args.workers):
        cmd.append("--profile")
    print(f"W8: {n} workers ...", file=sys.stderr, flush=True)
    # A session of its own: on timeout, its whole group (plane, hosts) is killed with it.
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, start_new_session=True)
    try:
        stdout, _ = proc.communicate(timeout=STAGE_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        return {"workers": n, "error": f"no result within {STAGE_TIMEOUT_S} s"}
    for line in stdout.splitlines():
        if line.startswith(TAG):
            return dict(json.loads(line[len(TAG) :]))
    return {"workers": n, "error": f"stage exited {proc.returncode} without a result"}


def table(results: list[dict[str, Any]]) -> str:
    rows = [
        ("workers", lambda r: f"{r['workers']:,}"),
        ("0 -> N registered, idle (s)", lambda r: f"{r['ramp_s']:.2f}"),
        ("map inputs/s, end to end", lambda r: f"{r['map']['inputs_per_s']:,.0f}"),
        ("  plane CPU % during the map", lambda r: f"{r['map']['plane_cpu_pct']:.0f}"),
        ("  plane loop thread CPU %", lambda r: f"{r['map']['plane_loop_cpu_pct']:.0f}"),
        ("  client CPU %", lambda r: f"{r['map']['client_cpu_pct']:.0f}"),
        ("  worker hosts CPU %", lambda r: f"{r['map']['hosts_cpu_pct']:.0f}"),
        ("plane loop CPU per input (us)", lambda r: f"{_loop_us_per_input(r):.1f}"),
        ("plane ceiling, loop at 100% (inputs/s)", lambda r: f"{1e6 / _loop_us_per_input(r):,.0f}"),
        ("plane CPU % idle, no workers", lambda r: f"{r['empty_cpu_pct']:.1f}"),
        ("plane CPU % idle, N workers", lambda r: f"{r['idle_cpu_pct']:.1f}"),
        ("plane CPU per heartbeat (us)", _heartbeat_cell),
        ("plane RSS idle (MiB)", lambda r: f"{r['rss_idle_mib']:.0f}"),
        ("plane RSS peak (MiB)", lambda r: f"{r['rss_peak_mib']:.0f}"),
    ]
    ok = [r for r in results if "error" not in r]
    heads = " | ".join(f"{r['workers']:,} workers" for r in ok)
    lines = [f"| metric | {heads} |"]
    lines.append("|---" * (len(ok) + 1) + "|")
    for name, cell in rows[1:]:
        lines.append(f"| {name} | {' | '.join(cell(r) for r in ok)} |")
    for r in results:
        if "error" in r:
            lines.append(f"\n{r['workers']} workers: {r['error']}")
    return "\n".join(lines)


def _heartbeat_cell(r: dict[str, Any]) -> str:
    """Below ~100 workers, their heartbeats cost less than the idle plane's own noise."""
    us = r["heartbeat_cpu_us"]
    return f"{us:.0f}" if us > 0 and r["workers"] >= 100 else "below noise"


def _loop_us_per_input(r: dict[str, Any]) -> float:
    """The control plane's loop thread, microseconds of CPU per input dispatched: what
    bounds it, as one thread, whatever the other processes leave it."""
    return 1e4 * r["map"]["plane_loop_cpu_pct"] / r["map"]["inputs_per_s"]


def profiles(results: list[dict[str, Any]]) -> str:
    lines = []
    for r in results:
        for phase in ("profile_idle", "profile_map"):
            if phase in r:
                lines.append(f"\n{r['workers']} workers, {phase[8:]}: top self / inclusive")
                for kind in ("self", "inclusive"):
                    tops = ", ".join(f"{f} {100 * s:.0f}%" for f, s in r[phase][kind])
                    lines.append(f"  {kind}: {tops}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", default="10,100,1000", help="pool sizes, comma-separated")
    parser.add_argument("--hosts", type=int, default=2, help="processes of simulated workers")
    parser.add_argument("--inputs", type=int, default=100_000, help="inputs per timed map")
    parser.add_argument("--idle-seconds", type=float, default=10.0)
    parser.add_argument("--in-flight", type=int, default=50_000, help="inputs in flight per map")
    parser.add_argument("--profile", action="store_true", help="py-spy at the largest size")
    parser.add_argument("--stage", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.stage is not None:
        result = stage(
            args.stage, args.hosts, args.inputs, args.idle_seconds, args.in_flight, args.profile
        )
        print(TAG + json.dumps(result), flush=True)
        return
    args.workers = [int(w) for w in args.workers.split(",")]
    results = [_run_stage(n, args) for n in args.workers]
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=1))
    cpus = os.cpu_count()
    load = os.getloadavg()[0]
    print(f"\nW8 on {cpus} CPUs (load average {load:.1f} at the end), {args.hosts} worker hosts,")
    print(f"{args.inputs:,} inputs per map, {args.in_flight:,} in flight per map\n")
    print(table(results))
    print(profiles(results))


if __name__ == "__main__":
    main()
