"""Kubernetes manifests for nbscale's workers, as plain dicts: pure functions, no I/O.

- A worker is one bare Pod (``restartPolicy: Never``), never a Deployment or ReplicaSet:
  scaling down deletes exactly the idle worker's Pod, by name, and no controller replaces
  or kills a busy one.
- Its keys are in a Secret of its own, owned by the Pod (garbage-collected with it) and
  mounted read-only with mode 0400; never in the Pod's env or args, where anyone who may
  read Pods would see them.
- ``cpu=``/``memory=`` become requests and limits; ``gpu=`` becomes an ``nvidia.com/gpu``
  limit, its type a node affinity on ``nvidia.com/gpu.product`` (every alternative of
  Modal's fallback list allowed, the earlier ones preferred), with a toleration for the GPU
  nodes' taint.
- :func:`role` is all the launcher needs, in its namespace only; :func:`network_policies`
  let workers reach the control plane's Pod and nothing reach the workers.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ..gpus import GpuError, parse_gpu
from ..options import FunctionOptions

GROUP = "nbscale.io"
LABEL_SERVER = f"{GROUP}/server"
LABEL_POOL = f"{GROUP}/pool"
LABEL_WORKER = f"{GROUP}/worker"
LABEL_NAME = "app.kubernetes.io/name"
LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"
ANNOTATION_OWNER = f"{GROUP}/owner"  # host and "pid:start time" of the control plane
ANNOTATION_POOL_NAME = f"{GROUP}/pool-name"
WORKER_APP = "nbscale-worker"
CONTROL_PLANE_LABEL = f"{GROUP}/control-plane"

CONFIG_DIR = "/run/nbscale"
CONFIG_KEY = "worker.json"
COMMAND = ["python3", "-m", "nbscale_runtime", "--config", f"{CONFIG_DIR}/{CONFIG_KEY}"]
CONTAINER = "worker"
WORKER_UID = 10001
SECRET_MODE = 0o400
GPU_RESOURCE = "nvidia.com/gpu"
GPU_PRODUCT_LABEL = "nvidia.com/gpu.product"
_LABEL_VALUE = re.compile(r"[^A-Za-z0-9_.-]")

# What NVIDIA's GPU Feature Discovery writes in nvidia.com/gpu.product for Modal's types.
# A plain type may be served by a better GPU of its family, as on Modal ("H100!" pins it).
DEFAULT_GPU_PRODUCTS: dict[str, tuple[str, ...]] = {
    "T4": ("Tesla-T4",),
    "L4": ("NVIDIA-L4",),
    "A10": ("NVIDIA-A10", "NVIDIA-A10G"),
    "A10G": ("NVIDIA-A10G",),
    "L40S": ("NVIDIA-L40S",),
    "A100-40GB": ("NVIDIA-A100-SXM4-40GB", "NVIDIA-A100-PCIE-40GB"),
    "A100-80GB": ("NVIDIA-A100-SXM4-80GB", "NVIDIA-A100-80GB-PCIe"),
    "A100": (
        "NVIDIA-A100-SXM4-40GB",
        "NVIDIA-A100-PCIE-40GB",
        "NVIDIA-A100-SXM4-80GB",
        "NVIDIA-A100-80GB-PCIe",
    ),
    "H100!": ("NVIDIA-H100-80GB-HBM3", "NVIDIA-H100-PCIe", "NVIDIA-H100-NVL"),
    "H100": ("NVIDIA-H100-80GB-HBM3", "NVIDIA-H100-PCIe", "NVIDIA-H100-NVL", "NVIDIA-H200"),
    "H200": ("NVIDIA-H200",),
    "B200": ("NVIDIA-B200",),
    "B200+": ("NVIDIA-B200", "NVIDIA-B300"),
}


@dataclass(frozen=True, slots=True)
class PodSettings:
    """What every worker Pod of a control plane shares (from its ``k8s_*`` settings)."""

    namespace: str = "default"
    image_pull_secrets: tuple[str, ...] = ()
    drain_seconds: int = 120
    gpu_products: Mapping[str, tuple[str, ...]] = field(default_factory=dict)  # overrides


@dataclass(frozen=True, slots=True)
class WorkerPod:
    """Who a worker Pod belongs to: its labels and annotations."""

    server_id: str
    worker_id: str
    pool_id: str
    pool_name: str = ""
    owner: str = ""  # "host pid:start" of the control plane, to reap a dead one's Pods


def pod_name(worker_id: str) -> str:
    return f"nbscale-{worker_id}"


def secret_name(worker_id: str) -> str:
    return f"nbscale-{worker_id}-keys"


def label_value(text: str) -> str:
    """``text`` as a valid label value (63 characters of [A-Za-z0-9_.-], alphanumeric at
    both ends)."""
    return _LABEL_VALUE.sub("-", text)[:63].strip("-_.")


def server_selector(server_id: str) -> str:
    return f"{LABEL_SERVER}={label_value(server_id)}"


def all_workers_selector() -> str:
    return f"{LABEL_NAME}={WORKER_APP},{LABEL_MANAGED_BY}=nbscale"


def parse_gpu_products(text: str) -> dict[str, tuple[str, ...]]:
    """``"A100=NVIDIA-A100-SXM4-80GB|NVIDIA-A100-PCIE-40GB,T4=Tesla-T4"`` as a map from
    Modal's names (upper case) to product labels; ValueError says what is wrong."""
    mapping: dict[str, tuple[str, ...]] = {}
    for pair in filter(None, (p.strip() for p in text.split(","))):
        name, sep, products = pair.partition("=")
        values = tuple(v.strip() for v in products.split("|") if v.strip())
        if not sep or not name.strip() or not values:
            raise ValueError(f"k8s_gpu_products: {pair!r} is not NAME=PRODUCT[|PRODUCT...]")
        mapping[name.strip().upper()] = values
    return mapping


