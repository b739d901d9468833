"""Container and pod stats RPCs: usage from :mod:`sycri.runtime.stats.stats` as CRI messages.

The handlers need from the node only ``containers`` and ``sandboxes`` (the small
Protocols of :mod:`sycri.runtime.stats.stats`) and ``stats`` (the collector that keeps CPU
baselines between calls). Stream* variants send what List* returns, in batches, so a
node with thousands of containers never hits the gRPC message limit (KEP-5825).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from typing import Protocol, TypeVar

from sycri.api import api_pb2
from sycri.errors import InvalidArgument, NotFound, excerpt
from sycri.runtime.cgroups.cgroupstats import CgroupSample, Pressure, PsiData
from sycri.runtime.stats.netstats import InterfaceStats
from sycri.runtime.stats.stats import (
    ContainerInfo,
    ContainerSource,
    ContainerUsage,
    NetworkUsage,
    PodInfo,
    PodSource,
    PodUsage,
    StatsCollector,
)

STREAM_BATCH = 500
MAX_ID = 128


class StatsNode(Protocol):
    """The parts of the node stats read (a test rig may be just these)."""

    @property
    def containers(self) -> ContainerSource: ...
    @property
    def sandboxes(self) -> PodSource: ...
    @property
    def stats(self) -> StatsCollector: ...


T = TypeVar("T")


def sources(node: StatsNode) -> tuple[ContainerSource, PodSource, StatsCollector]:
    """The node's container and pod stores as stats see them, and its collector."""
    return node.containers, node.sandboxes, node.stats


def batches(items: Sequence[T], size: int | None = None) -> Iterable[Sequence[T]]:
    """``items`` in slices of ``size`` (default STREAM_BATCH); one empty slice if none."""
    size = size or STREAM_BATCH
    if not items:
        yield items
        return
    for i in range(0, len(items), size):
        yield items[i : i + size]


def _u64(v: int | None) -> api_pb2.UInt64Value | None:
    return None if v is None else api_pb2.UInt64Value(value=max(int(v), 0))


def _check_id(value: str, what: str) -> str:
    if len(value) > MAX_ID or any(c in value for c in "/\x00"):
        raise InvalidArgument(f"{what} {excerpt(value)} is not a valid id")
    return value


