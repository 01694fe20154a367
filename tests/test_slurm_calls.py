"""Every call style on Slurm workers (NBSCALE_LAUNCHER=slurm, a fresh embedded control plane),
autoscaling seen in ``squeue``, GPU jobs waiting on Resources while others serve, jobs
cancelled under a busy worker, the walltime signal draining a worker, a wrong partition, and
a killed control plane's jobs cancelled by the next one. Nothing is left in the queue."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import textwrap
import time

import cloudpickle
import pytest
from conftest import wait_until
from slurm_cluster import job_fields, nbscale_jobs

import nbscale
from nbscale import _client, _pools
from nbscale_server.launchers.slurm_job import JobComment
from nbscale_server.launchers.slurm_queue import QueueEntry

pytestmark = pytest.mark.slurm

cloudpickle.register_pickle_by_value(sys.modules[__name__])  # sent by value, as in notebooks

app = nbscale.App("test-slurm-calls")


@pytest.fixture(scope="module", autouse=True)
def _slurm(slurm_plane):
    return slurm_plane


@app.function(max_containers=2, scaledown_window=5)
def square(x):
    return x * x


@app.function(max_containers=2, scaledown_window=5)
def add(a, b, scale=1):
    return (a + b) * scale


@app.function(max_containers=1, scaledown_window=5)
def job():
    print("written to the job's output file", file=sys.__stderr__, flush=True)
    return os.environ.get("SLURM_JOB_ID"), os.environ.get("SLURM_JOB_NAME")


@app.function(max_containers=4, scaledown_window=2)
def hold(seconds):
    time.sleep(seconds)
    return os.environ["SLURM_JOB_ID"]


@app.function(gpu="any", max_containers=3, scaledown_window=2)
def on_gpu(seconds):
    time.sleep(seconds)
    return os.environ["SLURM_JOB_ID"]


@app.function(gpu="any", max_containers=1, scaledown_window=2)
def gpu_late(x):
    return x


@app.function(max_containers=1, scaledown_window=5, retries=2)
def slow(x):
    time.sleep(3)
    return x + 1


@app.function(max_containers=1, scaledown_window=5)
def stuck(x):
    os.write(2, f"stuck on input {x}\n".encode())  # below the per-input capture: the job's file
    time.sleep(60)
    return x


@app.function(max_containers=1, scaledown_window=300, slurm={"time": "1", "drain_seconds": 50})
def short_lived(x):
    return os.environ["SLURM_JOB_ID"]


def pool_jobs(function: str) -> list[QueueEntry]:
    """The queued or running jobs of ``function``'s pools, as ``squeue`` lists them."""
    pools = {p["id"] for p in nbscale.status()["pools"] if p["function"] == function}
    return [e for e in nbscale_jobs() if JobComment.parse(e.comment).pool_id in pools]


def test_workers_are_slurm_jobs_named_for_their_function():
    info = nbscale.status()
    assert info["launcher"] == "slurm"
    assert info["worker_endpoint"].startswith("tcp://127.0.0.1:")  # the default address
    job_id, name = job.remote()
    assert name == "nbscale-job"
    assert job_id in {e.job_id for e in pool_jobs("job")}
    (worker,) = job.get_current_stats().workers
    assert "written to the job's output file" in _pools.logs(worker["id"])  # %nbscale logs


def test_map_remote_and_starmap():
    assert list(square.map(range(20))) == [x * x for x in range(20)]
    assert square.remote(7) == 49
    assert list(add.map([1, 2], [10, 20], kwargs={"scale": 3})) == [33, 66]
    assert list(add.starmap([(1, 2), (3, 4)])) == [3, 7]


def test_spawn_and_for_each():
    call = square.spawn(5)
    assert call.get(timeout=60) == 25
    assert nbscale.FunctionCall.from_id(call.object_id).get(timeout=10) == 25
    square.for_each(range(4))
    assert square.spawn_map([1, 2]).get(timeout=60, index=1) == 4


def test_pool_scales_up_and_down_in_squeue():
    call = hold.spawn_map([2] * 8)
    wait_until(lambda: len(pool_jobs("hold")) == 4, timeout=60)
    assert len(set(call.iter())) == 4  # four jobs did the work
    wait_until(lambda: not pool_jobs("hold"), timeout=60)  # scaled down: cancelled or drained


def test_a_gpu_request_beyond_the_two_devices_waits_on_resources_while_others_serve():
    call = on_gpu.spawn_map([3] * 6)

    def two_run_one_waits() -> bool:
        states = sorted((e.state, e.reason or "") for e in pool_jobs("on_gpu"))
        return states == [("PENDING", "Resources"), ("RUNNING", ""), ("RUNNING", "")]

    wait_until(two_run_one_waits, timeout=60)

    def shown_waiting() -> bool:  # as get_current_stats() and GET pools show the pool
        stats = on_gpu.get_current_stats()
        reasons = [w["waiting_reason"] for w in stats.workers if w["state"] == "waiting"]
        said = "1 waiting for resources (reason: Resources)" in stats.status
        return stats.containers["busy"] == 2 and reasons == ["Resources"] and said

    wait_until(shown_waiting, timeout=30)
    served_by = set(call.iter())
    running = {e.job_id for e in pool_jobs("on_gpu") if e.state == "RUNNING"}
    assert len(served_by) == 2 and (not running or served_by >= running)


