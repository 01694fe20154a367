"""``nbscale k8s manifests``: what a cluster's admin applies once for Kubernetes workers.

It prints the namespaced Role the launcher needs (pods, pods/log, secrets, events; nothing
cluster-wide), the RoleBinding that grants it to the control plane's service account, and
the NetworkPolicies that let workers reach the control plane and nothing reach workers, as
YAML documents for ``kubectl apply -f -`` (``--json``: a v1 List).
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from nbscale_server.launchers import k8s_manifests as manifests

from . import _config
from .exceptions import InvalidError


def add_parser(sub: Any) -> None:
    p_k8s = sub.add_parser("k8s", help="Kubernetes: the manifests the launcher needs")
    k8s_sub = p_k8s.add_subparsers(dest="k8s_command", required=True, metavar="COMMAND")
    p = k8s_sub.add_parser(
        "manifests",
        help="print the Role, RoleBinding and NetworkPolicies for kubectl apply -f -",
    )
    p.add_argument(
        "--namespace",
        help="the workers' namespace (default: k8s_namespace, else the current context's)",
    )
    p.add_argument(
        "--service-account",
        default="default",
        help="the service account the control plane's Pod runs as (default: default)",
    )
    p.add_argument(
        "--control-plane-label",
        default=f"{manifests.CONTROL_PLANE_LABEL}=true",
        metavar="KEY=VALUE",
        help="a label of the control plane's Pods, for the NetworkPolicy "
        f"(default: {manifests.CONTROL_PLANE_LABEL}=true; JupyterHub's user Pods: "
        "component=singleuser-server)",
    )
    p.add_argument("--json", action="store_true", help="print a JSON v1 List instead of YAML")
    p.set_defaults(run=run)


def documents(namespace: str, service_account: str, label: str, port: int | None) -> list[Any]:
    key, sep, value = label.partition("=")
    if not sep or not key.strip():
        raise InvalidError(f"--control-plane-label must be KEY=VALUE, got {label!r}")
    return [
        manifests.role(namespace),
        manifests.role_binding(namespace, service_account),
        *manifests.network_policies(namespace, {key.strip(): value.strip()}, port),
    ]


def _settings_namespace_and_port() -> tuple[str | None, int | None]:
    from nbscale_server.launchers.k8s_cluster import parse_service_address

    namespace = _config.resolve("k8s_namespace")[0]
    address = _config.resolve("k8s_service_address")[0]
    try:
        port = parse_service_address(address)[1] if address else None
    except ValueError as exc:
        raise InvalidError(str(exc)) from None
    return namespace, port


def run(args: argparse.Namespace) -> int:
    namespace, port = _settings_namespace_and_port()
    if args.namespace:
        namespace = args.namespace
    if not namespace:
        from nbscale_server.launchers.k8s_cluster import current_namespace

        namespace = current_namespace()
    docs = documents(namespace, args.service_account, args.control_plane_label, port)
    if args.json:
        json.dump({"apiVersion": "v1", "kind": "List", "items": docs}, sys.stdout, indent=2)
        print()
        return 0
    import yaml

    sys.stdout.write(yaml.safe_dump_all(docs, sort_keys=False))
    return 0
