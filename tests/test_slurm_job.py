"""The pure parts of the Slurm launcher: sbatch command lines, GPU requests in Modal's syntax,
job comments, squeue/scontrol output and what a job's end means; and where remote workers
may reach the control plane. No Slurm needed (the real cluster: test_slurm_*.py)."""

from __future__ import annotations

from typing import Any

import psutil
import pytest

import nbscale
from nbscale_server.launchers.slurm_job import (
    JobComment,
    SlurmOptions,
    batch_script,
    gres_for,
    job_name,
    sbatch_command,
)
from nbscale_server.launchers.slurm_queue import (
    JobEnd,
    job_end,
    lost,
    parse_scontrol_job,
    parse_squeue,
)
from nbscale_server.losses import INFRASTRUCTURE, USER, cause_of_loss
from nbscale_server.options import FunctionOptions
from nbscale_server.remote import WorkerAddressError, dial_host, resolve_worker_address
from nbscale_server.settings import ControlPlaneConfig

COMMENT = JobComment("sv-1", "wk-2", "pl-3", "node7", "123:456.78")


def command(slurm: SlurmOptions | None = None, **options: Any) -> list[str]:
    function = FunctionOptions(**options)
    return sbatch_command(function, slurm or SlurmOptions(), "nbscale-f", COMMENT, "/s/wk-2.log")


def test_a_worker_job_asks_for_the_functions_resources():
    args = command(cpu=1.5, memory=2048, gpu="A100:2")
    assert args[:2] == ["sbatch", "--parsable"]
    assert "--cpus-per-task=2" in args  # rounded up: Slurm counts whole CPUs
    assert "--mem=2048M" in args
    assert "--gres=gpu:a100:2" in args
    assert "--signal=B:TERM@120" in args
    assert "--no-requeue" in args
    assert "--output=/s/wk-2.log" in args
    assert f"--comment={COMMENT}" in args
    assert not any(a.startswith(("--partition", "--time", "--account", "--qos")) for a in args)


def test_function_slurm_options_override_the_settings():
    settings = SlurmOptions(partition="cpu", account="lab", time="1:00:00", sbatch_args=("-x",))
    function = {"partition": "gpu", "qos": "high", "drain_seconds": 30, "sbatch_args": "-y 1"}
    options = nbscale.App("x").function(slurm=function)(lambda: None).options
    args = sbatch_command(options, settings, "nbscale-f", COMMENT, "/s/wk-2.log")
    assert "--partition=gpu" in args and "--account=lab" in args and "--qos=high" in args
    assert "--time=1:00:00" in args and "--signal=B:TERM@30" in args
    assert args[-3:] == ["-x", "-y", "1"]  # the function's after the setting's: they win


@pytest.mark.parametrize(
    ("gpu", "types", "gres"),
    [
        ("any", {}, "gpu:1"),
        ("any:3", {}, "gpu:3"),
        ("A100:2", {}, "gpu:a100:2"),
        ("A100-80GB", {}, "gpu:a100-80gb:1"),
        ("H100!", {}, "gpu:h100:1"),
        ("A100:2", {"A100": "fake"}, "gpu:fake:2"),
        ("a100", {"A100": "nvidia_a100"}, "gpu:nvidia_a100:1"),
        (["H100", "A100"], {}, "gpu:h100:1"),  # Slurm queues for one type: the first
        (None, {}, None),
    ],
)
def test_gpus_in_modal_syntax_become_gres(gpu, types, gres):
    assert gres_for(gpu, types) == gres


def test_bad_requests_are_refused_with_the_reason():
    with pytest.raises(ValueError, match="count"):
        gres_for("A100:0", {})
    app = nbscale.App("x")
    bad = {
        "walltime": {"time": "two hours"},
        "no key 'partiton'": {"partiton": "gpu"},
        "no key 'gpu_types'": {"gpu_types": {}},  # the cluster's: a setting only
        "without spaces": {"partition": "gpu a100"},
        "drain_seconds must be an int": {"drain_seconds": 1e9},
        "list of strings": {"sbatch_args": [1]},
        "takes a dict": "gpu",
    }
    for message, slurm in bad.items():
        with pytest.raises(nbscale.InvalidError, match=message):
            app.function(slurm=slurm)(lambda: None)
    f = app.function(slurm={"partition": "gpu"})(lambda: None)
    with pytest.raises(nbscale.InvalidError, match="walltime"):
        f.with_options(slurm={"time": "soon"})


