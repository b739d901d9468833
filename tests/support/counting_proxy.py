"""A reverse proxy in front of a test registry that counts what is downloaded through it.

Tests that claim "downloaded once" count requests on the wire, not calls inside sycri.
"""

from __future__ import annotations

import collections
import http.client
import http.server
import re
import threading
import urllib.parse
from collections.abc import Iterator
from contextlib import contextmanager

_BLOB = re.compile(r"^/v2/.+/blobs/(sha256:[0-9a-f]{64})$")


class CountingProxy:
    """Forwards every request to ``upstream`` (``http://HOST:PORT``); ``blob_gets`` counts
    the blob GETs by digest."""

    def __init__(self, upstream: str) -> None:
        self.upstream = urllib.parse.urlsplit(upstream).netloc
        self.blob_gets: collections.Counter[str] = collections.Counter()
        self._lock = threading.Lock()
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:
                pass

            def do_GET(self) -> None:
                self._forward()

            def do_HEAD(self) -> None:
                self._forward()

            def _forward(self) -> None:
                path = urllib.parse.urlsplit(self.path).path
                m = _BLOB.match(path)
                if m and self.command == "GET":
                    with proxy._lock:
                        proxy.blob_gets[m.group(1)] += 1
                conn = http.client.HTTPConnection(proxy.upstream, timeout=60)
                headers = {k: v for k, v in self.headers.items() if k.lower() != "host"}
                conn.request(self.command, self.path, headers=headers)
                resp = conn.getresponse()
                body = resp.read()
                self.send_response(resp.status)
                for k, v in resp.getheaders():
                    if k.lower() not in ("transfer-encoding", "connection", "content-length"):
                        self.send_header(k, v)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(body)
                conn.close()

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.host = f"127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@contextmanager
def counting_proxy(upstream: str) -> Iterator[CountingProxy]:
    proxy = CountingProxy(upstream)
    try:
        yield proxy
    finally:
        proxy.close()
