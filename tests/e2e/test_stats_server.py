"""Stats, metrics and events RPCs are served by the real server through its socket."""

from __future__ import annotations

import grpc
import pytest
from sycri.api import api_pb2


def test_stats_of_a_node_without_containers(sycri):
    rt = sycri.runtime()
    assert list(rt.ListContainerStats(api_pb2.ListContainerStatsRequest()).stats) == []
    assert list(rt.ListPodSandboxStats(api_pb2.ListPodSandboxStatsRequest()).stats) == []
    streamed = list(rt.StreamContainerStats(api_pb2.StreamContainerStatsRequest()))
    assert len(streamed) == 1 and not streamed[0].container_stats
    metrics = rt.ListPodSandboxMetrics(api_pb2.ListPodSandboxMetricsRequest())
    assert list(metrics.pod_metrics) == []


def test_unknown_objects_are_not_found(sycri):
    rt = sycri.runtime()
    with pytest.raises(grpc.RpcError) as err:
        rt.ContainerStats(api_pb2.ContainerStatsRequest(container_id="0" * 64))
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.RpcError) as err:
        rt.PodSandboxStats(api_pb2.PodSandboxStatsRequest())
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_metric_descriptors_are_cadvisor_names(sycri):
    d = sycri.runtime().ListMetricDescriptors(api_pb2.ListMetricDescriptorsRequest())
    names = {x.name for x in d.descriptors}
    assert "container_memory_working_set_bytes" in names
    assert "container_network_receive_bytes_total" in names
    assert all(x.help and x.label_keys for x in d.descriptors)


def test_event_stream_stays_open(sycri):
    call = sycri.runtime().GetContainerEvents(api_pb2.GetEventsRequest(), timeout=0.5)
    with pytest.raises(grpc.RpcError) as err:
        next(call)
    # No events on an empty node: the stream waits (until the client's deadline).
    assert err.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert sycri.runtime().Version(api_pb2.VersionRequest()).runtime_name == "sycri"
