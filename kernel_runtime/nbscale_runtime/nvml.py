"""The GPUs a worker sees, and how busy they are, through NVML.

nvidia-ml-py is optional: without it, or without a driver, a worker simply has no GPUs.
Only the GPUs nbscale assigned to the worker count: a container sees no others, and a local
process is told its own by ``CUDA_VISIBLE_DEVICES`` (which NVML ignores, so it is applied
here too). The worker reports the inventory once (``Register.gpus``) and a sample with every
heartbeat (``Heartbeat.stats``); NVML's utilisation is itself an average over its last
sampling period, so once a heartbeat is often enough.
"""

from __future__ import annotations

import functools
import os
import sys
from typing import Any

# What pynvml's nvmlInit loads outside Windows (``_LoadNvmlLibrary``).
_LIBRARY = "libnvidia-ml.so.1"


@functools.cache  # the zygote's answer, inherited by every worker it forks (0.2 ms each)
def library_present() -> bool:
    """Whether NVML's library loads: without it nvmlInit fails, so a host without NVIDIA's
    driver skips importing pynvml (~8 ms of every worker's start, and of the zygote's).
    Asked once per process: the loader's search path is fixed at the interpreter's start."""
    if sys.platform.startswith("win"):
        return True  # pynvml looks in two places there: let it
    import ctypes  # here: ``segments.py`` has it imported already in a worker

    try:
        ctypes.CDLL(_LIBRARY)
    except OSError:
        return False
    return True


def cuda_visible(value: str | None, index: int, uuid: str) -> bool:
    """Whether ``CUDA_VISIBLE_DEVICES=value`` lets CUDA see GPU ``index``/``uuid``: unset
    means every GPU, and each comma-separated entry is an index or a UUID."""
    if value is None:
        return True
    entries = {e.strip() for e in value.split(",") if e.strip()}
    return str(index) in entries or uuid in entries


class GpuMonitor:
    """Opens NVML once; every method returns nothing when there is no NVML or no GPU."""

    def __init__(self, nvml: Any = None, cuda_visible_devices: str | None = None) -> None:
        """``cuda_visible_devices``: default, the environment's ``CUDA_VISIBLE_DEVICES``."""
        self._nvml = nvml
        self._handles: list[Any] = []
        if cuda_visible_devices is None:
            cuda_visible_devices = os.environ.get("CUDA_VISIBLE_DEVICES")
        if nvml is None:
            if not library_present():
                return
            try:
                import pynvml  # type: ignore[import-not-found]
            except ImportError:
                return
            self._nvml = pynvml
        try:
            self._nvml.nvmlInit()
            count = self._nvml.nvmlDeviceGetCount()
            handles = [self._nvml.nvmlDeviceGetHandleByIndex(i) for i in range(count)]
            self._handles = [
                h
                for i, h in enumerate(handles)
                if cuda_visible(cuda_visible_devices, i, self._nvml.nvmlDeviceGetUUID(h))
            ]
        except Exception:  # no driver, no device, or a driver NVML cannot talk to
            self._handles = []

    def inventory(self) -> list[dict[str, Any]]:
        """One dict per GPU: index, uuid, name, memory_total (bytes)."""
        nvml = self._nvml
        return [
            {
                "index": i,
                "uuid": nvml.nvmlDeviceGetUUID(h),
                "name": nvml.nvmlDeviceGetName(h),
                "memory_total": int(nvml.nvmlDeviceGetMemoryInfo(h).total),
            }
            for i, h in enumerate(self._handles)
        ]

    def sample(self) -> dict[str, Any]:
        """``{"gpus": [{"uuid", "utilization", "memory_used", "memory_total"}, ...]}``, or
        ``{}`` without GPUs; utilisation is in percent."""
        if not self._handles:
            return {}
        nvml = self._nvml
        gpus = []
        for h in self._handles:
            try:
                memory = nvml.nvmlDeviceGetMemoryInfo(h)
                gpus.append(
                    {
                        "uuid": nvml.nvmlDeviceGetUUID(h),
                        "utilization": int(nvml.nvmlDeviceGetUtilizationRates(h).gpu),
                        "memory_used": int(memory.used),
                        "memory_total": int(memory.total),
                    }
                )
            except Exception:  # a GPU that fell off the bus must not stop the heartbeat
                continue
        return {"gpus": gpus}
