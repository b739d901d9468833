"""What a real kubelet sends, through sycri's socket: the calls critest never makes and
that broke pods under kubelet (hugepage limits, evented PLEG, failed creates, probes)."""

from __future__ import annotations

import json
import os
import secrets
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from sycri.api import api_pb2

from tests.e2e.test_containers_cri import container, log_of, pull, wait_state
from tests.support.events import EventStream
from tests.support.node import served
from tests.support.pods import PodNet, pod_config
from tests.support.server import SycriServer

pytestmark = pytest.mark.root

HUGEPAGES = Path("/sys/kernel/mm/hugepages")


@pytest.fixture
def node() -> Iterator[tuple[SycriServer, PodNet]]:
    base = Path("/tmp") / f"sykl-{secrets.token_hex(4)}"  # short: conmon socket paths
    with served(base, forgiving=True) as (server, net):
        yield server, net


def kubelet_page_sizes() -> list[str]:
    """The sizes kubelet sends limits for: every /sys/kernel/mm/hugepages entry, named
    as kubelet names them (hugepages-2048kB -> 2MB)."""
    out = []
    for entry in sorted(os.listdir(HUGEPAGES)) if HUGEPAGES.is_dir() else []:
        kib = int(entry.removeprefix("hugepages-").removesuffix("kB"))
        units = ["KB", "MB", "GB", "TB"]
        unit = 0
        while kib % 1024 == 0 and unit < len(units) - 1:
            kib //= 1024
            unit += 1
        out.append(f"{kib}{units[unit]}")
    return out


def node_has_hugetlb_cgroup() -> bool:
    v2 = Path("/sys/fs/cgroup/cgroup.controllers")
    if v2.exists():
        return "hugetlb" in v2.read_text().split()
    return Path("/sys/fs/cgroup/hugetlb").is_dir()


def kubelet_resources() -> api_pb2.LinuxContainerResources:
    """A BestEffort container's resources as kubelet 1.32 sends them on this node."""
    return api_pb2.LinuxContainerResources(
        cpu_period=100000,
        cpu_shares=2,
        oom_score_adj=1000,
        hugepage_limits=[
            api_pb2.HugepageLimit(page_size=size, limit=0) for size in kubelet_page_sizes()
        ],
    )


def start_pod(server: SycriServer, name: str) -> tuple[str, api_pb2.PodSandboxConfig, Path]:
    rt = server.runtime()
    logs = server.base / "pods" / name
    cfg = pod_config(name)
    cfg.log_directory = str(logs)
    pod = rt.RunPodSandbox(api_pb2.RunPodSandboxRequest(config=cfg)).pod_sandbox_id
    return pod, cfg, logs


def create(server, pod, pod_cfg, cfg: api_pb2.ContainerConfig, start: bool = True) -> str:
    rt = server.runtime()
    req = api_pb2.CreateContainerRequest(pod_sandbox_id=pod, config=cfg, sandbox_config=pod_cfg)
    cid = rt.CreateContainer(req).container_id
    if start:
        rt.StartContainer(api_pb2.StartContainerRequest(container_id=cid))
    return cid


def test_kubelet_hugepage_limits_for_every_node_size_run(node, registry):
    server, _ = node
    assert kubelet_page_sizes(), "this kernel lists no hugepage sizes"
    image = pull(server, registry)
    pod, pod_cfg, logs = start_pod(server, "huge")
    (logs / "c").mkdir(parents=True)  # kubelet makes the container's log dir
    cfg = container(
        "c", image, ["/bin/sh", "-c", "echo started"], log_path="c/0.log",
        linux=api_pb2.LinuxContainerConfig(resources=kubelet_resources()),
    )  # fmt: skip
    cid = create(server, pod, pod_cfg, cfg)
    st = wait_state(server.runtime(), cid, api_pb2.CONTAINER_EXITED)
    assert (st.exit_code, st.reason) == (0, "Completed")
    assert log_of(st.log_path) == [("stdout", "started")]
    full = server.runtime().ContainerStatus(
        api_pb2.ContainerStatusRequest(container_id=cid, verbose=True)
    )
    spec = json.loads(full.info["info"])["runtimeSpec"]
    applied = spec["linux"]["resources"].get("hugepageLimits", [])
    if node_has_hugetlb_cgroup():
        assert sorted(p["pageSize"] for p in applied) == sorted(kubelet_page_sizes())
    else:
        assert applied == []


