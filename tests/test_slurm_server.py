"""Waiting is not failing, end to end on the real cluster through a Jupyter server: a GPU
job beyond the cluster's two devices waits on Resources while others hold them, and the
REST API (``GET pools``, what the sidebar shows), ``get_current_stats()`` and the pool's
status say so with Slurm's reason; it outlives the startup timeout, and it runs and serves
once a GPU frees."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from typing import Any

import cloudpickle
import pytest
from slurm_cluster import nbscale_jobs
from test_server_api import conforms, eventually

import nbscale
from nbscale_server.launchers.slurm_job import JobComment

pytestmark = pytest.mark.slurm

cloudpickle.register_pickle_by_value(sys.modules[__name__])  # sent by value, as in notebooks

app = nbscale.App("test-slurm-server")
STARTUP_TIMEOUT = 6.0


@app.function(gpu="any", max_containers=2, scaledown_window=1)
def gpu_holder(seconds: float) -> str:
    time.sleep(seconds)
    return os.environ["SLURM_JOB_ID"]


@app.function(gpu="any", max_containers=1, scaledown_window=1)
def gpu_late(x: int) -> str:
    return os.environ["SLURM_JOB_ID"]


@pytest.fixture
def jp_server_config(slurm_cluster: str, tmp_path: Any) -> dict[str, Any]:
    """The Jupyter server's control plane runs Slurm workers, with a short startup timeout."""
    return {
        "ServerApp": {
            "jpserver_extensions": {"nbscale_server": True, "jupyter_server_terminals": False},
            "allow_unauthenticated_access": False,
            "reraise_server_extension_failures": True,
        },
        "NbScale": {
            "heartbeat_interval": 0.5,
            "launcher": "slurm",
            "shared_dir": str(tmp_path / "shared"),
            "startup_timeout": STARTUP_TIMEOUT,
        },
    }


def jobs_of(function: str, pools: list[dict[str, Any]]) -> dict[str, str]:
    """``function``'s jobs in Slurm's queue: job id -> state."""
    ids = {p["id"] for p in pools if p["function"] == function}
    found = {}
    for entry in nbscale_jobs():
        comment = JobComment.parse(entry.comment)
        if comment is not None and comment.pool_id in ids:
            found[entry.job_id] = entry.state
    return found


@pytest.mark.timeout(180)
async def test_a_gpu_job_beyond_the_devices_waits_on_resources_then_runs(jp_fetch, nbscale_ext):
    async def pools() -> list[dict[str, Any]]:
        return json.loads((await jp_fetch("nbscale", "api", "pools")).body)

    holding = await asyncio.to_thread(gpu_holder.spawn_map, [25, 25])

    async def both_gpus_held() -> bool:
        return sorted(jobs_of("gpu_holder", await pools()).values()) == ["RUNNING", "RUNNING"]

    await eventually(both_gpus_held, timeout=60)
    late = await asyncio.to_thread(gpu_late.spawn, 1)

    async def waiting_pool() -> dict[str, Any] | None:
        pool = next((p for p in await pools() if p["function"] == "gpu_late"), None)
        if pool and pool["workers"] and pool["workers"][0]["waiting_reason"] == "Resources":
            return pool
        return None

    pool = conforms(await eventually(waiting_pool, timeout=30), "IPool")
    assert pool["containers"]["waiting"] == 1 and pool["workers"][0]["state"] == "waiting"
    assert pool["status"].endswith("1 waiting for resources (reason: Resources)")
    stats = await asyncio.to_thread(gpu_late.get_current_stats)
    assert stats.containers["waiting"] == 1 and stats.num_total_runners == 1
    assert "1 waiting for resources (reason: Resources)" in stats.status
    ((job_id, state),) = jobs_of("gpu_late", await pools()).items()
    assert state == "PENDING"

    await asyncio.sleep(STARTUP_TIMEOUT + 3)  # past the startup timeout, still queued
    assert jobs_of("gpu_late", await pools()) == {job_id: "PENDING"}  # not killed
    assert (await waiting_pool()) is not None

    # The holders finish and scale down: a GPU frees, the job runs and serves its input.
    assert await asyncio.to_thread(late.get, timeout=120) == job_id
    assert len(set(await asyncio.to_thread(lambda: list(holding.iter())))) == 2
