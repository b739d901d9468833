"""Observability test support: scraping /metrics, OTLP receivers, a real Prometheus, dashboards.

The OTLP receivers speak the real protocol (OTLP/HTTP: protobuf ``POST /v1/traces``;
OTLP/gRPC: ``opentelemetry.proto.collector.trace.v1.TraceService/Export``) with the
message types of ``opentelemetry-proto``, so the SDK's own exporters talk to them
unchanged.
"""

from __future__ import annotations

import gzip
import json
import re
import shutil
import subprocess
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Awaitable, Callable, Iterator
from concurrent import futures
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import grpc
import promql_parser
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.proto.trace.v1 import trace_pb2
from prometheus_client.parser import text_string_to_metric_families

from tests.support.server import SycriServer

ROOT = Path(__file__).resolve().parents[2]
DASHBOARDS = ROOT / "dashboards"

# ---------------------------------------------------------------------- /metrics


def metrics_url(server: SycriServer, timeout: float = 10.0) -> str:
    """The URL sycri logged for its metrics endpoint (it binds port 0 in tests)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        m = re.search(r"metrics on (http://\S+/metrics)", server.log())
        if m:
            return m.group(1)
        time.sleep(0.05)
    raise AssertionError(f"sycri logged no metrics address:\n{server.log()}")


Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(url: str) -> Samples:
    """Every sample of the exposition, keyed by sample name and label set."""
    with urllib.request.urlopen(url, timeout=10) as resp:
        assert resp.status == 200
        text = resp.read().decode()
    out: Samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def value(samples: Samples, name: str, **labels: str) -> float:
    """The sample ``name{labels}``; 0 when absent (a counter not yet created)."""
    return samples.get((name, frozenset(labels.items())), 0.0)


# ---------------------------------------------------------------------- OTLP receivers


@dataclass
class Received:
    """Spans a receiver got, flattened: (resource attributes, span)."""

    spans: list[tuple[dict[str, str], trace_pb2.Span]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, req: trace_service_pb2.ExportTraceServiceRequest) -> None:
        with self.lock:
            for rs in req.resource_spans:
                attrs = {a.key: a.value.string_value for a in rs.resource.attributes}
                for ss in rs.scope_spans:
                    self.spans.extend((attrs, s) for s in ss.spans)

    def wait_for(
        self, predicate, timeout: float = 15.0
    ) -> list[tuple[dict[str, str], trace_pb2.Span]]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                found = [item for item in self.spans if predicate(item[1])]
            if found:
                return found
            time.sleep(0.05)
        with self.lock:
            names = [s.name for _, s in self.spans]
        raise AssertionError(f"no matching span arrived within {timeout}s; got {names}")


class OtlpHttpReceiver:
    """An OTLP/HTTP trace receiver on a free loopback port."""

    def __init__(self) -> None:
        self.received = Received()
        received = self.received

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                if self.headers.get("Content-Encoding") == "gzip":
                    body = gzip.decompress(body)
                if self.path != "/v1/traces" or self.headers.get("Content-Type") != (
                    "application/x-protobuf"
                ):
                    self.send_error(404 if self.path != "/v1/traces" else 415)
                    return
                received.add(trace_service_pb2.ExportTraceServiceRequest.FromString(body))
                reply = trace_service_pb2.ExportTraceServiceResponse().SerializeToString()
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            def log_message(self, *args) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    @property
    def env(self) -> dict[str, str]:
        return {
            "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{self.httpd.server_address[1]}",
            "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
        }

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


class OtlpGrpcReceiver(trace_service_pb2_grpc.TraceServiceServicer):
    """An OTLP/gRPC trace receiver on a free loopback port."""

    def __init__(self) -> None:
        self.received = Received()
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
        trace_service_pb2_grpc.add_TraceServiceServicer_to_server(self, self.server)
        self.port = self.server.add_insecure_port("127.0.0.1:0")
        self.server.start()

    def Export(self, request, context):  # the proto names the method
        self.received.add(request)
        return trace_service_pb2.ExportTraceServiceResponse()

    @property
    def env(self) -> dict[str, str]:
        return {
            "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{self.port}",
            "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc",
            "OTEL_EXPORTER_OTLP_INSECURE": "true",
        }

    def close(self) -> None:
        self.server.stop(None)


# ---------------------------------------------------------------------- dashboards

# What Grafana substitutes before a query reaches Prometheus, for "All" selections.
GRAFANA_VARS = {"$__rate_interval": "1m", "$node": ".*", "$instance": ".*"}


@dataclass(frozen=True)
class PanelQuery:
    dashboard: str
    panel: str
    ref: str
    expr: str

    @property
    def label(self) -> str:
        return f"{self.dashboard} / {self.panel} [{self.ref}]"

    @property
    def promql(self) -> str:
        return expand(self.expr)


def expand(expr: str, **values: str) -> str:
    """``expr`` as Grafana sends it: variables replaced (``All`` unless ``values`` name one)."""
    subst = dict(GRAFANA_VARS, **{f"${k}": v for k, v in values.items()})
    for name in sorted(subst, key=len, reverse=True):
        expr = expr.replace(name, subst[name])
    return expr


def dashboards() -> dict[str, dict]:
    return {p.name: json.loads(p.read_text()) for p in sorted(DASHBOARDS.glob("*.json"))}


def panel_queries() -> list[PanelQuery]:
    out = []
    for name, board in dashboards().items():
        for panel in board["panels"]:
            for t in panel.get("targets", []):
                out.append(PanelQuery(name, panel["title"], t["refId"], t["expr"]))
    return out


def metric_names(promql: str) -> set[str]:
    """The metric names a query selects (from its parsed syntax tree)."""
    names: set[str] = set()

    def visit(node) -> None:
        if isinstance(node, promql_parser.VectorSelector) and node.name:
            names.add(node.name)

    promql_parser.walk(promql_parser.parse(promql), visit)
    return names


def selectors(promql: str) -> list[str]:
    """Every instant-vector selector of a query, as PromQL text with its matchers."""
    out: list[str] = []

    def visit(node) -> None:
        if isinstance(node, promql_parser.VectorSelector):
            out.append(str(node))

    promql_parser.walk(promql_parser.parse(promql), visit)
    return out


# ---------------------------------------------------------------------- Prometheus


class Prometheus:
    """Debian's ``prometheus`` on a free loopback port with temporary storage."""

    def __init__(self, base: Path, targets: list[str], labels: dict[str, str]) -> None:
        binary = shutil.which("prometheus")
        if binary is None:
            raise AssertionError("the prometheus binary is missing (Debian package prometheus)")
        base.mkdir(parents=True, exist_ok=True)
        config = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "scrape_configs": [
                {
                    "job_name": "sycri",
                    "scrape_interval": "1s",
                    "scrape_timeout": "900ms",
                    "static_configs": [{"targets": targets, "labels": labels}],
                }
            ],
        }
        (base / "prometheus.yml").write_text(json.dumps(config))  # JSON is YAML
        self.port = _free_port()
        self.log_path = base / "prometheus.log"
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                [
                    binary,
                    f"--config.file={base / 'prometheus.yml'}",
                    f"--storage.tsdb.path={base / 'data'}",
                    f"--web.listen-address=127.0.0.1:{self.port}",
                    "--web.enable-lifecycle",
                ],
                stdout=log,
                stderr=log,
            )
        self.url = f"http://127.0.0.1:{self.port}"
        self._wait_ready()

    def _wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"prometheus exited {self.proc.returncode}:\n{self.log()}")
            try:
                with urllib.request.urlopen(self.url + "/-/ready", timeout=1) as r:
                    if r.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.1)
        raise AssertionError(f"prometheus not ready within {timeout}s:\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:]

    def api(self, path: str, **params: str) -> dict:
        url = f"{self.url}/api/v1/{path}?{urllib.parse.urlencode(params)}"
        with urllib.request.urlopen(url, timeout=10) as r:
            body = json.loads(r.read())
        assert body["status"] == "success", body
        return body["data"]

    def query(self, promql: str) -> list[dict]:
        data = self.api("query", query=promql)
        assert data["resultType"] == "vector", data
        return data["result"]

    def scrapes(self, job: str = "sycri") -> int:
        """Successful scrapes so far (samples of ``up`` equal to 1)."""
        res = self.query(f'count_over_time(up{{job="{job}"}}[10m]) and up{{job="{job}"}} == 1')
        return int(float(res[0]["value"][1])) if res else 0

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def iter_values(result: list[dict]) -> Iterator[float]:
    for series in result:
        yield float(series["value"][1])


# ---------------------------------------------------------------------- in-memory spans

_memory: tuple | None = None


def memory_tracing():
    """The process-wide tracer provider for tests, exporting to memory (installed once).

    Returns ``(provider, exporter)``; clear the exporter between tests.
    """
    global _memory
    if _memory is None:
        from opentelemetry import trace
        from opentelemetry.sdk.trace.export import SimpleSpanProcessor
        from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
        from sycri.observability import tracing

        exporter = InMemorySpanExporter()
        provider = tracing.provider(SimpleSpanProcessor(exporter))
        trace.set_tracer_provider(provider)
        assert trace.get_tracer_provider() is provider, "another tracer provider was installed"
        _memory = (provider, exporter)
    return _memory


async def serve_traced(
    base: Path,
    body: Callable[[grpc.aio.Channel], Awaitable],
    *,
    flat: dict | None = None,
    handlers: dict | None = None,
    agent=None,
) -> list:
    """sycri's node and gRPC server in this event loop, wired as ``serve()`` wires them,
    with spans kept in memory: the finished spans of what ``body`` did over a channel.

    ``flat`` adds config settings, ``handlers`` replace RPC handlers, ``agent`` stands in
    for the node agent. A client has its answer as soon as the status is sent and the
    handler's span ends a moment later, so this waits (up to 5 s) for a server span."""
    import asyncio
    import dataclasses

    from opentelemetry.trace import SpanKind
    from sycri import config, server
    from sycri.cri.service import Dispatcher
    from sycri.observability import telemetry

    provider, exporter = memory_tracing()
    exporter.clear()
    cfg = config.build(
        {"socket": str(base / "s.sock"), "root_dir": str(base / "root"),
         "run_dir": str(base / "run"), "pod_log_dir": str(base / "pods"),
         "metrics_address": "", **(flat or {})}
    )  # fmt: skip
    node = server.assemble(cfg)
    if agent is not None:
        node = dataclasses.replace(node, node_agent=agent)
    wiring = telemetry.Telemetry(metrics_server=None, tracer_provider=provider)
    dispatcher = Dispatcher(node, {**server.handlers(), **(handlers or {})}, wiring.rpc_observers)
    srv = grpc.aio.server(interceptors=wiring.interceptors)
    srv.add_generic_rpc_handlers(dispatcher.generic_handlers())
    srv.add_insecure_port(f"unix:{cfg.socket}")
    await srv.start()
    try:
        async with grpc.aio.insecure_channel(f"unix:{cfg.socket}") as ch:
            await body(ch)
    finally:
        await srv.stop(5)  # grace: let handlers finish so their spans end
        node.images.close()
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        if any(s.kind == SpanKind.SERVER for s in exporter.get_finished_spans()):
            break
        await asyncio.sleep(0.01)
    return exporter.get_finished_spans()
