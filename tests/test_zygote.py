"""Local workers forked by the zygote (``process_zygote``, on by default) are workers like
spawned ones: their own session, the environment, working directory and secrets of their
launch, their log, their ``memory=`` limit, killed with what they started; and the zygote
lives exactly as long as its control plane.

Real processes: this process's embedded control plane, its zygote and its workers.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import psutil
import pytest
from conftest import command_line, wait_until

import nbscale
from nbscale.exceptions import WorkerLostError

app = nbscale.App("test-zygote", secrets=[nbscale.Secret.from_dict({"ZYGOTE_SECRET": "s3"})])


@app.function(max_containers=1, scaledown_window=60)
def whoami(say: str = "") -> dict:
    if say:
        print(say, flush=True)
    return {
        "pid": os.getpid(),
        "ppid": os.getppid(),
        "sid": os.getsid(0),
        "pgid": os.getpgid(0),
        "cwd": os.getcwd(),
        "var": os.environ.get("ZYGOTE_TEST_VAR"),
        "start_var": os.environ.get("PYTHONZYGOTETEST"),
        "secret": os.environ.get("ZYGOTE_SECRET"),
        "stdin": os.read(0, 1),
        "argv": sys.argv[1:2],
    }


@app.function(memory=128, max_containers=1, scaledown_window=5)
def hog(mib: int) -> int:
    held = []
    for _ in range(mib // 16):
        held.append(bytearray(16 << 20))  # zero-filled: resident at once
        time.sleep(0.02)
    return len(held)


@app.function(memory=256, max_containers=1, scaledown_window=60)
def cgroup_of_me() -> tuple[int, int, str]:
    with open("/proc/self/cgroup") as f:
        return os.getpid(), os.getppid(), f.read()


@app.function(max_containers=1, scaledown_window=60)
def leaves_children(n: int) -> tuple[int, int, list[int]]:
    kids = [subprocess.Popen(["sleep", "1000"]) for _ in range(n)]
    return os.getpid(), os.getppid(), [k.pid for k in kids]


def zygotes(owner: int | None = None) -> list[psutil.Process]:
    """The zygotes ``owner`` (default: this process) started."""
    me = psutil.Process(owner or os.getpid())
    return [p for p in me.children() if "nbscale_runtime.zygote" in command_line(p)]


def forked(ppid: int) -> bool:
    """Whether a worker whose parent is ``ppid`` was forked by this process's zygote."""
    return ppid in [z.pid for z in zygotes()]


def gone(pids: list[int]) -> bool:
    for pid in pids:
        try:
            if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                return False
        except psutil.NoSuchProcess:
            pass
    return True


def test_a_forked_worker_gets_the_setup_of_its_launch_not_of_the_zygotes_start(
    fresh_plane, monkeypatch, tmp_path
):
    fresh_plane()
    first = whoami.remote()  # starts the control plane and its zygote
    assert forked(first["ppid"])
    # What changed in this process since the zygote started reaches later workers.
    monkeypatch.setenv("ZYGOTE_TEST_VAR", "set later")
    monkeypatch.chdir(tmp_path)
    info = whoami.with_options(max_containers=2).remote("hello from a forked worker")
    assert forked(info["ppid"])
    assert info["sid"] == info["pgid"] == info["pid"]  # leads its own session and group
    assert info["var"] == "set later" and info["cwd"] == str(tmp_path)
    assert info["secret"] == "s3"  # from its 0600 config file, as a spawned worker's
    assert info["stdin"] == b"" and info["argv"] == ["--config"]
    directory = Path(nbscale.status()["worker_endpoint"][len("unix://") :]).parent
    logs = [log.read_text() for log in directory.glob("wk-*.log")]
    assert any("hello from a forked worker" in text for text in logs)


def test_a_forked_worker_is_held_to_its_memory_limit(fresh_plane):
    fresh_plane()
    _, ppid, cgroups = cgroup_of_me.remote()
    assert forked(ppid)
    if "nbscale-" in cgroups:  # where cgroups can be made: its own, joined before it ran
        assert any(f"nbscale-{os.getpid()}" in line for line in cgroups.splitlines())
    with pytest.raises(WorkerLostError, match=r"ran out of memory \(memory limit 128 MiB\)"):
        hog.remote(1024)


def test_a_killed_forked_worker_takes_what_it_started_with_it(fresh_plane):
    fresh_plane()
    pid, ppid, kids = leaves_children.remote(2)
    assert forked(ppid) and not gone(kids)
    os.kill(pid, signal.SIGKILL)
    wait_until(lambda: gone([pid, *kids]), timeout=20)
    again = leaves_children.remote(0)  # the loss was seen (the zygote reaped it): replaced
    assert again[0] != pid and forked(again[1])


def test_the_zygote_exits_with_its_control_plane(fresh_plane):
    fresh_plane()
    info = whoami.remote()
    [zygote] = zygotes()
    nbscale.shutdown()
    wait_until(lambda: gone([zygote.pid, info["pid"]]), timeout=20)


def test_the_zygote_and_its_workers_exit_when_their_owner_is_killed(tmp_path):
    script = tmp_path / "owner.py"
    script.write_text(
        textwrap.dedent(
            """
            import os, sys, time
            import nbscale
            app = nbscale.App("owner")
            f = app.function(max_containers=1)(os.getppid)
            print(os.getpid(), f.remote(), flush=True)
            time.sleep(600)
            """
        )
    )
    env = dict(os.environ, NBSCALE_LAUNCHER="process")
    owner = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, env=env)
    try:
        line = owner.stdout.readline().split() if owner.stdout else []
        assert len(line) == 2, "the owner did not get its result"
        [zygote] = zygotes(owner.pid)
        assert int(line[1]) == zygote.pid  # its worker was forked
        workers = [p.pid for p in zygote.children()]
        assert workers
        owner.kill()  # kill -9: nothing of nbscale runs in it any more
        owner.wait()
        wait_until(lambda: gone([zygote.pid, *workers]), timeout=20)
    finally:
        owner.kill()
        owner.wait()
        if owner.stdout:
            owner.stdout.close()


def test_a_changed_start_up_environment_spawns_instead(fresh_plane, monkeypatch):
    fresh_plane()
    assert forked(whoami.remote()["ppid"])
    monkeypatch.setenv("PYTHONZYGOTETEST", "1")  # read at interpreter start: not forkable
    info = whoami.with_options(max_containers=3).remote()
    assert info["ppid"] == os.getpid() and info["start_var"] == "1"


def test_workers_of_a_killed_zygote_go_and_new_ones_still_start(fresh_plane):
    fresh_plane()
    first = whoami.remote()
    [zygote] = zygotes()
    zygote.kill()
    wait_until(lambda: gone([zygote.pid, first["pid"]]), timeout=20)
    info = whoami.remote()  # its loss is seen, and a worker starts all the same
    assert info["pid"] != first["pid"] and info["var"] is None
    assert not forked(first["ppid"])