def test_slurm_options_are_options_of_the_function():
    """They are validated once into FunctionOptions, travel in its wire form, and make the
    function's pool (another partition is another pool)."""
    f = nbscale.App("x").function(slurm={"partition": "gpu", "sbatch_args": ["--exclusive"]})(
        lambda: None
    )
    assert f.options.slurm_partition == "gpu" and f.options.slurm_sbatch_args == ("--exclusive",)
    assert FunctionOptions.from_wire(f.options.to_wire()) == f.options
    g = f.with_options(slurm={"time": "30"})  # the keys it names change; the others stay
    assert (g.options.slurm_partition, g.options.slurm_time) == ("gpu", "30")
    gpu, cpu = FunctionOptions(slurm_partition="gpu"), FunctionOptions(slurm_partition="cpu")
    assert gpu.pool_id("fn-1") != cpu.pool_id("fn-1") != FunctionOptions().pool_id("fn-1")


def test_settings_are_read_from_the_control_plane_config():
    options = SlurmOptions.from_settings(
        ControlPlaneConfig(
            slurm_partition="gpu",
            slurm_gpu_types="A100=a100, H100=h100",
            slurm_sbatch_args="--constraint=ib --exclusive",
            slurm_time=None,
            slurm_drain_seconds=60,
        )
    )
    assert options == SlurmOptions(
        partition="gpu",
        gpu_types={"A100": "a100", "H100": "h100"},
        sbatch_args=("--constraint=ib", "--exclusive"),
        drain_seconds=60,
    )
    assert SlurmOptions.from_settings(ControlPlaneConfig()) == SlurmOptions()
    with pytest.raises(ValueError, match=r"slurm_gpu_types: .*NAME=TYPE"):
        SlurmOptions.from_settings(ControlPlaneConfig(slurm_gpu_types="A100"))
    with pytest.raises(ValueError, match=r"slurm_drain_seconds: .*0\.\.65535"):
        SlurmOptions.from_settings(ControlPlaneConfig(slurm_drain_seconds=70000))


def test_the_batch_script_names_the_config_file_and_no_secret():
    script = batch_script("/shared/env/bin/python", "/shared/jobs/sv-1/wk-2.json")
    assert script.splitlines()[-1] == (
        "exec /shared/env/bin/python -m nbscale_runtime --config /shared/jobs/sv-1/wk-2.json"
    )
    assert "'/a b/python'" in batch_script("/a b/python", "/c")  # quoted for the shell


def test_job_names_and_comments():
    assert job_name("evaluate_model") == "nbscale-evaluate_model"
    assert job_name("<lambda>") == "nbscale-lambda"
    assert JobComment.parse(str(COMMENT)) == COMMENT
    assert JobComment.parse("someone else's job") is None
    assert JobComment.parse("nbscale;server=sv-1") is None


def test_squeue_and_scontrol_output_is_read():
    entries = parse_squeue(f"12|PENDING|Resources|{COMMENT}\n13|RUNNING|None|(null)\n")
    assert entries["12"].phase == "pending" and entries["12"].reason == "Resources"
    assert entries["13"].phase == "running" and entries["13"].reason is None
    assert JobComment.parse(entries["12"].comment) == COMMENT
    fields = parse_scontrol_job(
        "JobId=12 JobName=x JobState=TIMEOUT Reason=TimeLimit ExitCode=0:15"
    )
    assert fields == {"JobState": "TIMEOUT", "Reason": "TimeLimit", "ExitCode": "0:15"}


