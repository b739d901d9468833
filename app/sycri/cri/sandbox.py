"""RunPodSandbox, StopPodSandbox, RemovePodSandbox, PodSandboxStatus, ListPodSandbox,
UpdatePodSandboxResources and UpdateRuntimeConfig: proto in, the sandbox manager, proto
out."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import time
from collections.abc import Iterable

from sycri.api import api_pb2
from sycri.cri.container import status_of as container_status_of
from sycri.cri.events import Snapshot
from sycri.errors import InvalidArgument, NotFound
from sycri.node import Node
from sycri.runtime.container.container_store import ContainerRecord
from sycri.runtime.events import ContainerEvent, ContainerEventType
from sycri.runtime.pod.sandbox import READY, Sandbox
from sycri.runtime.pod.sandbox_manager import SandboxManager, pod_limits

_MODE = {"POD": api_pb2.POD, "CONTAINER": api_pb2.CONTAINER, "NODE": api_pb2.NODE}


def _manager(node: Node) -> SandboxManager:
    return node.sandboxes


def _state(sb: Sandbox) -> api_pb2.PodSandboxState:
    return api_pb2.SANDBOX_READY if sb.state == READY else api_pb2.SANDBOX_NOTREADY


async def run_pod_sandbox(
    node: Node, request: api_pb2.RunPodSandboxRequest
) -> api_pb2.RunPodSandboxResponse:
    if not request.HasField("config"):
        raise InvalidArgument("RunPodSandbox needs a pod sandbox config")
    sb = await _manager(node).run(request.config, request.runtime_handler)
    _publish(node, sb.id, ContainerEventType.CREATED)
    _publish(node, sb.id, ContainerEventType.STARTED)
    return api_pb2.RunPodSandboxResponse(pod_sandbox_id=sb.id)


async def stop_pod_sandbox(
    node: Node, request: api_pb2.StopPodSandboxRequest
) -> api_pb2.StopPodSandboxResponse:
    # Idempotent, as in containerd and CRI-O: kubelet stops pods it may have
    # removed already; a stop of an unknown pod is not an error.
    with contextlib.suppress(NotFound):
        manager = _manager(node)
        sb = manager.get(request.pod_sandbox_id)
        was_ready = sb.state == READY
        await manager.stop(sb.id)
        if was_ready:  # a repeated stop is no event: kubelet would sync the pod again
            _publish(node, sb.id, ContainerEventType.STOPPED)
    return api_pb2.StopPodSandboxResponse()


async def remove_pod_sandbox(
    node: Node, request: api_pb2.RemovePodSandboxRequest
) -> api_pb2.RemovePodSandboxResponse:
    manager = _manager(node)
    try:
        sb = manager.get(request.pod_sandbox_id)
    except NotFound:
        sb = None
    if await manager.remove(request.pod_sandbox_id) and sb is not None:
        # Taken before it went: kubelet drops a pod from its cache on a DELETED event
        # whose pod status has the event's id, and ignores one without a pod status.
        gone = Snapshot(status_of(sb), ())
        _publish(node, sb.id, ContainerEventType.DELETED, gone)
    return api_pb2.RemovePodSandboxResponse()


def _publish(
    node: Node, sandbox_id: str, kind: ContainerEventType, snapshot: Snapshot | None = None
) -> None:
    """A sandbox lifecycle event for evented PLEG, as containerd sends them: the sandbox
    id as the container id (kubelet syncs the pod on it)."""
    node.events.publish(ContainerEvent(sandbox_id, kind, sandbox_id, snapshot=snapshot))


def status_of(sb: Sandbox) -> api_pb2.PodSandboxStatus:
    cfg = sb.config
    st = api_pb2.PodSandboxStatus(
        id=sb.id,
        metadata=sb.metadata,
        state=_state(sb),
        created_at=sb.created_at,
        labels=dict(cfg.labels),
        annotations=dict(cfg.annotations),
        runtime_handler=sb.runtime_handler,
    )
    st.linux.namespaces.options.CopyFrom(
        api_pb2.NamespaceOption(
            network=_MODE[sb.net_mode], pid=_MODE[sb.pid_mode], ipc=_MODE[sb.ipc_mode]
        )
    )
    if sb.net_mode == "POD" and sb.ips and sb.network_up:
        st.network.ip = sb.ips[0]
        st.network.additional_ips.extend(api_pb2.PodIP(ip=ip) for ip in sb.ips[1:])
    return st


def verbose_info(sb: Sandbox) -> dict[str, str]:
    doc = {
        "pid": sb.init_pid or 0,
        "runtimeHandler": sb.runtime_handler,
        "hostname": sb.hostname,
        "namespaces": {
            "network": sb.netns_path,
            "ipc": sb.ipc_ns_path,
            "uts": sb.uts_ns_path,
            "pid": sb.pid_ns_path,
            "user": sb.userns_path,
        },
        "idMappings": sb.userns_maps,  # uids/gids: [container id, host id, length]
        "cgroupParent": sb.cgroup_parent,
        "cgroupPath": sb.cgroup_path,
        # Pod resources plus overhead, as last set by RunPodSandbox or a resize.
        "resources": dataclasses.asdict(pod_limits(sb.config)),
        "files": {
            "hosts": sb.hosts_path,
            "resolvConf": sb.resolv_path,
            "hostname": sb.hostname_path,
            "shm": sb.shm_path,
        },
        "network": (sb.network or {}).get("name"),
        # Why the pod is NOTREADY, and what a teardown that failed still holds.
        "reason": sb.status.reason,
        "teardownLeft": sb.status.left,
        "cniResult": sb.cni_result,
    }
    return {"info": json.dumps(doc, sort_keys=True)}


def container_statuses(records: Iterable[ContainerRecord]) -> list[api_pb2.ContainerStatus]:
    """The statuses of a pod's containers, newest first as kubelet sorts them.

    kubelet's evented PLEG takes a pod's containers from here (PodSandboxStatus whose
    ``timestamp`` is set, and every container event) instead of ListContainers plus
    ContainerStatus: a container missing here is one kubelet believes gone and creates
    again.
    """
    out = [container_status_of(r) for r in records]
    out.sort(key=lambda st: st.created_at, reverse=True)
    return out


async def pod_sandbox_status(
    node: Node, request: api_pb2.PodSandboxStatusRequest
) -> api_pb2.PodSandboxStatusResponse:
    manager = _manager(node)
    sb = manager.get(request.pod_sandbox_id)  # from memory: a status call never writes
    # The timestamp goes with the statuses: taken before them, so an event published
    # after them is never older than this reply (kubelet's cache keeps the newer one).
    stamp = time.time_ns()
    containers = node.containers
    records = containers.in_pod(sb.id)
    resp = api_pb2.PodSandboxStatusResponse(
        status=status_of(sb), timestamp=stamp, containers_statuses=container_statuses(records)
    )
    if request.verbose:
        resp.info.update(verbose_info(sb))
        # The last CNI CHECK and when it ran: a status call never waits on a plugin.
        check = manager.network_check(sb)
        resp.info["networkCheck"] = check.result
        resp.info["networkCheckedAt"] = check.when()
    return resp


def matches(sb: Sandbox, f: api_pb2.PodSandboxFilter) -> bool:
    if f.id and not sb.id.startswith(f.id):
        return False
    if f.HasField("state") and f.state.state != _state(sb):
        return False
    if f.label_selector:
        labels = sb.config.labels
        return all(labels.get(k) == v for k, v in f.label_selector.items())
    return True


async def list_pod_sandbox(
    node: Node, request: api_pb2.ListPodSandboxRequest
) -> api_pb2.ListPodSandboxResponse:
    resp = api_pb2.ListPodSandboxResponse()
    # Built in place in the response (a message passed in would be copied), oldest first.
    for sb in sorted(_manager(node).list(), key=lambda sb: sb.created_at):
        if request.HasField("filter") and not matches(sb, request.filter):
            continue
        cfg = sb.config
        item = resp.items.add(
            id=sb.id,
            state=_state(sb),
            created_at=sb.created_at,
            runtime_handler=sb.runtime_handler,
        )
        m = item.metadata
        m.name, m.uid, m.namespace, m.attempt = sb.name, sb.uid, sb.namespace, sb.attempt
        item.labels.update(cfg.labels)
        item.annotations.update(cfg.annotations)
    return resp


async def update_pod_sandbox_resources(
    node: Node, request: api_pb2.UpdatePodSandboxResourcesRequest
) -> api_pb2.UpdatePodSandboxResourcesResponse:
    await _manager(node).update_resources(
        request.pod_sandbox_id,
        request.resources if request.HasField("resources") else None,
        request.overhead if request.HasField("overhead") else None,
    )
    return api_pb2.UpdatePodSandboxResourcesResponse()


async def update_runtime_config(
    node: Node, request: api_pb2.UpdateRuntimeConfigRequest
) -> api_pb2.UpdateRuntimeConfigResponse:
    await _manager(node).set_pod_cidr(request.runtime_config.network_config.pod_cidr)
    return api_pb2.UpdateRuntimeConfigResponse()


RPCS = {
    "RunPodSandbox": run_pod_sandbox,
    "StopPodSandbox": stop_pod_sandbox,
    "RemovePodSandbox": remove_pod_sandbox,
    "PodSandboxStatus": pod_sandbox_status,
    "ListPodSandbox": list_pod_sandbox,
    "UpdatePodSandboxResources": update_pod_sandbox_resources,
    "UpdateRuntimeConfig": update_runtime_config,
}
