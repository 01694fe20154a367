"""The HTTP side of the fake Kubernetes API server (k8s_fake_api.py): routes, JSON bodies
and chunked watch streams, as the API server sends them."""

from __future__ import annotations

import json
import time
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import parse_qs, urlparse


class Routes(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    fake: Any
    path_pattern: Any

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass

    def _route(self) -> tuple[str, str, str | None, str | None, dict[str, str]] | None:
        url = urlparse(self.path)
        query = {k: v[0] for k, v in parse_qs(url.query).items()}
        match = self.path_pattern.match(url.path)
        self.fake.requests.append((self.command, self.path))
        if match is None:
            self._send(404, {"kind": "Status", "code": 404, "message": f"no route {url.path}"})
            return None
        ns, kind, name, sub = match.groups()
        return ns, kind, name, sub, query

    def _send(self, code: int, body: Any, content_type: str = "application/json") -> None:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _body(self) -> dict[str, Any]:
        length = int(self.headers.get("Content-Length") or 0)
        return json.loads(self.rfile.read(length) or b"{}")

    def do_POST(self) -> None:
        route = self._route()
        if route is None:
            return
        ns, kind, _, _, _ = route
        body = self._body()
        if kind == "pods":
            self._send(*self.fake.create_pod(ns, body))
        elif kind == "secrets":
            key = f"{ns}/{body['metadata']['name']}"
            with self.fake.lock:
                body["metadata"]["uid"] = "secret-" + key
                self.fake.secrets[key] = body
            self._send(201, body)
        else:
            self._send(405, {"kind": "Status", "code": 405, "message": "not allowed"})

    def do_DELETE(self) -> None:
        route = self._route()
        if route is None:
            return
        ns, kind, name, _, query = route
        key = f"{ns}/{name}"
        if kind == "pods":
            body = self._body()
            grace = int(query.get("gracePeriodSeconds", body.get("gracePeriodSeconds", 30)))
            self._send(*self.fake.delete_pod(key, grace))
        elif kind == "secrets":
            self._body()
            with self.fake.lock:
                found = self.fake.secrets.pop(key, None)
            if found is None:
                self._send(404, {"kind": "Status", "code": 404, "message": "not found"})
            else:
                self._send(200, {"kind": "Status", "status": "Success"})

    def do_GET(self) -> None:
        route = self._route()
        if route is None:
            return
        ns, kind, name, sub, query = route
        key = f"{ns}/{name}"
        if kind == "pods" and name and sub == "log":
            data = self.fake.logs(key, query)
            if data is None:
                self._send(400, {"kind": "Status", "code": 400, "message": "container not running"})
            else:
                self._send(200, data, "text/plain")
        elif kind == "pods" and name:
            pod = self.fake.pods.get(key)
            self._send(200, pod) if pod else self._send(404, {"kind": "Status", "code": 404})
        elif kind == "secrets" and name:
            secret = self.fake.secrets.get(key)
            self._send(200, secret) if secret else self._send(404, {"kind": "Status", "code": 404})
        elif kind == "pods" and query.get("watch") in ("true", "1"):
            self._watch(ns, query)
        elif kind == "pods":
            from k8s_fake_api import _matches

            selector = query.get("labelSelector", "")
            with self.fake.lock:
                items = [
                    p
                    for k, p in self.fake.pods.items()
                    if k.startswith(f"{ns}/") and _matches(selector, p["metadata"]["labels"])
                ]
                body = {
                    "kind": "PodList",
                    "apiVersion": "v1",
                    "metadata": {"resourceVersion": str(self.fake.version)},
                    "items": json.loads(json.dumps(items)),
                }
            self._send(200, body)
        elif kind == "events":
            field = query.get("fieldSelector", "")
            wanted = field.partition("involvedObject.name=")[2]
            items = [
                e for e in self.fake.events if not wanted or e["involvedObject"]["name"] == wanted
            ]
            self._send(200, {"kind": "EventList", "metadata": {}, "items": items})

    def _chunk(self, data: bytes) -> None:
        self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
        self.wfile.flush()

    def _watch(self, ns: str, query: dict[str, str]) -> None:
        """Events after ``resourceVersion``, one JSON line each, until the timeout; 410 Gone
        as an ERROR event when that version is older than the history kept."""
        from k8s_fake_api import _matches

        selector = query.get("labelSelector", "")
        since = int(query.get("resourceVersion") or 0)
        deadline = time.monotonic() + min(float(query.get("timeoutSeconds", 60)), 300)
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        fake = self.fake
        try:
            while time.monotonic() < deadline and not fake.closed:
                with fake.lock:
                    if since < fake.oldest:
                        gone = {
                            "kind": "Status",
                            "code": 410,
                            "reason": "Expired",
                            "message": f"too old resource version: {since} ({fake.oldest})",
                        }
                        self._chunk(json.dumps({"type": "ERROR", "object": gone}).encode() + b"\n")
                        break
                    new = [h for h in fake.history if h[0] > since]
                    if not new:
                        fake.lock.wait(0.5)
                        continue
                for version, kind, pod in new:
                    since = version
                    if pod["metadata"].get("namespace") == ns and _matches(
                        selector, pod["metadata"]["labels"]
                    ):
                        line = json.dumps({"type": kind, "object": pod}).encode() + b"\n"
                        self._chunk(line)
            self.wfile.write(b"0\r\n\r\n")
            self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):
            pass
        self.close_connection = True
