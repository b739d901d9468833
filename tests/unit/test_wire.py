"""Replies joined from kept encodings (sycri.cri.wire) parse as the messages the handlers
used to build, for every filter, and show a record's new state on the very next call."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import json

import pytest
from google.protobuf import unknown_fields
from sycri.api import api_pb2
from sycri.config import Config
from sycri.cri import container, image, listing, sandbox, wire
from sycri.cri.service import Dispatcher
from sycri.runtime.container.record import EXITED, RUNNING, ContainerRecord, Metadata, Status
from sycri.runtime.pod.sandbox import NOTREADY, READY, Sandbox, SandboxStatus, encode_config
from sycri.server import assemble, handlers


def run(coro):
    return asyncio.run(coro)


@pytest.fixture
def node(tmp_path):
    cfg = Config(root_dir=str(tmp_path / "root"), run_dir=str(tmp_path / "run"))
    n = assemble(cfg)
    yield n
    n.images.close()


def _pod(i: int, labels: dict[str, str]) -> Sandbox:
    cfg = api_pb2.PodSandboxConfig(
        metadata=api_pb2.PodSandboxMetadata(name=f"p{i}", uid=f"u{i}", namespace="ns"),
        labels=labels,
        annotations={"note": f"pod {i}"},
    )
    return Sandbox(
        id=f"{i:02d}" + "a" * 62,
        name=f"p{i}",
        namespace="ns",
        uid=f"u{i}",
        attempt=0,
        created_at=1_700_000_000_000_000_000 + i,
        runtime_handler="",
        config_bytes=encode_config(cfg),
        run_dir=f"/run/p{i}",
        hostname=f"p{i}",
        status=SandboxStatus(state=READY, ips=[f"10.0.0.{i}", f"fd00::{i}"], network_up=True),
    )


def _container(pod: Sandbox, j: int, state: str) -> ContainerRecord:
    cfg = api_pb2.ContainerConfig(
        metadata=api_pb2.ContainerMetadata(name=f"c{j}", attempt=1),
        image=api_pb2.ImageSpec(image="busybox"),
        labels={"app": "web" if j % 2 else "db", "io.kubernetes.pod.name": pod.name},
        annotations={"a": "b"},
        mounts=[api_pb2.Mount(container_path="/data", host_path="/srv/data")],
    )
    meta = Metadata(
        id=pod.id[:2] + f"{j:02d}" + "c" * 60,
        pod_id=pod.id,
        name=f"c{j}",
        attempt=1,
        image_id="sha256:" + "e" * 64,
        image_ref="docker.io/library/busybox@sha256:" + "f" * 64,
        runtime_handler="",
        bundle=f"/run/b{j}",
        log_path=f"/var/log/pods/c{j}.log",
        config_b64=base64.b64encode(cfg.SerializeToString()).decode(),
        created_at=pod.created_at + 10 + j,
        uid=1000,
        gid=1000,
        groups=(10,),
    )
    status = Status(state=state, pid=100 + j, started_at=meta.created_at + 1)
    return ContainerRecord(meta, status)


@pytest.fixture
def filled(node):
    """Three pods (one NOTREADY) with three containers each, one of them exited."""

    async def fill() -> None:
        for i in range(3):
            pod = _pod(i, {"tier": "front" if i else "back"})
            if i == 2:
                pod.status.state, pod.status.ips = NOTREADY, []
            await node.sandboxes.store.create(pod)
            for j in range(3):
                await node.containers.store.add(_container(pod, j, EXITED if j == 2 else RUNNING))

    run(fill())
    return node


def _built_containers(node, f: api_pb2.ContainerFilter | None) -> api_pb2.ListContainersResponse:
    """The reply as the message-building code makes it."""
    out = api_pb2.ListContainersResponse()
    for rec in node.containers.list():
        if f is None or container.matches(rec, f):
            container._listed(rec, out.containers.add())
    return out


def _built_pods(node, f: api_pb2.PodSandboxFilter | None) -> api_pb2.ListPodSandboxResponse:
    out = api_pb2.ListPodSandboxResponse()
    for sb in sorted(node.sandboxes.list(), key=lambda sb: sb.created_at):
        if f is not None and not sandbox.matches(sb, f):
            continue
        item = out.items.add(
            id=sb.id,
            state=sandbox._state(sb),
            created_at=sb.created_at,
            runtime_handler=sb.runtime_handler,
            metadata=sb.metadata,
        )
        item.labels.update(sb.config.labels)
        item.annotations.update(sb.config.annotations)
    return out


def _parsed(reply: wire.Encoded, cls):
    assert isinstance(reply, wire.Encoded)
    msg = cls.FromString(reply.data)
    assert len(unknown_fields.UnknownFieldSet(msg)) == 0  # every field the reply's own
    return msg


CONTAINER_FILTERS = [
    None,
    api_pb2.ContainerFilter(),
    api_pb2.ContainerFilter(id="01"),
    api_pb2.ContainerFilter(pod_sandbox_id="01"),
    api_pb2.ContainerFilter(state=api_pb2.ContainerStateValue(state=api_pb2.CONTAINER_EXITED)),
    api_pb2.ContainerFilter(label_selector={"app": "web"}),
    api_pb2.ContainerFilter(label_selector={"app": "web", "io.kubernetes.pod.name": "p2"}),
    api_pb2.ContainerFilter(label_selector={"app": "none"}),
]


@pytest.mark.parametrize("f", CONTAINER_FILTERS)
def test_list_containers_reply_equals_the_built_one(filled, f):
    req = (
        api_pb2.ListContainersRequest(filter=f)
        if f is not None
        else api_pb2.ListContainersRequest()
    )
    reply = run(container.list_containers(filled, req))
    got = _parsed(reply, api_pb2.ListContainersResponse)
    want = _built_containers(filled, f)
    assert got == want
    assert len(got.containers) == len(want.containers)
    if f is None:
        assert len(got.containers) == 9


POD_FILTERS = [
    None,
    api_pb2.PodSandboxFilter(id="01"),
    api_pb2.PodSandboxFilter(state=api_pb2.PodSandboxStateValue(state=api_pb2.SANDBOX_NOTREADY)),
    api_pb2.PodSandboxFilter(label_selector={"tier": "front"}),
    api_pb2.PodSandboxFilter(label_selector={"tier": "nowhere"}),
]


@pytest.mark.parametrize("f", POD_FILTERS)
def test_list_pod_sandbox_reply_equals_the_built_one(filled, f):
    req = (
        api_pb2.ListPodSandboxRequest(filter=f)
        if f is not None
        else api_pb2.ListPodSandboxRequest()
    )
    got = _parsed(run(sandbox.list_pod_sandbox(filled, req)), api_pb2.ListPodSandboxResponse)
    assert got == _built_pods(filled, f)
    assert [i.created_at for i in got.items] == sorted(i.created_at for i in got.items)


def test_status_replies_equal_the_built_ones(filled):
    for rec in filled.containers.list():
        req = api_pb2.ContainerStatusRequest(container_id=rec.id)
        got = _parsed(run(container.container_status(filled, req)), api_pb2.ContainerStatusResponse)
        assert got == api_pb2.ContainerStatusResponse(status=container.status_of(rec))
    for sb in filled.sandboxes.list():
        req = api_pb2.PodSandboxStatusRequest(pod_sandbox_id=sb.id)
        got = _parsed(
            run(sandbox.pod_sandbox_status(filled, req)), api_pb2.PodSandboxStatusResponse
        )
        want = api_pb2.PodSandboxStatusResponse(
            status=sandbox.status_of(sb),
            containers_statuses=sandbox.container_statuses(filled.containers.in_pod(sb.id)),
            timestamp=got.timestamp,
        )
        assert got.timestamp > 0
        assert got == want
        assert [c.metadata.name for c in got.containers_statuses] == ["c2", "c1", "c0"]


def test_an_exit_shows_in_the_next_list_and_status(filled):
    rec = next(r for r in filled.containers.list() if r.state == RUNNING)
    listed = {
        c.id: c.state
        for c in run(container.list_containers(filled, api_pb2.ListContainersRequest())).containers
    }
    assert listed[rec.id] == api_pb2.CONTAINER_RUNNING
    status_req = api_pb2.ContainerStatusRequest(container_id=rec.id)
    assert run(container.container_status(filled, status_req)).status.exit_code == 0

    # what the exit monitor does: a new status value, through the store
    exited = rec.status.but(
        state=EXITED, exit_code=3, finished_at=rec.started_at + 5, reason="Error"
    )
    run(filled.containers.store.set_status(rec, exited))

    reply = run(container.list_containers(filled, api_pb2.ListContainersRequest()))
    assert {c.id: c.state for c in reply.containers}[rec.id] == api_pb2.CONTAINER_EXITED
    status = run(container.container_status(filled, status_req)).status
    assert (status.state, status.exit_code, status.reason) == (api_pb2.CONTAINER_EXITED, 3, "Error")
    pod = run(
        sandbox.pod_sandbox_status(
            filled, api_pb2.PodSandboxStatusRequest(pod_sandbox_id=rec.pod_id)
        )
    )
    assert {c.id: c.exit_code for c in pod.containers_statuses}[rec.id] == 3
    running = api_pb2.ContainerFilter(
        state=api_pb2.ContainerStateValue(state=api_pb2.CONTAINER_RUNNING)
    )
    still = run(container.list_containers(filled, api_pb2.ListContainersRequest(filter=running)))
    assert rec.id not in {c.id for c in still.containers}


def test_a_removed_container_leaves_the_list(filled):
    rec = filled.containers.list()[0]
    run(container.list_containers(filled, api_pb2.ListContainersRequest()))
    # what RemoveContainer does with the records: metadata first, then out of the index
    run(filled.containers.store.drop_metadata(rec))
    filled.containers.store.forget(rec)
    reply = run(container.list_containers(filled, api_pb2.ListContainersRequest()))
    assert rec.id not in {c.id for c in reply.containers}
    assert len(reply.containers) == 8
    assert len(container.LISTED) <= 8  # its encoding went with it


def test_a_stopped_pod_shows_in_the_next_list_and_status(filled):
    sb = next(s for s in filled.sandboxes.list() if s.ready)
    req = api_pb2.PodSandboxStatusRequest(pod_sandbox_id=sb.id)
    before = run(sandbox.pod_sandbox_status(filled, req)).status
    assert (before.state, before.network.ip) == (api_pb2.SANDBOX_READY, sb.ips[0])

    # what StopPodSandbox does: the status changed in place (network torn down)
    sb.status.state, sb.status.reason = NOTREADY, "stopped"
    sb.status.ips, sb.status.network_up = [], False
    run(filled.sandboxes.store.save_status(sb))

    after = run(sandbox.pod_sandbox_status(filled, req)).status
    assert after.state == api_pb2.SANDBOX_NOTREADY
    assert after.network.ip == "" and not after.network.additional_ips
    listed = run(sandbox.list_pod_sandbox(filled, api_pb2.ListPodSandboxRequest())).items
    assert {p.id: p.state for p in listed}[sb.id] == api_pb2.SANDBOX_NOTREADY


def test_the_dispatcher_sends_encoded_bytes_as_they_are(filled):
    svc = api_pb2.DESCRIPTOR.services_by_name["RuntimeService"]
    d = Dispatcher(filled, handlers())
    h = d._method_handler(svc.methods_by_name["ListContainers"])
    raw = api_pb2.ListContainersRequest().SerializeToString()

    class Context:
        async def abort(self, code, details):
            raise AssertionError(details)

    reply = run(h.unary_unary(raw, Context()))
    data = h.response_serializer(reply)
    assert data == reply.data
    assert api_pb2.ListContainersResponse.FromString(data) == _built_containers(filled, None)
    # a message reply still serialises as a message
    built = _built_containers(filled, None)
    assert h.response_serializer(built) == built.SerializeToString()


def test_stream_containers_sends_what_list_sends(filled):
    stream = listing.stream_variants(handlers())
    assert "StreamContainers" not in stream  # the server has its own; build one from List
    h = listing.streamed(listing.PAIRS["StreamContainers"], container.list_containers)

    async def collect():
        return [i async for i in h(filled, api_pb2.StreamContainersRequest())]

    items = [c for batch in run(collect()) for c in batch.containers]
    assert items == list(_built_containers(filled, None).containers)


@pytest.mark.parametrize(
    "value", [0, 1, 127, 128, 300, 2**31, 1_764_000_000_123_456_789, 2**63 - 1, -1]
)
def test_int_fields_encode_as_protobuf_does(value):
    want = api_pb2.PodSandboxStatusResponse(timestamp=value).SerializeToString()
    assert wire.int_field(4, value) == want


def test_length_delimited_fields_encode_as_protobuf_does():
    for size in (0, 1, 127, 128, 16_383, 16_384, 300_000):
        msg = api_pb2.ContainerStatusResponse(status=api_pb2.ContainerStatus(id="x" * size))
        assert wire.field(1, msg.status.SerializeToString()) == msg.SerializeToString()


def _image_config(user: str) -> bytes:
    doc = {"architecture": "amd64", "os": "linux", "config": {"User": user}}
    return json.dumps(doc).encode()


def test_image_replies_equal_the_built_ones_and_a_moved_tag_shows_at_once(node):
    store = node.images.store
    tag = "docker.io/library/app:latest"
    old = store.add("sha256:" + "1" * 64, "/x/1.sif", 10, _image_config("1000"), tags=[tag])
    store.add("sha256:" + "3" * 64, "/x/3.sif", 30, _image_config("nobody"), tags=["r/b:1"])

    def listed():
        reply = run(image.list_images(node, api_pb2.ListImagesRequest()))
        got = _parsed(reply, api_pb2.ListImagesResponse)
        want = api_pb2.ListImagesResponse(images=[image.to_cri(i) for i in node.images.list()])
        assert got == want
        return {i.id: list(i.repo_tags) for i in got.images}

    assert listed()[old.id] == [tag]
    req = api_pb2.ImageStatusRequest(image=api_pb2.ImageSpec(image=tag))
    got = _parsed(run(image.image_status(node, req)), api_pb2.ImageStatusResponse)
    assert got == api_pb2.ImageStatusResponse(image=image.to_cri(old))
    assert got.image.uid.value == 1000

    new = store.add("sha256:" + "2" * 64, "/x/2.sif", 20, _image_config("nobody"), tags=[tag])
    tags = listed()
    assert (tags[old.id], tags[new.id]) == ([], [tag])  # the tag moved: no stale item
    got = _parsed(run(image.image_status(node, req)), api_pb2.ImageStatusResponse)
    assert (got.image.id, got.image.username) == (new.id, "nobody")
    wanted = api_pb2.ListImagesRequest(
        filter=api_pb2.ImageFilter(image=api_pb2.ImageSpec(image=tag))
    )
    only = _parsed(run(image.list_images(node, wanted)), api_pb2.ListImagesResponse)
    assert [i.id for i in only.images] == [new.id]


# -- verbose ContainerStatus: the status plus the info JSON with the OCI spec ---------------


def _built_verbose(rec, bundle) -> api_pb2.ContainerStatusResponse:
    """The verbose reply as the handler built it before: the spec read from the bundle
    and parsed, the info JSON dumped from a dict."""
    spec = (bundle / "config.json").read_text() if (bundle / "config.json").exists() else ""
    info = json.dumps(
        {
            "pid": rec.pid if rec.state == "running" else 0,
            "sandboxID": rec.pod_id,
            "runtimeHandler": rec.runtime_handler,
            "bundle": rec.bundle,
            "runtimeSpec": json.loads(spec) if spec else None,
        }
    )
    return api_pb2.ContainerStatusResponse(status=container.status_of(rec), info={"info": info})


@pytest.fixture
def bundled(node, tmp_path):
    """One created container (no process) whose bundle holds a spec, as CreateContainer
    leaves it; its record has not kept the spec (as after a restart)."""
    pod = _pod(7, {})
    rec = _container(pod, 1, "created")
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    spec = {
        "ociVersion": "1.0.2",
        "process": {"args": ["/bin/sh", "-c", "echo hé"], "env": ["GREETING=grüß", "Q=\"x\""]},
        "linux": {"resources": {"memory": {"limit": 1 << 30}}, "maskedPaths": ["/proc/kcore"]},
        "annotations": {"k": "\u2603 \x01"},
    }
    (bundle / "config.json").write_text(json.dumps(spec, indent=1))
    meta = dataclasses.replace(rec.meta, bundle=str(bundle))
    rec = ContainerRecord(meta, Status(state="created"))

    async def fill() -> None:
        await node.sandboxes.store.create(pod)
        await node.containers.store.add(rec)

    run(fill())
    return node, node.containers.get(rec.id), bundle


def _verbose(node, cid):
    req = api_pb2.ContainerStatusRequest(container_id=cid, verbose=True)
    reply = run(container.container_status(node, req))
    return _parsed(reply, api_pb2.ContainerStatusResponse)


def test_the_verbose_reply_equals_the_built_one_and_keeps_the_spec(bundled):
    node, rec, bundle = bundled
    assert rec.spec_json is None
    got = _verbose(node, rec.id)
    want = _built_verbose(rec, bundle)
    assert got == want
    assert got.info["info"] == want.info["info"]  # the same JSON text, byte for byte
    info = json.loads(got.info["info"])
    assert info["runtimeSpec"]["process"]["env"][0] == "GREETING=grüß"
    assert info["pid"] == 0 and info["bundle"] == str(bundle)
    # Read once: the record keeps it, and the next reply comes from it, not the file.
    assert json.loads(rec.spec_json) == info["runtimeSpec"]
    (bundle / "config.json").unlink()
    assert _verbose(node, rec.id) == got


def test_an_update_before_the_start_and_an_exit_show_in_the_next_verbose_reply(bundled):
    node, rec, bundle = bundled
    _verbose(node, rec.id)
    limit = 256 << 20
    res = api_pb2.LinuxContainerResources(memory_limit_in_bytes=limit)
    run(node.containers.update_resources(rec.id, res))  # no process yet: config.json
    got = _verbose(node, rec.id)
    assert got == _built_verbose(rec, bundle)
    spec = json.loads(got.info["info"])["runtimeSpec"]
    assert spec["linux"]["resources"]["memory"]["limit"] == limit
    assert got.status.resources.linux.memory_limit_in_bytes == limit

    # what StartContainer and then the exit monitor do: new status values
    started = rec.status.but(state=RUNNING, pid=4242, started_at=rec.created_at + 1)
    run(node.containers.store.set_status(rec, started))
    got = _verbose(node, rec.id)
    assert got.status.state == api_pb2.CONTAINER_RUNNING
    assert json.loads(got.info["info"])["pid"] == 4242
    assert got == _built_verbose(rec, bundle)
    exited = rec.status.but(state=EXITED, exit_code=2, finished_at=rec.started_at + 1)
    run(node.containers.store.set_status(rec, exited))
    got = _verbose(node, rec.id)
    assert (got.status.state, got.status.exit_code) == (api_pb2.CONTAINER_EXITED, 2)
    assert json.loads(got.info["info"])["pid"] == 0
    assert got == _built_verbose(rec, bundle)


def test_a_bundle_without_a_spec_shows_none_and_is_read_again(bundled):
    node, rec, bundle = bundled
    spec = (bundle / "config.json").read_bytes()
    (bundle / "config.json").unlink()
    got = _verbose(node, rec.id)
    assert json.loads(got.info["info"])["runtimeSpec"] is None
    assert got == _built_verbose(rec, bundle)
    (bundle / "config.json").write_bytes(spec)
    assert json.loads(_verbose(node, rec.id).info["info"])["runtimeSpec"] == json.loads(spec)
