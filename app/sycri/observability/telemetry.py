"""Start and stop everything observability needs for one server, in one place.

``server.serve`` calls :func:`start` before it opens the socket and
:meth:`Telemetry.close` after it stops: the ``/metrics`` endpoint, the tracer
provider from ``OTEL_*``, the command observer, and what the gRPC server needs
(interceptors and RPC observers).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import grpc
from opentelemetry.sdk.trace import TracerProvider

from sycri import command
from sycri.config import Config
from sycri.observability import metrics, tracing

if TYPE_CHECKING:
    from sycri.cri.service import RpcObserver


class TelemetryError(RuntimeError):
    """Observability cannot start as configured; the message names the setting."""


@dataclass
class Telemetry:
    metrics_server: metrics.MetricsServer | None
    tracer_provider: TracerProvider | None
    command_observer: metrics.CommandMetrics = field(default_factory=metrics.CommandMetrics)

    @property
    def interceptors(self) -> list[grpc.aio.ServerInterceptor]:
        return tracing.server_interceptors(self.tracer_provider)

    @property
    def rpc_observers(self) -> list[RpcObserver]:
        return [metrics.RpcMetrics(), tracing.RpcSpans()]

    def close(self) -> None:
        if self.metrics_server is not None:
            self.metrics_server.close()
        if self.command_observer in command.observers:
            command.observers.remove(self.command_observer)
        if self.tracer_provider is not None:
            self.tracer_provider.shutdown()  # flushes spans still batched


def start(cfg: Config) -> Telemetry:
    try:
        provider = tracing.configure()
    except tracing.TracingConfigError as exc:
        raise TelemetryError(str(exc)) from None
    try:
        server = metrics.serve_http(cfg.metrics_address)
    except OSError as exc:
        if provider is not None:
            provider.shutdown()
        raise TelemetryError(f"metrics_address {cfg.metrics_address}: {exc.strerror}") from None
    out = Telemetry(server, provider)
    command.observers.append(out.command_observer)
    return out
