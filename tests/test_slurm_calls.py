"""Every call style on Slurm workers (NBSCALE_LAUNCHER=slurm, a fresh embedded control plane),
autoscaling seen in ``squeue``, GPU jobs waiting on Resources while others serve, jobs
cancelled under a busy worker, the walltime signal draining a worker, a wrong partition, and
a killed control plane's jobs cancelled by the next one. Nothing is left in the queue."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import textwrap
import time

import cloudpickle
import nested_app
import pytest
from conftest import wait_until
from slurm_cluster import job_fields, nbscale_jobs

import nbscale
from nbscale import _client, _pools
from nbscale_server.launchers.slurm_job import JobComment
from nbscale_server.launchers.slurm_queue import QueueEntry
from nbscale_server.losses import INFRASTRUCTURE, MAX_INFRASTRUCTURE_LOSSES

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
def shout(x):
    print(f"hello {x}")
    if x == 3:
        raise ValueError(f"no {x}")
    return x


@app.function(max_containers=1, scaledown_window=5)
@nbscale.concurrent(max_inputs=4)
async def nap(seconds):
    start = time.time()
    await asyncio.sleep(seconds)
    return os.environ["SLURM_JOB_ID"], start, time.time()


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


@app.function(max_containers=1, scaledown_window=5, retries=0)
def slow(path, x):
    first = not os.path.exists(path)
    with open(path, "a") as f:
        f.write(os.environ["SLURM_JOB_ID"] + "\n")
    if first:
        time.sleep(60)  # past Slurm's KillWait: a scancel kills it before it is done
    return x + 1


@app.function(max_containers=1, scaledown_window=5, retries=0)
def exits_at_three(path, x):
    if x == 3:
        with open(path, "a") as f:
            f.write("crash\n")
        os._exit(3)  # the job FAILS with ExitCode 3:0: the user's loss
    return x


@app.function(max_containers=1, scaledown_window=5)
def stuck(path, x):
    os.write(2, f"stuck on input {x}\n".encode())  # below the per-input capture: the job's file
    with open(path, "a") as f:
        f.write(os.environ["SLURM_JOB_ID"] + "\n")
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


def test_aio_twins_unordered_printed_failing_and_concurrent_async_calls(capsys):
    async def main():
        assert await square.remote.aio(6) == 36
        assert [x async for x in square.map.aio(range(4))] == [0, 1, 4, 9]
        assert await add.starmap.aio([(1, 1)]) == [2]
        call = await square.spawn_map.aio(range(3))
        found = await nbscale.FunctionCall.from_id.aio(call.object_id)
        assert await found.get.aio(timeout=60, index=2) == 4

    asyncio.run(main())
    assert sorted(square.map(range(6), order_outputs=False)) == [0, 1, 4, 9, 16, 25]
    results = list(shout.map(range(5), return_exceptions=True))
    assert results[:3] + results[4:] == [0, 1, 2, 4]
    assert isinstance(results[3], ValueError) and "no 3" in str(results[3])
    out = capsys.readouterr().out
    assert all(f"[{i}] hello {i}" in out for i in range(5))  # printed here, with its index
    naps = list(nap.map([2.0] * 4))
    assert len({job_id for job_id, *_ in naps}) == 1
    assert max(start for _, start, _ in naps) < min(end for *_, end in naps)  # at once


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


def test_a_busy_workers_job_cancelled_in_slurm_is_retried_free_of_its_retries(tmp_path):
    path = tmp_path / "jobs"  # each job that runs the input writes its id there
    call = slow.spawn(str(path), 1)  # retries=0: an admin's scancel must not cost its attempt
    wait_until(lambda: path.exists() and path.read_text(), timeout=60)
    busy = path.read_text().split()[0]
    subprocess.run(["scancel", busy], check=True)
    assert call.get(timeout=60) == 2  # retried on a new job
    assert len(ran := path.read_text().split()) == 2 and ran[1] != busy
    wait_until(lambda: busy not in {e.job_id for e in pool_jobs("slow")}, timeout=20)
    (pool,) = [p for p in nbscale.status()["pools"] if p["function"] == "slow"]
    said = [e["message"] for e in pool["events"] if "while running input(s) 0" in e["message"]]
    assert len(said) == 1 and "was cancelled in Slurm" in said[0]
    assert "(infrastructure's loss)" in said[0]


def test_slurm_workers_keep_a_register_in_the_shared_dir_and_blame_exactly(tmp_path):
    """A worker whose job fails with an exit code (the user's doing) fails only the input it
    was running, by its register in the shared directory; inputs it had only queued, and
    those done, are not touched, and retries=0 means one crash."""
    path = tmp_path / "crashes"
    job_dir = _client._client.control_plane.launcher.worker_config_dir() or "?"
    results = iter(exits_at_three.map([str(path)] * 8, range(8), return_exceptions=True))
    first = next(results)
    wait_until(lambda: any(n.endswith(".register") for n in os.listdir(job_dir)), timeout=30)
    results = [first, *results]
    error = results[3]
    assert isinstance(error, nbscale.WorkerLostError), results
    assert "while running input 3" in str(error) and "State=FAILED ExitCode=3:0" in str(error)
    assert "counted against the function's retries" in str(error)
    assert results[:3] + results[4:] == [0, 1, 2, 4, 5, 6, 7]
    assert path.read_text().count("crash") == 1


def test_a_job_cancelled_in_slurm_again_and_again_fails_naming_slurm_with_its_last_lines(
    tmp_path,
):
    """Losses to the infrastructure are free, but not endless: the third in a row for one
    input fails it with WorkerLostError naming Slurm's reason."""
    path = tmp_path / "jobs"  # each job that runs the input writes its id there
    call = stuck.spawn(str(path), 1)
    cancelled: list[str] = []
    for losses in range(1, MAX_INFRASTRUCTURE_LOSSES + 1):
        wait_until(lambda n=losses: path.exists() and len(path.read_text().split()) == n)
        busy = path.read_text().split()[-1]
        subprocess.run(["scancel", busy], check=True)
        cancelled.append(busy)
    with pytest.raises(nbscale.WorkerLostError) as lost:
        call.get(timeout=60)
    last = cancelled[-1]
    message = str(lost.value)
    assert f"was cancelled in Slurm (Slurm job {last}: State=CANCELLED ExitCode=" in message
    assert f"while running input 0 (attempt {MAX_INFRASTRUCTURE_LOSSES};" in message
    assert f"lost to the infrastructure {MAX_INFRASTRUCTURE_LOSSES} time(s) in a row" in message
    assert "not counted against the function's retries" in message
    _, _, tail = message.partition("\nLast lines of the worker's output:\n")
    assert "stuck on input 1" in tail and f"JOB {last}" in tail  # slurmstepd's CANCELLED line
    assert message.count("stuck on input 1") == 1 and message.count("State=CANCELLED") == 1
    assert lost.value.logs.strip() and lost.value.logs.rstrip() == tail
    # What the launcher says of this exit, for the losses core to tell it from the user's.
    plane = _client._client.control_plane
    (worker_id,) = re.findall(r"worker (wk-\w+) was cancelled", message)
    assert plane.launcher.exit_cause(plane.fleet.handle(worker_id)) == INFRASTRUCTURE


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


def orphaned_jobs(workers: int, **env: str) -> set[str]:
    """The jobs of ``workers`` warm workers of a control plane (a script's) SIGKILLed once
    they served."""
    script = textwrap.dedent(f"""
        import nbscale
        app = nbscale.App("crashing")
        @app.function(min_containers={workers})
        def f(x):
            return x
        print(f.remote(1), flush=True)
        import time; time.sleep(600)
        """)
    with subprocess.Popen(
        [sys.executable, "-c", script], stdout=subprocess.PIPE, text=True, env={**os.environ, **env}
    ) as crashing:
        try:
            assert crashing.stdout.readline().strip() == "1"

            def theirs() -> set[str]:
                return {
                    e.job_id
                    for e in nbscale_jobs()
                    if JobComment.parse(e.comment).owner.startswith(f"{crashing.pid}:")
                }

            wait_until(lambda: len(theirs()) == workers, timeout=60)
            return theirs()
        finally:
            crashing.send_signal(signal.SIGKILL)


def test_a_killed_control_plane_leaves_jobs_the_next_one_cancels(slurm_plane):
    orphans = orphaned_jobs(2)
    assert orphans <= {e.job_id for e in nbscale_jobs()}  # killed: nobody cancelled them
    nbscale.shutdown()
    assert square.remote(3) == 9  # a new control plane, which cancels them as it starts
    wait_until(lambda: not orphans & {e.job_id for e in nbscale_jobs()}, timeout=20)


def test_a_killed_control_plane_s_workers_leave_by_themselves(slurm_plane):
    """No successor needed: its workers hear nothing back for heartbeat_timeout and exit."""
    orphans = orphaned_jobs(1, NBSCALE_HEARTBEAT_TIMEOUT="3")
    wait_until(lambda: not orphans & {e.job_id for e in nbscale_jobs()}, timeout=60)
    assert {job_fields(j)["JobState"] for j in orphans} == {"COMPLETED"}  # they left cleanly
    nbscale.shutdown()
    assert square.remote(4) == 16  # the next control plane removes the dead one's directory


def test_code_on_a_slurm_job_calls_functions():
    """A nested call from a Slurm job reaches the control plane that runs it (over its own
    link) and runs on another job of the callee's pool; a fan-out three levels deep."""
    cloudpickle.register_pickle_by_value(nested_app)
    try:
        nested_app.check_nested_remote()
        nested_app.check_recursive_fan_out()
    finally:
        cloudpickle.unregister_pickle_by_value(nested_app)
