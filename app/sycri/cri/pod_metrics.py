"""ListMetricDescriptors, ListPodSandboxMetrics, StreamPodSandboxMetrics.

kubelet (``PodAndContainerStatsFromCRI``) serves ``/metrics/cadvisor`` from these
instead of running cAdvisor: each descriptor becomes a Prometheus family with the
descriptor's label keys, each Metric a sample with the same number of label values. The
names, types and units are cAdvisor's, so existing dashboards and alerts keep working.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

from sycri.api import api_pb2
from sycri.cri.stats import StatsNode, batches, sources
from sycri.runtime.stats.stats import ContainerUsage, PodUsage

COUNTER = api_pb2.COUNTER
GAUGE = api_pb2.GAUGE

CONTAINER_LABELS = ("container", "id", "image", "name", "namespace", "pod")
NETWORK_LABELS = ("interface", "namespace", "pod")


@dataclass(frozen=True)
class _Def:
    name: str
    help: str
    type: api_pb2.MetricType
    value: Callable[[ContainerUsage], int | None]


def _mem(attr: str) -> Callable[[ContainerUsage], int | None]:
    def get(u: ContainerUsage) -> int | None:
        m = u.sample.memory
        return None if m is None else getattr(m, attr)

    return get


def _cpu_seconds(u: ContainerUsage) -> int | None:
    # A UInt64Value cannot carry fractions: whole seconds, like a coarse cAdvisor scrape.
    ns = u.sample.cpu_usage_ns
    return None if ns is None else ns // 1_000_000_000


CONTAINER_METRICS = (
    _Def("container_cpu_usage_seconds_total", "Cumulative cpu time consumed in seconds.", COUNTER, _cpu_seconds),
    _Def("container_memory_usage_bytes", "Current memory usage in bytes, including all memory regardless of when it was accessed", GAUGE, _mem("usage_bytes")),
    _Def("container_memory_working_set_bytes", "Current working set in bytes.", GAUGE, _mem("working_set_bytes")),
    _Def("container_memory_rss", "Size of RSS in bytes.", GAUGE, _mem("rss_bytes")),
    _Def("container_memory_cache", "Number of bytes of page cache memory.", GAUGE, _mem("cache_bytes")),
    _Def("container_memory_failcnt", "Number of memory usage hits limits", COUNTER, _mem("failcnt")),
    _Def("container_oom_events_total", "Count of out of memory events observed for the container", COUNTER, _mem("oom_kills")),
    _Def("container_spec_memory_limit_bytes", "Memory limit for the container.", GAUGE, lambda u: (u.sample.memory.limit_bytes or 0) if u.sample.memory else None),
    _Def("container_processes", "Number of processes running inside the container.", GAUGE, lambda u: u.sample.pids),
    _Def("container_fs_usage_bytes", "Number of bytes that are consumed by the container on this filesystem.", GAUGE, lambda u: u.disk.bytes if u.disk else None),
    _Def("container_fs_inodes_total", "Number of inodes used by the container's writable layer.", GAUGE, lambda u: u.disk.inodes if u.disk else None),
)  # fmt: skip

NETWORK_METRICS = (
    ("container_network_receive_bytes_total", "Cumulative count of bytes received", "rx_bytes"),
    ("container_network_receive_errors_total", "Cumulative count of errors encountered while receiving", "rx_errors"),
    ("container_network_receive_packets_total", "Cumulative count of packets received", "rx_packets"),
    ("container_network_receive_packets_dropped_total", "Cumulative count of packets dropped while receiving", "rx_dropped"),
    ("container_network_transmit_bytes_total", "Cumulative count of bytes transmitted", "tx_bytes"),
    ("container_network_transmit_errors_total", "Cumulative count of errors encountered while transmitting", "tx_errors"),
    ("container_network_transmit_packets_total", "Cumulative count of packets transmitted", "tx_packets"),
    ("container_network_transmit_packets_dropped_total", "Cumulative count of packets dropped while transmitting", "tx_dropped"),
)  # fmt: skip


def descriptors() -> list[api_pb2.MetricDescriptor]:
    out = [
        api_pb2.MetricDescriptor(name=d.name, help=d.help, label_keys=CONTAINER_LABELS)
        for d in CONTAINER_METRICS
    ]
    out += [
        api_pb2.MetricDescriptor(name=n, help=h, label_keys=NETWORK_LABELS)
        for n, h, _ in NETWORK_METRICS
    ]
    return out


def container_name(pod: PodUsage, c: ContainerUsage) -> str:
    """cAdvisor's ``name`` label for a kubelet container (``k8s_<ctr>_<pod>_<ns>_<uid>_<n>``)."""
    p = pod.info
    return f"k8s_{c.info.name}_{p.name}_{p.namespace}_{p.uid}_{c.info.attempt}"


def pod_metrics(u: PodUsage) -> api_pb2.PodSandboxMetrics:
    out = api_pb2.PodSandboxMetrics(pod_sandbox_id=u.info.id)
    if u.network is not None:
        for iface in u.network.interfaces:
            if iface.name == "lo":
                continue
            for name, _help, attr in NETWORK_METRICS:
                out.metrics.append(
                    api_pb2.Metric(
                        name=name,
                        timestamp=u.network.timestamp_ns,
                        metric_type=COUNTER,
                        label_values=[iface.name, u.info.namespace, u.info.name],
                        value=api_pb2.UInt64Value(value=getattr(iface, attr)),
                    )
                )
    for c in u.containers:
        cm = api_pb2.ContainerMetrics(container_id=c.info.id)
        labels = [
            c.info.name,
            c.info.id,
            c.info.image,
            container_name(u, c),
            u.info.namespace,
            u.info.name,
        ]
        for d in CONTAINER_METRICS:
            v = d.value(c)
            if v is None:
                continue
            cm.metrics.append(
                api_pb2.Metric(
                    name=d.name,
                    timestamp=c.sample.timestamp_ns,
                    metric_type=d.type,
                    label_values=labels,
                    value=api_pb2.UInt64Value(value=max(int(v), 0)),
                )
            )
        out.container_metrics.append(cm)
    return out


async def _all(node: StatsNode) -> list[api_pb2.PodSandboxMetrics]:
    containers, pods, collector = sources(node)
    usage = await collector.pods(pods.stats_pods(), containers.stats_containers())
    return [pod_metrics(u) for u in usage]


async def list_metric_descriptors(
    node: StatsNode, request: api_pb2.ListMetricDescriptorsRequest
) -> api_pb2.ListMetricDescriptorsResponse:
    return api_pb2.ListMetricDescriptorsResponse(descriptors=descriptors())


async def list_pod_sandbox_metrics(
    node: StatsNode, request: api_pb2.ListPodSandboxMetricsRequest
) -> api_pb2.ListPodSandboxMetricsResponse:
    return api_pb2.ListPodSandboxMetricsResponse(pod_metrics=await _all(node))


async def stream_pod_sandbox_metrics(
    node: StatsNode, request: api_pb2.StreamPodSandboxMetricsRequest
) -> AsyncIterator[api_pb2.StreamPodSandboxMetricsResponse]:
    for chunk in batches(await _all(node)):
        yield api_pb2.StreamPodSandboxMetricsResponse(pod_sandbox_metrics=chunk)


RPCS = {
    "ListMetricDescriptors": list_metric_descriptors,
    "ListPodSandboxMetrics": list_pod_sandbox_metrics,
    "StreamPodSandboxMetrics": stream_pod_sandbox_metrics,
}