def test_evented_pleg_sees_the_pod_containers_in_sandbox_status_and_events(node, registry):
    server, _ = node
    rt = server.runtime()
    image = pull(server, registry)
    stream = EventStream(server)
    try:
        pod, pod_cfg, logs = start_pod(server, "pleg")
        started = stream.wait_for(pod, api_pb2.CONTAINER_STARTED_EVENT)
        assert started.pod_sandbox_status.metadata.uid == pod_cfg.metadata.uid
        assert started.pod_sandbox_status.id == pod
        ids = []
        for name in ("first", "second"):
            (logs / name).mkdir(parents=True)
            labels = {
                "io.kubernetes.container.name": name,
                "io.kubernetes.pod.uid": pod_cfg.metadata.uid,
            }
            cfg = container(name, image, ["sleep", "1000"], labels=labels, log_path=f"{name}/0.log")
            ids.append(create(server, pod, pod_cfg, cfg))
        ev = stream.wait_for(ids[1], api_pb2.CONTAINER_STARTED_EVENT)
        for cid in ids:
            wait_state(rt, cid, api_pb2.CONTAINER_RUNNING)

        # PodSandboxStatus as kubelet's GetPodStatus reads it with EventedPLEG on: the
        # timestamp set, so the containers are taken from containers_statuses alone.
        resp = rt.PodSandboxStatus(api_pb2.PodSandboxStatusRequest(pod_sandbox_id=pod))
        assert resp.timestamp > 0
        own = {
            cid: rt.ContainerStatus(api_pb2.ContainerStatusRequest(container_id=cid)).status
            for cid in ids
        }
        assert [s.id for s in resp.containers_statuses] == [ids[1], ids[0]]  # newest first
        for st in resp.containers_statuses:
            assert st == own[st.id]
            assert st.state == api_pb2.CONTAINER_RUNNING
            assert st.labels["io.kubernetes.pod.uid"] == pod_cfg.metadata.uid

        # The event carries the pod's status and the same container statuses.
        assert ev.pod_sandbox_status.id == pod
        assert ev.pod_sandbox_status.metadata == pod_cfg.metadata
        assert [s.id for s in ev.containers_statuses] == [ids[1], ids[0]]
        for st in ev.containers_statuses:
            assert st == own[st.id]

        # A stopped container: its event and the sandbox status agree on the exit.
        rt.StopContainer(api_pb2.StopContainerRequest(container_id=ids[0], timeout=0))
        stopped = stream.wait_for(ids[0], api_pb2.CONTAINER_STOPPED_EVENT)
        resp = rt.PodSandboxStatus(api_pb2.PodSandboxStatusRequest(pod_sandbox_id=pod))
        by_id = {s.id: s for s in resp.containers_statuses}
        assert by_id[ids[0]].state == api_pb2.CONTAINER_EXITED
        assert {s.id: s.state for s in stopped.containers_statuses}[ids[0]] == (
            api_pb2.CONTAINER_EXITED
        )
        assert (
            by_id[ids[0]]
            == rt.ContainerStatus(api_pb2.ContainerStatusRequest(container_id=ids[0])).status
        )

        # The sandbox's own stop and removal, which kubelet keys on the sandbox id.
        rt.StopPodSandbox(api_pb2.StopPodSandboxRequest(pod_sandbox_id=pod))
        ev = stream.wait_for(pod, api_pb2.CONTAINER_STOPPED_EVENT)
        assert ev.pod_sandbox_status.state == api_pb2.SANDBOX_NOTREADY
        # kubelet stops terminated pods again on every sync: no event for those (each
        # one would make kubelet sync the pod again).
        rt.StopPodSandbox(api_pb2.StopPodSandboxRequest(pod_sandbox_id=pod))
        rt.RemovePodSandbox(api_pb2.RemovePodSandboxRequest(pod_sandbox_id=pod))
        ev = stream.next_for(pod)
        assert ev.container_event_type == api_pb2.CONTAINER_DELETED_EVENT
        assert ev.pod_sandbox_status.id == pod
        assert ev.pod_sandbox_status.metadata.uid == pod_cfg.metadata.uid
    finally:
        stream.close()


