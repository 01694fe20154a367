"""GPU requests: parsing, matching, assignment, Docker's request, and every error, with no
GPU (a fake NVML stands in for the driver)."""

from __future__ import annotations

import sys
from types import SimpleNamespace

import pytest

import nbscale
from nbscale_runtime.nvml import GpuMonitor, cuda_visible
from nbscale_server import gpus
from nbscale_server.gpus import (
    GpuAllocator,
    GpuError,
    GpuInfo,
    GpuRequest,
    choose,
    describe,
    discover,
    parse_gpu,
)
from nbscale_server.launchers import WorkerSpec
from nbscale_server.launchers.docker_spec import (
    gpu_device_requests,
    host_config_options,
    start_error_message,
)
from nbscale_server.options import FunctionOptions

GiB = 1024**3


def gpu(index: int, name: str, memory_gib: int = 80) -> GpuInfo:
    return GpuInfo(index, f"GPU-{index:04d}-{name.split()[-1]}", name, memory_gib * GiB)


A100_80 = [gpu(0, "NVIDIA A100-SXM4-80GB"), gpu(1, "NVIDIA A100-SXM4-80GB")]
MIXED = [
    gpu(0, "Tesla T4", 16),
    gpu(1, "NVIDIA H100 80GB HBM3"),
    gpu(2, "NVIDIA A100-PCIE-40GB", 40),
    gpu(3, "NVIDIA L4", 24),
    gpu(4, "NVIDIA A10G", 24),
    gpu(5, "NVIDIA L40S", 48),
    gpu(6, "NVIDIA GeForce RTX 4090", 24),
    gpu(7, "NVIDIA H200", 141),
]


def test_parse_modal_syntax():
    assert parse_gpu(None) == []
    assert parse_gpu("any") == [GpuRequest("ANY", 1)]
    assert parse_gpu("a100") == [GpuRequest("A100", 1)]
    assert parse_gpu("H100:2") == [GpuRequest("H100", 2)]
    assert parse_gpu("A100-80GB:4") == [GpuRequest("A100-80GB", 4)]
    assert parse_gpu("h100!") == [GpuRequest("H100!", 1)]
    assert parse_gpu(["h100", "a100:2", "any"]) == [
        GpuRequest("H100"),
        GpuRequest("A100", 2),
        GpuRequest("ANY"),
    ]
    assert parse_gpu("rtx 4090") == [GpuRequest("RTX-4090")]


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("H100:0", "count after ':' must be an integer >= 1"),
        ("H100:two", "count after ':' must be an integer >= 1"),
        ("", "takes strings"),
        ([], "empty list"),
        (["A100", 3], "takes strings"),
        ("A100?", "not a GPU type"),
    ],
)
def test_bad_requests_say_what_is_wrong(spec, message):
    with pytest.raises(GpuError, match=message):
        parse_gpu(spec)


def test_app_function_rejects_a_bad_gpu_at_decoration():
    app = nbscale.App("gpus")
    with pytest.raises(nbscale.InvalidError, match="count after"):
        app.function(gpu="A100:0")(lambda: None)


def test_models_are_named_as_modal_names_them():
    assert [g.model for g in MIXED] == [
        "T4",
        "H100",
        "A100-40GB",
        "L4",
        "A10",
        "L40S",
        "GEFORCE-RTX-4090",
        "H200",
    ]
    assert A100_80[0].model == "A100-80GB"
    assert describe(A100_80) == "2 x A100-80GB"
    assert describe([]) == "no GPUs"


@pytest.mark.parametrize(
    ("spec", "indexes"),
    [
        ("T4", [0]),
        ("A100", [2]),  # any A100
        ("A100-40GB", [2]),
        ("L4", [3]),  # not the L40S
        ("A10", [4]),  # A10G is an A10, an A100 is not
        ("L40S", [5]),
        ("RTX-4090", [6]),
        ("H100", [1]),
        ("H100:2", [1, 7]),  # an H100 request may be served by an H200, as on Modal
        ("any:3", [0, 1, 2]),
    ],
)
def test_matching_against_what_nvml_reports(spec, indexes):
    assert choose(parse_gpu(spec), MIXED, set()) == [MIXED[i].uuid for i in indexes]


