"""Stats, metrics and events RPCs through a real gRPC socket and sycri's dispatcher.

The node's container and pod stores are small in-test implementations of the Protocols
the handlers need, pointing at real things: real cgroups with a busy and an allocating
process, a real network namespace with traffic, a real writable-layer directory.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass

import grpc
import pytest
from sycri.api import api_pb2, api_pb2_grpc
from sycri.cri import events as cri_events
from sycri.cri import pod_metrics, stats
from sycri.cri.service import Dispatcher
from sycri.runtime.cgroups import cgroupstats
from sycri.runtime.events import ContainerEvent, ContainerEventType, EventBus
from sycri.runtime.stats.stats import ContainerInfo, PodInfo, StatsCollector

from tests.support.aio import run_async
from tests.support.stats_env import (
    ALLOC,
    BURN,
    RealCgroup,
    RealNetns,
    StaticContainers,
    StaticPods,
    token,
)

pytestmark = pytest.mark.root

MiB = 1024 * 1024


@dataclass
class Node:
    containers: StaticContainers
    sandboxes: StaticPods
    stats: StatsCollector
    events: EventBus


@dataclass
class Rig:
    node: Node
    stub: api_pb2_grpc.RuntimeServiceStub
    netns: RealNetns
    pod_a: str
    pod_b: str
    upper: str


@contextlib.asynccontextmanager
async def rig(event_buffer: int = 1000) -> AsyncIterator[Rig]:
    """Pod A (own netns, pod cgroup, a burner and a 64 MiB allocator) and pod B (host
    network, no pod cgroup, one exited container with a writable layer only)."""
    t = token()
    layout = cgroupstats.detect_layout()
    tmp = tempfile.mkdtemp(prefix="ntst")
    cgroups: list[RealCgroup] = []
    netns = None
    server = channel = None
    try:
        pod_cg = RealCgroup(layout, f"/sycri-ntst-{t}").create()
        cgroups.append(pod_cg)
        burn = RealCgroup(layout, f"{pod_cg.rel}/sycri-burn").create()
        alloc = RealCgroup(layout, f"{pod_cg.rel}/sycri-alloc").create()
        cgroups[:0] = [burn, alloc]
        alloc.set_memory_limit(256 * MiB)
        burn.spawn(BURN.format(secs=120))
        p = alloc.spawn(ALLOC.format(mib=64))
        assert p.stdout.readline().strip() == "ready"
        netns = RealNetns.create()
        upper = os.path.join(tmp, "upper")
        os.makedirs(os.path.join(upper, "var", "log"))
        with open(os.path.join(upper, "var", "log", "app.log"), "wb") as f:
            f.write(os.urandom(3 * MiB))

        pod_a, pod_b = "a" * 60 + "0001", "b" * 60 + "0002"
        containers = StaticContainers(
            {
                c.id: c
                for c in (
                    ContainerInfo(
                        id="c" * 60 + "burn", pod_sandbox_id=pod_a, name="burner",
                        labels={"app": "web", "role": "cpu"}, cgroup_path=burn.rel,
                        running=True, image="busybox:1",
                    ),
                    ContainerInfo(
                        id="c" * 60 + "allo", pod_sandbox_id=pod_a, name="allocator",
                        attempt=2, labels={"app": "web", "role": "mem"},
                        cgroup_path=alloc.rel, upper_dir=upper, running=True,
                    ),
                    ContainerInfo(
                        id="d" * 60 + "done", pod_sandbox_id=pod_b, name="job",
                        labels={"app": "batch"}, upper_dir=upper, running=False,
                    ),
                )
            }
        )  # fmt: skip
        pods = StaticPods(
            {
                pod_a: PodInfo(
                    id=pod_a, name="web-0", namespace="default", uid="uid-a",
                    labels={"app": "web"}, netns_path=netns.path, cgroup_path=pod_cg.rel,
                ),
                pod_b: PodInfo(
                    id=pod_b, name="batch-0", namespace="jobs", uid="uid-b",
                    labels={"app": "batch"},
                ),
            }
        )  # fmt: skip
        bus = EventBus(buffer=event_buffer, snapshot=cri_events.snapshotter(pods, containers))
        node = Node(containers, pods, StatsCollector("cgroupfs", layout, 0.0, 0.2), bus)
        handlers = {**stats.RPCS, **pod_metrics.RPCS, **cri_events.RPCS}
        server = grpc.aio.server()
        server.add_generic_rpc_handlers(Dispatcher(node, handlers).generic_handlers())
        sock = os.path.join(tmp, "s.sock")
        server.add_insecure_port(f"unix:{sock}")
        await server.start()
        channel = grpc.aio.insecure_channel(f"unix:{sock}")
        yield Rig(node, api_pb2_grpc.RuntimeServiceStub(channel), netns, pod_a, pod_b, upper)
    finally:
        if channel is not None:
            await channel.close()
        if server is not None:
            await server.stop(0)
        for cg in cgroups:
            cg.remove()
        if netns is not None:
            netns.remove()
        shutil.rmtree(tmp, ignore_errors=True)


def ids(stats_list) -> set[str]:
    return {s.attributes.id for s in stats_list}


@run_async
async def test_container_stats():
    async with rig() as r:
        burn_id, alloc_id, done_id = list(r.node.containers.items)
        resp = await r.stub.ContainerStats(api_pb2.ContainerStatsRequest(container_id=alloc_id))
        s = resp.stats
        assert s.attributes.metadata.name == "allocator" and s.attributes.metadata.attempt == 2
        assert s.attributes.labels["role"] == "mem"
        assert s.memory.working_set_bytes.value >= 64 * MiB
        assert s.memory.rss_bytes.value >= 64 * MiB
        assert s.memory.available_bytes.value == 256 * MiB - s.memory.working_set_bytes.value
        assert s.memory.page_faults.value > 0
        assert s.cpu.usage_core_nano_seconds.value > 0
        assert s.writable_layer.used_bytes.value >= 3 * MiB
        assert s.writable_layer.inodes_used.value == 4  # upper, var, log, app.log
        assert os.path.ismount(s.writable_layer.fs_id.mountpoint)

        # nano-cores need two samples; the burner uses about one core.
        first = (
            await r.stub.ContainerStats(api_pb2.ContainerStatsRequest(container_id=burn_id))
        ).stats
        assert not first.cpu.HasField("usage_nano_cores")
        await asyncio.sleep(1.0)
        second = (
            await r.stub.ContainerStats(api_pb2.ContainerStatsRequest(container_id=burn_id[:62]))
        ).stats
        assert second.attributes.id == burn_id  # a unique prefix names the container
        assert 200_000_000 < second.cpu.usage_nano_cores.value < 1_150_000_000
        assert second.cpu.usage_core_nano_seconds.value > first.cpu.usage_core_nano_seconds.value

        # An exited container: its writable layer, no cgroup figures.
        done = (
            await r.stub.ContainerStats(api_pb2.ContainerStatsRequest(container_id=done_id))
        ).stats
        assert not done.HasField("cpu") and not done.HasField("memory")
        assert done.writable_layer.used_bytes.value >= 3 * MiB


@run_async
async def test_container_stats_errors():
    async with rig() as r:
        for req, code, word in [
            (api_pb2.ContainerStatsRequest(), grpc.StatusCode.INVALID_ARGUMENT, "required"),
            (api_pb2.ContainerStatsRequest(container_id="f" * 64), grpc.StatusCode.NOT_FOUND, "fff"),
            (api_pb2.ContainerStatsRequest(container_id="c"), grpc.StatusCode.INVALID_ARGUMENT, "matches 2"),
            (api_pb2.ContainerStatsRequest(container_id="../x"), grpc.StatusCode.INVALID_ARGUMENT, "../x"),
        ]:  # fmt: skip
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await r.stub.ContainerStats(req)
            assert err.value.code() == code and word in err.value.details()
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await r.stub.PodSandboxStats(api_pb2.PodSandboxStatsRequest(pod_sandbox_id="zz"))
        assert err.value.code() == grpc.StatusCode.NOT_FOUND


@run_async
async def test_list_container_stats_filters_and_stream(monkeypatch):
    async with rig() as r:
        burn_id, alloc_id, done_id = list(r.node.containers.items)

        async def listed(**f) -> set[str]:
            req = api_pb2.ListContainerStatsRequest(filter=api_pb2.ContainerStatsFilter(**f))
            return ids((await r.stub.ListContainerStats(req)).stats)

        everything = ids(
            (await r.stub.ListContainerStats(api_pb2.ListContainerStatsRequest())).stats
        )
        assert everything == {burn_id, alloc_id, done_id}
        assert await listed(pod_sandbox_id=r.pod_a) == {burn_id, alloc_id}
        assert await listed(pod_sandbox_id=r.pod_b[:8]) == {done_id}
        assert await listed(label_selector={"app": "web", "role": "mem"}) == {alloc_id}
        assert await listed(id=burn_id, label_selector={"role": "mem"}) == set()
        assert await listed(id="e" * 64) == set()

        monkeypatch.setattr(stats, "STREAM_BATCH", 2)
        chunks = [
            list(m.container_stats)
            async for m in r.stub.StreamContainerStats(api_pb2.StreamContainerStatsRequest())
        ]
        assert [len(c) for c in chunks] == [2, 1]
        assert ids([s for c in chunks for s in c]) == everything
        req = api_pb2.StreamContainerStatsRequest(
            filter=api_pb2.ContainerStatsFilter(label_selector={"app": "none"})
        )
        empty = [m async for m in r.stub.StreamContainerStats(req)]
        assert len(empty) == 1 and not empty[0].container_stats


@run_async
async def test_pod_stats_with_network_and_pod_cgroup():
    async with rig() as r:
        before = (
            await r.stub.PodSandboxStats(api_pb2.PodSandboxStatsRequest(pod_sandbox_id=r.pod_a))
        ).stats
        await asyncio.to_thread(r.netns.ping_host, 5, 1200)
        after = (
            await r.stub.PodSandboxStats(api_pb2.PodSandboxStatsRequest(pod_sandbox_id=r.pod_a))
        ).stats
        assert after.attributes.metadata.name == "web-0"
        assert after.attributes.metadata.uid == "uid-a"
        lin = after.linux
        # The pod cgroup holds both containers: the allocator's 64 MiB and two processes.
        assert lin.memory.working_set_bytes.value >= 64 * MiB
        assert lin.process.process_count.value == 2
        assert (
            lin.cpu.usage_core_nano_seconds.value >= before.linux.cpu.usage_core_nano_seconds.value
        )
        assert {
            c.attributes.name if False else c.attributes.metadata.name for c in lin.containers
        } == {
            "burner",
            "allocator",
        }
        net, net0 = lin.network, before.linux.network
        assert net.default_interface.name == "eth0"
        assert [i.name for i in net.interfaces] == ["eth0"]  # loopback is not pod traffic
        assert net.default_interface.tx_bytes.value - net0.default_interface.tx_bytes.value >= 6000
        assert net.default_interface.rx_bytes.value - net0.default_interface.rx_bytes.value >= 6000
        assert net.default_interface.rx_errors.value == 0

        # Pod B: host network (no network stats), no pod cgroup, one exited container.
        b = (
            await r.stub.PodSandboxStats(api_pb2.PodSandboxStatsRequest(pod_sandbox_id=r.pod_b))
        ).stats
        assert not b.linux.HasField("network") and not b.linux.HasField("memory")
        assert len(b.linux.containers) == 1


@run_async
async def test_list_and_stream_pod_stats_agree(monkeypatch):
    async with rig() as r:
        listed = (await r.stub.ListPodSandboxStats(api_pb2.ListPodSandboxStatsRequest())).stats
        assert ids(listed) == {r.pod_a, r.pod_b}
        req = api_pb2.ListPodSandboxStatsRequest(
            filter=api_pb2.PodSandboxStatsFilter(label_selector={"app": "batch"})
        )
        assert ids((await r.stub.ListPodSandboxStats(req)).stats) == {r.pod_b}
        monkeypatch.setattr(stats, "STREAM_BATCH", 1)
        got = [
            m async for m in r.stub.StreamPodSandboxStats(api_pb2.StreamPodSandboxStatsRequest())
        ]
        assert len(got) == 2
        assert ids([s for m in got for s in m.pod_sandbox_stats]) == {r.pod_a, r.pod_b}


@run_async
async def test_pod_sandbox_metrics():
    async with rig() as r:
        d = (await r.stub.ListMetricDescriptors(api_pb2.ListMetricDescriptorsRequest())).descriptors
        keys = {x.name: list(x.label_keys) for x in d}
        for name in (
            "container_cpu_usage_seconds_total",
            "container_memory_working_set_bytes",
            "container_memory_rss",
            "container_memory_usage_bytes",
            "container_spec_memory_limit_bytes",
            "container_processes",
            "container_network_receive_bytes_total",
            "container_network_transmit_bytes_total",
        ):
            assert name in keys
        await asyncio.to_thread(r.netns.ping_host, 3, 500)
        resp = await r.stub.ListPodSandboxMetrics(api_pb2.ListPodSandboxMetricsRequest())
        by_pod = {p.pod_sandbox_id: p for p in resp.pod_metrics}
        assert set(by_pod) == {r.pod_a, r.pod_b}
        a = by_pod[r.pod_a]
        for m in list(a.metrics) + [m for c in a.container_metrics for m in c.metrics]:
            assert len(m.label_values) == len(keys[m.name]), m.name
            assert m.timestamp > 0
        rx = {
            m.label_values[0]: m.value.value
            for m in a.metrics
            if m.name == "container_network_receive_bytes_total"
        }
        assert rx["eth0"] >= 3 * 500
        ctr = {c.container_id: {m.name: m for m in c.metrics} for c in a.container_metrics}
        alloc = ctr["c" * 60 + "allo"]
        assert alloc["container_memory_working_set_bytes"].value.value >= 64 * MiB
        assert alloc["container_memory_working_set_bytes"].metric_type == api_pb2.GAUGE
        assert alloc["container_spec_memory_limit_bytes"].value.value == 256 * MiB
        assert alloc["container_processes"].value.value == 1
        labels = dict(
            zip(
                keys["container_memory_rss"],
                alloc["container_memory_rss"].label_values,
                strict=True,
            )
        )
        assert labels["container"] == "allocator" and labels["pod"] == "web-0"
        assert labels["namespace"] == "default"
        assert alloc["container_cpu_usage_seconds_total"].metric_type == api_pb2.COUNTER
        streamed = [
            m
            async for m in r.stub.StreamPodSandboxMetrics(api_pb2.StreamPodSandboxMetricsRequest())
        ]
        assert {p.pod_sandbox_id for m in streamed for p in m.pod_sandbox_metrics} == set(by_pod)


async def _subscribed(bus: EventBus, n: int) -> None:
    for _ in range(500):
        if bus.subscribers >= n:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"{n} subscribers never arrived")


@run_async
async def test_container_events_stream_carries_statuses():
    async with rig() as r:
        bus = r.node.events
        alloc_id = "c" * 60 + "allo"
        call = r.stub.GetContainerEvents(api_pb2.GetEventsRequest())
        reader = call.__aiter__()
        first = asyncio.ensure_future(reader.__anext__())
        await _subscribed(bus, 1)
        kinds = list(ContainerEventType)
        for k in kinds:
            bus.publish(ContainerEvent(alloc_id, k, r.pod_a))
        got = [await asyncio.wait_for(first, 5)]
        got += [await asyncio.wait_for(reader.__anext__(), 5) for _ in kinds[1:]]
        call.cancel()
        assert [e.container_event_type for e in got] == [
            api_pb2.CONTAINER_CREATED_EVENT,
            api_pb2.CONTAINER_STARTED_EVENT,
            api_pb2.CONTAINER_STOPPED_EVENT,
            api_pb2.CONTAINER_DELETED_EVENT,
        ]
        e = got[0]
        assert e.container_id == alloc_id and e.created_at > 0
        assert e.pod_sandbox_status.id == r.pod_a
        assert e.pod_sandbox_status.state == api_pb2.SANDBOX_READY
        assert {s.metadata.name for s in e.containers_statuses} == {"burner", "allocator"}
        assert [x.created_at for x in got] == sorted(x.created_at for x in got)
        await asyncio.sleep(0.1)
        assert bus.subscribers == 0  # the cancelled stream let go of its subscription


@run_async
async def test_stuck_event_client_does_not_block_sycri():
    async with rig(event_buffer=50) as r:
        bus = r.node.events
        stuck = r.stub.GetContainerEvents(api_pb2.GetEventsRequest())
        stuck_iter = stuck.__aiter__()
        pending_first = asyncio.ensure_future(stuck_iter.__anext__())
        await _subscribed(bus, 1)
        for i in range(5000):  # nobody reads: far more than the buffer and gRPC windows
            bus.publish(ContainerEvent(f"{i:064d}", ContainerEventType.STARTED, r.pod_a))
            if i % 500 == 0:
                await asyncio.sleep(0)  # let the server write what the transport takes
        await asyncio.sleep(0.2)
        assert bus.dropped_total > 0
        # sycri still delivers to a new client at once.
        fresh = r.stub.GetContainerEvents(api_pb2.GetEventsRequest())
        fresh_iter = fresh.__aiter__()
        nxt = asyncio.ensure_future(fresh_iter.__anext__())
        await _subscribed(bus, 2)
        bus.publish(ContainerEvent("f" * 64, ContainerEventType.STOPPED, r.pod_a))
        got = await asyncio.wait_for(nxt, 5)
        assert got.container_id == "f" * 64
        # The stuck client, when it reads, gets the newest events, not the lost ones.
        seen = [(await asyncio.wait_for(pending_first, 5)).container_id]
        while seen[-1] != "f" * 64:
            seen.append((await asyncio.wait_for(stuck_iter.__anext__(), 5)).container_id)
        assert len(seen) < 5001
        assert seen[-2] == f"{4999:064d}"
        stuck.cancel()
        fresh.cancel()
