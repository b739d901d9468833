"""A local Kubernetes API server for the few calls sycri's node agent makes.

It speaks HTTPS with a throw-away CA, checks the bearer token, and implements
GET/PATCH ``/api/v1/nodes/NAME`` (JSON merge patch) and POST/PATCH
``/api/v1/namespaces/NS/events[/NAME]`` the way the real API server answers them:
Status objects on errors, 415 for a patch type it does not take, 201 on create.
Created events are validated against the Kubernetes OpenAPI schema.
"""

from __future__ import annotations

import copy
import json
import re
import ssl
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import kubernetes_validate

from tests.support.tls import self_signed

MERGE_PATCH = "application/merge-patch+json"
KUBE_VERSION = "1.31.0"


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    out = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = merge_patch(out.get(key), value)
    return out


def _status(code: int, reason: str, message: str) -> dict[str, Any]:
    return {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    }


@dataclass
class Request:
    method: str
    path: str
    headers: dict[str, str]
    body: Any


@dataclass
class KubeAPI:
    """State and TLS material of the fake API server; ``start()`` serves it on loopback."""

    base: Path
    token: str = "test-token-0123456789"
    nodes: dict[str, dict[str, Any]] = field(default_factory=dict)
    events: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    requests: list[Request] = field(default_factory=list)
    fail_next: int = 0  # answer this many requests with 500 first
    gate: threading.Event | None = None  # when set here, requests wait until it is set
    lock: threading.Lock = field(default_factory=threading.Lock)
    changed: threading.Condition = field(init=False)
    server: ThreadingHTTPServer | None = None

    def __post_init__(self) -> None:
        self.changed = threading.Condition(self.lock)

    # --- credentials as a pod sees them ----------------------------------------

    @property
    def token_path(self) -> Path:
        return self.base / "token"

    @property
    def ca_path(self) -> Path:
        return self.base / "ca.crt"

    @property
    def port(self) -> int:
        assert self.server is not None
        return self.server.server_address[1]

    def environ(self, node_name: str) -> dict[str, str]:
        return {
            "KUBERNETES_SERVICE_HOST": "127.0.0.1",
            "KUBERNETES_SERVICE_PORT": str(self.port),
            "NODE_NAME": node_name,
        }

    def add_node(self, name: str, labels: dict[str, str] | None = None) -> None:
        self.nodes[name] = {
            "kind": "Node",
            "apiVersion": "v1",
            "metadata": {
                "name": name,
                "uid": f"uid-{name}",
                "resourceVersion": "1",
                "labels": dict(labels or {"kubernetes.io/hostname": name}),
            },
            "spec": {},
            "status": {},
        }

    def start(self) -> KubeAPI:
        self.base.mkdir(parents=True, exist_ok=True)
        key_path = self.base / "server.key"
        self_signed(self.ca_path, key_path, common_name="kube-apiserver-test", ca=True)
        self.token_path.write_text(self.token)
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(self.ca_path, key_path)
        api = self

        class Handler(_Handler):
            state = api

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.server.socket = ctx.wrap_socket(self.server.socket, server_side=True)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None

    def wait_for(self, predicate, timeout: float = 10.0) -> bool:
        with self.changed:
            return self.changed.wait_for(lambda: predicate(self), timeout)


_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_NODE = re.compile(r"^/api/v1/nodes/([^/]+)$")
_EVENTS = re.compile(r"^/api/v1/namespaces/([^/]+)/events(?:/([^/]+))?$")


class _Handler(BaseHTTPRequestHandler):
    state: KubeAPI
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # no 40 ms delayed-ACK stall per keep-alive reply

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass

    def _reply(self, code: int, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _handle(self) -> None:
        st = self.state
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        path = self.path.split("?", 1)[0]
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            self._reply(400, _status(400, "BadRequest", "body is not JSON"))
            return
        if st.gate is not None:
            st.gate.wait(30)
        with st.changed:
            st.requests.append(
                Request(self.command, path, {k.lower(): v for k, v in self.headers.items()}, body)
            )
            try:
                code, reply = self._route(st, path, body)
            except Exception as exc:  # a broken request is the client's bug: say so
                code, reply = 500, _status(500, "InternalError", f"{type(exc).__name__}: {exc}")
            st.changed.notify_all()
        self._reply(code, reply)

    def _route(self, st: KubeAPI, path: str, body: Any) -> tuple[int, dict[str, Any]]:
        scheme, _, token = (self.headers.get("Authorization") or "").partition(" ")
        if scheme.lower() != "bearer" or token.strip() != st.token:  # the scheme is case-free
            return 401, _status(401, "Unauthorized", "Unauthorized")
        if st.fail_next > 0:
            st.fail_next -= 1
            return 500, _status(500, "InternalError", "injected failure")
        ctype = (self.headers.get("Content-Type") or "").split(";")[0]
        if self.command == "PATCH" and ctype != MERGE_PATCH:
            return 415, _status(415, "UnsupportedMediaType", f"the body of the request was in an unknown format: {ctype}")  # fmt: skip
        if m := _NODE.match(path):
            node = st.nodes.get(m.group(1))
            if node is None:
                return 404, _status(404, "NotFound", f'nodes "{m.group(1)}" not found')
            if self.command == "GET":
                return 200, node
            if self.command == "PATCH":
                patched = merge_patch(node, body)
                patched["metadata"]["resourceVersion"] = str(
                    int(node["metadata"]["resourceVersion"]) + 1
                )
                st.nodes[m.group(1)] = patched
                return 200, patched
        if m := _EVENTS.match(path):
            ns, name = m.group(1), m.group(2)
            if self.command == "POST" and name is None:
                # Like the real server, the request's scope supplies a missing group/kind.
                body = {"apiVersion": "v1", "kind": "Event", **body}
                meta = body.get("metadata") or {}
                if meta.get("namespace", ns) != ns:
                    return 400, _status(400, "BadRequest", "the namespace of the provided object does not match the namespace sent on the request")  # fmt: skip
                try:
                    kubernetes_validate.validate(body, KUBE_VERSION, strict=True)
                except kubernetes_validate.ValidationError as exc:
                    return 422, _status(422, "Invalid", exc.message)
                key = (ns, meta.get("name", ""))
                if len(key[1]) > 253 or not _SUBDOMAIN.match(key[1]):
                    return 422, _status(422, "Invalid", f"metadata.name: Invalid value: {key[1]!r}")  # fmt: skip
                if key in st.events:
                    return 409, _status(409, "AlreadyExists", f'events "{key[1]}" already exists')  # fmt: skip
                stored = merge_patch(body, {"metadata": {"namespace": ns, "uid": f"ev-{len(st.events)}"}})  # fmt: skip
                st.events[key] = stored
                return 201, stored
            if self.command == "PATCH" and name is not None:
                if (ns, name) not in st.events:
                    return 404, _status(404, "NotFound", f'events "{name}" not found')
                st.events[(ns, name)] = merge_patch(st.events[(ns, name)], body)
                return 200, st.events[(ns, name)]
        return 404, _status(404, "NotFound", "the server could not find the requested resource")

    do_GET = do_POST = do_PATCH = do_PUT = do_DELETE = _handle
