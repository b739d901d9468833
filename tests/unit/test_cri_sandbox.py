"""The pod RPC adapters' pure parts: status building and list filters."""

from __future__ import annotations

import asyncio

import pytest
from sycri.api import api_pb2
from sycri.config import Config
from sycri.cri import sandbox
from sycri.cri.sandbox import matches, status_of
from sycri.errors import InvalidArgument, NotFound
from sycri.runtime.pod.sandbox import NOTREADY, READY, Sandbox, SandboxStatus, encode_config
from sycri.server import assemble


def _pod(sid: str, state: str = READY, labels: dict[str, str] | None = None) -> Sandbox:
    cfg = api_pb2.PodSandboxConfig(labels=labels or {}, annotations={"a": "b"})
    return Sandbox(
        id=sid,
        name="web",
        namespace="ns",
        uid="u",
        attempt=2,
        created_at=42,
        runtime_handler="runc",
        config_bytes=encode_config(cfg),
        run_dir="/run/x",
        hostname="web",
        netns_path="/run/x/ns/net",
        status=SandboxStatus(state=state, ips=["10.1.0.4", "fd00::4"], network_up=True),
    )


def test_status_reports_both_ips_and_modes():
    st = status_of(_pod("a" * 64))
    assert st.network.ip == "10.1.0.4"
    assert [p.ip for p in st.network.additional_ips] == ["fd00::4"]
    assert st.metadata.attempt == 2 and st.annotations == {"a": "b"}
    assert st.state == api_pb2.SANDBOX_READY
    assert st.linux.namespaces.options.pid == api_pb2.CONTAINER


def test_stopped_pod_reports_no_ip():
    pod = _pod("a" * 64, NOTREADY)
    pod.status.network_up = False
    st = status_of(pod)
    assert st.state == api_pb2.SANDBOX_NOTREADY and st.network.ip == ""


def test_filters():
    pod = _pod("ab" + "0" * 62, READY, {"app": "web", "tier": "1"})
    f = api_pb2.PodSandboxFilter
    assert matches(pod, f(id="ab"))
    assert not matches(pod, f(id="ac"))
    assert matches(pod, f(label_selector={"app": "web"}))
    assert not matches(pod, f(label_selector={"app": "web", "tier": "2"}))
    ready = api_pb2.PodSandboxStateValue(state=api_pb2.SANDBOX_READY)
    notready = api_pb2.PodSandboxStateValue(state=api_pb2.SANDBOX_NOTREADY)
    assert matches(pod, f(state=ready)) and not matches(pod, f(state=notready))


def test_stop_unknown_pod_is_idempotent_but_status_is_not(tmp_path):
    """kubelet stops pods it may have removed already; containerd and CRI-O answer OK."""
    cfg = Config(root_dir=str(tmp_path / "root"), run_dir=str(tmp_path / "run"))
    node = assemble(cfg)
    for pid in ("ab" * 32, "e2cef978-5e06-4774-ab6b-543c9f895b35"):
        asyncio.run(
            sandbox.stop_pod_sandbox(node, api_pb2.StopPodSandboxRequest(pod_sandbox_id=pid))
        )
    with pytest.raises(NotFound):
        asyncio.run(
            sandbox.pod_sandbox_status(node, api_pb2.PodSandboxStatusRequest(pod_sandbox_id="ab"))
        )
    with pytest.raises(InvalidArgument):
        asyncio.run(sandbox.stop_pod_sandbox(node, api_pb2.StopPodSandboxRequest()))
