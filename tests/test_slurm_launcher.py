"""The Slurm launcher against the real single-node cluster: one job per worker with its name,
comment and resources, no secret where Slurm shows it, stops that cancel exactly one job,
logs and Slurm's own words on failure, a wrong partition, jobs pending on Resources, and the
jobs of a control plane that was killed, cancelled by the next one."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path

import pytest
from conftest import wait_until
from slurm_cluster import job_fields, nbscale_jobs

from nbscale._options import function_options
from nbscale_server.launchers import LaunchFailed, WorkerSpec
from nbscale_server.launchers.slurm import SlurmLauncher
from nbscale_server.launchers.slurm_job import JobComment
from nbscale_server.losses import USER
from nbscale_server.security import KeyPair, write_secret_json

pytestmark = pytest.mark.slurm

NOBODY = "tcp://127.0.0.1:9"  # workers dial it forever: they run until they are stopped


@pytest.fixture
def launcher(slurm_cluster, tmp_path):
    launcher = SlurmLauncher(shared_dir=str(tmp_path / "shared"))
    yield launcher
    launcher.close()
    assert not os.path.exists(launcher.dir)
    ours = [
        e for e in nbscale_jobs() if JobComment.parse(e.comment).server_id == launcher.server_id
    ]
    assert not ours, f"left in the queue: {ours}"


def worker_spec(launcher: SlurmLauncher, **options) -> tuple[WorkerSpec, str]:
    """A worker that dials nobody, its config (keys included) written as the control plane
    writes it; returns it with its secret key."""
    worker_id = f"wk-{uuid.uuid4().hex[:12]}"
    path = os.path.join(launcher.worker_config_dir() or "", f"{worker_id}.json")
    keys = KeyPair()
    config = {
        "worker_id": worker_id,
        "pool_id": "pl-test",
        "endpoint": NOBODY,
        "server_public_key": KeyPair().public,
        "public_key": keys.public,
        "secret_key": keys.secret,
    }
    write_secret_json(path, config)
    options_ = function_options(None, options)
    spec = WorkerSpec(worker_id, "pl-test", path, options_, pool_name="launcher_test")
    return spec, keys.secret


def phase(launcher, handle):
    return launcher.worker_status(handle).phase


def test_a_worker_is_one_job_named_for_its_pool_with_its_resources(launcher):
    spec, secret = worker_spec(
        launcher, cpu=1, memory=300, gpu="any", slurm={"time": "10", "partition": "debug"}
    )
    handle = launcher.start(spec)
    wait_until(lambda: phase(launcher, handle) == "running", timeout=30)
    job_id = launcher.job_id(handle)
    job = job_fields(job_id)
    assert job["JobName"] == "nbscale-launcher_test"
    comment = JobComment.parse(job["Comment"])
    assert comment is not None
    assert (comment.server_id, comment.worker_id) == (launcher.server_id, spec.worker_id)
    assert comment.owner == launcher.owner
    assert job["NumCPUs"] == "1" and job["MinMemoryNode"] == "300M"
    assert job["TimeLimit"] == "00:10:00" and job["Partition"] == "debug"
    assert job["TresPerNode"] == "gres:gpu:1"
    assert job["StdOut"] == handle.log_path
    assert (os.stat(spec.config_path).st_mode & 0o777) == 0o600
    # The worker's keys are nowhere Slurm or ps shows: job record, script, argv, environment.
    shown = subprocess.run(
        ["scontrol", "show", "job", "-dd", job_id], capture_output=True, text=True
    ).stdout
    script = subprocess.run(
        ["scontrol", "write", "batch_script", job_id, "-"], capture_output=True, text=True
    ).stdout
    assert spec.config_path in script and secret not in script and secret not in shown
    pids = subprocess.run(["scontrol", "listpids", job_id], capture_output=True, text=True)
    worker_pids = [line.split()[0] for line in pids.stdout.splitlines()[1:]]
    assert worker_pids
    for pid in worker_pids:
        with open(f"/proc/{pid}/cmdline", "rb") as f, open(f"/proc/{pid}/environ", "rb") as e:
            assert secret.encode() not in f.read() + e.read()


def test_stopping_cancels_exactly_that_job(launcher):
    first = launcher.start(worker_spec(launcher)[0])
    second = launcher.start(worker_spec(launcher)[0])
    wait_until(lambda: phase(launcher, first) == phase(launcher, second) == "running", timeout=30)
    launcher.stop(first, graceful=False)
    assert launcher.wait(first, 20) is not None
    queued = {e.job_id for e in nbscale_jobs()}
    assert launcher.job_id(first) not in queued and launcher.job_id(second) in queued
    assert phase(launcher, second) == "running"
    assert launcher.exit_reason(first) is None  # we cancelled it: nothing to explain
    assert launcher.exit_cause(first) is None  # ours: the control plane judges it
    assert job_fields(launcher.job_id(first))["JobState"] == "CANCELLED"


def catches_sigterm(job_id: str | None) -> bool:
    """Whether the job's worker process is up and has its SIGTERM handler (before that, a
    SIGTERM ends it like any process: there is nothing to drain yet)."""
    listed = subprocess.run(["scontrol", "listpids", job_id or ""], capture_output=True, text=True)
    for line in listed.stdout.splitlines()[1:]:
        with contextlib.suppress(OSError):
            status = Path(f"/proc/{line.split()[0]}/status").read_text()
            (caught,) = re.findall(r"^SigCgt:\s*(\w+)", status, re.M)
            if int(caught, 16) & (1 << (signal.SIGTERM - 1)):
                return True
    return False


def test_a_graceful_stop_lets_the_worker_drain_and_exit(launcher):
    handle = launcher.start(worker_spec(launcher)[0])
    wait_until(lambda: phase(launcher, handle) == "running", timeout=30)
    wait_until(lambda: catches_sigterm(launcher.job_id(handle)), timeout=30)
    launcher.stop(handle, graceful=True)  # SIGTERM to the worker, which drains and exits
    assert launcher.wait(handle, 30) == 0
    assert job_fields(launcher.job_id(handle))["JobState"] == "COMPLETED"


def test_a_failed_job_has_its_logs_and_slurms_words_in_the_reason(launcher):
    spec, _ = worker_spec(launcher)
    os.unlink(spec.config_path)  # the worker cannot read its config: a traceback, exit 1
    handle = launcher.start(spec)
    assert launcher.wait(handle, 30) == 1
    assert "FileNotFoundError" in launcher.logs(handle, 5)
    reason = launcher.exit_reason(handle) or ""
    job_id = launcher.job_id(handle)
    assert f"failed (Slurm job {job_id}: State=FAILED ExitCode=1:0" in reason
    assert launcher.exit_cause(handle) == USER  # its own code failed


def test_a_wrong_partition_is_named(launcher):
    spec, _ = worker_spec(launcher, slurm={"partition": "nosuchpartition"})
    handle = launcher.start(spec)
    assert launcher.wait(handle, 30) is not None
    reason = launcher.exit_reason(handle) or ""
    assert "could not be submitted to Slurm" in reason
    assert "invalid partition specified: nosuchpartition" in reason
    assert launcher.exit_cause(handle) == USER  # refused: launching again would not mend it


def test_a_gpu_request_beyond_the_cluster_pends_on_resources(launcher):
    handles = [launcher.start(worker_spec(launcher, gpu="any")[0]) for _ in range(3)]
    wait_until(
        lambda: sorted(phase(launcher, h) for h in handles) == ["pending", "running", "running"],
        timeout=30,
    )
    (waiting,) = [h for h in handles if phase(launcher, h) == "pending"]
    wait_until(lambda: launcher.worker_status(waiting).reason == "Resources", timeout=10)
    assert launcher.exit_code(waiting) is None  # waiting is not failing
    launcher.stop(waiting, graceful=True)  # nothing to drain: the queued job is cancelled
    assert launcher.wait(waiting, 20) is not None
    assert job_fields(launcher.job_id(waiting))["JobState"] == "CANCELLED"


def test_jobs_of_a_killed_control_plane_are_cancelled_by_the_next(launcher, tmp_path):
    shared = tmp_path / "shared"
    live = launcher.start(worker_spec(launcher)[0])  # a live control plane's: left alone
    with subprocess.Popen(
        [
            sys.executable,
            "-c",
            textwrap.dedent(f"""
            import sys, time, test_slurm_launcher as t
            from nbscale_server.launchers.slurm import SlurmLauncher
            launcher = SlurmLauncher(shared_dir={str(shared)!r})
            handles = [launcher.start(t.worker_spec(launcher)[0]) for _ in range(2)]
            while not all(launcher.job_id(h) for h in handles):
                time.sleep(0.05)
            print(launcher.dir, *(launcher.job_id(h) for h in handles), flush=True)
            time.sleep(600)
            """),
        ],
        stdout=subprocess.PIPE,
        text=True,
        cwd=os.path.dirname(__file__),
    ) as crashing:
        try:
            job_dir, *orphans = crashing.stdout.readline().split()
        finally:
            crashing.send_signal(signal.SIGKILL)
    assert len(orphans) == 2 and set(orphans) <= {e.job_id for e in nbscale_jobs()}
    successor = SlurmLauncher(shared_dir=str(shared))  # reconciles as it starts
    try:
        wait_until(lambda: not set(orphans) & {e.job_id for e in nbscale_jobs()}, timeout=20)
        assert not os.path.exists(job_dir)
        assert launcher.job_id(live) in {e.job_id for e in nbscale_jobs()}
        assert phase(launcher, live) != "exited"
    finally:
        successor.close()


def test_no_slurm_is_a_clear_error(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(LaunchFailed, match="sbatch is not on PATH"):
        SlurmLauncher(shared_dir=str(tmp_path))
