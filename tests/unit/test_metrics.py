"""Prometheus metrics: names, the recording functions, the scrape-time inventory, the endpoint."""

from __future__ import annotations

import asyncio
import re
import urllib.request
from pathlib import Path

import grpc
import pytest
from prometheus_client.parser import text_string_to_metric_families
from sycri import command
from sycri.errors import InvalidArgument
from sycri.observability import metrics
from sycri.observability.metrics import REGISTRY, StoreStats, inventory

DOCS = Path(__file__).resolve().parents[2] / "docs" / "metrics.md"


def val(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


@pytest.fixture
def full_inventory():
    """Every inventory source registered, so scrape-time families appear."""
    inventory.pods = lambda: {"ready": 2, "notready": 1}
    inventory.containers = lambda: {"running": 3, "exited": 1}
    inventory.images = lambda: StoreStats(images=4, bytes=123456)
    yield
    inventory.reset()


def sycri_families():
    return [f for f in REGISTRY.collect() if f.name.startswith("sycri_")]


def test_names_follow_prometheus_conventions(full_inventory):
    families = sycri_families()
    assert len(families) >= 20
    for f in families:
        assert re.fullmatch(r"sycri_[a-z_]+", f.name), f.name
        assert f.documentation.strip(), f"{f.name} has no help text"
        if f.type == "counter":
            assert all(s.name.endswith("_total") for s in f.samples), f.name
        if f.type == "histogram":
            assert f.name.endswith("_seconds") or f.name.endswith("_bytes"), f.name
        if f.type == "gauge":
            assert not f.name.endswith("_total"), f.name
        assert not re.search(r"_(milli|micro)?(ms|seconds_total_seconds)$", f.name)


def test_every_metric_is_documented_and_every_documented_metric_exists(full_inventory):
    text = DOCS.read_text()
    documented = set(re.findall(r"^\| `(sycri_[a-z_]+)` \|", text, re.M))
    exported = set()
    for f in sycri_families():
        exported.add(f.name + ("_total" if f.type == "counter" else ""))
        if f.type == "info":
            exported.add(f.name + "_info")
            exported.discard(f.name)
    assert exported - documented == set(), "undocumented metrics"
    assert documented - exported == set(), "documented metrics that do not exist"


def test_process_and_python_collectors_are_registered():
    names = {f.name for f in REGISTRY.collect()}
    assert {"process_cpu_seconds", "process_resident_memory_bytes", "python_info"} <= names
    assert val("process_resident_memory_bytes") > 0
    assert val("sycri_build_info", version=__import__("sycri").__version__) == 1


def test_pull_counts_success_time_bytes_and_layers():
    before = val("sycri_image_pulls_total", source="docker", result="success")
    count_before = val("sycri_image_pull_duration_seconds_count", source="docker", result="success")
    bytes_before = val("sycri_image_downloaded_bytes_total", source="docker")
    dl = val("sycri_image_layers_total", result="downloaded")
    reused = val("sycri_image_layers_total", result="reused")
    with metrics.pull("docker") as p:
        assert val("sycri_image_pulls_in_progress", source="docker") == 1
        p.downloaded(1000)
        p.downloaded(24)
        p.downloaded(0)
        p.layer(reused=False)
        p.layer(reused=True)
        p.layer(reused=True)
    assert val("sycri_image_pulls_in_progress", source="docker") == 0
    assert val("sycri_image_pulls_total", source="docker", result="success") == before + 1
    assert (
        val("sycri_image_pull_duration_seconds_count", source="docker", result="success")
        == count_before + 1
    )
    assert val("sycri_image_downloaded_bytes_total", source="docker") == bytes_before + 1024
    assert val("sycri_image_layers_total", result="downloaded") == dl + 1
    assert val("sycri_image_layers_total", result="reused") == reused + 2


def test_a_pull_that_raises_counts_a_failure_and_reraises():
    before = val("sycri_image_pulls_total", source="oras", result="failure")
    with pytest.raises(InvalidArgument), metrics.pull("oras"):
        raise InvalidArgument("bad reference")
    assert val("sycri_image_pulls_total", source="oras", result="failure") == before + 1
    assert val("sycri_image_pulls_in_progress", source="oras") == 0


def test_unknown_source_is_folded_into_other():
    before = val("sycri_image_pulls_total", source="other", result="success")
    with metrics.pull("ftp://evil/" + "x" * 100):
        pass
    assert val("sycri_image_pulls_total", source="other", result="success") == before + 1
    assert not any(
        "ftp" in s.labels.get("source", "") for f in REGISTRY.collect() for s in f.samples
    )


def test_conversion_observes_only_successes():
    before = val("sycri_image_conversion_duration_seconds_count")
    with metrics.conversion():
        pass
    with pytest.raises(RuntimeError), metrics.conversion():
        raise RuntimeError("mksquashfs died")
    assert val("sycri_image_conversion_duration_seconds_count") == before + 1


def test_container_events():
    starts = val("sycri_container_starts_total")
    fails = val("sycri_container_start_failures_total")
    ooms = val("sycri_container_oom_kills_total")
    oom_exits = val("sycri_container_exits_total", reason="OOMKilled")
    completed = val("sycri_container_exits_total", reason="Completed")
    unknown = val("sycri_container_exits_total", reason="Unknown")
    dropped = val("sycri_container_events_dropped_total")
    metrics.container_started()
    metrics.container_start_failed()
    metrics.container_exited("OOMKilled")
    metrics.container_exited("Completed")
    metrics.container_exited("made up by a bug")
    metrics.event_dropped(3)
    assert val("sycri_container_starts_total") == starts + 1
    assert val("sycri_container_start_failures_total") == fails + 1
    assert val("sycri_container_oom_kills_total") == ooms + 1
    assert val("sycri_container_exits_total", reason="OOMKilled") == oom_exits + 1
    assert val("sycri_container_exits_total", reason="Completed") == completed + 1
    assert val("sycri_container_exits_total", reason="Unknown") == unknown + 1
    assert val("sycri_container_events_dropped_total") == dropped + 3


def test_cni_operation_counts_result_and_time():
    ok = val("sycri_cni_operations_total", operation="ADD", result="success")
    bad = val("sycri_cni_operations_total", operation="DEL", result="failure")
    n = val("sycri_cni_operation_duration_seconds_count", operation="ADD")
    with metrics.cni_operation("add"):
        pass
    with pytest.raises(OSError), metrics.cni_operation("DEL"):
        raise OSError("plugin missing")
    assert val("sycri_cni_operations_total", operation="ADD", result="success") == ok + 1
    assert val("sycri_cni_operations_total", operation="DEL", result="failure") == bad + 1
    assert val("sycri_cni_operation_duration_seconds_count", operation="ADD") == n + 1


def test_rpc_observer_tracks_in_flight_codes_and_latency():
    obs = metrics.RpcMetrics()
    n = val("sycri_rpc_requests_total", method="UnitTestRpc", code="NOT_FOUND")
    obs.started("UnitTestRpc")
    obs.started("UnitTestRpc")
    assert val("sycri_rpc_requests_in_flight", method="UnitTestRpc") == 2
    obs.finished("UnitTestRpc", grpc.StatusCode.NOT_FOUND, 0.003)
    obs.finished("UnitTestRpc", grpc.StatusCode.OK, 0.2)
    assert val("sycri_rpc_requests_in_flight", method="UnitTestRpc") == 0
    assert val("sycri_rpc_requests_total", method="UnitTestRpc", code="NOT_FOUND") == n + 1
    assert val("sycri_rpc_duration_seconds_bucket", method="UnitTestRpc", le="0.005") >= 1
    assert val("sycri_rpc_duration_seconds_sum", method="UnitTestRpc") >= 0.203


def test_command_observer_times_real_commands_and_counts_failures():
    obs = metrics.CommandMetrics()
    command.observers.append(obs)
    try:
        t = val("sycri_command_duration_seconds_count", command="true")
        f = val("sycri_command_failures_total", command="false")
        m = val("sycri_command_failures_total", command="no-such-binary-xyz")

        async def go():
            await command.run(["true"])
            await command.run(["false"], check=False)
            with pytest.raises(FileNotFoundError):
                await command.run(["no-such-binary-xyz"])

        asyncio.run(go())
    finally:
        command.observers.remove(obs)
    assert val("sycri_command_duration_seconds_count", command="true") == t + 1
    assert val("sycri_command_failures_total", command="false") == f + 1
    assert val("sycri_command_failures_total", command="no-such-binary-xyz") == m + 1


def test_inventory_is_read_at_scrape_time(full_inventory):
    assert val("sycri_pod_sandboxes", state="ready") == 2
    assert val("sycri_pod_sandboxes", state="notready") == 1
    assert val("sycri_containers", state="running") == 3
    assert val("sycri_containers", state="created") == 0  # every state is present
    assert val("sycri_image_store_images") == 4
    assert val("sycri_image_store_bytes") == 123456
    inventory.pods = lambda: {"ready": 5}
    assert val("sycri_pod_sandboxes", state="ready") == 5


def test_a_failing_inventory_source_drops_only_its_metric(full_inventory, caplog):
    def broken():
        raise OSError("state dir vanished")

    inventory.containers = broken
    assert REGISTRY.get_sample_value("sycri_containers", {"state": "running"}) is None
    assert val("sycri_pod_sandboxes", state="ready") == 2
    assert "reading sycri_containers for metrics failed" in caplog.text


def test_unregistered_inventory_is_absent_rather_than_zero():
    inventory.reset()
    names = {f.name for f in REGISTRY.collect()}
    assert "sycri_pod_sandboxes" not in names
    assert "sycri_image_store_bytes" not in names


def test_endpoint_serves_the_exposition_and_stops():
    server = metrics.serve_http("127.0.0.1:0")
    assert server is not None
    try:
        assert server.port > 0
        with urllib.request.urlopen(server.url, timeout=5) as r:
            assert r.status == 200
            assert r.headers["Content-Type"].startswith("text/plain")
            names = {f.name for f in text_string_to_metric_families(r.read().decode())}
        assert {"sycri_rpc_requests", "sycri_image_pulls", "process_cpu_seconds"} <= names
    finally:
        server.close()
    with pytest.raises(OSError):
        urllib.request.urlopen(server.url, timeout=2)


def test_empty_address_means_no_endpoint():
    assert metrics.serve_http("") is None


@pytest.mark.parametrize(
    ("address", "expected"),
    [
        ("127.0.0.1:9810", ("127.0.0.1", 9810)),
        ("[::1]:9810", ("::1", 9810)),
        (":9810", ("0.0.0.0", 9810)),
        ("localhost:0", ("localhost", 0)),
    ],
)
def test_split_address(address, expected):
    assert metrics.split_address(address) == expected


def test_event_subscriptions_are_counted_but_not_timed():
    obs = metrics.RpcMetrics()
    n = val("sycri_rpc_requests_total", method="GetContainerEvents", code="CANCELLED")
    obs.started("GetContainerEvents")
    assert val("sycri_rpc_requests_in_flight", method="GetContainerEvents") == 1
    obs.finished("GetContainerEvents", grpc.StatusCode.CANCELLED, 7200.0)
    assert val("sycri_rpc_requests_total", method="GetContainerEvents", code="CANCELLED") == n + 1
    assert val("sycri_rpc_duration_seconds_count", method="GetContainerEvents") == 0


def test_a_daemon_child_can_be_recorded_directly():
    n = val("sycri_command_failures_total", command="conmon")
    c = val("sycri_command_duration_seconds_count", command="conmon")
    metrics.record_command("conmon", True, 0.05)
    metrics.record_command("conmon", False, 0.5)
    assert val("sycri_command_duration_seconds_count", command="conmon") == c + 2
    assert val("sycri_command_failures_total", command="conmon") == n + 1
