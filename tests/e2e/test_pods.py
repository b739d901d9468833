"""Pods through the real ``sycri serve`` socket: run, inspect, list, stop, restart, remove."""

from __future__ import annotations

import json
import signal
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
    assert st.info["networkCheck"] == "ok"  # CNI CHECK of the live attachment

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
