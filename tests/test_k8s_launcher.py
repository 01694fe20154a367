"""The Kubernetes launcher against the fake API server whose Pods are real Docker containers
(k8s_fake_api.py): maps on Pods that dial back over TCP + CurveZMQ with keys from their
Secret, the image pushed to a real registry, limits, scale-down by name, OOM, waiting for
resources and pending_timeout, the watch's re-list after 410, quota refusals, and the Pods
of a killed control plane deleted by the next one. Only scheduling is simulated."""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from urllib.parse import urlparse

import cloudpickle
import nested_app
import pytest
from conftest import wait_until
from k8s_cluster_fixtures import NAMESPACE, fake_k8s, our_pods, plane_env, registry, registry_tags

import nbscale
from nbscale_server.launchers import k8s_manifests as manifests
from nbscale_server.launchers.k8s_cluster import KubernetesOptions

pytestmark = pytest.mark.docker
__all__ = ["fake_k8s", "registry"]  # fixtures

cloudpickle.register_pickle_by_value(sys.modules[__name__])
app = nbscale.App("test-k8s")


@pytest.fixture(scope="module", autouse=True)
def k8s_plane(fake_k8s, registry):
    nbscale.shutdown()
    with pytest.MonkeyPatch.context() as mp:
        for key, value in plane_env(fake_k8s, registry).items():
            mp.setenv(key, value)
        yield fake_k8s
        nbscale.shutdown()
    assert not our_pods(fake_k8s), "Pods left after the control plane stopped"


@app.function(max_containers=2, scaledown_window=3, cpu=0.5, memory=256)
def inside(x):
    """What a worker sees of its Pod."""
    import stat

    config = os.stat("/run/nbscale/worker.json")
    for path in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        if os.path.exists(path):  # cgroup v2, else v1
            with open(path) as f:
                memory = f.read().strip()
    return x * x, stat.S_IMODE(config.st_mode), os.getuid(), memory, "secret_key" in os.environ


@app.function(max_containers=1, scaledown_window=60)
def hold(seconds):
    time.sleep(seconds)
    return "held"


@app.function(max_containers=1, scaledown_window=2)
def quick(x):
    return x + 1


@app.function(max_containers=1, memory=64)
def hog(megabytes):
    data = b"x" * (megabytes * 2**20)
    return len(data)


@app.function(max_containers=1, scaledown_window=5, retries=0)
def steady(x):
    time.sleep(4)
    return x + 1


@app.function(max_containers=1, gpu="H100", scaledown_window=2)
def on_gpu(x):
    return x


def test_a_map_runs_on_pods_that_dial_back_with_keys_from_their_secret(k8s_plane, registry):
    results = list(inside.map(range(6)))
    assert [r[0] for r in results] == [x * x for x in range(6)]
    _, mode, uid, memory, key_in_env = results[0]
    assert mode == 0o400 and uid == manifests.WORKER_UID and not key_in_env
    assert memory == str(256 * 2**20)  # the Pod's limit, applied to its container
    (tag,) = registry_tags(registry, "nbscale-worker")  # pushed by the kernel, once
    pods = our_pods(k8s_plane, "inside")
    assert pods and all(
        p["spec"]["containers"][0]["image"] == f"{registry}/nbscale-worker:{tag}" for p in pods
    )
    for pod in pods:  # no key where anyone who may read Pods would see it
        assert "secret_key" not in str(pod["spec"])
        owned = [
            s
            for s in k8s_plane.secrets.values()
            if s["metadata"]["ownerReferences"][0]["uid"] == pod["metadata"]["uid"]
        ]
        assert len(owned) == 1
    assert nbscale.status()["launcher"] == "kubernetes"


