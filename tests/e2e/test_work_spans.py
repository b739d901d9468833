"""Span trees of real work: PullImage from the test registry, RunPodSandbox on the built-in
CNI network, CreateContainer and StartContainer with conmon and runc. sycri's real
dispatcher, gRPC server and tracing interceptor run in this process with an in-memory
exporter; kubelet's span arrives in ``traceparent``. Failed pulls reach the pod's events
through the node agent (fake Kubernetes API speaking the real protocol)."""

from __future__ import annotations

import asyncio
import secrets
import shutil
from pathlib import Path

import grpc
import pytest
from opentelemetry.trace import SpanKind
from sycri import config
from sycri.api import api_pb2, api_pb2_grpc
from sycri.k8s.agent import REASON_CONVERT, REASON_PULL, NodeAgent

from tests.support import oci, workload
from tests.support.kubeapi import KubeAPI
from tests.support.pods import PodNet, pod_config, unmount_all
from tests.support.telemetry import serve_traced

TRACE_ID = secrets.token_hex(16)
PARENT_ID = secrets.token_hex(8)
KUBELET = (("traceparent", f"00-{TRACE_ID}-{PARENT_ID}-01"),)


class Tree:
    """Finished spans by name, with parent lookups."""

    def __init__(self, spans) -> None:
        self.spans = list(spans)
        self.by_id = {s.context.span_id: s for s in self.spans}

    def named(self, name: str) -> list:
        return [s for s in self.spans if s.name == name]

    def one(self, name: str):
        (found,) = self.named(name)
        return found

    def parent(self, span):
        return self.by_id.get(span.parent.span_id) if span.parent else None

    def children(self, span) -> list[str]:
        return sorted(
            s.name for s in self.spans if s.parent and s.parent.span_id == span.context.span_id
        )

    def is_below(self, span, ancestor) -> bool:
        while span is not None:
            if span is ancestor:
                return True
            span = self.parent(span)
        return False


def _rpc(tree: Tree, method: str):
    sp = tree.one(method)
    assert sp.kind == SpanKind.SERVER
    assert format(sp.context.trace_id, "032x") == TRACE_ID
    assert format(sp.parent.span_id, "016x") == PARENT_ID and sp.parent.is_remote
    return sp


@pytest.mark.root
def test_pull_image_span_tree(registry, tmp_path):
    image = workload.two_layer_image("spans")
    repo = "spans/" + secrets.token_hex(4)
    oci.push(registry, repo, "v1", image)
    ref = f"{registry.host}/{repo}:v1"

    async def body(ch):
        await api_pb2_grpc.ImageServiceStub(ch).PullImage(
            api_pb2.PullImageRequest(image=api_pb2.ImageSpec(image=ref)), metadata=KUBELET
        )

    t = Tree(asyncio.run(serve_traced(tmp_path, body)))
    rpc = _rpc(t, "/runtime.v1.ImageService/PullImage")
    pull = t.one("image.pull")
    assert t.parent(pull) is rpc
    assert pull.attributes["image.reference"] == ref
    assert pull.attributes["image.source"] == "docker"
    assert t.children(pull) == sorted(
        ["layer.fetch"] * 2
        + ["layer.unpack"] * 2
        + ["registry.request"] * 2  # the manifest and the image config
        + ["squashfs.build", "sif.write"]
    )
    fetched = {s.attributes["layer.digest"] for s in t.named("layer.fetch")}
    assert fetched == {x.digest for x in image.layers}
    for fetch in t.named("layer.fetch"):
        (req,) = [s for s in t.named("registry.request") if t.parent(s) is fetch]
        assert req.attributes["http.request.method"] == "GET"
        assert req.attributes["url.full"] == (
            f"http://{registry.host}/v2/{repo}/blobs/{fetch.attributes['layer.digest']}"
        )
        assert req.attributes["http.response.status_code"] == 200
    assert t.children(t.one("squashfs.build")) == ["exec tar2sqfs"]
    assert all(s.context.trace_id == rpc.context.trace_id for s in t.spans)


