"""Tracing: configuration from OTEL_* variables, child spans, errors, ids in the logs."""

from __future__ import annotations

import asyncio
import io
import json
import logging

import pytest
from opentelemetry.trace import StatusCode
from sycri import command
from sycri.observability import logs, tracing
from sycri.observability.tracing import Settings, TracingConfigError, settings

from tests.support.telemetry import memory_tracing


@pytest.fixture
def spans():
    _, exporter = memory_tracing()
    exporter.clear()
    yield exporter
    exporter.clear()


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({}, Settings(False)),
        ({"OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"}, Settings(False)),
        (
            {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"},
            Settings(True, "http/protobuf", "http://collector:4318"),
        ),
        (
            {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4317", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"},
            Settings(True, "grpc", "http://c:4317"),
        ),
        (
            {
                "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://t:4317",
                "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
                "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "grpc",
            },
            Settings(True, "grpc", "http://t:4317"),
        ),
        (
            {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318", "OTEL_SDK_DISABLED": "true"},
            Settings(False),
        ),
        (
            {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318", "OTEL_TRACES_EXPORTER": "none"},
            Settings(False),
        ),
    ],
)
def test_settings_come_from_standard_variables(env, expected):
    assert settings(env) == expected


@pytest.mark.parametrize(
    ("env", "named"),
    [
        (
            {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c", "OTEL_EXPORTER_OTLP_PROTOCOL": "http/json"},
            "OTEL_EXPORTER_OTLP_PROTOCOL",
        ),
        (
            {
                "OTEL_EXPORTER_OTLP_ENDPOINT": "http://c",
                "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "udp",
            },
            "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
        ),
        (
            {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c", "OTEL_TRACES_EXPORTER": "zipkin"},
            "OTEL_TRACES_EXPORTER",
        ),
    ],
)
def test_unusable_settings_name_the_variable(env, named):
    with pytest.raises(TracingConfigError, match=named):
        settings(env)


def test_tracing_is_off_without_an_endpoint():
    assert tracing.configure({}) is None
    assert tracing.server_interceptors(None) == []


def test_exporter_follows_the_protocol(monkeypatch):
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:1")
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as Grpc
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as Http

    grpc_exp = tracing.exporter(Settings(True, "grpc", "http://127.0.0.1:1"))
    http_exp = tracing.exporter(Settings(True, "http/protobuf", "http://127.0.0.1:1"))
    try:
        assert isinstance(grpc_exp, Grpc)
        assert isinstance(http_exp, Http)
        assert http_exp._endpoint == "http://127.0.0.1:1/v1/traces"
    finally:
        grpc_exp.shutdown()
        http_exp.shutdown()


def test_service_name_defaults_to_sycri_and_the_environment_wins(monkeypatch):
    monkeypatch.delenv("OTEL_SERVICE_NAME", raising=False)
    monkeypatch.delenv("OTEL_RESOURCE_ATTRIBUTES", raising=False)
    assert tracing.resource().attributes["service.name"] == "sycri"
    monkeypatch.setenv("OTEL_SERVICE_NAME", "sycri-node-7")
    assert tracing.resource().attributes["service.name"] == "sycri-node-7"


def test_span_nests_and_keeps_dotted_attributes(spans):
    with (
        tracing.span("image.pull", **{"image.reference": "busybox", "none": None}) as outer,
        tracing.span("registry.request", **{"http.request.method": "GET"}),
    ):
        pass
    inner_span, outer_span = spans.get_finished_spans()
    assert inner_span.name == "registry.request"
    assert inner_span.parent.span_id == outer.get_span_context().span_id
    assert inner_span.attributes["http.request.method"] == "GET"
    assert dict(outer_span.attributes) == {"image.reference": "busybox"}


def test_an_exception_is_recorded_on_the_span(spans):
    with pytest.raises(ValueError), tracing.span("layer.unpack"):
        raise ValueError("layer escapes the rootfs: ../etc/passwd")
    (sp,) = spans.get_finished_spans()
    assert sp.status.status_code == StatusCode.ERROR
    assert sp.events[0].name == "exception"
    assert "../etc/passwd" in sp.events[0].attributes["exception.message"]


def test_commands_get_child_spans_with_exit_codes(spans):
    async def go():
        with tracing.span("runtime.create"):
            await command.run(["true"])
            await command.run(["sh", "-c", "exit 3"], check=False, label="runc create")

    asyncio.run(go())
    by_name = {s.name: s for s in spans.get_finished_spans()}
    parent = by_name["runtime.create"]
    ok, failed = by_name["exec true"], by_name["exec runc create"]
    assert ok.parent.span_id == parent.context.span_id
    assert failed.parent.span_id == parent.context.span_id
    assert ok.attributes["process.exit.code"] == 0
    assert failed.attributes["process.exit.code"] == 3
    assert tuple(failed.attributes["process.command_args"]) == ("sh", "-c", "exit 3")
    assert failed.status.status_code == StatusCode.ERROR
    assert ok.status.status_code != StatusCode.ERROR


def test_a_command_that_times_out_is_an_error_span(spans):
    with pytest.raises(Exception, match="did not finish"):
        asyncio.run(command.run(["sleep", "5"], timeout=0.2))
    (sp,) = spans.get_finished_spans()
    assert sp.name == "exec sleep"
    assert sp.status.status_code == StatusCode.ERROR


def _log_through(fmt: str) -> str:
    out = io.StringIO()
    logger = logging.getLogger("sycri.test.tracing")
    logger.propagate = False
    logger.handlers[:] = [logs.handler(fmt, out)]
    logger.setLevel(logging.INFO)
    try:
        logger.info("outside")
        with tracing.span("pull") as sp:
            logger.info("inside")
    finally:
        logger.handlers.clear()
    ctx = sp.get_span_context()
    return out.getvalue(), format(ctx.trace_id, "032x"), format(ctx.span_id, "016x")


def test_plain_logs_carry_trace_ids(spans):
    text, trace_id, span_id = _log_through("plain")
    outside, inside = text.splitlines()
    assert "trace_id" not in outside
    assert inside.endswith(f"inside trace_id={trace_id} span_id={span_id}")


def test_json_logs_carry_trace_ids(spans):
    text, trace_id, span_id = _log_through("json")
    outside, inside = (json.loads(line) for line in text.splitlines())
    assert "trace_id" not in outside
    assert inside["msg"] == "inside"
    assert (inside["trace_id"], inside["span_id"]) == (trace_id, span_id)


def test_span_is_a_cheap_no_op_when_tracing_is_off():
    """In a fresh interpreter (no provider installed) spans cost nothing and hide nothing."""
    import subprocess
    import sys

    code = (
        "from opentelemetry import trace\n"
        "from sycri.observability import tracing\n"
        "with tracing.span('x', a=1) as sp:\n"
        "    sp.set_attribute('b', 2)\n"
        "    assert sp is trace.INVALID_SPAN and tracing.current_ids() is None\n"
        "try:\n"
        "    with tracing.span('y'):\n"
        "        raise KeyError('kept')\n"
        "except KeyError as e:\n"
        "    print('raised', e)\n"
    )
    env = {"PYTHONPATH": ":".join(sys.path), "PATH": "/usr/bin:/bin"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "raised 'kept'"


@pytest.mark.parametrize(
    ("env", "description"),
    [
        ({}, "ParentBased{root:AlwaysOnSampler"),
        ({"OTEL_TRACES_SAMPLER": "always_off"}, "AlwaysOffSampler"),
        (
            {"OTEL_TRACES_SAMPLER": "parentbased_traceidratio", "OTEL_TRACES_SAMPLER_ARG": "0.25"},
            "ParentBased{root:TraceIdRatioBased{0.25}",
        ),
    ],
)
def test_sampler_comes_from_the_environment(monkeypatch, env, description):
    monkeypatch.delenv("OTEL_TRACES_SAMPLER", raising=False)
    monkeypatch.delenv("OTEL_TRACES_SAMPLER_ARG", raising=False)
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    tp = tracing.provider()
    try:
        assert tp.sampler.get_description().startswith(description)
    finally:
        tp.shutdown()