def test_a_secret_travels_in_the_pods_secret_object_never_its_spec(
    k8s_plane, tmp_path, monkeypatch
):
    monkeypatch.setenv("JUPYTER_DATA_DIR", str(tmp_path / "data"))
    value = "k8s-s3cret-not-in-the-pod"
    secrets = [nbscale.Secret.from_dict({"TOKEN": value})]

    @app.function(secrets=secrets, max_containers=1, scaledown_window=10)
    def token():
        return os.environ["TOKEN"]

    assert token.remote() == value
    [pod] = [
        p
        for p in our_pods(k8s_plane)
        if p["metadata"]["annotations"].get("nbscale.io/pool-name", "").endswith("token")
    ]
    assert value not in json.dumps(pod)  # not in its env, args, labels or annotations
    [secret] = [
        s
        for s in k8s_plane.secrets.values()
        if s["metadata"]["ownerReferences"][0]["uid"] == pod["metadata"]["uid"]
    ]
    assert value in "".join(base64.b64decode(v).decode() for v in secret["data"].values())

    volume = nbscale.Volume.from_name("on-k8s", create_if_missing=True)
    mounted = nbscale.App("k8s-volume").function(volumes={"/data": volume})(token.raw_f)
    with pytest.raises(nbscale.LaunchError, match="Kubernetes workers run on other machines"):
        mounted.remote()


def test_scale_down_deletes_exactly_the_idle_pod(k8s_plane):
    busy = hold.spawn(20)
    wait_until(lambda: hold.get_current_stats().num_running_inputs == 1, timeout=60)
    (busy_pod,) = [p["metadata"]["name"] for p in our_pods(k8s_plane, "hold")]
    assert quick.remote(1) == 2
    (idle_pod,) = [p["metadata"]["name"] for p in our_pods(k8s_plane, "quick")]
    wait_until(lambda: not our_pods(k8s_plane, "quick"), timeout=60)
    deleted = {
        urlparse(path).path.rsplit("/", 1)[1]
        for method, path in k8s_plane.requests
        if method == "DELETE"
    }
    assert idle_pod in deleted and busy_pod not in deleted
    deletions = [p for m, p in k8s_plane.requests if m == "DELETE" and f"/{idle_pod}?" in p]
    assert "gracePeriodSeconds=20" in deletions[0]  # the drain time: SIGTERM, then 20 s
    assert busy.get(timeout=60) == "held"  # the busy worker was never touched


def test_out_of_memory_is_named_in_the_error():
    with pytest.raises(nbscale.WorkerLostError) as info:
        hog.remote(512)
    assert "ran out of memory (memory limit 64Mi)" in str(info.value)
    assert info.value.exit_code == 137
    assert hog.remote(1) == 2**20  # a small input runs, on a new Pod


@pytest.mark.parametrize("loss", ["evicted", "deleted by someone else"])
def test_a_busy_pod_lost_to_the_infrastructure_is_retried_without_counting(k8s_plane, loss):
    call = steady.spawn(1)  # retries=0: a loss charged to the function would fail it
    wait_until(lambda: steady.get_current_stats().num_running_inputs == 1, timeout=60)
    (pod,) = our_pods(k8s_plane, "steady")
    key = f"{NAMESPACE}/{pod['metadata']['name']}"
    if loss == "evicted":
        k8s_plane.evict(key)
    else:
        k8s_plane.delete_pod(key, 0)
    assert call.get(timeout=90) == 2  # on a new Pod
    assert [p["metadata"]["name"] for p in our_pods(k8s_plane, "steady")] != [
        pod["metadata"]["name"]
    ]


def test_an_unschedulable_pod_waits_for_resources_with_the_schedulers_reason(k8s_plane):
    call = on_gpu.spawn(1)

    def shown_waiting() -> bool:
        stats = on_gpu.get_current_stats()
        reasons = [w["waiting_reason"] for w in stats.workers if w["state"] == "waiting"]
        return reasons == ["0/1 nodes are available: 1 Insufficient nvidia.com/gpu."]

    wait_until(shown_waiting, timeout=60)
    assert "waiting for resources" in on_gpu.get_current_stats().status
    call.cancel()


