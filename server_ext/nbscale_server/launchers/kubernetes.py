"""Workers as Kubernetes Pods: one bare Pod per worker, dialling back over CurveZMQ.

- Each worker is one Pod (``k8s_manifests.pod``) in the configured namespace, created on a
  daemon thread, never on the control plane's loop, then a Secret with its config file
  (endpoint and keys) owned by the Pod; the kubelet starts the container once the Secret
  exists. Keys are never in the Pod's spec.
- One watch thread follows the launcher's Pods by label (``k8s_watch.py``: a list, then a
  watch from the list's resourceVersion, a new list after 410 Gone). ``k8s_state``
  reads each Pod: waiting for resources (unschedulable, with the scheduler's message),
  running, or exited (exit code, OOMKilled, infrastructure losses). An exited Pod's last
  log lines are kept, then the Pod is deleted (its Secret goes with it).
- Stopping deletes exactly that worker's Pod, by name: gracefully with the drain time as
  its grace period (the kubelet sends SIGTERM, the worker finishes its inputs), by force
  or while it waits with none.
- Every Pod is labelled with this control plane's server id and annotated with its host
  and process; a new launcher deletes the Pods that dead control planes of its host left.
  Closing deletes every Pod of this one and waits until they are gone.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import socket
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from ..losses import INFRASTRUCTURE
from ..remote import LOOPBACK
from . import k8s_manifests as manifests
from .base import (
    Launcher,
    LaunchFailed,
    LogChunk,
    WorkerHandle,
    WorkerSpec,
    WorkerStatus,
    signal_of_exit,
)
from .daemon_threads import DaemonThreads
from .k8s_cluster import KubernetesOptions, api_client, check_reachable, current_namespace, pod_ip
from .k8s_state import EXIT_LOST, EXIT_NOT_STARTED, PodEnd, PodView, quota_message, vanished, view
from .k8s_watch import PodWatch, api_error, api_json
from .logs import follow_stamped
from .owner import owner_alive, owner_tag
from .volumes import refuse_volumes

log = logging.getLogger("nbscale.kubernetes")

_THREADS = 8  # API calls in parallel
_LOGS_KEPT = 200  # lines of an exited worker's output kept after its Pod is deleted
_CLOSE_WAIT = 30.0  # seconds close() waits for its Pods to be gone


@dataclass(eq=False)
class WorkerPod:
    """A worker's Pod, as the launcher's threads and the control plane see it (the ``ref``
    of its ``WorkerHandle``)."""

    worker_id: str
    name: str
    uid: str | None = None
    created_at: float = 0.0  # monotonic, once the API accepted it
    view: PodView = field(default_factory=lambda: PodView("pending"))
    end: PodEnd | None = None
    logs: str = ""  # its last lines, with timestamps, kept when it ended
    created: threading.Event = field(default_factory=threading.Event)  # or refused
    ended: threading.Event = field(default_factory=threading.Event)
    deleting: str | None = None  # "graceful" or "force": the last stop asked for
    finishing: bool = False


class KubernetesLauncher(Launcher):
    name = "kubernetes"

    def __init__(self, options: KubernetesOptions, client: Any = None) -> None:
        """``options``: the ``registry`` and ``k8s_*`` settings; ``client``: a kubernetes
        ``ApiClient`` (default: this Pod's service account, or the kubeconfig)."""
        if not options.registry:
            raise LaunchFailed(
                "the kubernetes launcher needs a registry its nodes pull worker images from: "
                "set registry (NBSCALE_REGISTRY=registry.example:5000/team); kernels push "
                "each worker image there"
            )
        check_reachable(options)
        from kubernetes import client as k8s

        self.options = options
        self.client = client or api_client()
        self.core = k8s.CoreV1Api(self.client)
        self.namespace = options.namespace or current_namespace()
        self.pods = options.pod_settings(self.namespace)
        self.server_id = "sv-" + uuid.uuid4().hex[:12]
        self.owner = f"{socket.gethostname()} {owner_tag()}"
        self.selector = manifests.server_selector(self.server_id)
        self.reap_orphans()
        self._lock = threading.Lock()
        self._workers: dict[str, WorkerPod] = {}  # live ones, by worker id
        self._closed = False
        self._threads = DaemonThreads(_THREADS, "nbscale-k8s")
        self.watch = PodWatch(self.core, self.namespace, self.selector, self._apply, self._listed)
        self.watch.wait_listed(10.0)

    def worker_bind_host(self) -> str | None:
        return pod_ip() or LOOPBACK

    def worker_port(self) -> int | None:
        return self.options.service_port

    # --- starting -----------------------------------------------------------------------

    def start(self, spec: WorkerSpec) -> WorkerHandle:
        if self._closed:
            raise LaunchFailed("the Kubernetes launcher is closed")
        image = spec.options.image
        if not image:
            raise LaunchFailed("no image for this function (the nbscale client builds one)")
        refuse_volumes(spec.options.volumes, "Kubernetes")
        who = manifests.WorkerPod(
            self.server_id, spec.worker_id, spec.pool_id, spec.pool_name, self.owner
        )
        try:
            pod = manifests.pod(who, spec.options, image, self.pods)
        except ValueError as exc:
            raise LaunchFailed(str(exc)) from None
        config = self._worker_config(spec.config_path)
        w = WorkerPod(spec.worker_id, pod["metadata"]["name"])
        with self._lock:
            self._workers[spec.worker_id] = w
        self._threads.submit(lambda: self._create(w, who, pod, config))
        return WorkerHandle(spec.worker_id, spec.pool_id, self.name, w, name=w.name, image=image)

    def _worker_config(self, path: str) -> bytes:
        """The worker's config file, dialling the Service when one forwards to us."""
        with open(path, "rb") as f:
            data = f.read()
        if self.options.service_host is None:
            return data
        config = json.loads(data)
        host = self.options.service_host
        host = f"[{host}]" if ":" in host else host
        config["endpoint"] = f"tcp://{host}:{self.options.service_port}"
        return json.dumps(config).encode()

    def _create(self, w: WorkerPod, who: Any, pod: dict[str, Any], config: bytes) -> None:
        from kubernetes.client.exceptions import ApiException

        try:
            created = api_json(self.core.create_namespaced_pod, self.namespace, pod)
            w.uid, w.created_at = created["metadata"]["uid"], time.monotonic()
            secret = manifests.secret(who, config, self.namespace, w.uid or "")
            api_json(self.core.create_namespaced_secret, self.namespace, secret)
        except ApiException as exc:
            text = api_error(exc)
            said = quota_message(exc.status, text) or f"the API refused it: {text}"
            self._record_end(w, PodEnd(EXIT_NOT_STARTED, f"could not start ({said})"))
            if w.uid is not None:  # the Pod exists but its Secret does not: remove it
                self._delete(w, 0)
        except Exception as exc:  # the API server did not answer
            self._record_end(
                w, PodEnd(EXIT_NOT_STARTED, f"could not start ({exc})", INFRASTRUCTURE)
            )
        finally:
            w.created.set()
        if w.deleting is not None and w.end is None:  # stopped while it was being created
            self._delete(w, 0)

    # --- what the cluster says ----------------------------------------------------------

    def _listed(self, names: set[str], started: float) -> None:
        """After a list: workers whose Pod existed before it and is not in it are gone."""
        with self._lock:
            missing = [
                w
                for w in self._workers.values()
                if w.uid is not None and w.created_at < started and w.name not in names
            ]
        for w in missing:
            self._finish(w, vanished(None, w.deleting is not None), read_logs=False)

    def _apply(self, kind: str, pod: dict[str, Any]) -> None:
        labels = pod.get("metadata", {}).get("labels") or {}
        with self._lock:
            w = self._workers.get(labels.get(manifests.LABEL_WORKER, ""))
        if w is None or w.end is not None:
            return
        if kind == "DELETED":
            self._finish(w, vanished(pod, w.deleting is not None), read_logs=False)
            return
        w.view = view(pod)
        if w.view.end is not None:
            self._threads.submit(functools.partial(self._finish, w, w.view.end))

    def _finish(self, w: WorkerPod, end: PodEnd, read_logs: bool = True) -> None:
        """Keep an ended worker's last lines and how it ended, then delete its Pod."""
        with self._lock:
            if w.finishing:
                return
            w.finishing = True
        if read_logs:
            w.logs = self._read_logs(w, {"tail_lines": _LOGS_KEPT})
        self._record_end(w, end)
        if read_logs:
            self._delete(w, 0)

    def _record_end(self, w: WorkerPod, end: PodEnd) -> None:
        with self._lock:
            if w.end is None:
                w.end = end
            self._workers.pop(w.worker_id, None)
        w.ended.set()

    def _read_logs(self, w: WorkerPod, query: dict[str, Any]) -> str:
        with contextlib.suppress(Exception):
            response: Any = self.core.read_namespaced_pod_log(
                w.name, self.namespace, timestamps=True, _preload_content=False, **query
            )
            try:
                return str(response.data.decode(errors="replace"))
            finally:
                response.release_conn()
        return ""

    def exit_code(self, handle: WorkerHandle) -> int | None:
        w: WorkerPod = handle.ref
        return w.end.code if w.end is not None else None

    def exit_reason(self, handle: WorkerHandle) -> str | None:
        w: WorkerPod = handle.ref
        return w.end.reason if w.end is not None else None

    def exit_cause(self, handle: WorkerHandle) -> str | None:
        w: WorkerPod = handle.ref
        return w.end.cause if w.end is not None else None

    def exit_signal(self, handle: WorkerHandle) -> int | None:
        """The kubelet reports 128 + the signal that ended the container (137: SIGKILL)."""
        code = self.exit_code(handle)
        if code is not None and code < 0:
            return -code
        return signal_of_exit(code)

    def register_in_worker(self, path: str) -> str | None:
        return None  # a Pod shares no file with this host: it tells its starts in messages

    def worker_status(self, handle: WorkerHandle) -> WorkerStatus:
        w: WorkerPod = handle.ref
        if w.end is not None:
            return WorkerStatus("exited")
        if w.view.phase == "pending":
            return WorkerStatus("pending", w.view.reason)
        return WorkerStatus("running")  # or exited, and being recorded

    def logs(self, handle: WorkerHandle, tail: int = 20) -> str:
        return self.follow_logs(handle, None, tail).text

    def follow_logs(self, handle: WorkerHandle, after: int | None, limit: int) -> LogChunk:
        """By the kubelet's timestamps (RFC 3339, as Docker's): the cursor is the last
        line's, in microseconds."""
        w: WorkerPod = handle.ref
        if w.end is not None:
            stamped = w.logs
        elif w.uid is not None and w.view.phase == "running":
            query: dict[str, Any] = {}
            if after is None:
                query["tail_lines"] = limit
            elif after > 0:  # whole seconds: the lines before the cursor are dropped
                query["since_seconds"] = max(1, int(time.time() - after / 1e6) + 2)
            stamped = self._read_logs(w, query)
        else:
            return LogChunk("", after or 0)
        return follow_stamped(stamped, after, limit)

    def wait(self, handle: WorkerHandle, timeout: float) -> int | None:
        w: WorkerPod = handle.ref
        w.ended.wait(timeout)
        return self.exit_code(handle)

    # --- stopping -----------------------------------------------------------------------

    def stop(self, handle: WorkerHandle, *, graceful: bool = True) -> None:
        w: WorkerPod = handle.ref
        wanted = "graceful" if graceful else "force"
        if w.end is not None or w.deleting in (wanted, "force"):
            return
        w.deleting = wanted
        running = w.view.phase == "running"
        grace = self.options.drain_seconds if graceful and running else 0
        self._threads.submit(lambda: self._stop(w, grace))

    def _stop(self, w: WorkerPod, grace: int) -> None:
        w.created.wait()
        if w.uid is not None and w.end is None:
            self._delete(w, grace)

    def _delete(self, w: WorkerPod, grace: int) -> None:
        """Delete exactly this worker's Pod (and its Secret, which the Pod owns anyway)."""
        from kubernetes.client.exceptions import ApiException

        for method, name in (
            (self.core.delete_namespaced_pod, w.name),
            (self.core.delete_namespaced_secret, manifests.secret_name(w.worker_id)),
        ):
            try:
                api_json(method, name, self.namespace, grace_period_seconds=grace)
            except ApiException as exc:
                if exc.status != 404:
                    log.warning("deleting %s failed: %s", name, api_error(exc))
            except Exception as exc:
                log.warning("deleting %s failed: %s", name, exc)
                if w.end is None:
                    self._record_end(w, PodEnd(EXIT_LOST, f"was lost ({exc})", INFRASTRUCTURE))

    def reap_orphans(self) -> list[str]:
        """Delete the worker Pods that control planes of this host left when they died;
        returns their names. Raises ``LaunchFailed`` when the API refuses or is down."""
        from kubernetes.client.exceptions import ApiException

        try:
            answer = api_json(
                self.core.list_namespaced_pod,
                self.namespace,
                label_selector=manifests.all_workers_selector(),
            )
        except ApiException as exc:
            raise LaunchFailed(
                f"the Kubernetes API refuses to list Pods in namespace {self.namespace!r} "
                f"({exc.status}: {api_error(exc)}); apply the Role of `nbscale k8s "
                "manifests` to this control plane's service account"
            ) from None
        except Exception as exc:
            raise LaunchFailed(f"cannot reach the Kubernetes API: {exc}") from None
        host = socket.gethostname()
        orphans = []
        for pod in answer.get("items") or []:
            annotations = pod["metadata"].get("annotations") or {}
            owner_host, _, owner = annotations.get(manifests.ANNOTATION_OWNER, "").partition(" ")
            if owner_host == host and not owner_alive(owner):
                orphans.append(pod["metadata"]["name"])
        for name in orphans:
            with contextlib.suppress(Exception):
                api_json(
                    self.core.delete_namespaced_pod, name, self.namespace, grace_period_seconds=0
                )
        if orphans:
            log.warning(
                "deleted %d worker Pod(s) left by a control plane that died: %s",
                len(orphans),
                ", ".join(orphans),
            )
        return orphans

    def close(self) -> None:
        """Delete every Pod of this control plane and wait until they are gone."""
        if self._closed:
            return
        with self._lock:
            pending = list(self._workers.values())
        for w in pending:
            w.created.wait(30)
        self._closed = True
        self.watch.close()
        names = self._live_pods()
        for name in names:
            with contextlib.suppress(Exception):
                api_json(
                    self.core.delete_namespaced_pod, name, self.namespace, grace_period_seconds=0
                )
        deadline = time.monotonic() + _CLOSE_WAIT
        while names and time.monotonic() < deadline:
            time.sleep(0.2)
            names = self._live_pods()
        if names:
            log.warning("worker Pods %s were still there %s s after deletion", names, _CLOSE_WAIT)
        for w in pending:
            self._record_end(w, PodEnd(-15, "was deleted as the control plane stopped"))
        self._threads.close()

    def _live_pods(self) -> list[str]:
        with contextlib.suppress(Exception):
            answer = api_json(
                self.core.list_namespaced_pod, self.namespace, label_selector=self.selector
            )
            return [p["metadata"]["name"] for p in answer.get("items") or []]
        return []
