"""Pods through the real ``sycri serve`` socket: run, inspect, list, stop, restart, remove."""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import secrets
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from sycri.api import api_pb2

from tests.support.pods import PodNet, footprint, pod_config, unmount_all, wait_gone
from tests.support.server import SycriServer

pytestmark = pytest.mark.root


@pytest.fixture
def node(tmp_path: Path) -> Iterator[tuple[SycriServer, PodNet]]:
    net = PodNet.new()
    conf = tmp_path / "net.d"
    conf.mkdir()
    server = SycriServer(tmp_path / "s", flags=[*net.flags(), "--cni-conf-dir", str(conf)]).start()
    try:
        yield server, net
    finally:
        if server.proc is not None and server.proc.poll() is None:
            rt = server.runtime()
            for p in rt.ListPodSandbox(api_pb2.ListPodSandboxRequest()).items:
                rt.RemovePodSandbox(api_pb2.RemovePodSandboxRequest(pod_sandbox_id=p.id))
        server.stop()
        unmount_all(tmp_path)
        net.cleanup()


def _code(call) -> grpc.StatusCode:
    with pytest.raises(grpc.RpcError) as err:
        call()
    return err.value.code()


def test_pod_lifecycle_through_the_socket(node):
    server, net = node
    rt = server.runtime()
    # The pod CIDR from kubelet replaces the configured default subnet.
    cidr = PodNet.new().subnet
    rt.UpdateRuntimeConfig(
        api_pb2.UpdateRuntimeConfigRequest(
            runtime_config=api_pb2.RuntimeConfig(
                network_config=api_pb2.NetworkConfig(pod_cidr=cidr)
            )
        )
    )
    conditions = {c.type: c.status for c in rt.Status(api_pb2.StatusRequest()).status.conditions}
    assert conditions["NetworkReady"] is True

    cfg = pod_config("e2e", hostname="e2e-host", labels={"app": "web", "tier": "front"})
    pod_id = rt.RunPodSandbox(api_pb2.RunPodSandboxRequest(config=cfg)).pod_sandbox_id
    assert len(pod_id) == 64
    other = rt.RunPodSandbox(
        api_pb2.RunPodSandboxRequest(
            config=pod_config("other", labels={"app": "db"}, pid=api_pb2.POD)
        )
    ).pod_sandbox_id
    other_info = rt.PodSandboxStatus(
        api_pb2.PodSandboxStatusRequest(pod_sandbox_id=other, verbose=True)
    ).info
    init_pid = json.loads(other_info["info"])["pid"]
    assert Path(f"/proc/{init_pid}/comm").read_text().strip() == "catatonit"

    st = rt.PodSandboxStatus(
        api_pb2.PodSandboxStatusRequest(pod_sandbox_id=pod_id[:12], verbose=True)
    )
    assert st.status.id == pod_id
    assert st.status.state == api_pb2.SANDBOX_READY
    assert st.status.metadata == cfg.metadata
    assert st.status.network.ip.startswith(cidr.rsplit(".", 1)[0] + ".")
    assert st.status.labels == cfg.labels
    assert st.status.runtime_handler == "runc"
    assert st.status.linux.namespaces.options.network == api_pb2.POD
    info = json.loads(st.info["info"])
    assert info["hostname"] == "e2e-host"
    assert Path(info["namespaces"]["network"]).exists()
    # The last CNI CHECK of the live attachment (the pod's ADD is the first), with
    # when it ran; a verbose status never waits for a plugin.
    check = st.info["networkCheck"]
    deadline = time.monotonic() + 30
    while check.startswith("not checked yet"):
        assert time.monotonic() < deadline, "no CNI CHECK result"
        time.sleep(0.05)
        req = api_pb2.PodSandboxStatusRequest(pod_sandbox_id=pod_id, verbose=True)
        st = rt.PodSandboxStatus(req)
        check = st.info["networkCheck"]
    assert check == "ok"
    checked = datetime.datetime.fromisoformat(st.info["networkCheckedAt"].replace("Z", "+00:00"))
    assert checked.timestamp() >= st.status.created_at // 1_000_000 / 1000  # after the pod

    def listed(**f) -> set[str]:
        req = api_pb2.ListPodSandboxRequest(filter=api_pb2.PodSandboxFilter(**f))
        return {p.id for p in rt.ListPodSandbox(req).items}

    assert listed() == {pod_id, other}
    assert listed(label_selector={"app": "web"}) == {pod_id}
    assert listed(id=pod_id[:10]) == {pod_id}

    # Errors keep their codes and the server keeps serving.
    assert _code(lambda: rt.RunPodSandbox(api_pb2.RunPodSandboxRequest(config=cfg))) == (
        grpc.StatusCode.ALREADY_EXISTS
    )
    assert (
        _code(
            lambda: rt.RunPodSandbox(
                api_pb2.RunPodSandboxRequest(config=api_pb2.PodSandboxConfig())
            )
        )
        == grpc.StatusCode.INVALID_ARGUMENT
    )
    assert (
        _code(lambda: rt.PodSandboxStatus(api_pb2.PodSandboxStatusRequest(pod_sandbox_id="0" * 64)))
        == grpc.StatusCode.NOT_FOUND
    )
    assert (
        _code(
            lambda: rt.RunPodSandbox(
                api_pb2.RunPodSandboxRequest(config=pod_config("h"), runtime_handler="nope")
            )
        )
        == grpc.StatusCode.INVALID_ARGUMENT
    )

    rt.StopPodSandbox(api_pb2.StopPodSandboxRequest(pod_sandbox_id=pod_id))
    rt.StopPodSandbox(api_pb2.StopPodSandboxRequest(pod_sandbox_id=pod_id))
    # Stopping a pod that does not exist is fine too (kubelet retries, as with containerd).
    rt.StopPodSandbox(api_pb2.StopPodSandboxRequest(pod_sandbox_id="0" * 64))
    ready = api_pb2.PodSandboxStateValue(state=api_pb2.SANDBOX_READY)
    assert listed(state=ready) == {other}

    # kill -9: everything answered before is on disk; a new sycri lists the same pods.
    server.signal(signal.SIGKILL)
    server.wait()
    server.start()
    rt = server.runtime()
    states = {p.id: p.state for p in rt.ListPodSandbox(api_pb2.ListPodSandboxRequest()).items}
    assert states == {pod_id: api_pb2.SANDBOX_NOTREADY, other: api_pb2.SANDBOX_READY}
    # The pod's init outlived sycri and is still its PID 1; removal ends it.
    st = rt.PodSandboxStatus(api_pb2.PodSandboxStatusRequest(pod_sandbox_id=other)).status
    assert st.state == api_pb2.SANDBOX_READY
    assert Path(f"/proc/{init_pid}/comm").read_text().strip() == "catatonit"

    for pid in (pod_id, other, other):  # the second removal of `other` is a no-op
        rt.RemovePodSandbox(api_pb2.RemovePodSandboxRequest(pod_sandbox_id=pid))
    assert rt.ListPodSandbox(api_pb2.ListPodSandboxRequest()).items == []
    assert wait_gone(init_pid)
    fp = footprint(server.base / "run", net, {pod_id, other})
    assert (fp.veths, fp.ns_files, fp.pod_dirs, fp.iptables_rules) == (0, 0, 0, 0)


