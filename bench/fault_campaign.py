"""A fault campaign: a stream of maps and spawns through a Jupyter server's control plane
while workers are killed, inputs run out of memory, the server is killed and restarted, and
its disk fills up.

For ``--minutes`` (default 3), three threads feed a ``jupyter server`` subprocess (process
workers) with work: maps of ``--map-size`` inputs (``return_exceptions=True``) and
``.spawn()`` calls, ``--oom-share`` of them asking for more memory than their ``memory=``.
A chaos thread meanwhile, at random: SIGKILLs a worker (``--kill-every`` s on average),
SIGKILLs the Jupyter server and starts it again on the same port and directories
(``--restart-every``), and fills the file system of the server's temporary and data
directories (a small tmpfs) for a few seconds (``--disk-full-every``). At the end, every
spawned call is fetched with ``FunctionCall.from_id(...).get()``.

Each input carries a tag; the worker appends the tag to a log when it runs it (outside the
tmpfs), so runs are counted too. Printed: inputs submitted (a spawn refused at submission,
or a map's inputs not accepted, are not submitted), completed exactly once (delivered once,
with the right value), failed with the right reason (an input that ran out of memory
failed with "ran out of memory"; others by what the chaos did: the caller's map cut by a
lost server, a launch or a write refused by the full disk, lost to the infrastructure
repeatedly), failed with a wrong reason, lost (submitted, never delivered nor failed: must
be 0) and duplicated (delivered more than once: must be 0), and inputs run more than once
(at least once: allowed for spawned inputs after a restart, or a worker killed mid-input).

Needs root (it mounts a tmpfs). Run it under the shared lock:

    flock /tmp/nbscale-heavy.lock python bench/fault_campaign.py --minutes 3
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from jupyter_process import JupyterProcess, free_port  # noqa: E402

MEMORY_MIB = 192  # the functions' memory=; an "oom" input takes twice that
RUNS_LOG = "runs.log"  # one tag per run, appended by the workers


def work(tag: int, oom: bool, runs: str) -> int:
    """What every input runs: note the run, maybe run out of memory, return ``2 * tag``."""
    import os
    import time

    fd = os.open(runs, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(fd, f"{tag}\n".encode())
    finally:
        os.close(fd)
    if oom:
        hog = bytearray(2 * MEMORY_MIB << 20)  # zero-filled: resident at once
        time.sleep(3)  # held long enough for the launcher's sampling to see it
        del hog
    time.sleep(0.02 + (tag % 7) * 0.01)
    return 2 * tag


@dataclass
class Ledger:
    """What happened to every input, by tag; filled by the driver threads."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    oom: set[int] = field(default_factory=set)
    submitted: set[int] = field(default_factory=set)
    refused: int = 0  # inputs whose submission failed (not counted as submitted)
    delivered: collections.Counter[int] = field(default_factory=collections.Counter)
    wrong_value: set[int] = field(default_factory=set)
    failures: dict[int, str] = field(default_factory=dict)  # tag -> "ErrorType: message"
    spawned: dict[str, int] = field(default_factory=dict)  # call id -> tag
    events: collections.Counter[str] = field(default_factory=collections.Counter)

    def fail(self, tag: int, error: BaseException) -> None:
        with self.lock:
            self.failures.setdefault(tag, f"{type(error).__name__}: {error}")


def right_reason(oom: bool, failure: str) -> bool:
    """Whether an input failed for what the campaign did to it."""
    kind = failure.split(":", 1)[0]
    if oom and kind == "WorkerLostError":
        return "ran out of memory" in failure
    if "ran out of memory" in failure:
        return False  # another input's memory blamed on this one
    if kind == "ConnectionLostError":
        return True  # its map was cut by the server's death; the caller was told
    if kind == "WorkerLostError":
        return "lost to the infrastructure" in failure
    if kind in ("LaunchError", "ControlPlaneError", "NotFoundError"):
        return "No space left on device" in failure or "database or disk is full" in failure
    return False


