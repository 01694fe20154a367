"""A CUDA function on a real GPU, through worker processes of the embedded control plane.

Skipped, saying so, on a machine without an NVIDIA GPU (CI has none); run where one is:
``python -m pytest tests/test_gpu_hardware.py``. Needs nvidia-ml-py, and PyTorch for the
CUDA work.
"""

from __future__ import annotations

import os

import pytest
from conftest import wait_until

import nbscale
from nbscale_server.gpus import GpuError, discover

try:
    GPUS, WHY_NONE = discover(), "NVML found none"
except GpuError as exc:
    GPUS, WHY_NONE = [], str(exc)
pytestmark = pytest.mark.skipif(not GPUS, reason=f"this machine has no usable GPU: {WHY_NONE}")

app = nbscale.App("test-gpu-hardware")


@app.function(gpu="any", max_containers=1, scaledown_window=5)
def cuda_work(n):
    import torch

    a = torch.arange(n * n, dtype=torch.float32, device="cuda").reshape(n, n) / (n * n)
    product = a @ a.T
    torch.cuda.synchronize()
    return {
        "visible": os.environ["CUDA_VISIBLE_DEVICES"],
        "count": torch.cuda.device_count(),
        "name": torch.cuda.get_device_name(0),
        "trace": float(product.trace()),
        "pid": os.getpid(),
    }


@app.function(max_containers=1)
def cpu_only(_):
    import torch

    return torch.cuda.is_available()


@app.function(gpu=f"any:{len(GPUS) + 1}")
def more_gpus_than_the_host_has(x):
    return x


@pytest.fixture(autouse=True, scope="module")
def process_workers():
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("NBSCALE_LAUNCHER", "process")
        nbscale.shutdown()
        yield
        nbscale.shutdown()


def test_a_gpu_function_runs_cuda_on_the_gpu_it_was_given():
    pytest.importorskip("torch", reason="the CUDA work here is PyTorch's")
    results = list(cuda_work.map([64, 128, 256]))
    expected = []
    for n in (64, 128, 256):  # the same sum on the CPU, in float64
        values = [i / (n * n) for i in range(n * n)]
        expected.append(sum(v * v for v in values))
    for result, want in zip(results, expected, strict=True):
        assert result["count"] == 1  # this worker sees its own GPU, no other
        assert result["visible"] == GPUS[0].uuid
        assert result["name"] == GPUS[0].name
        assert result["trace"] == pytest.approx(want, rel=1e-3)
    # The worker reports its GPU in its registration and its heartbeats.
    wait_until(
        lambda: any(w.get("stats", {}).get("gpus") for w in cuda_work.get_current_stats().workers)
    )
    (worker,) = cuda_work.get_current_stats().workers
    assert [g["uuid"] for g in worker["gpus"]] == [GPUS[0].uuid]
    (sample,) = worker["stats"]["gpus"]
    assert sample["memory_total"] == GPUS[0].memory_total
    assert 0 < sample["memory_used"] <= sample["memory_total"]


def test_a_function_without_gpu_sees_no_gpu():
    pytest.importorskip("torch", reason="the CUDA check here is PyTorch's")
    assert cpu_only.remote(0) is False


def test_asking_for_more_gpus_than_the_host_has_says_so():
    with pytest.raises(nbscale.exceptions.LaunchError, match="not enough free GPUs"):
        more_gpus_than_the_host_has.remote(1)
