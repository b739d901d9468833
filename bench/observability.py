"""What observability costs per RPC, per span and per scrape.

Figures printed:
- Version RPC round trip through the real dispatcher on a unix socket: bare, with the
  metrics observer, and with metrics + tracing (interceptor, spans exported to a
  no-op processor), median and p99 over many calls;
- ``tracing.span()`` with tracing off (no provider) and on;
- one scrape of /metrics (rendering the registry) and its size.

Run: ``PYTHONPATH=app .venv/bin/python bench/observability.py``
"""

from __future__ import annotations

import asyncio
import statistics
import tempfile
import time
import urllib.request
from pathlib import Path

import grpc
from opentelemetry import trace
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult
from sycri import config, server
from sycri.api import api_pb2, api_pb2_grpc
from sycri.cri.service import Dispatcher
from sycri.observability import metrics, tracing

CALLS = 2000


class Discard(SpanExporter):
    def export(self, spans):
        return SpanExportResult.SUCCESS


async def rpc_times(base: Path, observers: list, interceptors: list) -> list[float]:
    cfg = config.build(
        {"socket": str(base / "s.sock"), "root_dir": str(base / "root"),
         "run_dir": str(base / "run"), "metrics_address": ""}
    )  # fmt: skip
    node = server.assemble(cfg)
    srv = grpc.aio.server(interceptors=interceptors)
    srv.add_generic_rpc_handlers(Dispatcher(node, server.handlers(), observers).generic_handlers())
    srv.add_insecure_port(f"unix:{cfg.socket}")
    await srv.start()
    out = []
    try:
        async with grpc.aio.insecure_channel(f"unix:{cfg.socket}") as ch:
            stub = api_pb2_grpc.RuntimeServiceStub(ch)
            for _ in range(200):  # warm up
                await stub.Version(api_pb2.VersionRequest())
            for _ in range(CALLS):
                t0 = time.perf_counter()
                await stub.Version(api_pb2.VersionRequest())
                out.append(time.perf_counter() - t0)
    finally:
        await srv.stop(None)
    return out


def summary(label: str, times: list[float], floor: float | None = None) -> float:
    med = statistics.median(times)
    p99 = statistics.quantiles(times, n=100)[98]
    extra = f"  (+{(med - floor) * 1e6:6.1f} us over bare)" if floor else ""
    print(f"{label:<34} median {med * 1e6:7.1f} us   p99 {p99 * 1e6:7.1f} us{extra}")
    return med


def span_cost(n: int = 20000) -> float:
    t0 = time.perf_counter()
    for _ in range(n):
        with tracing.span("bench", **{"k": "v"}):
            pass
    return (time.perf_counter() - t0) / n


def main() -> None:
    print(f"Version RPC over a unix socket, {CALLS} calls each")
    with tempfile.TemporaryDirectory() as d:
        bare = summary("bare dispatcher", asyncio.run(rpc_times(Path(d) / "a", [], [])))
        summary(
            "+ metrics observer",
            asyncio.run(rpc_times(Path(d) / "b", [metrics.RpcMetrics()], [])),
            bare,
        )
        off = span_cost()
        provider = tracing.provider(SimpleSpanProcessor(Discard()))
        trace.set_tracer_provider(provider)
        wiring = [metrics.RpcMetrics(), tracing.RpcSpans()]
        summary(
            "+ metrics + tracing (sampled)",
            asyncio.run(rpc_times(Path(d) / "c", wiring, tracing.server_interceptors(provider))),
            bare,
        )
        on = span_cost()
    print(f"tracing.span(): off {off * 1e6:.2f} us, on (sampled, discarded) {on * 1e6:.2f} us")
    srv = metrics.serve_http("127.0.0.1:0")
    assert srv is not None
    try:
        times, size = [], 0
        for _ in range(200):
            t0 = time.perf_counter()
            with urllib.request.urlopen(srv.url) as r:
                size = len(r.read())
            times.append(time.perf_counter() - t0)
        print(f"/metrics scrape: median {statistics.median(times) * 1e3:.2f} ms, {size} bytes")
    finally:
        srv.close()


if __name__ == "__main__":
    main()