def test_pinned_type_is_never_upgraded():
    with pytest.raises(GpuError, match="not enough free GPUs: 2 requested, 1 free"):
        choose(parse_gpu("H100!:2"), MIXED, set())


def test_fallbacks_are_tried_in_order():
    taken = {MIXED[1].uuid, MIXED[7].uuid}  # H100 and H200 busy
    assert choose(parse_gpu(["h100", "a100", "any"]), MIXED, taken) == [MIXED[2].uuid]
    assert choose(parse_gpu(["h100", "any"]), MIXED, taken) == [MIXED[0].uuid]


def test_assigned_gpus_are_never_handed_out_twice():
    first = choose(parse_gpu("A100"), A100_80, set())
    second = choose(parse_gpu("A100"), A100_80, set(first))
    assert first != second
    with pytest.raises(GpuError, match="not enough free GPUs: 1 requested, 0 free"):
        choose(parse_gpu("A100"), A100_80, set(first + second))


def test_no_match_names_what_the_host_has():
    with pytest.raises(GpuError, match=r"no GPU matches 'H100' \(found: 2 x A100-80GB\)"):
        choose(parse_gpu("H100"), A100_80, set())
    with pytest.raises(GpuError, match="no GPU matches 'H100' or 'L4'"):
        choose(parse_gpu(["H100", "L4"]), A100_80, set())


def test_not_enough_free_gpus():
    taken = {A100_80[0].uuid}
    with pytest.raises(GpuError, match=r"not enough free GPUs: 3 requested, 1 free \(this host"):
        choose(parse_gpu("A100:3"), A100_80, taken)
    with pytest.raises(GpuError, match=r"not enough free GPUs: 2 requested, 1 free$") as busy:
        choose(parse_gpu("A100:2"), A100_80, taken)
    assert not busy.value.lasting  # GPUs in use now may be free later: worth waiting for


def test_a_host_without_gpus_says_so():
    with pytest.raises(GpuError, match=r"^no NVIDIA GPU on this host \(NVML found none\)$") as e:
        choose(parse_gpu("any"), [], set())
    assert e.value.lasting  # nothing to wait for
    assert choose([], [], set()) == []


class FakeNVMLError(Exception):
    pass


class FakeLibraryNotFound(FakeNVMLError):
    pass


class FakeDriverNotLoaded(FakeNVMLError):
    pass


def fake_nvml(gpus: list[GpuInfo], *, init_error: Exception | None = None) -> SimpleNamespace:
    """The few pynvml functions nbscale calls, answering for ``gpus``."""

    def init() -> None:
        if init_error is not None:
            raise init_error

    return SimpleNamespace(
        NVMLError=FakeNVMLError,
        NVMLError_LibraryNotFound=FakeLibraryNotFound,
        NVMLError_DriverNotLoaded=FakeDriverNotLoaded,
        nvmlInit=init,
        nvmlShutdown=lambda: None,
        nvmlDeviceGetCount=lambda: len(gpus),
        nvmlDeviceGetHandleByIndex=lambda i: gpus[i],
        nvmlDeviceGetUUID=lambda h: h.uuid,
        nvmlDeviceGetName=lambda h: h.name,
        nvmlDeviceGetMemoryInfo=lambda h: SimpleNamespace(
            total=h.memory_total, used=h.memory_total // 4
        ),
        nvmlDeviceGetUtilizationRates=lambda h: SimpleNamespace(gpu=37, memory=12),
    )


def test_discovery_through_nvml():
    assert discover(fake_nvml(A100_80)) == A100_80


@pytest.mark.parametrize(
    ("error", "message"),
    [
        (FakeLibraryNotFound("NVML Shared Library Not Found"), "^no NVIDIA driver on this host"),
        (FakeDriverNotLoaded("Driver Not Loaded"), "driver is installed on this host but not"),
        (FakeNVMLError("Unknown Error"), r"NVML cannot read this host's GPUs \(Unknown Error\)"),
    ],
)
def test_what_nvml_says_is_told_as_it_is(error, message):
    with pytest.raises(GpuError, match=message) as caught:
        discover(fake_nvml([], init_error=error))
    assert "pip install" not in str(caught.value)


