"""Which backend answers each CRI method, decided from the method name alone.

Pure data: the server looks a method up here, decodes only the requests whose routing
needs a field (an id, a handler), and forwards every other byte untouched.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from google.protobuf.descriptor import Descriptor
from google.protobuf.message import Message

from sycri.api import api_pb2

RUNTIME = "/runtime.v1.RuntimeService/"
IMAGES = "/runtime.v1.ImageService/"


class Kind(enum.Enum):
    PRIMARY = "primary"  # the existing runtime answers alone (Version, RuntimeConfig)
    RUN_POD = "run-pod"  # by RunPodSandboxRequest.runtime_handler
    BY_POD = "by-pod"  # by the owner of a pod sandbox id
    BY_CONTAINER = "by-container"  # by the owner of a container id
    MERGE = "merge"  # both answer; responses are concatenated (repeated fields only)
    MERGE_STREAM = "merge-stream"  # both stream; the streams are concatenated
    EVENTS = "events"  # both stream for as long as the client listens
    STATUS = "status"  # both answer; conditions merged (merge.status)
    BROADCAST = "broadcast"  # both are told; the existing runtime's answer is returned
    IMAGE = "image"  # by ImageSpec.runtime_handler, else the existing runtime
    PULL = "pull"  # by runtime handler, else by the pod the pull is for
    REMOVE_IMAGE = "remove-image"  # by runtime handler, else both


@dataclass(frozen=True)
class Route:
    kind: Kind
    request: type[Message] | None = None  # decoded only when the route reads a field
    field: str = ""  # the id field for BY_POD / BY_CONTAINER

    def decode(self, raw: bytes) -> Message:
        """The request as its message; DecodeError when the bytes are not one."""
        if self.request is None:
            raise AssertionError(f"a {self.kind.value} route decodes no request")
        return self.request.FromString(raw)

    def request_name(self) -> str:
        return self.request.DESCRIPTOR.full_name if self.request is not None else "request"

    def id_of(self, raw: bytes) -> str:
        """The pod or container id a BY_POD / BY_CONTAINER request names."""
        value = getattr(self.decode(raw), self.field)
        assert isinstance(value, str), self.field
        return value


def _by_pod(request: type[Message]) -> Route:
    return Route(Kind.BY_POD, request, "pod_sandbox_id")


def _by_container(request: type[Message]) -> Route:
    return Route(Kind.BY_CONTAINER, request, "container_id")


p = api_pb2
TABLE: dict[str, Route] = {
    RUNTIME + "Version": Route(Kind.PRIMARY),
    RUNTIME + "RuntimeConfig": Route(Kind.PRIMARY),
    RUNTIME + "RunPodSandbox": Route(Kind.RUN_POD, p.RunPodSandboxRequest),
    RUNTIME + "RestorePod": Route(Kind.RUN_POD, p.RestorePodRequest),
    RUNTIME + "StopPodSandbox": _by_pod(p.StopPodSandboxRequest),
    RUNTIME + "RemovePodSandbox": _by_pod(p.RemovePodSandboxRequest),
    RUNTIME + "PodSandboxStatus": _by_pod(p.PodSandboxStatusRequest),
    RUNTIME + "PortForward": _by_pod(p.PortForwardRequest),
    RUNTIME + "PodSandboxStats": _by_pod(p.PodSandboxStatsRequest),
    RUNTIME + "UpdatePodSandboxResources": _by_pod(p.UpdatePodSandboxResourcesRequest),
    RUNTIME + "CheckpointPod": _by_pod(p.CheckpointPodRequest),
    RUNTIME + "CreateContainer": _by_pod(p.CreateContainerRequest),
    RUNTIME + "StartContainer": _by_container(p.StartContainerRequest),
    RUNTIME + "StopContainer": _by_container(p.StopContainerRequest),
    RUNTIME + "RemoveContainer": _by_container(p.RemoveContainerRequest),
    RUNTIME + "ContainerStatus": _by_container(p.ContainerStatusRequest),
    RUNTIME + "UpdateContainerResources": _by_container(p.UpdateContainerResourcesRequest),
    RUNTIME + "ReopenContainerLog": _by_container(p.ReopenContainerLogRequest),
    RUNTIME + "ExecSync": _by_container(p.ExecSyncRequest),
    RUNTIME + "Exec": _by_container(p.ExecRequest),
    RUNTIME + "Attach": _by_container(p.AttachRequest),
    RUNTIME + "ContainerStats": _by_container(p.ContainerStatsRequest),
    RUNTIME + "CheckpointContainer": _by_container(p.CheckpointContainerRequest),
    RUNTIME + "ListPodSandbox": Route(Kind.MERGE),
    RUNTIME + "ListContainers": Route(Kind.MERGE),
    RUNTIME + "ListContainerStats": Route(Kind.MERGE),
    RUNTIME + "ListPodSandboxStats": Route(Kind.MERGE),
    RUNTIME + "ListMetricDescriptors": Route(Kind.MERGE),
    RUNTIME + "ListPodSandboxMetrics": Route(Kind.MERGE),
    RUNTIME + "StreamPodSandboxes": Route(Kind.MERGE_STREAM),
    RUNTIME + "StreamContainers": Route(Kind.MERGE_STREAM),
    RUNTIME + "StreamContainerStats": Route(Kind.MERGE_STREAM),
    RUNTIME + "StreamPodSandboxStats": Route(Kind.MERGE_STREAM),
    RUNTIME + "StreamPodSandboxMetrics": Route(Kind.MERGE_STREAM),
    RUNTIME + "GetContainerEvents": Route(Kind.EVENTS),
    RUNTIME + "Status": Route(Kind.STATUS),
    RUNTIME + "UpdateRuntimeConfig": Route(Kind.BROADCAST),
    IMAGES + "ListImages": Route(Kind.MERGE),
    IMAGES + "StreamImages": Route(Kind.MERGE_STREAM),
    IMAGES + "ImageFsInfo": Route(Kind.MERGE),
    IMAGES + "ImageStatus": Route(Kind.IMAGE, p.ImageStatusRequest),
    IMAGES + "PullImage": Route(Kind.PULL, p.PullImageRequest),
    IMAGES + "RemoveImage": Route(Kind.REMOVE_IMAGE, p.RemoveImageRequest),
}

# MERGE and MERGE_STREAM responses are merged by concatenating the serialized answers:
# each of those messages has only repeated fields, and protobuf parses concatenated
# messages as one with the repeated fields appended (tests check every one).


def output_type(method: str) -> Descriptor:
    """The response descriptor of a CRI method."""
    service, name = method.strip("/").split("/")
    svc = api_pb2.DESCRIPTOR.services_by_name[service.rsplit(".", 1)[1]]
    return svc.methods_by_name[name].output_type


# Requests whose listing answers populate the ownership cache: (pod ids, container ids).
LISTINGS = {RUNTIME + "ListPodSandbox": "pods", RUNTIME + "ListContainers": "containers"}

# Streaming methods the proxy knows; any other unknown method is forwarded unary.
STREAMING = {m for m, r in TABLE.items() if r.kind in (Kind.MERGE_STREAM, Kind.EVENTS)}


def route(method: str) -> Route:
    """The route of ``method``; methods this table does not know (a newer CRI) go to the
    existing runtime unchanged, so kubelet sees what it saw before the proxy."""
    return TABLE.get(method, Route(Kind.PRIMARY))
