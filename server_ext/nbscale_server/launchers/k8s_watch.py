"""Following a set of Pods as KubeSpawner's reflector does: list them, then watch from the
list's resourceVersion, and list again when the watch answers 410 Gone (the history it
needed was compacted away). Runs on a thread of its own; the API's JSON, never the
client's models, reaches the callbacks.
"""

from __future__ import annotations

import contextlib
import json
import logging
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

log = logging.getLogger("nbscale.kubernetes")

_WATCH_SECONDS = 60  # one watch request's length before it is renewed from its resourceVersion


def api_json(method: Any, *args: Any, **kwargs: Any) -> dict[str, Any]:
    """An API call's answer as the API's JSON (not the client's models)."""
    response = method(*args, _preload_content=False, **kwargs)
    try:
        data: dict[str, Any] = json.loads(response.data or b"{}")
        return data
    finally:
        response.release_conn()


def api_error(exc: Any) -> str:
    """An ApiException's message in one line (the API's own words when it sent JSON)."""
    body = getattr(exc, "body", None) or ""
    with contextlib.suppress(ValueError, TypeError, AttributeError):
        return str(json.loads(body).get("message") or body)
    return str(body or getattr(exc, "reason", None) or exc)


class PodWatch:
    """Calls ``on_event(type, pod)`` for every change of the Pods ``selector`` matches in
    ``namespace`` (a list counts as MODIFIED for each Pod), and ``on_list(names, started)``
    after each list with the names it found and the monotonic time it was asked."""

    def __init__(
        self,
        core: Any,
        namespace: str,
        selector: str,
        on_event: Callable[[str, dict[str, Any]], None],
        on_list: Callable[[set[str], float], None],
    ) -> None:
        self.core, self.namespace, self.selector = core, namespace, selector
        self.on_event, self.on_list = on_event, on_list
        self.lists = 0  # how many lists it made: one, plus one per 410 Gone
        self._closed = False
        self._response: Any = None
        self._watching = threading.Event()
        self._thread = threading.Thread(target=self._run, name="nbscale-k8s-watch", daemon=True)
        self._thread.start()

    def wait_listed(self, timeout: float) -> bool:
        return self._watching.wait(timeout)

    def close(self) -> None:
        """Stop watching. The open watch request's socket is shut down, not closed: closing
        the response would wait for the lock its reading thread holds."""
        self._closed = True
        sock = getattr(getattr(self._response, "connection", None), "sock", None)
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def _run(self) -> None:
        from kubernetes.client.exceptions import ApiException

        version: str | None = None
        while not self._closed:
            try:
                if version is None:
                    version = self._list()
                self._watching.set()
                version = self._follow(version)
            except ApiException as exc:
                if exc.status == 410:  # too old: what happened since is lost, list again
                    version = None
                elif not self._closed:
                    log.warning("watching worker Pods failed: %s", api_error(exc))
                    time.sleep(1.0)
            except Exception:
                if not self._closed:
                    log.debug("the Pod watch broke; watching again", exc_info=True)
                    time.sleep(0.5)

    def _list(self) -> str:
        started = time.monotonic()
        answer = api_json(
            self.core.list_namespaced_pod, self.namespace, label_selector=self.selector
        )
        self.lists += 1
        names = set()
        for pod in answer.get("items") or []:
            names.add(pod["metadata"]["name"])
            self.on_event("MODIFIED", pod)
        self.on_list(names, started)
        return str(answer["metadata"]["resourceVersion"])

    def _follow(self, version: str) -> str:
        """One watch request from ``version``; returns the last resourceVersion seen.
        Raises ApiException (410 Gone included) for an ERROR event."""
        from kubernetes.client.exceptions import ApiException
        from kubernetes.watch.watch import iter_resp_lines

        response = self.core.list_namespaced_pod(
            self.namespace,
            label_selector=self.selector,
            resource_version=version,
            watch=True,
            allow_watch_bookmarks=True,
            timeout_seconds=_WATCH_SECONDS,
            _preload_content=False,
        )
        self._response = response
        try:
            for line in iter_resp_lines(response):
                event = json.loads(line)
                pod = event.get("object") or {}
                if event.get("type") == "ERROR":
                    raise ApiException(status=pod.get("code"), reason=pod.get("message"))
                version = pod.get("metadata", {}).get("resourceVersion") or version
                if event.get("type") != "BOOKMARK":
                    self.on_event(event["type"], pod)
        finally:
            response.release_conn()
        return version