def test_advice_to_install_nvidia_ml_py_only_when_it_is_missing(monkeypatch):
    monkeypatch.setitem(sys.modules, "pynvml", None)  # `import pynvml` fails
    with pytest.raises(GpuError, match="installed but pynvml does not import"):
        discover()

    def missing(name: str) -> str:
        raise gpus.PackageNotFoundError(name)

    monkeypatch.setattr(gpus, "version", missing)
    with pytest.raises(GpuError, match=r"not installed \(pip install nvidia-ml-py\)"):
        discover()


def test_worker_reports_its_gpus_and_their_load():
    monitor = GpuMonitor(fake_nvml(A100_80))
    assert monitor.inventory()[1] == {
        "index": 1,
        "uuid": A100_80[1].uuid,
        "name": "NVIDIA A100-SXM4-80GB",
        "memory_total": 80 * GiB,
    }
    sample = monitor.sample()["gpus"]
    assert sample[0] == {
        "uuid": A100_80[0].uuid,
        "utilization": 37,
        "memory_used": 20 * GiB,
        "memory_total": 80 * GiB,
    }
    assert (
        GpuMonitor(
            fake_nvml([], init_error=FakeLibraryNotFound("NVML Shared Library Not Found"))
        ).sample()
        == {}
    )
    assert (
        GpuMonitor(
            fake_nvml([], init_error=FakeLibraryNotFound("NVML Shared Library Not Found"))
        ).inventory()
        == []
    )


def test_cuda_visible_devices_reads_indexes_and_uuids():
    assert cuda_visible(None, 3, "GPU-x")  # unset: every GPU
    assert not cuda_visible("", 0, "GPU-x")  # empty: none
    assert cuda_visible("1,GPU-x", 0, "GPU-x")
    assert cuda_visible("0, 2", 2, "GPU-y")
    assert not cuda_visible("0,GPU-z", 1, "GPU-y")


def test_a_worker_reports_only_the_gpus_it_was_given():
    """NVML ignores CUDA_VISIBLE_DEVICES, so the monitor applies it (process workers)."""
    given = GpuMonitor(fake_nvml(A100_80), cuda_visible_devices=A100_80[1].uuid)
    assert [g["uuid"] for g in given.inventory()] == [A100_80[1].uuid]
    assert [g["uuid"] for g in given.sample()["gpus"]] == [A100_80[1].uuid]
    assert GpuMonitor(fake_nvml(A100_80), cuda_visible_devices="").inventory() == []


def test_allocator_reads_the_inventory_only_for_a_gpu_request(monkeypatch):
    calls = []
    monkeypatch.setattr("nbscale_server.gpus.discover", lambda: calls.append(1) or A100_80)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1")  # the control plane's own restriction
    allocator = GpuAllocator()
    assert allocator.assign(None, set()) == [] and not calls
    assert allocator.assign("a100", set()) == [A100_80[1].uuid]
    with pytest.raises(GpuError, match="not enough free GPUs: 1 requested, 0 free"):
        allocator.assign("a100", {A100_80[1].uuid})
    assert calls == [1]


def test_docker_request_names_the_assigned_uuids():
    (request,) = gpu_device_requests(["GPU-aaa", "GPU-bbb"])
    assert request == {
        "Driver": "",
        "Count": 0,
        "DeviceIDs": ["GPU-aaa", "GPU-bbb"],
        "Capabilities": [["gpu"]],
        "Options": {},
    }
    assert gpu_device_requests([]) == []
    spec = WorkerSpec("wk-1", "pl-1", "/run/x.json", FunctionOptions(gpu="A100"))
    host = host_config_options(spec, "nbscale-net", ["GPU-aaa"])
    assert host["device_requests"][0]["DeviceIDs"] == ["GPU-aaa"]
    assert "device_requests" not in host_config_options(spec, "nbscale-net", [])


def test_docker_without_nvidia_runtime_is_explained():
    import docker

    error = docker.errors.APIError(
        "500 Server Error",
        explanation='could not select device driver "" with capabilities: [[gpu]]',
    )
    assert start_error_message(error, "img").startswith(
        "Docker here cannot expose GPUs: install nvidia-container-toolkit"
    )
    assert "could not start a container of img" in start_error_message(RuntimeError("x"), "img")
