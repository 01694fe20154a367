"""A small fake Kubernetes API server on loopback whose Pods are real Docker containers.

It answers the few calls the Kubernetes launcher makes, as the real API does (JSON, status
codes, resourceVersions, chunked watch streams): Pods (create, get, list and watch by label
selector, delete with a grace period), ``pods/log``, Secrets (create, get, delete; garbage-
collected with the Pod that owns them) and events. Its kubelet runs each scheduled Pod as a
Docker container once its Secret exists: the Pod's image (never pulled: a missing image is
``ErrImagePull``), command, env, user, limits (memory, cpu) and the Secret's files mounted
read-only (mode 0400, owned by the Pod's user, as the kubelet's fsGroup handling leaves
them); the container's state, exit code and OOM kill are written back into the Pod's
status. Deletion sends SIGTERM, then SIGKILL after the grace period.

Only scheduling is simulated: every Pod lands on one node (the host's network, so workers
dial the control plane on loopback) unless ``no_room`` is set, which leaves new Pods
Pending with ``PodScheduled=False/Unschedulable`` and a ``FailedScheduling`` event, as a
full cluster does. ``evict()`` evicts a Pod as node pressure does; ``compact()`` forgets
the watch history (the next watch from an old resourceVersion gets 410 Gone); ``quota``
refuses Pods with 403 "exceeded quota".
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import re
import shutil
import tempfile
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from docker.errors import ImageNotFound, NotFound

from nbscale_server.launchers.docker_engine import LABEL_OWNER, LABEL_SERVER
from nbscale_server.launchers.owner import owner_tag

_PATH = re.compile(r"^/api/v1/namespaces/([^/]+)/(pods|secrets|events)(?:/([^/]+))?(?:/(log))?$")
NO_ROOM = "0/1 nodes are available: 1 Insufficient cpu. preemption: 0/1 nodes are available."
NO_GPU = "0/1 nodes are available: 1 Insufficient nvidia.com/gpu."


def _container_status(pod: dict[str, Any], state: dict[str, Any], **more: Any) -> dict[str, Any]:
    """A containerStatuses entry with the fields the API always sends."""
    image = pod["spec"]["containers"][0]["image"]
    return {
        "name": "worker",
        "image": image,
        "imageID": "",
        "ready": "running" in state,
        "restartCount": 0,
        "started": "running" in state,
        "state": state,
        **more,
    }


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def _matches(selector: str, labels: dict[str, str]) -> bool:
    for term in filter(None, selector.split(",")):
        key, _, value = term.partition("=")
        if labels.get(key) != value:
            return False
    return True


def _memory_bytes(text: str) -> int:
    units = {"Ki": 1024, "Mi": 1024**2, "Gi": 1024**3}
    for suffix, factor in units.items():
        if text.endswith(suffix):
            return int(text[: -len(suffix)]) * factor
    return int(text)


class FakeKubernetes:
    """The API server and its one-node kubelet; ``url`` is where it listens."""

    def __init__(self, docker_client: Any) -> None:
        self.docker = docker_client
        self.id = "fake-k8s-" + uuid.uuid4().hex[:8]
        self.lock = threading.Condition()
        self.version = 0
        self.history: list[tuple[int, str, dict[str, Any]]] = []  # (rv, type, pod)
        self.oldest = 0  # watches from before this get 410 Gone
        self.pods: dict[str, dict[str, Any]] = {}  # "ns/name" -> pod
        self.secrets: dict[str, dict[str, Any]] = {}
        self.events: list[dict[str, Any]] = []
        self.containers: dict[str, str] = {}  # pod uid -> container id
        self.no_room = False
        self.quota = False
        self.requests: list[tuple[str, str]] = []  # (method, path?query) of every call
        self.dir = tempfile.mkdtemp(prefix="nbscale-fake-k8s-")
        self.closed = False
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    # --- the store ----------------------------------------------------------------------

    def _bump(self, kind: str, pod: dict[str, Any]) -> None:
        """Record a change of ``pod`` (under the lock) for watches."""
        self.version += 1
        pod["metadata"]["resourceVersion"] = str(self.version)
        self.history.append((self.version, kind, json.loads(json.dumps(pod))))
        self.lock.notify_all()

    def compact(self) -> None:
        """Forget the watch history, as etcd's compaction does: old watches get 410."""
        with self.lock:
            self.history.clear()
            self.version += 1
            self.oldest = self.version
            self.lock.notify_all()

    def set_status(self, key: str, **status: Any) -> None:
        with self.lock:
            pod = self.pods.get(key)
            if pod is not None:
                pod["status"].update(status)
                self._bump("MODIFIED", pod)

    def create_pod(self, ns: str, pod: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        name = pod["metadata"]["name"]
        key = f"{ns}/{name}"
        with self.lock:
            if self.quota:
                return 403, _status(
                    403,
                    "Forbidden",
                    f'pods "{name}" is forbidden: exceeded quota: compute, requested: '
                    "pods=1, used: pods=4, limited: pods=4",
                )
            if key in self.pods:
                return 409, _status(409, "AlreadyExists", f'pods "{name}" already exists')
            pod["metadata"].update(uid=str(uuid.uuid4()), creationTimestamp=_now(), namespace=ns)
            pod["status"] = {"phase": "Pending", "qosClass": "Burstable"}
            self.pods[key] = pod
            self._bump("ADDED", pod)
        threading.Thread(target=self._schedule, args=(key,), daemon=True).start()
        return 201, pod

    def _schedule(self, key: str) -> None:
        pod = self.pods[key]
        limits = pod["spec"]["containers"][0].get("resources", {}).get("limits", {})
        full = NO_GPU if "nvidia.com/gpu" in limits else NO_ROOM if self.no_room else None
        if full is not None:
            condition = {
                "type": "PodScheduled",
                "status": "False",
                "reason": "Unschedulable",
                "message": full,
            }
            self.events.append(
                {
                    "metadata": {"name": f"{pod['metadata']['name']}.1", "namespace": "x"},
                    "involvedObject": {"kind": "Pod", "name": pod["metadata"]["name"]},
                    "reason": "FailedScheduling",
                    "message": full,
                    "type": "Warning",
                }
            )
            self.set_status(key, conditions=[condition])
            return
        scheduled = {"type": "PodScheduled", "status": "True"}
        waiting = {"waiting": {"reason": "ContainerCreating"}}
        self.set_status(
            key,
            conditions=[scheduled],
            containerStatuses=[_container_status(pod, waiting)],
            hostIP="127.0.0.1",
        )
        self._run(key)

    # --- the kubelet --------------------------------------------------------------------

    def _run(self, key: str) -> None:
        """Wait for the Pod's Secret, then run its container and follow it."""
        pod = self.pods[key]
        ns, spec = pod["metadata"]["namespace"], pod["spec"]
        volume = next(v["secret"] for v in spec["volumes"] if "secret" in v)
        deadline = time.monotonic() + 60
        while f"{ns}/{volume['secretName']}" not in self.secrets:
            if time.monotonic() > deadline or pod["metadata"].get("deletionTimestamp"):
                return
            time.sleep(0.05)
        container = spec["containers"][0]
        try:
            self.docker.api.inspect_image(container["image"])
        except ImageNotFound:
            message = f"rpc error: pull access denied for {container['image']}"
            state = {"waiting": {"reason": "ErrImagePull", "message": message}}
            self.set_status(key, containerStatuses=[_container_status(pod, state)])
            return
        binds = self._secret_files(pod, volume)
        security = spec.get("securityContext", {})
        limits = container.get("resources", {}).get("limits", {})
        host: dict[str, Any] = {
            "network_mode": "host",
            "binds": binds,
            "read_only": True,
            "tmpfs": {"/tmp": "rw,nosuid,nodev,size=1g,mode=1777"},
            "cap_drop": ["ALL"],
            "security_opt": ["no-new-privileges:true"],
        }
        if "memory" in limits:
            host["mem_limit"] = host["memswap_limit"] = _memory_bytes(limits["memory"])
        if "cpu" in limits:
            host["nano_cpus"] = int(limits["cpu"].removesuffix("m")) * 1_000_000
        labels = {LABEL_SERVER: self.id, LABEL_OWNER: owner_tag(), "fake-k8s.pod": key}
        created = self.docker.api.create_container(
            container["image"],
            container["command"],
            user=f"{security.get('runAsUser', 0)}:{security.get('runAsGroup', 0)}",
            environment={e["name"]: e["value"] for e in container.get("env", [])},
            labels=labels,
            host_config=self.docker.api.create_host_config(**host),
            detach=True,
        )
        self.containers[pod["metadata"]["uid"]] = created["Id"]
        self.docker.api.start(created["Id"])
        running = {"running": {"startedAt": _now()}}
        self.set_status(
            key,
            phase="Running",
            podIP="127.0.0.1",
            containerStatuses=[_container_status(pod, running, containerID=created["Id"])],
        )
        while not self.closed:  # the engine's HTTP timeout ends one wait: wait again
            with contextlib.suppress(Exception):
                self.docker.api.wait(created["Id"], timeout=30)
                break
        try:
            state = self.docker.api.inspect_container(created["Id"])["State"]
        except NotFound:  # removed as the Pod was deleted
            return
        code = int(state["ExitCode"])
        reason = "OOMKilled" if state.get("OOMKilled") else "Completed" if code == 0 else "Error"
        terminated = {"terminated": {"exitCode": code, "reason": reason, "finishedAt": _now()}}
        self.set_status(
            key,
            phase="Succeeded" if code == 0 else "Failed",
            containerStatuses=[_container_status(pod, terminated)],
        )

    def _secret_files(self, pod: dict[str, Any], volume: dict[str, Any]) -> dict[str, Any]:
        ns = pod["metadata"]["namespace"]
        secret = self.secrets[f"{ns}/{volume['secretName']}"]
        where = os.path.join(self.dir, pod["metadata"]["uid"])
        os.mkdir(where, 0o755)
        security = pod["spec"].get("securityContext", {})
        for item in volume["items"]:
            path = os.path.join(where, item["path"])
            with open(path, "wb") as f:
                f.write(base64.b64decode(secret["data"][item["key"]]))
            os.chmod(path, volume.get("defaultMode", 0o644))
            if os.getuid() == 0:
                os.chown(path, security.get("runAsUser", 0), security.get("fsGroup", 0))
        mount = pod["spec"]["containers"][0]["volumeMounts"][0]["mountPath"]
        return {where: {"bind": mount, "mode": "ro"}}

    def evict(self, key: str, message: str = "The node was low on resource: memory.") -> None:
        """What the kubelet does to a Pod under node pressure: Failed, reason Evicted."""
        self.set_status(key, reason="Evicted", message=message)
        cid = self.containers.get(self.pods[key]["metadata"]["uid"])
        if cid is not None:
            self.docker.api.kill(cid, signal="SIGKILL")

    def delete_pod(self, key: str, grace: int) -> tuple[int, dict[str, Any]]:
        with self.lock:
            pod = self.pods.get(key)
            if pod is None:
                return 404, _status(404, "NotFound", f'pods "{key}" not found')
            if not pod["metadata"].get("deletionTimestamp"):
                pod["metadata"]["deletionTimestamp"] = _now()
                pod["metadata"]["deletionGracePeriodSeconds"] = grace
                self._bump("MODIFIED", pod)
        threading.Thread(target=self._terminate, args=(key, grace), daemon=True).start()
        return 200, pod

    def _terminate(self, key: str, grace: int) -> None:
        pod = self.pods.get(key)
        if pod is None:
            return
        cid = self.containers.get(pod["metadata"]["uid"])
        if cid is not None:
            with contextlib.suppress(Exception):
                if grace > 0:
                    self.docker.api.kill(cid, signal="SIGTERM")
                    self.docker.api.wait(cid, timeout=grace)
            with contextlib.suppress(Exception):
                self.docker.api.kill(cid, signal="SIGKILL")
            deadline = time.monotonic() + 10
            while "terminated" not in str(pod["status"].get("containerStatuses")):
                if time.monotonic() > deadline:
                    break
                time.sleep(0.05)
        with self.lock:
            if self.pods.pop(key, None) is None:
                return
            self._bump("DELETED", pod)
            uid = pod["metadata"]["uid"]
            for name, secret in list(self.secrets.items()):  # the garbage collector
                owners = secret["metadata"].get("ownerReferences") or []
                if any(o.get("uid") == uid for o in owners):
                    del self.secrets[name]
        if cid is not None:
            with contextlib.suppress(NotFound):
                self.docker.api.remove_container(cid, force=True)
        shutil.rmtree(os.path.join(self.dir, uid), ignore_errors=True)

    def logs(self, key: str, query: dict[str, str]) -> bytes | None:
        pod = self.pods.get(key)
        cid = pod and self.containers.get(pod["metadata"]["uid"])
        if not cid:
            return None
        kwargs: dict[str, Any] = {"timestamps": query.get("timestamps") == "true"}
        if "tailLines" in query:
            kwargs["tail"] = int(query["tailLines"])
        if "sinceSeconds" in query:
            kwargs["since"] = int(time.time() - int(query["sinceSeconds"]))
        return bytes(self.docker.api.logs(cid, **kwargs))

    def close(self) -> None:
        self.closed = True
        for key in list(self.pods):
            self._terminate(key, 0)
        with self.lock:
            self.lock.notify_all()
        self.server.shutdown()
        self.server.server_close()
        shutil.rmtree(self.dir, ignore_errors=True)


def _status(code: int, reason: str, message: str) -> dict[str, Any]:
    return {
        "kind": "Status",
        "apiVersion": "v1",
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    }


def _handler(k8s: FakeKubernetes) -> type[BaseHTTPRequestHandler]:
    from k8s_fake_routes import Routes

    class Handler(Routes, BaseHTTPRequestHandler):
        fake = k8s
        path_pattern = _PATH

    return Handler
