"""Kubernetes manifests of worker Pods, their Secrets, the Role and the NetworkPolicies:
compared with golden copies (tests/golden/k8s; NBSCALE_UPDATE_GOLDEN=1 rewrites them) and
validated offline, strictly, against the Kubernetes API schemas of two versions (the
schemas bundled in kubernetes-validate: no network)."""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest

from nbscale._cli_k8s import documents
from nbscale._options import function_options
from nbscale_server.launchers import k8s_manifests as manifests
from nbscale_server.launchers.k8s_cluster import KubernetesOptions, parse_service_address

GOLDEN = Path(__file__).parent / "golden" / "k8s"
VERSIONS = ("1.29.0", "1.37.0")  # the oldest and newest schemas: what a cluster may run
WHO = manifests.WorkerPod("sv-0123456789ab", "wk-00aa11bb22cc", "pl-fedcba987654", "embed", "")
SETTINGS = manifests.PodSettings("ml", ("regcred",), 90)
POOLS: dict[str, tuple[dict[str, Any], str]] = {
    "cpu": ({"cpu": 2, "memory": 2048}, "registry.lab:5000/nbscale-worker:0123456789abcdef"),
    "gpu-fallbacks": (
        {"cpu": 8, "memory": 65536, "gpu": ["H100:2", "A100-80GB:2"]},
        "registry.lab:5000/nbscale-worker:0123456789abcdef",
    ),
    "registry-image": ({"memory": 512}, "ghcr.io/lab/worker-with-nbscale:2.1"),
}
CONFIG = b'{"worker_id": "wk-00aa11bb22cc", "secret_key": "not-a-real-key"}'


def _pool_manifests(name: str) -> list[dict[str, Any]]:
    options, image = POOLS[name]
    owner = "jupyter-alice 4242:1700000000.00"
    who = manifests.WorkerPod(WHO.server_id, WHO.worker_id, WHO.pool_id, "embed", owner)
    pod = manifests.pod(who, function_options(None, options), image, SETTINGS)
    secret = manifests.secret(
        who, CONFIG, SETTINGS.namespace, "6f1c1b7e-0000-4000-8000-000000000001"
    )
    return [pod, secret]


def _cluster_manifests() -> list[dict[str, Any]]:
    return documents("ml", "jupyter", "component=singleuser-server", 7600)


CASES = {f"pool-{name}": lambda name=name: _pool_manifests(name) for name in POOLS}
CASES["cluster"] = _cluster_manifests


