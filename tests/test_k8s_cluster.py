"""The Kubernetes launcher against a real cluster, when KUBECONFIG names one (skipped,
saying so, otherwise). NBSCALE_K8S_TEST_REGISTRY is a registry its nodes pull from and this
machine pushes to; NBSCALE_K8S_TEST_WORKER_ADDRESS an address of this machine its Pods
reach (unless these tests run in a Pod); NBSCALE_K8S_TEST_NAMESPACE the namespace (with the
Role of `nbscale k8s manifests`)."""

from __future__ import annotations

import os
import sys

import cloudpickle
import pytest

import nbscale

pytestmark = [
    pytest.mark.kubernetes,
    pytest.mark.skipif(
        not os.environ.get("KUBECONFIG") and not os.environ.get("KUBERNETES_SERVICE_HOST"),
        reason="no Kubernetes cluster: set KUBECONFIG (and NBSCALE_K8S_TEST_REGISTRY) to run",
    ),
]

cloudpickle.register_pickle_by_value(sys.modules[__name__])
app = nbscale.App("test-k8s-cluster")


@pytest.fixture(scope="module", autouse=True)
def cluster_plane():
    registry = os.environ.get("NBSCALE_K8S_TEST_REGISTRY")
    if not registry:
        pytest.fail("KUBECONFIG is set but NBSCALE_K8S_TEST_REGISTRY is not: name a registry")
    nbscale.shutdown()
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("NBSCALE_LAUNCHER", "kubernetes")
        mp.setenv("NBSCALE_REGISTRY", registry)
        for name in ("WORKER_ADDRESS", "NAMESPACE"):
            value = os.environ.get(f"NBSCALE_K8S_TEST_{name}")
            if value:
                key = (
                    "NBSCALE_WORKER_ADDRESS"
                    if name == "WORKER_ADDRESS"
                    else "NBSCALE_K8S_NAMESPACE"
                )
                mp.setenv(key, value)
        yield
        nbscale.shutdown()


@app.function(max_containers=2, scaledown_window=5, cpu=0.25, memory=256)
def where(x):
    import socket

    return x * x, socket.gethostname()


@app.function(max_containers=1, memory=128)
def hog(megabytes):
    return len(b"x" * (megabytes * 2**20))


def test_a_map_runs_on_pods_of_the_cluster():
    results = list(where.map(range(8)))
    assert [r[0] for r in results] == [x * x for x in range(8)]
    assert all(host.startswith("nbscale-wk-") for _, host in results)
    assert nbscale.status()["launcher"] == "kubernetes"


def test_out_of_memory_on_the_cluster_is_named():
    with pytest.raises(nbscale.WorkerLostError, match="ran out of memory"):
        hog.remote(1024)
