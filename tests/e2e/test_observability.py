"""A live ``sycri serve``: metrics through its HTTP endpoint, traces to an OTLP receiver, logs."""

from __future__ import annotations

import json
import secrets
import socket

import grpc
import pytest
from sycri.api import api_pb2

from tests.support.server import SycriServer
from tests.support.telemetry import (
    OtlpGrpcReceiver,
    OtlpHttpReceiver,
    metrics_url,
    scrape,
    value,
)


@pytest.fixture
def observed(tmp_path):
    """sycri with its metrics endpoint on a free loopback port."""
    server = SycriServer(tmp_path / "sycri", flags=["--metrics-address", "127.0.0.1:0"]).start()
    try:
        yield server, metrics_url(server)
    finally:
        server.stop()


def test_rpc_metrics_change_across_calls(observed):
    server, url = observed
    before = scrape(url)
    rt = server.runtime()
    for _ in range(3):
        rt.Version(api_pb2.VersionRequest())
    rt.Status(api_pb2.StatusRequest())
    # An RPC that fails however far sycri gets: a container that does not exist.
    with pytest.raises(grpc.RpcError) as err:
        rt.ContainerStatus(api_pb2.ContainerStatusRequest(container_id="f" * 64))
    failed_code = err.value.code().name
    after = scrape(url)

    def delta(name, **labels):
        return value(after, name, **labels) - value(before, name, **labels)

    assert delta("sycri_rpc_requests_total", method="Version", code="OK") == 3
    assert delta("sycri_rpc_requests_total", method="Status", code="OK") == 1
    assert delta("sycri_rpc_requests_total", method="ContainerStatus", code=failed_code) == 1
    assert failed_code != "OK"
    assert delta("sycri_rpc_duration_seconds_count", method="Version") == 3
    assert delta("sycri_rpc_duration_seconds_bucket", method="Version", le="+Inf") == 3
    assert value(after, "sycri_rpc_duration_seconds_sum", method="Version") > 0
    assert value(after, "sycri_rpc_requests_in_flight", method="Version") == 0
    assert value(after, "sycri_build_info", version=__import__("sycri").__version__) == 1
    assert value(after, "process_resident_memory_bytes") > 10_000_000
    assert value(after, "process_open_fds") > 0


def test_metrics_endpoint_is_off_when_the_address_is_empty(sycri):
    # the shared fixture runs sycri with --metrics-address ""
    sycri.runtime().Version(api_pb2.VersionRequest())
    assert "metrics on" not in sycri.log()


def test_a_taken_metrics_port_stops_start_up_with_a_clear_message(tmp_path):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        server = SycriServer(tmp_path / "s", flags=["--metrics-address", f"127.0.0.1:{port}"])
        with pytest.raises(
            RuntimeError, match=f"metrics_address 127.0.0.1:{port}: Address already"
        ):
            server.start()
    assert not server.socket.exists()


@pytest.mark.parametrize("receiver_cls", [OtlpHttpReceiver, OtlpGrpcReceiver], ids=["http", "grpc"])
def test_spans_reach_an_otlp_receiver_with_kubelets_parent(tmp_path, receiver_cls):
    receiver = receiver_cls()
    trace_id, parent_id = secrets.token_hex(16), secrets.token_hex(8)
    server = SycriServer(
        tmp_path / "s",
        env={**receiver.env, "OTEL_BSP_SCHEDULE_DELAY": "100", "OTEL_SERVICE_NAME": ""},
    )
    try:
        server.start()
        server.runtime().Status(
            api_pb2.StatusRequest(), metadata=(("traceparent", f"00-{trace_id}-{parent_id}-01"),)
        )
        ((resource, span),) = receiver.received.wait_for(
            lambda s: s.name == "/runtime.v1.RuntimeService/Status"
        )
        assert span.trace_id.hex() == trace_id
        assert span.parent_span_id.hex() == parent_id
        assert span.kind == span.SPAN_KIND_SERVER
        assert resource["service.name"] == "sycri"
        # the debug log line of that request carries the same ids
        line = next(x for x in server.log().splitlines() if "Status request:" in x)
        assert f"trace_id={trace_id} span_id={span.span_id.hex()}" in line
    finally:
        server.stop()
        receiver.close()


def test_spans_batched_at_shutdown_are_flushed(tmp_path):
    receiver = OtlpHttpReceiver()
    server = SycriServer(tmp_path / "s", env={**receiver.env, "OTEL_BSP_SCHEDULE_DELAY": "600000"})
    try:
        server.start()
        server.runtime().Version(api_pb2.VersionRequest())
        assert server.stop() == 0
        receiver.received.wait_for(lambda s: s.name.endswith("/Version"), timeout=5)
    finally:
        server.stop()
        receiver.close()


def test_json_logs_carry_trace_ids_of_the_rpc(tmp_path):
    receiver = OtlpHttpReceiver()
    trace_id = secrets.token_hex(16)
    server = SycriServer(tmp_path / "s", flags=["--log-format", "json"], env=receiver.env)
    try:
        server.start()
        server.runtime().Version(
            api_pb2.VersionRequest(),
            metadata=(("traceparent", f"00-{trace_id}-{secrets.token_hex(8)}-01"),),
        )
        lines = [json.loads(x) for x in server.log().splitlines() if x.startswith("{")]
        requests = [x for x in lines if x["msg"].startswith("Version request:")]
        (req,) = [x for x in requests if x.get("trace_id") == trace_id]
        assert len(req["span_id"]) == 16
        # the start-up probe had no traceparent: its own trace, still with ids
        assert all(len(x.get("trace_id", "")) == 32 for x in requests)
    finally:
        server.stop()
        receiver.close()


def test_a_bad_otel_protocol_stops_start_up_naming_the_variable(tmp_path):
    server = SycriServer(
        tmp_path / "s",
        env={
            "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:1",
            "OTEL_EXPORTER_OTLP_PROTOCOL": "http/json",
        },
    )
    with pytest.raises(RuntimeError, match="OTEL_EXPORTER_OTLP_PROTOCOL"):
        server.start()
