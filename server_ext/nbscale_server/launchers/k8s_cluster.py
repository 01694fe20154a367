"""Where the Kubernetes launcher works: its settings, the API client, the namespace, and
the address its workers dial.

- Inside a Pod the launcher uses the Pod's service account (``load_incluster_config``),
  elsewhere the kubeconfig (``KUBECONFIG`` or ``~/.kube/config``).
- Workers dial the control plane's Pod IP (the Pod's host name resolves to it), or
  ``worker_address``, or the Service named by ``k8s_service_address`` (then the control
  plane listens on its port). Outside a cluster no Pod could reach loopback, so there
  ``worker_address`` (or a Service) must be set.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass, field
from typing import Any

from .base import LaunchFailed
from .k8s_manifests import PodSettings, parse_gpu_products

_SERVICE_ACCOUNT_NAMESPACE = "/var/run/secrets/kubernetes.io/serviceaccount/namespace"


@dataclass(frozen=True, slots=True)
class KubernetesOptions:
    """The launcher's settings (``registry`` and ``k8s_*``), checked once."""

    registry: str | None = None
    namespace: str | None = None  # None: found (see current_namespace)
    image_pull_secrets: tuple[str, ...] = ()
    service_host: str | None = None
    service_port: int | None = None
    gpu_products: dict[str, tuple[str, ...]] = field(default_factory=dict)
    drain_seconds: int = 120
    worker_address_set: bool = False  # the operator chose where workers dial

    @classmethod
    def from_settings(cls, settings: Any) -> KubernetesOptions:
        """From a ``ControlPlaneConfig``; ValueError names the bad setting."""
        secrets = tuple(
            n.strip() for n in (settings.k8s_image_pull_secrets or "").split(",") if n.strip()
        )
        host = port = None
        if settings.k8s_service_address:
            host, port = parse_service_address(settings.k8s_service_address)
        return cls(
            registry=(settings.registry or "").strip().rstrip("/") or None,
            namespace=settings.k8s_namespace or None,
            image_pull_secrets=secrets,
            service_host=host,
            service_port=port,
            gpu_products=parse_gpu_products(settings.k8s_gpu_products or ""),
            drain_seconds=int(settings.k8s_drain_seconds),
            worker_address_set=bool(settings.worker_address or settings.bind_host),
        )

    def pod_settings(self, namespace: str) -> PodSettings:
        return PodSettings(
            namespace, self.image_pull_secrets, self.drain_seconds, self.gpu_products
        )


def parse_service_address(text: str) -> tuple[str, int]:
    host, sep, port = text.strip().rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"k8s_service_address must be HOST:PORT, got {text!r}")
    return host.strip("[]"), int(port)


def in_cluster() -> bool:
    return bool(os.environ.get("KUBERNETES_SERVICE_HOST"))


def api_client() -> Any:
    """An API client for this Pod's service account, or for the kubeconfig."""
    try:
        from kubernetes import client, config
    except ImportError:
        raise LaunchFailed(
            "the kubernetes launcher needs the kubernetes package: "
            "pip install 'nbscale[kubernetes]'"
        ) from None
    try:
        if in_cluster():
            config.load_incluster_config()
        else:
            config.load_kube_config()
    except Exception as exc:  # ConfigException, a missing or broken kubeconfig
        raise LaunchFailed(
            f"cannot find a Kubernetes cluster: {exc} (run the control plane in a Pod, or "
            "set KUBECONFIG)"
        ) from None
    return client.ApiClient()


def current_namespace() -> str:
    """This Pod's namespace, else the kubeconfig context's, else ``default``."""
    try:
        with open(_SERVICE_ACCOUNT_NAMESPACE) as f:
            return f.read().strip() or "default"
    except OSError:
        pass
    try:
        from kubernetes import config

        _, context = config.list_kube_config_contexts()
        return str((context or {}).get("context", {}).get("namespace") or "default")
    except Exception:
        return "default"


def pod_ip() -> str | None:
    """The control plane's Pod IP: the downward API's, else its host name's address."""
    for name in ("NBSCALE_POD_IP", "POD_IP"):
        if os.environ.get(name):
            return os.environ[name]
    if not in_cluster():
        return None
    try:
        return socket.gethostbyname(socket.gethostname())
    except OSError:
        return None


def check_reachable(options: KubernetesOptions) -> None:
    """Refuse, saying what to set, when no worker Pod could reach this control plane."""
    if options.worker_address_set or options.service_host or pod_ip() is not None:
        return
    raise LaunchFailed(
        "this control plane runs outside the cluster, and worker Pods cannot dial its "
        "loopback: set worker_address to an address of this host that Pods reach, or "
        "k8s_service_address to a Service that forwards to it"
    )