@pytest.mark.parametrize("case", sorted(CASES))
def test_manifests_match_their_golden_copy(case):
    made = CASES[case]()
    path = GOLDEN / f"{case}.json"
    text = json.dumps(made, indent=2, sort_keys=True) + "\n"
    if os.environ.get("NBSCALE_UPDATE_GOLDEN"):
        path.write_text(text)
    assert text == path.read_text(), f"{path.name} differs: NBSCALE_UPDATE_GOLDEN=1 rewrites it"


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("case", sorted(CASES))
def test_manifests_are_valid_kubernetes(case, version):
    for manifest in CASES[case]():
        try:
            kubernetes_validate.validate(manifest, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(f"{manifest['kind']} invalid for Kubernetes {version}: {exc.message}")


def test_the_validation_catches_a_broken_manifest():
    pod = _pool_manifests("cpu")[0]
    pod["spec"]["containers"][0]["imagePullPolicy"] = ["IfNotPresent"]
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(pod, VERSIONS[0], strict=True)


def test_keys_are_in_an_owned_read_only_secret_never_in_the_pod_spec():
    pod, secret = _pool_manifests("cpu")
    assert "not-a-real-key" not in json.dumps(pod)
    container = pod["spec"]["containers"][0]
    assert container["command"] == [
        "python3",
        "-m",
        "nbscale_runtime",
        "--config",
        "/run/nbscale/worker.json",
    ]
    assert {"name": "keys", "mountPath": "/run/nbscale", "readOnly": True} in container[
        "volumeMounts"
    ]
    volume = next(v for v in pod["spec"]["volumes"] if v["name"] == "keys")
    assert volume["secret"]["defaultMode"] == 0o400
    assert volume["secret"]["secretName"] == secret["metadata"]["name"]
    assert base64.b64decode(secret["data"]["worker.json"]) == CONFIG
    (owner,) = secret["metadata"]["ownerReferences"]
    assert (owner["kind"], owner["name"]) == ("Pod", pod["metadata"]["name"])
    assert pod["spec"]["restartPolicy"] == "Never"
    assert pod["spec"]["automountServiceAccountToken"] is False


def test_labels_name_the_server_pool_and_worker():
    pod = _pool_manifests("cpu")[0]
    labels = pod["metadata"]["labels"]
    assert labels[manifests.LABEL_SERVER] == WHO.server_id
    assert labels[manifests.LABEL_POOL] == WHO.pool_id
    assert labels[manifests.LABEL_WORKER] == WHO.worker_id
    assert pod["metadata"]["annotations"][manifests.ANNOTATION_OWNER].startswith("jupyter-alice ")


def test_cpu_and_memory_are_requests_and_limits():
    resources = _pool_manifests("cpu")[0]["spec"]["containers"][0]["resources"]
    assert resources == {
        "requests": {"cpu": "2000m", "memory": "2048Mi"},
        "limits": {"cpu": "2000m", "memory": "2048Mi"},
    }


def test_gpu_fallbacks_become_node_affinity_in_order_with_a_toleration():
    pod = _pool_manifests("gpu-fallbacks")[0]
    spec = pod["spec"]
    assert spec["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == "2"
    affinity = spec["affinity"]["nodeAffinity"]
    (term,) = affinity["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]
    allowed = term["matchExpressions"][0]["values"]
    assert "NVIDIA-H100-80GB-HBM3" in allowed and "NVIDIA-A100-SXM4-80GB" in allowed
    first, second = affinity["preferredDuringSchedulingIgnoredDuringExecution"]
    assert first["weight"] > second["weight"]
    assert "NVIDIA-H100-80GB-HBM3" in first["preference"]["matchExpressions"][0]["values"]
    assert "NVIDIA-A100-SXM4-80GB" in second["preference"]["matchExpressions"][0]["values"]
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in spec[
        "tolerations"
    ]


def test_gpu_any_has_no_affinity_and_products_can_be_configured():
    count, affinity, _ = manifests.gpu_scheduling("any:4", {})
    assert (count, affinity) == (4, None)
    products = manifests.parse_gpu_products("a100=Lab-A100|Lab-A100-big, T4=Tesla-T4")
    _, affinity, _ = manifests.gpu_scheduling("A100", products)
    values = affinity["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
    assert values["nodeSelectorTerms"][0]["matchExpressions"][0]["values"] == [
        "Lab-A100",
        "Lab-A100-big",
    ]


@pytest.mark.parametrize(
    ("gpu", "words"),
    [
        (["H100:2", "A100:1"], "same number of GPUs"),
        ("H100:zero", "count after ':'"),
    ],
)
def test_gpu_requests_a_pod_cannot_express_are_refused_clearly(gpu, words):
    with pytest.raises(ValueError, match=words):
        manifests.gpu_scheduling(gpu, {})


def test_the_role_is_namespaced_and_minimal():
    role = manifests.role("ml")
    assert role["kind"] == "Role" and role["metadata"]["namespace"] == "ml"
    granted = {r: set(rule["verbs"]) for rule in role["rules"] for r in rule["resources"]}
    assert granted == {
        "pods": {"create", "get", "list", "watch", "delete"},
        "pods/log": {"get"},
        "secrets": {"create", "get", "delete"},
        "events": {"get", "list", "watch"},
    }


def test_settings_are_read_once_with_clear_errors():
    class Config:
        registry = "registry.lab:5000/ml/"
        k8s_namespace = "ml"
        k8s_image_pull_secrets = "a, b"
        k8s_service_address = "nbscale.ml.svc:7600"
        k8s_gpu_products = None
        k8s_drain_seconds = 30
        worker_address = None
        bind_host = None

    options = KubernetesOptions.from_settings(Config)
    assert options.registry == "registry.lab:5000/ml"
    assert options.image_pull_secrets == ("a", "b")
    assert (options.service_host, options.service_port) == ("nbscale.ml.svc", 7600)
    with pytest.raises(ValueError, match="HOST:PORT"):
        parse_service_address("nbscale.ml.svc")
    with pytest.raises(ValueError, match="NAME=PRODUCT"):
        manifests.parse_gpu_products("A100")


def test_the_launcher_refuses_to_start_without_a_registry_and_says_why():
    import zmq

    from nbscale_server.control_plane import ControlPlane
    from nbscale_server.launchers import LaunchFailed
    from nbscale_server.settings import ControlPlaneConfig

    ctx = zmq.Context()
    try:
        with pytest.raises(LaunchFailed, match="needs a registry its nodes pull worker images"):
            ControlPlane(ControlPlaneConfig(launcher="kubernetes"), ctx=ctx)
    finally:
        ctx.term()


def test_outside_a_cluster_the_launcher_needs_an_address_pods_reach(monkeypatch):
    from nbscale_server.launchers import LaunchFailed
    from nbscale_server.launchers.kubernetes import KubernetesLauncher

    for name in ("KUBERNETES_SERVICE_HOST", "POD_IP", "NBSCALE_POD_IP"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(LaunchFailed, match="set worker_address"):
        KubernetesLauncher(KubernetesOptions(registry="registry.lab:5000"))


def test_nbscale_k8s_manifests_prints_valid_yaml(capsys):
    import yaml

    from nbscale._cli import main

    assert main(["k8s", "manifests", "--namespace", "ml", "--service-account", "jupyter"]) == 0
    docs = list(yaml.safe_load_all(capsys.readouterr().out))
    assert [d["kind"] for d in docs] == ["Role", "RoleBinding", "NetworkPolicy", "NetworkPolicy"]
    assert all(d["metadata"]["namespace"] == "ml" for d in docs)
    for doc in docs:
        kubernetes_validate.validate(doc, VERSIONS[-1], strict=True)
    assert main(["k8s", "manifests", "--control-plane-label", "nolabel"]) == 1
    assert "KEY=VALUE" in capsys.readouterr().err


def test_registry_images_with_nothing_added_are_used_as_they_are():
    from nbscale import Image
    from nbscale._image_push import kubernetes_image, pushed_name, used_as_is
    from nbscale.exceptions import ImageBuildError

    ref = "ghcr.io/lab/worker-with-nbscale:2.1"
    assert kubernetes_image(Image.from_registry(ref), None, print) == ref  # no build, no push
    assert not used_as_is(Image.from_registry(ref).pip_install("rich"))
    with pytest.raises(ImageBuildError, match="need a registry"):
        kubernetes_image(Image.debian_slim(), None, print)
    assert (
        pushed_name("registry.lab:5000/ml/", "nbscale/worker:0123456789abcdef")
        == "registry.lab:5000/ml/nbscale-worker:0123456789abcdef"
    )
