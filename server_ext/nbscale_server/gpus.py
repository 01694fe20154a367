"""GPU requests in Modal's syntax, matched against the GPUs of this host.

A request is what ``@app.function(gpu=...)`` says: ``"any"``, a type (``"A100"``,
``"A100-80GB"``, ``"H100!"``, ``"B200+"``, or any name NVML reports, such as ``"RTX-4090"``),
optionally a count (``"H100:2"``), or a list of such strings tried in order (fallbacks).
The core is pure: :func:`parse_gpu` reads a request, :func:`choose` picks GPU UUIDs from an
inventory minus the ones already taken, and every refusal is a :class:`GpuError` whose text
says what to do. :func:`discover` is the thin NVML part (nvidia-ml-py, a base
dependency), which takes the NVML module as an argument so tests can hand it a fake.

nbscale assigns GPUs itself, by UUID (:class:`GpuAllocator`), so two workers never share
one: Docker keeps no allocation state, CUDA none across processes, and ``count=1`` requests
would all land on GPU 0.
"""

from __future__ import annotations

import os
import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from nbscale_runtime.nvml import cuda_visible

# Modal's types. A plain type may be served by a better GPU of the same family, as on Modal:
# "H100" by an H200 too ("H100!" pins it), "B200+" by a B300.
_UPGRADES = {"H100": ("H100", "H200"), "B200+": ("B200", "B300")}
_A100_80GB_MIN_BYTES = 60 * 1024**3  # an A100 with more memory than this is the 80 GB model


class GpuError(Exception):
    """Raised when a GPU request cannot be read or served on this host; ``lasting`` when
    waiting cannot help (no driver, no GPU, none of the kind asked for), as opposed to too
    few GPUs free now."""

    def __init__(self, message: str, lasting: bool = True) -> None:
        super().__init__(message)
        self.lasting = lasting


@dataclass(frozen=True, slots=True)
class GpuInfo:
    """One GPU as NVML reports it."""

    index: int
    uuid: str
    name: str  # "NVIDIA A100-SXM4-80GB"
    memory_total: int  # bytes

    @property
    def model(self) -> str:
        """The short name Modal would use: "A100-80GB", "H100", "T4", ..."""
        words = _words(self.name)
        for family in ("B300", "B200", "H200", "H100", "A100", "L40S", "A10", "L4", "T4"):
            if _has_word(words, family):
                if family == "A100":
                    big = self.memory_total >= _A100_80GB_MIN_BYTES
                    return "A100-80GB" if big else "A100-40GB"
                return family
        return words.removeprefix("NVIDIA-").removeprefix("TESLA-")


@dataclass(frozen=True, slots=True)
class GpuRequest:
    """One alternative of a request: ``count`` GPUs of ``kind`` ("ANY" for any GPU)."""

    kind: str
    count: int = 1

    def __str__(self) -> str:
        return self.kind.lower() if self.kind == "ANY" else self.kind

    def matches(self, gpu: GpuInfo) -> bool:
        if self.kind == "ANY":
            return True
        model = gpu.model
        if self.kind.endswith("!"):  # exactly this type, never an upgrade
            return model == self.kind[:-1] or _has_word(_words(gpu.name), self.kind[:-1])
        if self.kind in _UPGRADES:
            return model in _UPGRADES[self.kind]
        if self.kind in ("A100-40GB", "A100-80GB"):
            return model == self.kind
        if model == self.kind or model.startswith(self.kind + "-"):
            return True
        return _has_word(_words(gpu.name), self.kind)


def _words(name: str) -> str:
    """NVML's name in one spelling: upper case, words joined by dashes."""
    return re.sub(r"[\s_-]+", "-", name.strip().upper())


def _has_word(words: str, token: str) -> bool:
    """Whether ``token`` is a whole word sequence of ``words`` ("A10" is in "A10G", not in
    "A100"; "L4" is not in "L40S")."""
    return re.search(rf"(?<![A-Z0-9]){re.escape(token)}(?![0-9])", words) is not None


def parse_gpu(spec: str | Iterable[str] | None) -> list[GpuRequest]:
    """``"H100:2"`` or ``["h100", "a100", "any"]`` as requests in preference order; ``None``
    (no GPU) as an empty list."""
    if spec is None:
        return []
    items = [spec] if isinstance(spec, str) else list(spec)
    if not items:
        raise GpuError("gpu= got an empty list: give a type such as 'any' or 'A100:2'")
    requests = []
    for item in items:
        if not isinstance(item, str) or not item.strip():
            raise GpuError(f"gpu= takes strings such as 'any' or 'H100:2', got {item!r}")
        kind, _, count_text = item.strip().partition(":")
        kind = _words(kind)
        if not re.fullmatch(r"[A-Z0-9][A-Z0-9.-]*[!+]?", kind):
            raise GpuError(f"gpu={item!r}: not a GPU type (try 'any', 'A100' or 'H100:2')")
        count = 1
        if count_text:
            if not count_text.isdigit() or int(count_text) < 1:
                raise GpuError(f"gpu={item!r}: the count after ':' must be an integer >= 1")
            count = int(count_text)
        requests.append(GpuRequest(kind, count))
    return requests