class Campaign:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.rng = random.Random(args.seed)
        self.tmp = Path(tempfile.mkdtemp(prefix="nbfault-", dir="/tmp"))
        self.disk = self.tmp / "disk"  # a small tmpfs: the server's temp and data dirs
        self.disk.mkdir()
        subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={args.disk_mib}m", "tmpfs", str(self.disk)],
            check=True,
        )
        self.runs = str(self.tmp / RUNS_LOG)
        self.port = free_port()
        self.ledger = Ledger()
        self.stop = threading.Event()
        self.server: JupyterProcess | None = None
        self.server_lock = threading.Lock()
        self.next_tag = 0

    # --- the server ---------------------------------------------------------------------

    def start_server(self) -> None:
        os.environ["TMPDIR"] = str(self.disk)  # the control plane's private directory
        tempfile.tempdir = None
        config = {
            "ServerApp": {"jpserver_extensions": {"nbscale_server": True}},
            "NbScale": {
                "launcher": "process",
                "max_workers_total": 5,
                "heartbeat_interval": 0.5,
                "store_path": str(self.disk / "nbscale.db"),
            },
        }
        server = JupyterProcess(
            self.tmp, ["jupyter", "server"], config, "nbscale/api/status", port=self.port
        )
        os.environ["TMPDIR"] = "/tmp"
        tempfile.tempdir = None
        self.server = server
        os.environ["NBSCALE_CONNECTION_FILE"] = str(server.connection_file)

    def restart_server(self) -> None:
        with self.server_lock:
            assert self.server is not None
            self.server.kill()
            self.ledger.events["server killed and restarted"] += 1
            time.sleep(0.5)
            for _ in range(30):  # a disk-full spell may be under way: try again
                try:
                    self.start_server()
                    return
                except AssertionError:
                    self.ledger.events["server start failed (disk full?): tried again"] += 1
                    time.sleep(2)
            raise RuntimeError("the Jupyter server did not start again in a minute")

    def workers(self) -> list[psutil.Process]:
        server = self.server
        if server is None:
            return []
        with contextlib.suppress(psutil.Error):
            children = psutil.Process(server.proc.pid).children(recursive=True)
            return [p for p in children if "nbscale_runtime" in " ".join(p.cmdline())]
        return []

    # --- chaos --------------------------------------------------------------------------

    def chaos(self) -> None:
        a = self.args
        now = time.monotonic()
        due = {
            "kill": now + self.rng.expovariate(1 / a.kill_every),
            "restart": now + self.rng.expovariate(1 / a.restart_every),
            "disk": now + self.rng.expovariate(1 / a.disk_full_every),
        }
        while not self.stop.wait(0.1):
            now = time.monotonic()
            if now >= due["kill"]:
                due["kill"] = now + self.rng.expovariate(1 / a.kill_every)
                victims = self.workers()
                if victims:
                    with contextlib.suppress(psutil.Error):
                        self.rng.choice(victims).send_signal(signal.SIGKILL)
                        self.ledger.events["worker killed"] += 1
            if now >= due["restart"]:
                due["restart"] = now + self.rng.expovariate(1 / a.restart_every)
                self.restart_server()
            if now >= due["disk"]:
                due["disk"] = now + self.rng.expovariate(1 / a.disk_full_every)
                self.disk_full_spell()

    def disk_full_spell(self) -> None:
        filler = self.disk / "filler"
        with open(filler, "wb", buffering=0) as f, contextlib.suppress(OSError):
            while True:
                f.write(b"\0" * (1 << 20))
        self.ledger.events["disk-full spell"] += 1
        self.stop.wait(self.rng.uniform(2, 5))
        filler.unlink()

    # --- the stream of work -------------------------------------------------------------

    def tags(self, n: int) -> list[tuple[int, bool]]:
        with self.ledger.lock:
            start, self.next_tag = self.next_tag, self.next_tag + n
            out = [(t, self.rng.random() < self.args.oom_share) for t in range(start, start + n)]
            self.ledger.oom.update(t for t, oom in out if oom)
        return out

    def mapper(self, fn: Any) -> None:
        import nbscale

        ledger = self.ledger
        while not self.stop.is_set():
            batch = self.tags(self.args.map_size)
            seen: set[int] = set()
            tags = [t for t, _ in batch]
            with ledger.lock:
                ledger.submitted.update(tags)
            try:
                results = fn.map(
                    tags,
                    [oom for _, oom in batch],
                    [self.runs] * len(batch),
                    return_exceptions=True,
                )
                for tag, value in zip(tags, results, strict=False):  # in order: by position
                    seen.add(tag)
                    if isinstance(value, BaseException):
                        ledger.fail(tag, value)
                    elif value == 2 * tag:
                        with ledger.lock:
                            ledger.delivered[tag] += 1
                    else:
                        with ledger.lock:
                            ledger.wrong_value.add(tag)
            except nbscale.exceptions.NbscaleError as exc:
                ledger.events[f"map raised {type(exc).__name__}"] += 1
                for tag in tags:
                    if tag not in seen:
                        ledger.fail(tag, exc)
                self.stop.wait(1.0)  # as a person would: the server is restarting
            except Exception as exc:  # counted as the wrong reason
                for tag in tags:
                    if tag not in seen:
                        ledger.fail(tag, exc)

    def spawner(self, fn: Any) -> None:
        ledger = self.ledger
        while not self.stop.is_set():
            [(tag, oom)] = self.tags(1)
            try:
                call = fn.spawn(tag, oom, self.runs)
            except Exception as exc:  # refused: not submitted
                with ledger.lock:
                    ledger.refused += 1
                    ledger.events[f"spawn refused: {type(exc).__name__}"] += 1
                self.stop.wait(0.5)
                continue
            with ledger.lock:
                ledger.submitted.add(tag)
                ledger.spawned[call.object_id] = tag
            self.stop.wait(0.05)

    def collect_spawned(self) -> None:
        import nbscale

        ledger = self.ledger
        for call_id, tag in list(ledger.spawned.items()):
            for _ in range(3):
                try:
                    value = nbscale.FunctionCall.from_id(call_id).get(timeout=600)
                except nbscale.exceptions.ConnectionLostError:
                    time.sleep(2)  # the server restarting: ask again
                    continue
                except Exception as exc:  # classified below
                    ledger.fail(tag, exc)
                    break
                if value == 2 * tag:
                    ledger.delivered[tag] += 1
                else:
                    ledger.wrong_value.add(tag)
                break
            else:
                ledger.fail(tag, RuntimeError("the server did not answer, three times"))

    # --- the whole ----------------------------------------------------------------------

    def run(self) -> dict[str, Any]:
        import nbscale

        self.start_server()
        app = nbscale.App("fault-campaign")
        fn = app.function(max_containers=4, memory=MEMORY_MIB)(work)
        threads = [
            threading.Thread(target=self.mapper, args=(fn,), name="maps"),
            threading.Thread(target=self.spawner, args=(fn,), name="spawns"),
            threading.Thread(target=self.chaos, name="chaos"),
        ]
        started = time.monotonic()
        for t in threads:
            t.start()
        self.stop.wait(self.args.minutes * 60)
        self.stop.set()
        for t in threads:
            t.join(900)
        self.collect_spawned()
        seconds = time.monotonic() - started
        return self.figures(seconds)

    def figures(self, seconds: float) -> dict[str, Any]:
        ledger = self.ledger
        runs = collections.Counter(int(line) for line in Path(self.runs).read_text().split())
        right: collections.Counter[str] = collections.Counter()
        wrong: list[str] = []
        exactly_once = lost = duplicated = 0
        for tag in sorted(ledger.submitted):
            delivered = ledger.delivered[tag]
            failure = ledger.failures.get(tag)
            if delivered > 1 or (delivered and failure):
                duplicated += 1
            elif delivered == 1 and tag not in ledger.oom:
                exactly_once += 1
            elif failure is not None and right_reason(tag in ledger.oom, failure):
                right[failure.split(":", 1)[0]] += 1
            elif failure is not None or delivered:
                wrong.append(f"tag {tag} (oom={tag in ledger.oom}): {failure or 'completed'}")
            else:
                lost += 1
        return {
            "seconds": seconds,
            "submitted": len(ledger.submitted),
            "maps_inputs": len(ledger.submitted) - len(ledger.spawned),
            "spawned": len(ledger.spawned),
            "refused_at_submission": ledger.refused,
            "completed_exactly_once": exactly_once,
            "failed_right_reason": dict(right),
            "failed_wrong_reason": wrong,
            "wrong_values": sorted(ledger.wrong_value),
            "lost": lost,
            "duplicated": duplicated,
            "run_more_than_once": sum(1 for n in runs.values() if n > 1),
            "oom_inputs": len(ledger.oom & ledger.submitted),
            "events": dict(ledger.events),
        }

    def close(self) -> None:
        import nbscale

        with contextlib.suppress(Exception):
            nbscale.shutdown()
        if self.server is not None:
            self.server.stop()
        subprocess.run(["umount", "-l", str(self.disk)], check=False)
        shutil.rmtree(self.tmp, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=3.0)
    parser.add_argument("--map-size", type=int, default=40)
    parser.add_argument("--oom-share", type=float, default=0.02)
    parser.add_argument("--kill-every", type=float, default=2.0, help="seconds, on average")
    parser.add_argument("--restart-every", type=float, default=45.0)
    parser.add_argument("--disk-full-every", type=float, default=30.0)
    parser.add_argument("--disk-mib", type=int, default=64, help="the tmpfs's size")
    parser.add_argument("--seed", type=int, default=12)
    args = parser.parse_args()
    os.environ["NBSCALE_PROGRESS"] = "off"
    campaign = Campaign(args)
    try:
        figures = campaign.run()
    finally:
        campaign.close()
    print(f"fault campaign, {figures['seconds']:.0f} s (seed {args.seed}):")
    for name, value in figures.items():
        if name != "seconds":
            print(f"  {name:24} {value}")
    ok = figures["lost"] == 0 and figures["duplicated"] == 0
    sys.exit(0 if ok and not figures["failed_wrong_reason"] else 1)


if __name__ == "__main__":
    main()