def test_a_pod_pending_past_the_pending_timeout_fails_the_call_with_the_reason(
    k8s_plane, registry, monkeypatch
):
    nbscale.shutdown()
    monkeypatch.setenv("NBSCALE_PENDING_TIMEOUT", "3")
    with pytest.raises(nbscale.LaunchError) as failed:
        on_gpu.remote(1)
    message = str(failed.value)
    assert "waited 3 s for resources" in message and "Insufficient nvidia.com/gpu" in message
    wait_until(lambda: not our_pods(k8s_plane, "on_gpu"), timeout=30)  # deleted
    nbscale.shutdown()


def test_the_watch_lists_again_after_410_gone(k8s_plane):
    assert quick.remote(1) == 2
    lists_before = _lists(k8s_plane)
    k8s_plane.compact()  # the watch's resourceVersion is now too old
    wait_until(lambda: _lists(k8s_plane) > lists_before, timeout=30)
    assert list(quick.map([1, 2, 3])) == [2, 3, 4]  # exits and starts still seen


def _lists(fake) -> int:
    return sum(
        1
        for method, path in fake.requests
        if method == "GET" and urlparse(path).path.endswith("/pods") and "watch=" not in path
    )


def test_a_quota_refusal_is_a_clear_launch_error(k8s_plane, monkeypatch):
    nbscale.shutdown()
    k8s_plane.quota = True
    try:
        with pytest.raises(nbscale.LaunchError) as failed:
            quick.remote(1)
    finally:
        k8s_plane.quota = False
    assert "ResourceQuota refuses another worker Pod (exceeded quota: compute" in str(failed.value)
    nbscale.shutdown()


def test_pods_of_a_killed_control_plane_are_deleted_by_the_next(k8s_plane, registry, tmp_path):
    script = textwrap.dedent(
        """
        import sys, time, nbscale
        app = nbscale.App("orphans")
        @app.function(max_containers=2)
        def sleeper(x):
            time.sleep(600)
        calls = sleeper.spawn_map([1, 2])
        while sleeper.get_current_stats().num_running_inputs < 2:
            time.sleep(0.2)
        print("running", flush=True)
        time.sleep(600)
        """
    )
    env = {**os.environ, **plane_env(k8s_plane, registry), "NBSCALE_PROGRESS": "off"}
    child = subprocess.Popen(
        [sys.executable, "-c", script], env=env, stdout=subprocess.PIPE, text=True
    )
    try:
        assert child.stdout is not None
        lines = iter(child.stdout.readline, "")
        assert "running" in (line.strip() for line in lines)  # after its build's lines
        assert len(our_pods(k8s_plane, "sleeper")) == 2
        child.send_signal(signal.SIGKILL)
        child.wait(10)
        time.sleep(1)
        assert len(our_pods(k8s_plane, "sleeper")) == 2  # nobody deleted them yet
        from nbscale_server.launchers.kubernetes import KubernetesLauncher

        settings = KubernetesOptions(registry=registry, worker_address_set=True)
        launcher = KubernetesLauncher(settings)  # as a restarted control plane does
        try:
            wait_until(lambda: not our_pods(k8s_plane, "sleeper"), timeout=60)
        finally:
            launcher.close()
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        if child.stdout is not None:
            child.stdout.close()


def test_nested_calls_on_pods_run_in_the_image_their_function_declares(k8s_plane):
    """Code on a Pod calling functions: a function without an image runs in its caller's
    (pushed) image, one with its own in that image, which the kernel built and pushed when
    it registered the caller, since a Pod can neither build nor push."""
    cloudpickle.register_pickle_by_value(nested_app)
    try:
        nested_app.check_nested_remote()
        nested_app.check_a_nested_call_runs_in_the_image_its_function_declares()
    finally:
        cloudpickle.unregister_pickle_by_value(nested_app)