def test_a_failed_create_leaves_nothing(node, registry):
    server, _ = node
    rt = server.runtime()
    image = pull(server, registry)
    pod, pod_cfg, logs = start_pod(server, "failing")
    (logs / "c").mkdir(parents=True)  # kubelet makes the container's log dir
    sockets = server.base / "run" / "s"
    bundles = server.base / "root" / "containers"
    before = (set(os.listdir(sockets)) if sockets.exists() else set(), set(os.listdir(bundles)))
    # A CPU set the kernel refuses: runc create fails after conmon opened the log.
    bad = api_pb2.LinuxContainerResources(cpuset_cpus=str(os.cpu_count() + 4000))
    cfg = container(
        "c", image, ["sleep", "1000"], log_path="c/0.log",
        linux=api_pb2.LinuxContainerConfig(resources=bad),
    )  # fmt: skip
    with pytest.raises(grpc.RpcError) as err:
        create(server, pod, pod_cfg, cfg, start=False)
    assert "cpuset" in (err.value.details() or "")
    assert os.listdir(logs / "c") == []
    after = (set(os.listdir(sockets)) if sockets.exists() else set(), set(os.listdir(bundles)))
    assert after == before
    listed = rt.ListContainers(api_pb2.ListContainersRequest()).containers
    assert list(listed) == []
    # The name is free again: kubelet's retry with the same attempt works.
    cfg.linux.resources.ClearField("cpuset_cpus")
    cid = create(server, pod, pod_cfg, cfg)
    assert wait_state(rt, cid, api_pb2.CONTAINER_RUNNING).log_path == str(logs / "c" / "0.log")


def test_a_failing_exec_probe_is_no_sycri_warning(node, registry):
    server, _ = node
    rt = server.runtime()
    image = pull(server, registry)
    pod, pod_cfg, logs = start_pod(server, "probed")
    (logs / "c").mkdir(parents=True)
    cid = create(server, pod, pod_cfg, container("c", image, ["sleep", "1000"], log_path="c/0.log"))
    wait_state(rt, cid, api_pb2.CONTAINER_RUNNING)
    marker = f"probe-{secrets.token_hex(4)}"
    # What kubelet sends for an exec readiness probe that says "not ready".
    res = rt.ExecSync(
        api_pb2.ExecSyncRequest(container_id=cid, cmd=["sh", "-c", f"exit 3 # {marker}"], timeout=1)
    )  # fmt: skip
    assert res.exit_code == 3
    lines = [line for line in server.log_path.read_text().splitlines() if " WARNING " in line]
    assert not [line for line in lines if marker in line or "runc exec" in line], lines
    # A command that cannot run at all is still an error the caller hears about: the
    # request's (it named the command), not sycri's.
    with pytest.raises(grpc.RpcError) as err:
        rt.ExecSync(api_pb2.ExecSyncRequest(container_id=cid, cmd=["/no/such/probe"], timeout=5))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "/no/such/probe" in err.value.details()


def test_status_of_a_removed_container_is_not_found_and_no_sycri_warning(node, registry):
    """kubelet asks ContainerStatus for containers it has just removed on every sync:
    NOT_FOUND is the answer it expects, not a fault for sycri's log."""
    server, _ = node
    rt = server.runtime()
    image = pull(server, registry)
    pod, pod_cfg, logs = start_pod(server, "gone")
    (logs / "c").mkdir(parents=True)
    cid = create(server, pod, pod_cfg, container("c", image, ["sleep", "1000"], log_path="c/0.log"))
    rt.StopContainer(api_pb2.StopContainerRequest(container_id=cid, timeout=0))
    rt.RemoveContainer(api_pb2.RemoveContainerRequest(container_id=cid))
    with pytest.raises(grpc.RpcError) as err:
        rt.ContainerStatus(api_pb2.ContainerStatusRequest(container_id=cid))
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    lines = [line for line in server.log_path.read_text().splitlines() if " WARNING " in line]
    assert not [line for line in lines if cid[:12] in line or "NOT_FOUND" in line], lines