def labels_match(labels: Mapping[str, str], selector: Mapping[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


def _by_id(ids: Iterable[str], wanted: str) -> str | None:
    """Full id for an exact id or a unique prefix of one (as crictl users type them)."""
    ids = list(ids)
    if not wanted:
        return None
    matches = [i for i in ids if i == wanted]
    if matches:
        return matches[0]
    pref = [i for i in ids if i.startswith(wanted)]
    if len(pref) > 1:
        raise InvalidArgument(f"id prefix {excerpt(wanted)} matches {len(pref)} objects")
    return pref[0] if pref else None


# ---------------------------------------------------------------- building messages


def psi(p: Pressure | None) -> api_pb2.PsiStats | None:
    """PSI as the kernel reports it (totals in microseconds, as containerd passes them)."""
    if p is None:
        return None

    def data(d: PsiData) -> api_pb2.PsiData:
        return api_pb2.PsiData(Total=d.total_us, Avg10=d.avg10, Avg60=d.avg60, Avg300=d.avg300)

    out = api_pb2.PsiStats(Some=data(p.some))
    if p.full is not None:
        out.Full.CopyFrom(data(p.full))
    return out


def cpu_usage(sample: CgroupSample, nano_cores: int | None) -> api_pb2.CpuUsage | None:
    if sample.cpu_usage_ns is None:
        return None
    return api_pb2.CpuUsage(
        timestamp=sample.timestamp_ns,
        usage_core_nano_seconds=_u64(sample.cpu_usage_ns),
        usage_nano_cores=_u64(nano_cores),
        psi=psi(sample.cpu_pressure),
    )


def io_usage(sample: CgroupSample) -> api_pb2.IoUsage | None:
    if sample.io_pressure is None:
        return None
    return api_pb2.IoUsage(timestamp=sample.timestamp_ns, psi=psi(sample.io_pressure))


def memory_usage(sample: CgroupSample) -> api_pb2.MemoryUsage | None:
    m = sample.memory
    if m is None:
        return None
    return api_pb2.MemoryUsage(
        timestamp=sample.timestamp_ns,
        working_set_bytes=_u64(m.working_set_bytes),
        available_bytes=_u64(m.available_bytes),
        usage_bytes=_u64(m.usage_bytes),
        rss_bytes=_u64(m.rss_bytes),
        page_faults=_u64(m.page_faults),
        major_page_faults=_u64(m.major_page_faults),
        psi=psi(sample.memory_pressure),
    )


def container_attributes(c: ContainerInfo) -> api_pb2.ContainerAttributes:
    return api_pb2.ContainerAttributes(
        id=c.id,
        metadata=api_pb2.ContainerMetadata(name=c.name, attempt=c.attempt),
        labels=dict(c.labels),
        annotations=dict(c.annotations),
    )


def container_stats(u: ContainerUsage) -> api_pb2.ContainerStats:
    out = api_pb2.ContainerStats(attributes=container_attributes(u.info))
    cpu = cpu_usage(u.sample, u.nano_cores)
    if cpu is not None:
        out.cpu.CopyFrom(cpu)
    mem = memory_usage(u.sample)
    if mem is not None:
        out.memory.CopyFrom(mem)
    io = io_usage(u.sample)
    if io is not None:
        out.io.CopyFrom(io)
    if u.disk is not None:
        out.writable_layer.CopyFrom(
            api_pb2.FilesystemUsage(
                timestamp=u.disk_timestamp_ns,
                fs_id=api_pb2.FilesystemIdentifier(mountpoint=u.disk_mountpoint),
                used_bytes=_u64(u.disk.bytes),
                inodes_used=_u64(u.disk.inodes),
            )
        )
    if u.sample.memory is not None and u.sample.memory.swap_bytes is not None:
        out.swap.CopyFrom(
            api_pb2.SwapUsage(
                timestamp=u.sample.timestamp_ns,
                swap_usage_bytes=_u64(u.sample.memory.swap_bytes),
            )
        )
    return out


def network_usage(n: NetworkUsage) -> api_pb2.NetworkUsage:
    def iface(i: InterfaceStats) -> api_pb2.NetworkInterfaceUsage:
        return api_pb2.NetworkInterfaceUsage(
            name=i.name,
            rx_bytes=_u64(i.rx_bytes),
            rx_errors=_u64(i.rx_errors),
            tx_bytes=_u64(i.tx_bytes),
            tx_errors=_u64(i.tx_errors),
        )

    out = api_pb2.NetworkUsage(timestamp=n.timestamp_ns)
    for i in n.interfaces:
        if i.name == "lo":
            continue
        msg = iface(i)
        out.interfaces.append(msg)
        if i.name == n.default:
            out.default_interface.CopyFrom(msg)
    return out


def pod_attributes(p: PodInfo) -> api_pb2.PodSandboxAttributes:
    return api_pb2.PodSandboxAttributes(
        id=p.id,
        metadata=api_pb2.PodSandboxMetadata(
            name=p.name, uid=p.uid, namespace=p.namespace, attempt=p.attempt
        ),
        labels=dict(p.labels),
        annotations=dict(p.annotations),
    )


def pod_stats(u: PodUsage) -> api_pb2.PodSandboxStats:
    linux = api_pb2.LinuxPodSandboxStats(containers=[container_stats(c) for c in u.containers])
    cpu = cpu_usage(u.sample, u.nano_cores)
    if cpu is not None:
        linux.cpu.CopyFrom(cpu)
    mem = memory_usage(u.sample)
    if mem is not None:
        linux.memory.CopyFrom(mem)
    io = io_usage(u.sample)
    if io is not None:
        linux.io.CopyFrom(io)
    net = network_usage(u.network) if u.network is not None else None
    if net is not None and net.HasField("default_interface"):
        # kubelet (CRI stats) reads default_interface whenever network is set, and
        # crashes on a network without one (a pod whose interfaces are already gone).
        linux.network.CopyFrom(net)
    if u.sample.pids is not None:
        linux.process.CopyFrom(
            api_pb2.ProcessUsage(timestamp=u.sample.timestamp_ns, process_count=_u64(u.sample.pids))
        )
    return api_pb2.PodSandboxStats(attributes=pod_attributes(u.info), linux=linux)


# ---------------------------------------------------------------- selection


def select_containers(
    items: Iterable[ContainerInfo], f: api_pb2.ContainerStatsFilter | None
) -> list[ContainerInfo]:
    items = list(items)
    if f is None:
        return items
    if f.id:
        full = _by_id([c.id for c in items], _check_id(f.id, "container id"))
        items = [c for c in items if c.id == full]
    if f.pod_sandbox_id:
        pods = {c.pod_sandbox_id for c in items}
        full = _by_id(pods, _check_id(f.pod_sandbox_id, "pod sandbox id"))
        items = [c for c in items if c.pod_sandbox_id == full]
    if f.label_selector:
        items = [c for c in items if labels_match(c.labels, f.label_selector)]
    return items


def select_pods(items: Iterable[PodInfo], f: api_pb2.PodSandboxStatsFilter | None) -> list[PodInfo]:
    items = list(items)
    if f is None:
        return items
    if f.id:
        full = _by_id([p.id for p in items], _check_id(f.id, "pod sandbox id"))
        items = [p for p in items if p.id == full]
    if f.label_selector:
        items = [p for p in items if labels_match(p.labels, f.label_selector)]
    return items


async def _list_containers(
    node: StatsNode, f: api_pb2.ContainerStatsFilter | None
) -> list[api_pb2.ContainerStats]:
    containers, pods, collector = sources(node)
    everything = list(containers.stats_containers())
    usage = await collector.containers(select_containers(everything, f))
    collector.forget_missing([c.id for c in everything], [p.id for p in pods.stats_pods()])
    return [container_stats(u) for u in usage]


async def _list_pods(
    node: StatsNode, f: api_pb2.PodSandboxStatsFilter | None
) -> list[api_pb2.PodSandboxStats]:
    containers, pods, collector = sources(node)
    usage = await collector.pods(select_pods(pods.stats_pods(), f), containers.stats_containers())
    return [pod_stats(u) for u in usage]


# ---------------------------------------------------------------- handlers


async def container_stats_rpc(
    node: StatsNode, request: api_pb2.ContainerStatsRequest
) -> api_pb2.ContainerStatsResponse:
    if not request.container_id:
        raise InvalidArgument("ContainerStats: container_id is required")
    containers, _pods, collector = sources(node)
    items = list(containers.stats_containers())
    full = _by_id([c.id for c in items], _check_id(request.container_id, "container id"))
    if full is None:
        raise NotFound(f"container {excerpt(request.container_id)} not found")
    [u] = await collector.containers([c for c in items if c.id == full])
    return api_pb2.ContainerStatsResponse(stats=container_stats(u))


async def list_container_stats(
    node: StatsNode, request: api_pb2.ListContainerStatsRequest
) -> api_pb2.ListContainerStatsResponse:
    f = request.filter if request.HasField("filter") else None
    return api_pb2.ListContainerStatsResponse(stats=await _list_containers(node, f))


async def stream_container_stats(
    node: StatsNode, request: api_pb2.StreamContainerStatsRequest
) -> AsyncIterator[api_pb2.StreamContainerStatsResponse]:
    f = request.filter if request.HasField("filter") else None
    for chunk in batches(await _list_containers(node, f)):
        yield api_pb2.StreamContainerStatsResponse(container_stats=chunk)


async def pod_sandbox_stats_rpc(
    node: StatsNode, request: api_pb2.PodSandboxStatsRequest
) -> api_pb2.PodSandboxStatsResponse:
    if not request.pod_sandbox_id:
        raise InvalidArgument("PodSandboxStats: pod_sandbox_id is required")
    containers, pod_source, collector = sources(node)
    pods = list(pod_source.stats_pods())
    full = _by_id([p.id for p in pods], _check_id(request.pod_sandbox_id, "pod sandbox id"))
    if full is None:
        raise NotFound(f"pod sandbox {excerpt(request.pod_sandbox_id)} not found")
    chosen = [p for p in pods if p.id == full]
    [u] = await collector.pods(chosen, containers.stats_containers())
    return api_pb2.PodSandboxStatsResponse(stats=pod_stats(u))


async def list_pod_sandbox_stats(
    node: StatsNode, request: api_pb2.ListPodSandboxStatsRequest
) -> api_pb2.ListPodSandboxStatsResponse:
    f = request.filter if request.HasField("filter") else None
    return api_pb2.ListPodSandboxStatsResponse(stats=await _list_pods(node, f))


async def stream_pod_sandbox_stats(
    node: StatsNode, request: api_pb2.StreamPodSandboxStatsRequest
) -> AsyncIterator[api_pb2.StreamPodSandboxStatsResponse]:
    f = request.filter if request.HasField("filter") else None
    for chunk in batches(await _list_pods(node, f)):
        yield api_pb2.StreamPodSandboxStatsResponse(pod_sandbox_stats=chunk)


RPCS = {
    "ContainerStats": container_stats_rpc,
    "ListContainerStats": list_container_stats,
    "StreamContainerStats": stream_container_stats,
    "PodSandboxStats": pod_sandbox_stats_rpc,
    "ListPodSandboxStats": list_pod_sandbox_stats,
    "StreamPodSandboxStats": stream_pod_sandbox_stats,
}