def test_host_network_pod_has_no_pod_ip(node):
    server, _ = node
    rt = server.runtime()
    pod_id = rt.RunPodSandbox(
        api_pb2.RunPodSandboxRequest(config=pod_config("hn", host_network=True))
    ).pod_sandbox_id
    st = rt.PodSandboxStatus(api_pb2.PodSandboxStatusRequest(pod_sandbox_id=pod_id)).status
    assert st.linux.namespaces.options.network == api_pb2.NODE
    assert st.network.ip == ""
    rt.RemovePodSandbox(api_pb2.RemovePodSandboxRequest(pod_sandbox_id=pod_id))


def _pod_limits(parent: str) -> tuple[int, int]:
    """(memory limit, cpu quota) of the pod cgroup as the kernel has them; -1 = none."""
    rel = parent.strip("/")
    if os.path.exists("/sys/fs/cgroup/cgroup.controllers"):  # cgroup v2
        base = Path("/sys/fs/cgroup") / rel
        mem = (base / "memory.max").read_text().strip()
        quota = (base / "cpu.max").read_text().split()[0]
        return (-1 if mem == "max" else int(mem), -1 if quota == "max" else int(quota))
    mem = int((Path("/sys/fs/cgroup/memory") / rel / "memory.limit_in_bytes").read_text())
    quota = int((Path("/sys/fs/cgroup/cpu") / rel / "cpu.cfs_quota_us").read_text())
    return (-1 if mem >= 2**62 else mem, quota)