def test_a_job_pending_past_the_pending_timeout_fails_the_call_naming_slurms_reason(
    fresh_plane,
):
    fresh_plane(NBSCALE_PENDING_TIMEOUT="4")
    holding = on_gpu.spawn_map([60, 60])
    wait_until(lambda: [e.state for e in pool_jobs("on_gpu")] == ["RUNNING"] * 2, timeout=60)
    started = time.monotonic()
    with pytest.raises(nbscale.LaunchError) as failed:
        gpu_late.remote(1)
    assert time.monotonic() - started >= 4
    message = str(failed.value)
    assert "waited 4 s for resources without starting" in message
    assert "reason: Resources" in message and "pending_timeout" in message
    wait_until(lambda: not pool_jobs("gpu_late"), timeout=20)  # its job was cancelled
    holding.cancel()


def test_a_busy_workers_job_cancelled_in_slurm_has_its_input_retried():
    call = slow.spawn(1)
    wait_until(lambda: slow.get_current_stats().num_running_inputs == 1, timeout=60)
    (busy,) = [e.job_id for e in pool_jobs("slow") if e.state == "RUNNING"]
    subprocess.run(["scancel", busy], check=True)
    assert call.get(timeout=60) == 2  # retried on a new job
    wait_until(lambda: busy not in {e.job_id for e in pool_jobs("slow")}, timeout=20)


def test_a_cancelled_job_is_named_in_the_error_with_its_last_lines_once():
    call = stuck.spawn(1)
    wait_until(lambda: stuck.get_current_stats().num_running_inputs == 1, timeout=60)
    (busy,) = [e.job_id for e in pool_jobs("stuck") if e.state == "RUNNING"]
    subprocess.run(["scancel", busy], check=True)
    with pytest.raises(nbscale.WorkerLostError) as lost:
        call.get(timeout=60)
    message = str(lost.value)
    assert f"was cancelled in Slurm (Slurm job {busy}: State=CANCELLED ExitCode=" in message
    assert "while running input 0 (attempt 1)" in message
    _, _, tail = message.partition("\nLast lines of the worker's output:\n")
    assert "stuck on input 1" in tail and f"JOB {busy}" in tail  # slurmstepd's CANCELLED line
    assert message.count("stuck on input 1") == 1 and message.count("State=CANCELLED") == 1
    assert lost.value.logs.strip() and lost.value.logs.rstrip() == tail
    # What the launcher says of this exit, for the queue to tell it from the user's failures.
    plane = _client._client.control_plane
    (worker_id,) = re.findall(r"worker (wk-\w+) was cancelled", message)
    assert plane.launcher.infrastructure_loss(plane.fleet.handle(worker_id))


def test_a_job_that_fails_before_registering_gives_slurms_words_and_its_output(fresh_plane):
    fresh_plane(NBSCALE_PYTHON="/nonexistent/python3")  # not a path the nodes have
    with pytest.raises(nbscale.LaunchError) as failed:
        square.remote(1)
    message = str(failed.value)
    assert "3 workers in a row failed to start" in message
    assert "State=FAILED ExitCode=127:0" in message  # Slurm's own words, once
    assert message.count("State=FAILED") == 1
    assert "before registering:" in message and "/nonexistent/python3" in message


@pytest.mark.timeout(180)
def test_the_walltime_signal_drains_a_worker_before_slurm_kills_it():
    first = short_lived.remote(1)  # a 1-minute job, told to drain 50 s before its end
    wait_until(lambda: first not in {e.job_id for e in nbscale_jobs()}, timeout=120, every=0.5)
    assert job_fields(first)["JobState"] == "COMPLETED"  # drained and exited: no TIMEOUT
    assert short_lived.remote(2) != first  # a new job took over


def test_a_wrong_partition_fails_the_call_naming_it():
    lost = square.with_options(slurm={"partition": "nosuchpartition"})
    with pytest.raises(nbscale.LaunchError, match="invalid partition specified: nosuchpartition"):
        lost.remote(1)


def test_every_interface_is_refused_unless_allowed(fresh_plane):
    fresh_plane(NBSCALE_WORKER_ADDRESS="0.0.0.0")
    with pytest.raises(nbscale.LaunchError, match="allow_all_interfaces"):
        square.remote(1)
    fresh_plane(NBSCALE_WORKER_ADDRESS="0.0.0.0", NBSCALE_ALLOW_ALL_INTERFACES="1")
    assert square.remote(2) == 4  # workers dial this host's own address
    endpoint = nbscale.status()["worker_endpoint"]
    assert not endpoint.startswith(("tcp://0.0.0.0", "tcp://127."))


def test_a_killed_control_plane_leaves_jobs_the_next_one_cancels(slurm_plane):
    script = textwrap.dedent("""
        import nbscale
        app = nbscale.App("crashing")
        @app.function(min_containers=2)
        def f(x):
            return x
        print(f.remote(1), flush=True)
        import time; time.sleep(600)
        """)
    with subprocess.Popen(
        [sys.executable, "-c", script], stdout=subprocess.PIPE, text=True
    ) as crashing:
        try:
            assert crashing.stdout.readline().strip() == "1"

            def theirs() -> set[str]:
                return {
                    e.job_id
                    for e in nbscale_jobs()
                    if JobComment.parse(e.comment).owner.startswith(f"{crashing.pid}:")
                }

            wait_until(lambda: len(theirs()) == 2, timeout=60)
            orphans = theirs()
        finally:
            crashing.send_signal(signal.SIGKILL)
    assert theirs() == orphans  # killed: nobody cancelled them
    nbscale.shutdown()
    assert square.remote(3) == 9  # a new control plane, which cancels them as it starts
    wait_until(lambda: not orphans & {e.job_id for e in nbscale_jobs()}, timeout=20)
