"""What kubelet learns from sycri about real containers: events and stats, via the socket.

A real sycri (runc, conmon, CNI bridge) runs a pod with a CPU-burning container and a
container that exits on its own; a GetContainerEvents client and the stats RPCs must
see what happened.
"""

from __future__ import annotations

import secrets
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sycri.api import api_pb2

from tests.support import oci
from tests.support.events import EventStream
from tests.support.node import served
from tests.support.pods import pod_config
from tests.support.server import SycriServer

pytestmark = pytest.mark.root

MiB = 1024 * 1024


@pytest.fixture
def node() -> Iterator[SycriServer]:
    base = Path("/tmp") / f"synt-{secrets.token_hex(4)}"  # short: conmon socket paths
    with served(base, forgiving=True) as (server, _net):
        yield server


def test_events_and_stats_of_real_containers(node, registry):
    rt = node.runtime()
    repo = "nt/" + secrets.token_hex(4)
    oci.push(registry, repo, "v1", oci.busybox_image(entrypoint=["/bin/sh", "-c"]))
    image = f"{registry.host}/{repo}:v1"
    node.images().PullImage(api_pb2.PullImageRequest(image=api_pb2.ImageSpec(image=image)))
    pod_cfg = pod_config("stats", labels={"app": "nt"})
    pod_cfg.log_directory = str(node.base / "pods" / "stats")
    events = EventStream(node)
    time.sleep(0.3)  # the stream is subscribed before anything happens
    try:
        pod = rt.RunPodSandbox(api_pb2.RunPodSandboxRequest(config=pod_cfg)).pod_sandbox_id

        def create(name: str, script: str, **linux) -> str:
            cfg = api_pb2.ContainerConfig(
                metadata=api_pb2.ContainerMetadata(name=name),
                image=api_pb2.ImageSpec(image=image),
                args=[script],
                log_path=f"{name}.log",
                labels={"role": name},
            )
            if linux:
                cfg.linux.resources.CopyFrom(api_pb2.LinuxContainerResources(**linux))
            req = api_pb2.CreateContainerRequest(
                pod_sandbox_id=pod, config=cfg, sandbox_config=pod_cfg
            )
            return rt.CreateContainer(req).container_id

        burn = create("burn", "while :; do :; done", memory_limit_in_bytes=128 * MiB)
        ev = events.wait_for(burn, api_pb2.CONTAINER_CREATED_EVENT)
        assert ev.pod_sandbox_status.id == pod
        assert ev.pod_sandbox_status.state == api_pb2.SANDBOX_READY
        rt.StartContainer(api_pb2.StartContainerRequest(container_id=burn))
        ev = events.wait_for(burn, api_pb2.CONTAINER_STARTED_EVENT)
        [st] = [s for s in ev.containers_statuses if s.id == burn]
        assert st.state == api_pb2.CONTAINER_RUNNING

        # A container that exits by itself: STOPPED comes from conmon's exit file.
        exiter = create("exiter", "sleep 1; exit 3")
        rt.StartContainer(api_pb2.StartContainerRequest(container_id=exiter))
        ev = events.wait_for(exiter, api_pb2.CONTAINER_STOPPED_EVENT)
        [st] = [s for s in ev.containers_statuses if s.id == exiter]
        assert st.state == api_pb2.CONTAINER_EXITED and st.exit_code == 3
        assert 0 <= ev.created_at - st.finished_at < 1_000_000_000  # within a second

        # CPU and memory of the burner move; nano-cores from two samples.
        first = rt.ContainerStats(api_pb2.ContainerStatsRequest(container_id=burn)).stats
        time.sleep(1.5)
        second = rt.ContainerStats(api_pb2.ContainerStatsRequest(container_id=burn)).stats
        used = second.cpu.usage_core_nano_seconds.value - first.cpu.usage_core_nano_seconds.value
        assert used > 300_000_000
        assert second.cpu.usage_nano_cores.value > 200_000_000
        assert second.memory.working_set_bytes.value > 0
        assert second.memory.available_bytes.value <= 128 * MiB
        assert second.attributes.labels["role"] == "burn"

        # Writing in the container grows its writable layer.
        before = second.writable_layer.used_bytes.value
        rt.ExecSync(
            api_pb2.ExecSyncRequest(
                container_id=burn,
                cmd=["sh", "-c", "dd if=/dev/urandom of=/blob bs=1M count=6 2>/dev/null"],
                timeout=30,
            )
        )
        time.sleep(2.1)  # the layer walk may be up to 2 s old
        third = rt.ContainerStats(api_pb2.ContainerStatsRequest(container_id=burn)).stats
        assert third.writable_layer.used_bytes.value >= before + 6 * MiB
        assert third.writable_layer.inodes_used.value >= 2

        # Pod stats: the pod's interface counters move with traffic to the pod IP.
        ip = rt.PodSandboxStatus(
            api_pb2.PodSandboxStatusRequest(pod_sandbox_id=pod)
        ).status.network.ip
        p0 = rt.PodSandboxStats(api_pb2.PodSandboxStatsRequest(pod_sandbox_id=pod)).stats
        subprocess.run(
            ["busybox", "ping", "-c", "3", "-s", "1000", "-W", "2", ip],
            check=True,
            capture_output=True,
            timeout=30,
        )
        p1 = rt.PodSandboxStats(api_pb2.PodSandboxStatsRequest(pod_sandbox_id=pod)).stats
        eth0_0, eth0_1 = p0.linux.network.default_interface, p1.linux.network.default_interface
        assert eth0_1.name == "eth0"
        assert eth0_1.rx_bytes.value - eth0_0.rx_bytes.value >= 3000
        assert eth0_1.tx_bytes.value - eth0_0.tx_bytes.value >= 3000
        assert {c.attributes.id for c in p1.linux.containers} == {burn, exiter}
        assert p1.linux.memory.working_set_bytes.value > 0
        assert p1.linux.cpu.usage_core_nano_seconds.value > 0

        # Stream* answers what List* answers.
        streamed = [
            c.id
            for m in rt.StreamContainers(api_pb2.StreamContainersRequest())
            for c in m.containers
        ]
        assert sorted(streamed) == sorted(
            c.id for c in rt.ListContainers(api_pb2.ListContainersRequest()).containers
        )
        pods_streamed = [
            p.id
            for m in rt.StreamPodSandboxes(api_pb2.StreamPodSandboxesRequest())
            for p in m.pod_sandboxes
        ]
        assert pods_streamed == [pod]
        images = [
            i.id
            for m in node.images().StreamImages(api_pb2.StreamImagesRequest())
            for i in m.images
        ]
        assert sorted(images) == sorted(
            i.id for i in node.images().ListImages(api_pb2.ListImagesRequest()).images
        )
        assert images

        listed = rt.ListContainerStats(
            api_pb2.ListContainerStatsRequest(
                filter=api_pb2.ContainerStatsFilter(label_selector={"role": "exiter"})
            )
        ).stats
        assert [s.attributes.id for s in listed] == [exiter]
        metrics = rt.ListPodSandboxMetrics(api_pb2.ListPodSandboxMetricsRequest()).pod_metrics
        [pm] = [m for m in metrics if m.pod_sandbox_id == pod]
        [cm] = [c for c in pm.container_metrics if c.container_id == burn]
        names = {m.name: m.value.value for m in cm.metrics}
        assert names["container_spec_memory_limit_bytes"] == 128 * MiB
        assert names["container_memory_working_set_bytes"] > 0

        rt.RemoveContainer(api_pb2.RemoveContainerRequest(container_id=exiter))
        ev = events.wait_for(exiter, api_pb2.CONTAINER_DELETED_EVENT)
        assert exiter not in {s.id for s in ev.containers_statuses}
        rt.StopContainer(api_pb2.StopContainerRequest(container_id=burn, timeout=0))
        events.wait_for(burn, api_pb2.CONTAINER_STOPPED_EVENT)
    finally:
        events.close()