def _resources(options: FunctionOptions, gpus: int) -> dict[str, Any]:
    requests: dict[str, Any] = {}
    limits: dict[str, Any] = {}
    if options.cpu:
        requests["cpu"] = limits["cpu"] = f"{round(options.cpu * 1000)}m"
    if options.memory:
        requests["memory"] = limits["memory"] = f"{options.memory}Mi"
    if gpus:
        limits[GPU_RESOURCE] = str(gpus)  # extended resources: the request is the limit
    out: dict[str, Any] = {}
    if requests:
        out["requests"] = requests
    if limits:
        out["limits"] = limits
    return out


def gpu_scheduling(gpu: Any, products: Mapping[str, tuple[str, ...]]) -> tuple[int, Any, Any]:
    """For ``gpu=`` in Modal's syntax: the GPU count, the node affinity (None: any GPU) and
    the tolerations. Every alternative of a fallback list is allowed; the scheduler prefers
    the earlier ones (weights 100, 90, ...). Kubernetes asks one count per Pod, so the
    alternatives must agree on it. Raises ValueError saying why a request cannot be made."""
    try:
        requests = parse_gpu(gpu)
    except GpuError as exc:
        raise ValueError(str(exc)) from None
    if not requests:
        return 0, None, None
    counts = {r.count for r in requests}
    if len(counts) > 1:
        raise ValueError(
            f"gpu={gpu!r}: on Kubernetes the alternatives must ask for the same number of "
            "GPUs (a Pod has one nvidia.com/gpu limit)"
        )
    table = {**DEFAULT_GPU_PRODUCTS, **products}
    tolerations = [{"key": GPU_RESOURCE, "operator": "Exists", "effect": "NoSchedule"}]
    if any(r.kind == "ANY" for r in requests):
        return counts.pop(), None, tolerations
    allowed: list[str] = []
    preferred = []
    for rank, request in enumerate(requests):
        names = table.get(request.kind) or (request.kind,)
        new = [n for n in names if n not in allowed]
        allowed += new
        if new and len(requests) > 1:
            preferred.append(
                {
                    "weight": max(1, 100 - 10 * rank),
                    "preference": {
                        "matchExpressions": [
                            {"key": GPU_PRODUCT_LABEL, "operator": "In", "values": new}
                        ]
                    },
                }
            )
    term = {"matchExpressions": [{"key": GPU_PRODUCT_LABEL, "operator": "In", "values": allowed}]}
    node_affinity: dict[str, Any] = {
        "requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [term]}
    }
    if preferred:
        node_affinity["preferredDuringSchedulingIgnoredDuringExecution"] = preferred
    return counts.pop(), {"nodeAffinity": node_affinity}, tolerations


def _metadata(who: WorkerPod, name: str, namespace: str) -> dict[str, Any]:
    return {
        "name": name,
        "namespace": namespace,
        "labels": {
            LABEL_NAME: WORKER_APP,
            LABEL_MANAGED_BY: "nbscale",
            LABEL_SERVER: label_value(who.server_id),
            LABEL_POOL: label_value(who.pool_id),
            LABEL_WORKER: label_value(who.worker_id),
        },
        "annotations": {ANNOTATION_OWNER: who.owner, ANNOTATION_POOL_NAME: who.pool_name},
    }