def _resources(memory: int, quota: int) -> api_pb2.LinuxContainerResources:
    return api_pb2.LinuxContainerResources(
        memory_limit_in_bytes=memory, cpu_quota=quota, cpu_period=100000, cpu_shares=512
    )


def test_update_pod_sandbox_resources_resizes_the_pod_cgroup(node):
    server, _ = node
    rt = server.runtime()
    top = f"sycri-resize-{secrets.token_hex(4)}"
    parent = f"/{top}/pod-a"
    try:
        cfg = pod_config("resize", cgroup_parent=parent)
        cfg.linux.resources.CopyFrom(_resources(256 << 20, 50000))
        cfg.linux.overhead.CopyFrom(api_pb2.LinuxContainerResources(memory_limit_in_bytes=64 << 20))
        pod_id = rt.RunPodSandbox(api_pb2.RunPodSandboxRequest(config=cfg)).pod_sandbox_id
        assert _pod_limits(parent) == (320 << 20, 50000)

        # kubelet resized the pod in place: new limits, overhead still added.
        rt.UpdatePodSandboxResources(
            api_pb2.UpdatePodSandboxResourcesRequest(
                pod_sandbox_id=pod_id,
                resources=_resources(512 << 20, 80000),
                overhead=api_pb2.LinuxContainerResources(
                    memory_limit_in_bytes=32 << 20, cpu_quota=5000
                ),
            )
        )
        assert _pod_limits(parent) == (544 << 20, 85000)

        def recorded() -> dict:
            req = api_pb2.PodSandboxStatusRequest(pod_sandbox_id=pod_id, verbose=True)
            return json.loads(rt.PodSandboxStatus(req).info["info"])["resources"]

        assert (recorded()["memory"], recorded()["cpu_quota"]) == (544 << 20, 85000)
        # The record survives a crash of sycri.
        server.signal(signal.SIGKILL)
        server.wait()
        server.start()
        rt = server.runtime()
        assert (recorded()["memory"], recorded()["cpu_quota"]) == (544 << 20, 85000)

        # Lifting the limits (a prefix id, overhead kept) leaves the cgroup unlimited.
        rt.UpdatePodSandboxResources(
            api_pb2.UpdatePodSandboxResourcesRequest(
                pod_sandbox_id=pod_id[:12], resources=_resources(0, 0)
            )
        )
        assert _pod_limits(parent) == (-1, -1)
        assert recorded()["memory"] == 0

        missing = api_pb2.UpdatePodSandboxResourcesRequest(
            pod_sandbox_id="f" * 64, resources=_resources(1 << 30, 0)
        )
        assert _code(lambda: rt.UpdatePodSandboxResources(missing)) == grpc.StatusCode.NOT_FOUND
        empty = api_pb2.UpdatePodSandboxResourcesRequest(resources=_resources(1 << 30, 0))
        assert (
            _code(lambda: rt.UpdatePodSandboxResources(empty)) == grpc.StatusCode.INVALID_ARGUMENT
        )
        assert _pod_limits(parent) == (-1, -1)  # the failed calls changed nothing

        rt.RemovePodSandbox(api_pb2.RemovePodSandboxRequest(pod_sandbox_id=pod_id))
        # The pod's cgroup is gone; its parent is shared and stays, as runc leaves it.
        left = _cgroup_dirs(top)
        assert left and all(os.path.basename(d) == top for d in left)
    finally:
        for d in sorted(_cgroup_dirs(top), key=len, reverse=True):
            with contextlib.suppress(OSError):
                os.rmdir(d)


def _cgroup_dirs(top: str) -> list[str]:
    """Every directory of the test's cgroup tree, deepest last, in every hierarchy."""
    out = []
    for root, dirs, _ in os.walk("/sys/fs/cgroup"):
        if os.path.basename(root) == top:
            out.append(root)
            out.extend(os.path.join(root, d) for d in dirs)
            dirs.clear()
        elif root.count("/") > 4:
            dirs.clear()
    return out