def describe(gpus: Iterable[GpuInfo]) -> str:
    """``"2 x A100-80GB, 1 x T4"``, or ``"no GPUs"``."""
    counts = Counter(g.model for g in gpus)
    return ", ".join(f"{n} x {model}" for model, n in counts.items()) or "no GPUs"


def choose(requests: list[GpuRequest], gpus: list[GpuInfo], taken: set[str]) -> list[str]:
    """UUIDs for the first request in ``requests`` that enough free GPUs match.

    ``taken`` holds the UUIDs other containers use. Raises :class:`GpuError` naming what
    this host has when no GPU matches at all, and the free count when too few are free."""
    if not requests:
        return []
    if not gpus:
        raise GpuError("no NVIDIA GPU on this host (NVML found none)")
    best_short: tuple[GpuRequest, int, int] | None = None
    for request in requests:
        matching = sorted((g for g in gpus if request.matches(g)), key=lambda g: g.index)
        free = [g.uuid for g in matching if g.uuid not in taken]
        if len(free) >= request.count:
            return free[: request.count]
        if matching and best_short is None:
            best_short = (request, len(free), len(matching))
    if best_short is None:
        wanted = " or ".join(repr(str(r)) for r in requests)
        raise GpuError(f"no GPU matches {wanted} (found: {describe(gpus)})")
    request, free_count, total = best_short
    message = f"not enough free GPUs: {request.count} requested, {free_count} free"
    if total < request.count:
        message += f" (this host has {describe(g for g in gpus if request.matches(g))} in all)"
    raise GpuError(message, lasting=total < request.count)


def discover(nvml: Any = None) -> list[GpuInfo]:
    """The GPUs of this host, through NVML. ``nvml`` is the ``pynvml`` module (from the
    nvidia-ml-py distribution) or a stand-in with the same functions."""
    if nvml is None:
        try:
            import pynvml as nvml  # type: ignore[import-not-found,no-redef]
        except ImportError as exc:
            raise GpuError(_import_problem(exc)) from None
    try:
        nvml.nvmlInit()
    except nvml.NVMLError as exc:
        raise GpuError(_init_problem(nvml, exc)) from None
    try:
        gpus = []
        for index in range(nvml.nvmlDeviceGetCount()):
            handle = nvml.nvmlDeviceGetHandleByIndex(index)
            gpus.append(
                GpuInfo(
                    index=index,
                    uuid=nvml.nvmlDeviceGetUUID(handle),
                    name=nvml.nvmlDeviceGetName(handle),
                    memory_total=int(nvml.nvmlDeviceGetMemoryInfo(handle).total),
                )
            )
        return gpus
    finally:
        nvml.nvmlShutdown()


def _import_problem(exc: ImportError) -> str:
    """Why NVML's Python binding does not import: advice to install it only if it is not."""
    try:
        version("nvidia-ml-py")
    except PackageNotFoundError:
        return "cannot look for GPUs: nvidia-ml-py is not installed (pip install nvidia-ml-py)"
    return f"cannot look for GPUs: nvidia-ml-py is installed but pynvml does not import ({exc})"


def _init_problem(nvml: Any, exc: Exception) -> str:
    """What a failed ``nvmlInit`` says of this host, in words."""
    if isinstance(exc, getattr(nvml, "NVMLError_LibraryNotFound", ())):
        return "no NVIDIA driver on this host (NVML's library, libnvidia-ml, is not installed)"
    if isinstance(exc, getattr(nvml, "NVMLError_DriverNotLoaded", ())):
        return (
            "the NVIDIA driver is installed on this host but not loaded (NVML: Driver Not Loaded)"
        )
    return f"NVML cannot read this host's GPUs ({exc})"


class GpuAllocator:
    """Assigns GPUs to workers by UUID, from the GPUs this host lets the control plane see
    (its own ``CUDA_VISIBLE_DEVICES`` narrows them, as it would for CUDA)."""

    def __init__(self, inventory: list[GpuInfo] | None = None) -> None:
        """``inventory``: default, what NVML finds, read on the first GPU request so that a
        host without GPUs never needs NVML."""
        self._inventory = inventory

    def assign(self, request: Any, taken: set[str]) -> list[str]:
        """The UUIDs for ``gpu=request`` (none for ``None``) that are not in ``taken``;
        raises :class:`GpuError` saying why there are none."""
        wanted = parse_gpu(request)
        if not wanted:
            return []
        if self._inventory is None:
            visible = os.environ.get("CUDA_VISIBLE_DEVICES")
            self._inventory = [g for g in discover() if cuda_visible(visible, g.index, g.uuid)]
        return choose(wanted, self._inventory, taken)