@pytest.mark.root
def test_pod_and_container_span_trees(registry, tmp_path):
    net = PodNet.new()
    base = Path("/tmp") / f"syspan-{secrets.token_hex(4)}"  # short: conmon socket paths
    repo = "spans/" + secrets.token_hex(4)
    oci.push(registry, repo, "v1", workload.two_layer_image("pod"))
    ref = f"{registry.host}/{repo}:v1"
    cfg = pod_config("spans")
    flat = {
        "cni.default_bridge": net.bridge,
        "cni.default_subnet": net.subnet,
        "cni.bin_dirs": ("/usr/lib/cni",),
    }

    async def body(ch):
        rt = api_pb2_grpc.RuntimeServiceStub(ch)
        await api_pb2_grpc.ImageServiceStub(ch).PullImage(
            api_pb2.PullImageRequest(image=api_pb2.ImageSpec(image=ref))
        )
        pod = (
            await rt.RunPodSandbox(api_pb2.RunPodSandboxRequest(config=cfg), metadata=KUBELET)
        ).pod_sandbox_id
        try:
            ctr = api_pb2.ContainerConfig(
                metadata=api_pb2.ContainerMetadata(name="c"),
                image=api_pb2.ImageSpec(image=ref),
                args=["sleep 30"],
            )
            req = api_pb2.CreateContainerRequest(pod_sandbox_id=pod, config=ctr, sandbox_config=cfg)
            cid = (await rt.CreateContainer(req, metadata=KUBELET)).container_id
            await rt.StartContainer(
                api_pb2.StartContainerRequest(container_id=cid), metadata=KUBELET
            )
        finally:
            await rt.StopPodSandbox(api_pb2.StopPodSandboxRequest(pod_sandbox_id=pod))
            await rt.RemovePodSandbox(api_pb2.RemovePodSandboxRequest(pod_sandbox_id=pod))

    try:
        t = Tree(asyncio.run(serve_traced(base, body, flat=flat)))
    finally:
        unmount_all(base)
        net.cleanup()
        shutil.rmtree(base, ignore_errors=True)

    run = _rpc(t, "/runtime.v1.RuntimeService/RunPodSandbox")
    adds = [s for s in t.named("cni.add") if t.parent(s) is run]
    assert sorted(s.attributes["cni.network"] for s in adds) == ["cni-loopback", "sycri-default"]
    by_net = {s.attributes["cni.network"]: s for s in adds}
    assert t.children(by_net["cni-loopback"]) == ["exec loopback"]
    assert t.children(by_net["sycri-default"]) == ["exec bridge", "exec portmap"]

    create = _rpc(t, "/runtime.v1.RuntimeService/CreateContainer")
    step = t.one("container.create")
    assert t.parent(step) is create

    # conmon (and under it runc create) runs at StartContainer, as containerd's task.
    start = _rpc(t, "/runtime.v1.RuntimeService/StartContainer")
    step = t.one("container.start")
    assert t.parent(step) is start
    conmon = t.one("conmon.start")
    assert t.is_below(conmon, step)
    assert conmon.attributes["container.id"]
    assert t.children(step) == ["conmon.start", "exec runc start"]
    runc = t.one("exec runc start")
    assert runc.attributes["process.exit.code"] == 0
    assert conmon.attributes["container.id"] in runc.attributes["process.command_args"]

    # the pull had no traceparent: its own trace, not kubelet's
    pull = t.one("/runtime.v1.ImageService/PullImage")
    assert pull.parent is None and pull.context.trace_id != run.context.trace_id


@pytest.mark.root
def test_failed_pulls_and_conversions_become_events_on_the_pod(registry, tmp_path):
    api = KubeAPI(tmp_path / "kubeapi").start()
    api.add_node("node-1")
    agent = NodeAgent.from_environment(
        config.Config(),
        environ=api.environ("node-1"),
        token_path=str(api.token_path),
        ca_path=str(api.ca_path),
    )
    assert agent.enabled
    agent.start()
    repo = "spans/" + secrets.token_hex(4)
    hostile = oci.Image(layers=[oci.layer([oci.file("../escape", "x")])])
    oci.push(registry, repo, "hostile", hostile)
    missing = f"{registry.host}/{repo}:missing"
    bad = f"{registry.host}/{repo}:hostile"
    pod = api_pb2.PodSandboxConfig(
        metadata=api_pb2.PodSandboxMetadata(name="web-1", namespace="team-a", uid="uid-1")
    )
    codes = {}

    async def body(ch):
        stub = api_pb2_grpc.ImageServiceStub(ch)
        for image in (missing, bad):
            req = api_pb2.PullImageRequest(image=api_pb2.ImageSpec(image=image), sandbox_config=pod)
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await stub.PullImage(req)
            codes[image] = err.value.code()

    try:
        asyncio.run(serve_traced(tmp_path / "node", body, agent=agent))
        assert api.wait_for(lambda s: len(s.events) == 2, timeout=15), api.events
    finally:
        agent.close()
        api.stop()
    assert codes == {missing: grpc.StatusCode.NOT_FOUND, bad: grpc.StatusCode.INVALID_ARGUMENT}
    events = {e["reason"]: e for e in api.events.values()}
    assert set(events) == {REASON_PULL, REASON_CONVERT}
    for reason, image in ((REASON_PULL, missing), (REASON_CONVERT, bad)):
        e = events[reason]
        assert e["involvedObject"] == {
            "apiVersion": "v1", "kind": "Pod", "namespace": "team-a", "name": "web-1", "uid": "uid-1"
        }  # fmt: skip
        assert e["type"] == "Warning"
        assert image in e["message"]
    assert "not found" in events[REASON_PULL]["message"]