def test_job_ends_say_whose_doing_they_were():
    """The control plane's one notion of blame (``losses``): what the cluster did to a job is
    the infrastructure's; out of memory and an error exit are the user's; a signal is judged
    by the signal, as for a local process; our own cancel and a completion say nothing."""
    assert job_end("1", "COMPLETED", "0:0", None, ours=False) == JobEnd(0, None, None)
    timeout = job_end("2", "TIMEOUT", "0:15", "TimeLimit", ours=False)
    assert timeout.cause == INFRASTRUCTURE and timeout.code == -15
    assert (
        timeout.reason
        == "reached its walltime (Slurm job 2: State=TIMEOUT ExitCode=0:15 Reason=TimeLimit)"
    )
    failed = job_end("3", "FAILED", "1:0", "NonZeroExitCode", ours=False)
    assert failed.code == 1 and failed.cause == USER
    assert "State=FAILED ExitCode=1:0 Reason=NonZeroExitCode" in (failed.reason or "")
    segfault = job_end("3", "FAILED", "0:11", None, ours=False)
    assert segfault.code == -11 and segfault.cause is None  # SIGSEGV: cause_of_loss decides
    admin = job_end("4", "CANCELLED", "0:15", None, ours=False)  # an admin's scancel
    assert admin.cause == INFRASTRUCTURE and admin.code == -15
    assert job_end("4", "CANCELLED", "0:0", None, ours=True) == JobEnd(-15, None, None)
    for state in ("PREEMPTED", "NODE_FAIL", "BOOT_FAIL", "DEADLINE"):
        assert job_end("5", state, "0:0", None, ours=False).cause == INFRASTRUCTURE
    oom = job_end("6", "OUT_OF_MEMORY", "0:125", None, ours=False)
    assert "ran out of memory" in (oom.reason or "") and oom.cause == USER
    assert lost("7").cause == INFRASTRUCTURE and "Slurm job 7" in (lost("7").reason or "")
    # and the losses core charges them so
    assert cause_of_loss(failed.cause, False, None, 0) == USER
    assert cause_of_loss(job_end("8", "PREEMPTED", "0:9", None, False).cause, False, 9, 0) == (
        INFRASTRUCTURE
    )


def test_worker_address_is_loopback_an_interface_or_a_host_never_all_unasked():
    assert resolve_worker_address("127.0.0.1") == "127.0.0.1"
    assert resolve_worker_address("lo") == "127.0.0.1"  # an interface's name
    assert resolve_worker_address("localhost") in ("127.0.0.1", "::1")
    assert resolve_worker_address("[::1]") == "::1"
    for everywhere in ("0.0.0.0", "::", "*"):
        with pytest.raises(WorkerAddressError, match="allow_all_interfaces"):
            resolve_worker_address(everywhere)
    assert resolve_worker_address("0.0.0.0", allow_all_interfaces=True) == "0.0.0.0"
    with pytest.raises(WorkerAddressError, match="neither an IP address"):
        resolve_worker_address("no-such-host.invalid")
    assert dial_host("::1") == "[::1]"
    everywhere = dial_host("0.0.0.0")  # this host's own address, one the nodes can dial
    assert everywhere != "0.0.0.0" and not everywhere.startswith("127.")
    assert everywhere in {a.address for addrs in psutil.net_if_addrs().values() for a in addrs}


def test_server_traits_and_client_settings_reach_the_control_plane(monkeypatch):
    from nbscale import _config
    from nbscale_server.extension import NbScale

    server = NbScale(
        launcher="slurm",
        worker_address="lo",
        shared_dir="/shared/jobs",
        slurm_partition="gpu",
        slurm_gpu_types="A100=a100",
        slurm_sbatch_args="--constraint=ib",
    ).control_plane_config()
    assert (server.launcher, server.worker_address, server.shared_dir) == (
        "slurm",
        "lo",
        "/shared/jobs",
    )
    assert SlurmOptions.from_settings(server) == SlurmOptions(
        partition="gpu", gpu_types={"A100": "a100"}, sbatch_args=("--constraint=ib",)
    )
    monkeypatch.setenv("NBSCALE_LAUNCHER", "slurm")
    monkeypatch.setenv("NBSCALE_SLURM_TIME", "2:00:00")
    monkeypatch.setenv("NBSCALE_ALLOW_ALL_INTERFACES", "yes")
    client = _config.control_plane_config()
    assert client.launcher == "slurm" and client.slurm_time == "2:00:00"
    assert client.allow_all_interfaces is True
    monkeypatch.setenv("NBSCALE_ALLOW_ALL_INTERFACES", "perhaps")
    with pytest.raises(nbscale.InvalidError, match=r"NBSCALE_ALLOW_ALL_INTERFACES.*true or false"):
        _config.control_plane_config()