def pod(who: WorkerPod, options: FunctionOptions, image: str, s: PodSettings) -> dict[str, Any]:
    """The worker's Pod; raises ValueError for options a Pod cannot express."""
    gpus, affinity, tolerations = gpu_scheduling(options.gpu, s.gpu_products)
    shm = f"{max(64, options.memory // 2)}Mi" if options.memory else "1Gi"
    container: dict[str, Any] = {
        "name": CONTAINER,
        "image": image,
        "imagePullPolicy": "IfNotPresent",
        "command": list(COMMAND),
        "env": [
            {"name": "HOME", "value": "/tmp"},
            {"name": "PYTHONUNBUFFERED", "value": "1"},
            {"name": "PYTHONDONTWRITEBYTECODE", "value": "1"},
        ],
        "resources": _resources(options, gpus),
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "capabilities": {"drop": ["ALL"]},
        },
        "volumeMounts": [
            {"name": "keys", "mountPath": CONFIG_DIR, "readOnly": True},
            {"name": "tmp", "mountPath": "/tmp"},
            {"name": "dshm", "mountPath": "/dev/shm"},
        ],
    }
    spec: dict[str, Any] = {
        "restartPolicy": "Never",
        "terminationGracePeriodSeconds": s.drain_seconds,
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": WORKER_UID,
            "runAsGroup": WORKER_UID,
            "fsGroup": WORKER_UID,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "containers": [container],
        "volumes": [
            {
                "name": "keys",
                "secret": {
                    "secretName": secret_name(who.worker_id),
                    "defaultMode": SECRET_MODE,
                    "items": [{"key": CONFIG_KEY, "path": CONFIG_KEY}],
                },
            },
            {"name": "tmp", "emptyDir": {"sizeLimit": "1Gi"}},
            {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": shm}},
        ],
    }
    if s.image_pull_secrets:
        spec["imagePullSecrets"] = [{"name": n} for n in s.image_pull_secrets]
    if affinity is not None:
        spec["affinity"] = affinity
    if tolerations is not None:
        spec["tolerations"] = tolerations
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": _metadata(who, pod_name(who.worker_id), s.namespace),
        "spec": spec,
    }


def secret(who: WorkerPod, config: bytes, namespace: str, pod_uid: str) -> dict[str, Any]:
    """The Secret holding the worker's config file (endpoint and CurveZMQ keys), owned by
    its Pod so that deleting the Pod deletes it."""
    metadata = _metadata(who, secret_name(who.worker_id), namespace)
    metadata["ownerReferences"] = [
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "name": pod_name(who.worker_id),
            "uid": pod_uid,
            "blockOwnerDeletion": False,
        }
    ]
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": metadata,
        "type": "Opaque",
        "immutable": True,
        "data": {CONFIG_KEY: base64.b64encode(config).decode()},
    }


def role(namespace: str, name: str = "nbscale-launcher") -> dict[str, Any]:
    """What the launcher may do, in its namespace only: nothing cluster-wide."""
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "Role",
        "metadata": {"name": name, "namespace": namespace},
        "rules": [
            {
                "apiGroups": [""],
                "resources": ["pods"],
                "verbs": ["create", "get", "list", "watch", "delete"],
            },
            {"apiGroups": [""], "resources": ["pods/log"], "verbs": ["get"]},
            {"apiGroups": [""], "resources": ["secrets"], "verbs": ["create", "get", "delete"]},
            {"apiGroups": [""], "resources": ["events"], "verbs": ["get", "list", "watch"]},
        ],
    }


def role_binding(
    namespace: str, service_account: str, name: str = "nbscale-launcher"
) -> dict[str, Any]:
    """Grants :func:`role` to the service account the control plane's Pod runs as."""
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "metadata": {"name": name, "namespace": namespace},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
        "subjects": [{"kind": "ServiceAccount", "name": service_account, "namespace": namespace}],
    }


def network_policies(
    namespace: str, control_plane: Mapping[str, str], port: int | None = None
) -> list[dict[str, Any]]:
    """Two policies: workers may reach the control plane's Pods (selected by the labels
    ``control_plane``; on ``port`` only, when the worker port is fixed), and nothing may
    reach the workers. Workers' own egress (data, packages) is left to the cluster's
    policies."""
    workers = {"matchLabels": {LABEL_NAME: WORKER_APP, LABEL_MANAGED_BY: "nbscale"}}
    ingress: dict[str, Any] = {"from": [{"podSelector": workers}]}
    if port is not None:
        ingress["ports"] = [{"protocol": "TCP", "port": port}]
    to_control_plane = {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": "nbscale-workers-to-control-plane", "namespace": namespace},
        "spec": {
            "podSelector": {"matchLabels": dict(control_plane)},
            "policyTypes": ["Ingress"],
            "ingress": [ingress],
        },
    }
    workers_closed = {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": "nbscale-workers-no-ingress", "namespace": namespace},
        "spec": {"podSelector": workers, "policyTypes": ["Ingress"], "ingress": []},
    }
    return [to_control_plane, workers_closed]
