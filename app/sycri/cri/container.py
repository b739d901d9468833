"""Container RPCs of the RuntimeService: proto in, ``runtime.containers`` call, proto out."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable

from google.protobuf import json_format

from sycri.api import api_pb2
from sycri.cri import wire
from sycri.cri.wire import Encoded
from sycri.errors import InvalidArgument, NotFound
from sycri.node import Node
from sycri.observability import tracing
from sycri.runtime.container.container_store import STATE_PROTO, ContainerRecord
from sycri.runtime.container.containers import Containers
from sycri.runtime.container.record import RUNNING
from sycri.runtime.oci import argv

MAX_EXEC_TIMEOUT = 24 * 3600
RUNTIME_ARGS = 8192  # room for runc's own arguments (binary, --root, --pid-file, id)


def _containers(node: Node) -> Containers:
    return node.containers


async def create_container(
    node: Node, request: api_pb2.CreateContainerRequest
) -> api_pb2.CreateContainerResponse:
    if not request.pod_sandbox_id:
        raise InvalidArgument("pod_sandbox_id is required")
    if not request.HasField("config"):
        raise InvalidArgument("config is required")
    with tracing.span("container.create", **{"k8s.pod.sandbox.id": request.pod_sandbox_id}):
        cid = await _containers(node).create(
            request.pod_sandbox_id, request.config, request.sandbox_config
        )
    return api_pb2.CreateContainerResponse(container_id=cid)


async def start_container(
    node: Node, request: api_pb2.StartContainerRequest
) -> api_pb2.StartContainerResponse:
    with tracing.span("container.start", **{"container.id": request.container_id}):
        await _containers(node).start(request.container_id)
    return api_pb2.StartContainerResponse()


async def stop_container(
    node: Node, request: api_pb2.StopContainerRequest
) -> api_pb2.StopContainerResponse:
    if request.timeout < 0:
        raise InvalidArgument(f"timeout {request.timeout} is negative")
    # Idempotent, as in containerd and CRI-O: kubelet retries stops of containers
    # that are already gone and must not see an error for them.
    with contextlib.suppress(NotFound):
        await _containers(node).stop(request.container_id, float(request.timeout))
    return api_pb2.StopContainerResponse()


async def remove_container(
    node: Node, request: api_pb2.RemoveContainerRequest
) -> api_pb2.RemoveContainerResponse:
    if not request.container_id:
        raise InvalidArgument("container_id is empty")
    await _containers(node).remove(request.container_id)
    return api_pb2.RemoveContainerResponse()


def _image_spec(rec: ContainerRecord, cfg: api_pb2.ContainerConfig) -> api_pb2.ImageSpec:
    spec = api_pb2.ImageSpec()
    spec.CopyFrom(cfg.image)
    if not spec.image:
        spec.image = rec.image_id
    return spec


def _listed(rec: ContainerRecord, out: api_pb2.Container) -> None:
    """Fill ``out`` (a message already in the response: built in place, not copied in)."""
    cfg = rec.config
    out.id = rec.id
    out.pod_sandbox_id = rec.pod_id
    out.metadata.CopyFrom(cfg.metadata)
    out.image.CopyFrom(cfg.image)
    if not out.image.image:
        out.image.image = rec.image_id
    out.image_ref = rec.image_ref
    out.image_id = rec.image_id
    out.state = STATE_PROTO[rec.state]
    out.created_at = rec.created_at
    out.labels.update(cfg.labels)
    out.annotations.update(cfg.annotations)


def _listed_item(rec: ContainerRecord) -> bytes:
    """The record as one ``containers`` item of a ListContainersResponse, tag included."""
    item = api_pb2.Container()
    _listed(rec, item)
    return wire.field(_LIST_FIELD, item.SerializeToString())


def _status_bytes(rec: ContainerRecord) -> bytes:
    return status_of(rec).SerializeToString()


_LIST_FIELD = wire.number(api_pb2.ListContainersResponse, "containers")
_STATUS_FIELD = wire.number(api_pb2.ContainerStatusResponse, "status")
_INFO_FIELD = wire.number(api_pb2.ContainerStatusResponse, "info")
_INFO_KEY = wire.field(1, b"info")  # a map entry: key (1), value (2)
# Made from the record's metadata and status: both frozen, a change is a new value.
LISTED: wire.Encodings[ContainerRecord] = wire.Encodings(_listed_item)
STATUSES: wire.Encodings[ContainerRecord] = wire.Encodings(_status_bytes)


def status_bytes(rec: ContainerRecord) -> bytes:
    """The encoded ContainerStatus of ``rec`` (kept until its status changes)."""
    return STATUSES.get(rec.id, rec.meta, rec.status, rec)


def matcher(f: api_pb2.ContainerFilter) -> Callable[[ContainerRecord], bool] | None:
    """A predicate for ``f``, its fields read once (not per container); None when the
    filter lets everything through (kubelet's relist sends an empty one)."""
    id_, pod = f.id, f.pod_sandbox_id
    state = f.state.state if f.HasField("state") else None
    selector = dict(f.label_selector)
    if not (id_ or pod or state is not None or selector):
        return None

    def ok(rec: ContainerRecord) -> bool:
        meta = rec.meta
        if id_ and not meta.id.startswith(id_):
            return False
        if pod and not meta.pod_id.startswith(pod):
            return False
        if state is not None and STATE_PROTO[rec.status.state] != state:
            return False
        if selector:
            labels = rec.config.labels
            return all(labels.get(k) == v for k, v in selector.items())
        return True

    return ok


def matches(rec: ContainerRecord, f: api_pb2.ContainerFilter) -> bool:
    ok = matcher(f)
    return ok is None or ok(rec)


async def list_containers(node: Node, request: api_pb2.ListContainersRequest) -> Encoded:
    records = _containers(node).list()
    live = {rec.meta.id for rec in records}
    LISTED.keep(live)
    STATUSES.keep(live)
    ok = matcher(request.filter) if request.HasField("filter") else None
    if ok is not None:
        records = [rec for rec in records if ok(rec)]
    get = LISTED.get
    data = b"".join([get(r.meta.id, r.meta, r.status, r) for r in records])
    return Encoded(data, api_pb2.ListContainersResponse)


def status_of(rec: ContainerRecord) -> api_pb2.ContainerStatus:
    """The CRI status of a container record (ContainerStatus, container events)."""
    cfg = rec.config
    resources = api_pb2.LinuxContainerResources()
    json_format.ParseDict(rec.resources, resources)
    return api_pb2.ContainerStatus(
        id=rec.id,
        metadata=cfg.metadata,
        state=STATE_PROTO[rec.state],
        created_at=rec.created_at,
        started_at=rec.started_at,
        finished_at=rec.finished_at,
        exit_code=rec.exit_code,
        image=_image_spec(rec, cfg),
        image_ref=rec.image_ref,
        image_id=rec.image_id,
        reason=rec.reason,
        message=rec.message,
        labels=cfg.labels,
        annotations=cfg.annotations,
        mounts=cfg.mounts,
        log_path=rec.log_path,
        resources=api_pb2.ContainerResources(linux=resources),
        user=api_pb2.ContainerUser(
            linux=api_pb2.LinuxContainerUser(
                uid=rec.uid, gid=rec.gid, supplemental_groups=[rec.gid, *rec.groups]
            )
        ),
        stop_signal=cfg.stop_signal,
    )


async def container_status(node: Node, request: api_pb2.ContainerStatusRequest) -> Encoded:
    comp = _containers(node)
    rec = comp.get(request.container_id)
    if not request.verbose:  # kubelet's call: the status, encoded once per change
        data = wire.field(_STATUS_FIELD, status_bytes(rec))
        return Encoded(data, api_pb2.ContainerStatusResponse)
    # crictl inspect's: the status and the info JSON, joined from the kept status
    # encoding and the spec the record keeps (no file read, no JSON parse per call).
    info = verbose_info(rec, await comp.spec_json(rec)).encode()
    data = wire.field(_STATUS_FIELD, status_bytes(rec)) + wire.field(
        _INFO_FIELD, _INFO_KEY + wire.field(2, info)
    )
    return Encoded(data, api_pb2.ContainerStatusResponse)


def verbose_info(rec: ContainerRecord, spec_json: str) -> str:
    """The ``info`` of a verbose ContainerStatus (containerd's fields), as ``json.dumps``
    writes the dict: the spec's text is put in as it is kept, not parsed again."""
    dumps = json.dumps
    pid = rec.pid if rec.state == RUNNING else 0
    return (
        f'{{"pid": {pid}, "sandboxID": {dumps(rec.pod_id)}, '
        f'"runtimeHandler": {dumps(rec.runtime_handler)}, "bundle": {dumps(rec.bundle)}, '
        f'"runtimeSpec": {spec_json or "null"}}}'
    )


async def update_container_resources(
    node: Node, request: api_pb2.UpdateContainerResourcesRequest
) -> api_pb2.UpdateContainerResourcesResponse:
    if not request.HasField("linux"):
        raise InvalidArgument("linux resources are required")
    await _containers(node).update_resources(request.container_id, request.linux)
    return api_pb2.UpdateContainerResourcesResponse()


async def reopen_container_log(
    node: Node, request: api_pb2.ReopenContainerLogRequest
) -> api_pb2.ReopenContainerLogResponse:
    await _containers(node).reopen_log(request.container_id)
    return api_pb2.ReopenContainerLogResponse()


async def exec_sync(node: Node, request: api_pb2.ExecSyncRequest) -> api_pb2.ExecSyncResponse:
    if not request.cmd:
        raise InvalidArgument("cmd is empty")
    if request.timeout < 0 or request.timeout > MAX_EXEC_TIMEOUT:
        raise InvalidArgument(f"timeout {request.timeout} is out of range")
    argv.check("ExecSync: cmd", request.cmd, reserve=argv.environ_size() + RUNTIME_ARGS)
    result = await _containers(node).exec_sync(
        request.container_id, list(request.cmd), float(request.timeout)
    )
    return api_pb2.ExecSyncResponse(
        stdout=result.stdout, stderr=result.stderr, exit_code=result.exit_code
    )


RPCS = {
    "CreateContainer": create_container,
    "StartContainer": start_container,
    "StopContainer": stop_container,
    "RemoveContainer": remove_container,
    "ListContainers": list_containers,
    "ContainerStatus": container_status,
    "UpdateContainerResources": update_container_resources,
    "ReopenContainerLog": reopen_container_log,
    "ExecSync": exec_sync,
}
