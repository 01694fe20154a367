"""GPUs for worker processes, observed on real workers of the embedded control plane.

This host has no GPU, so NVML's inventory is stood in for (two H100s); everything else is
real: the launcher assigns by UUID through CUDA_VISIBLE_DEVICES, the worker processes see
it, and the autoscaler meets the GPU cap. tests/test_gpu_hardware.py runs a CUDA function
where a GPU exists.
"""

from __future__ import annotations

import os
import time

import pytest
from conftest import wait_until

import nbscale
from nbscale_server.gpus import GpuInfo

H100S = [
    GpuInfo(0, "GPU-11111111-aaaa", "NVIDIA H100 80GB HBM3", 80 * 2**30),
    GpuInfo(1, "GPU-22222222-bbbb", "NVIDIA H100 80GB HBM3", 80 * 2**30),
]

app = nbscale.App("test-process-gpus")


@app.function(gpu="H100", max_containers=3, scaledown_window=2)
def visible_gpus(x):
    time.sleep(0.3)  # long enough for the pool to try its third worker
    return os.getpid(), os.environ["CUDA_VISIBLE_DEVICES"]


@app.function(gpu="A100")
def wants_an_a100(x):
    return x


@app.function(max_containers=1)
def no_gpu(x):
    return os.environ.get("CUDA_VISIBLE_DEVICES")


@pytest.fixture(autouse=True)
def two_h100s(fresh_plane, monkeypatch):
    monkeypatch.setattr("nbscale_server.gpus.discover", lambda: list(H100S))
    fresh_plane(NBSCALE_LAUNCHER="process")


def test_each_worker_sees_only_its_own_gpu_and_the_pool_is_capped_by_gpus():
    call = visible_gpus.spawn_map(range(12))
    wait_until(
        lambda: (
            "not enough free GPUs: 1 requested, 0 free" in visible_gpus.get_current_stats().status
        )
    )
    assert visible_gpus.get_current_stats().num_total_runners == 2
    results = list(call.iter())
    assert len(results) == 12  # nothing lost although a third worker found no GPU
    by_worker = dict(results)
    assert sorted(by_worker.values()) == sorted(g.uuid for g in H100S)  # never shared


def test_a_function_without_gpu_sees_none():
    assert no_gpu.remote(0) == ""


def test_a_gpu_this_host_lacks_is_a_clear_error_at_once():
    # Waiting cannot bring an A100: no launch backoff (it took 3 s), for the next call too.
    for _ in range(2):
        started = time.monotonic()
        with pytest.raises(
            nbscale.exceptions.LaunchError,
            match=r"^wants_an_a100: cannot start a worker: no GPU matches 'A100' "
            r"\(found: 2 x H100\)$",
        ):
            wants_an_a100.remote(1)
        assert time.monotonic() - started < 2.5  # the backoff alone was 1 + 2 s


def test_a_host_without_gpus_says_so_at_once(monkeypatch):
    monkeypatch.setattr("nbscale_server.gpus.discover", lambda: [])
    with pytest.raises(
        nbscale.exceptions.LaunchError,
        match=r"cannot start a worker: no NVIDIA GPU on this host \(NVML found none\)$",
    ):
        wants_an_a100.remote(1)
