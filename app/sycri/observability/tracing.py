"""OpenTelemetry tracing, configured only by the standard ``OTEL_*`` environment variables.

Tracing is off unless an OTLP endpoint is set (``OTEL_EXPORTER_OTLP_ENDPOINT`` or
``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``); ``OTEL_SDK_DISABLED=true`` or
``OTEL_TRACES_EXPORTER=none`` turn it off again. The exporter speaks OTLP over gRPC
or HTTP as ``OTEL_EXPORTER_OTLP_(TRACES_)PROTOCOL`` says (``grpc``, ``http/protobuf``;
the specification's default is ``http/protobuf``); headers, certificates, timeouts,
the sampler (``OTEL_TRACES_SAMPLER``, default parent-based always-on, so kubelet's
sampling decision carries over), batching (``OTEL_BSP_*``) and the resource
(``OTEL_SERVICE_NAME``, ``OTEL_RESOURCE_ATTRIBUTES``) are read by the SDK itself.

The server span of each RPC comes from the OpenTelemetry gRPC aio server interceptor,
which takes the parent from the incoming ``traceparent`` metadata. Domain code opens
child spans with :func:`span`; when tracing is off those are no-op and cheap.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import grpc
from opentelemetry import trace
from opentelemetry.sdk.resources import SERVICE_NAME, SERVICE_VERSION, Resource
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter
from opentelemetry.trace import Span, Status, StatusCode

from sycri import __version__

log = logging.getLogger("sycri.tracing")

TRACER_NAME = "sycri"
PROTOCOLS = ("grpc", "http/protobuf")


class TracingConfigError(ValueError):
    """An ``OTEL_*`` variable sycri cannot honour; the message names it."""


@dataclass(frozen=True)
class Settings:
    """What the environment asks for; ``enabled`` False means no provider at all."""

    enabled: bool
    protocol: str = "http/protobuf"
    endpoint: str = ""


def settings(env: Mapping[str, str] | None = None) -> Settings:
    """Read the standard variables (pure: no SDK object is made)."""
    env = os.environ if env is None else env
    if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return Settings(False)
    if env.get("OTEL_TRACES_EXPORTER", "otlp").strip().lower() in ("none", ""):
        return Settings(False)
    endpoint = env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or env.get(
        "OTEL_EXPORTER_OTLP_ENDPOINT", ""
    )
    if not endpoint.strip():
        return Settings(False)
    exporter = env.get("OTEL_TRACES_EXPORTER", "otlp").strip().lower()
    if exporter != "otlp":
        raise TracingConfigError(
            f"OTEL_TRACES_EXPORTER: sycri supports 'otlp' or 'none', got {exporter!r}"
        )
    var = (
        "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL"
        if env.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
        else "OTEL_EXPORTER_OTLP_PROTOCOL"
    )
    protocol = env.get(var, "http/protobuf").strip().lower() or "http/protobuf"
    if protocol not in PROTOCOLS:
        raise TracingConfigError(f"{var}: expected one of {', '.join(PROTOCOLS)}, got {protocol!r}")
    return Settings(True, protocol, endpoint.strip())


def resource() -> Resource:
    """``service.name`` sycri unless the environment names the service."""
    res = Resource.create({SERVICE_VERSION: __version__})
    if str(res.attributes.get(SERVICE_NAME, "")).startswith("unknown_service"):
        res = res.merge(Resource({SERVICE_NAME: "sycri"}))
    return res


def exporter(s: Settings) -> SpanExporter:
    """The OTLP span exporter for ``s.protocol``; it reads the rest of ``OTEL_*`` itself."""
    if s.protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (
            OTLPSpanExporter as GrpcExporter,
        )

        return GrpcExporter()
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
        OTLPSpanExporter as HttpExporter,
    )

    return HttpExporter()


def provider(processor: SpanProcessor | None = None) -> TracerProvider:
    """A provider with sycri's resource and the environment's sampler."""
    tp = TracerProvider(resource=resource(), shutdown_on_exit=False)
    if processor is not None:
        tp.add_span_processor(processor)
    return tp


def configure(env: Mapping[str, str] | None = None) -> TracerProvider | None:
    """Install the global tracer provider when the environment asks for tracing.

    Returns it (call ``shutdown()`` at exit to flush), or None when tracing is off.
    """
    s = settings(env)
    if not s.enabled:
        return None
    tp = provider(BatchSpanProcessor(exporter(s)))
    trace.set_tracer_provider(tp)
    log.info("tracing on: OTLP %s to %s", s.protocol, s.endpoint)
    return tp


def server_interceptors(tracer_provider: TracerProvider | None) -> list[grpc.aio.ServerInterceptor]:
    """The gRPC aio server interceptor that opens a server span per RPC; none when off."""
    if tracer_provider is None:
        return []
    from opentelemetry.instrumentation.grpc import aio_server_interceptor

    # the instrumentation's factory is unannotated; it returns a grpc.aio.ServerInterceptor
    interceptor: grpc.aio.ServerInterceptor = aio_server_interceptor(  # type: ignore[no-untyped-call]
        tracer_provider=tracer_provider
    )
    return [interceptor]


class RpcSpans:
    """An ``RpcObserver`` recording a handler's error on the RPC's server span.

    The gRPC instrumentation sets the span status by the semantic conventions (ERROR
    only for server faults such as INTERNAL or UNAVAILABLE); this adds the exception
    itself (type and message) for every failed RPC, so NOT_FOUND and
    INVALID_ARGUMENT answers say why in the trace too.
    """

    def started(self, method: str) -> None:
        pass

    def finished(self, method: str, code: grpc.StatusCode, seconds: float) -> None:
        pass

    def failed(self, method: str, code: grpc.StatusCode, exc: BaseException) -> None:
        sp = trace.get_current_span()
        if sp.is_recording():
            sp.record_exception(exc, attributes={"rpc.grpc.status_code": code.value[0]})


# A proxy: it follows the global provider once one is installed, and costs little
# while none is (tracing off).
_TRACER = trace.get_tracer(TRACER_NAME, __version__)


def tracer() -> trace.Tracer:
    return _TRACER


@contextlib.contextmanager
def span(name: str, **attributes: Any) -> Iterator[Span]:
    """A child span of the current one: ``with span("registry.request", **{"url.full": u}):``.

    Dotted attribute names pass through ``**``; ``None`` values are left out. An
    exception leaving the block is recorded on the span and marks it as an error.
    """
    if isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider):
        yield trace.INVALID_SPAN  # tracing off: skip the API's context machinery
        return
    attrs = {k: v for k, v in attributes.items() if v is not None}
    with tracer().start_as_current_span(
        name, attributes=attrs, record_exception=True, set_status_on_exception=True
    ) as sp:
        yield sp


def set_error(sp: Span, description: str) -> None:
    """Mark ``sp`` failed without an exception (a command that exited non-zero)."""
    sp.set_status(Status(StatusCode.ERROR, description))


def current_ids() -> tuple[str, str] | None:
    """The current trace and span ids as hex, or None outside a recorded span."""
    ctx = trace.get_current_span().get_span_context()
    if not ctx.is_valid:
        return None
    return format(ctx.trace_id, "032x"), format(ctx.span_id, "016x")
