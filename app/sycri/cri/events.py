"""GetContainerEvents: the container event bus as a CRI server stream (evented PLEG).

Each event carries the pod's status and the statuses of the pod's containers as they
were when it was published (:func:`snapshotter` is the bus's snapshot hook), which is
what kubelet puts in its cache keyed by the event's ``created_at``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from sycri.api import api_pb2
from sycri.errors import SycriError
from sycri.runtime.events import ContainerEvent, ContainerEventType, EventBus

if TYPE_CHECKING:
    from sycri.runtime.container.container_store import ContainerRecord
    from sycri.runtime.container.containers import Containers
    from sycri.runtime.pod.sandbox import Sandbox
    from sycri.runtime.pod.sandbox_manager import SandboxManager


class PodStatusSource(Protocol):
    """``node.sandboxes`` as events see it."""

    def pod_sandbox_status(self, pod_sandbox_id: str) -> api_pb2.PodSandboxStatus | None: ...


class ContainerStatusSource(Protocol):
    """``node.containers`` as events see it."""

    def container_statuses(self, pod_sandbox_id: str) -> list[api_pb2.ContainerStatus]: ...


class EventsNode(Protocol):
    @property
    def events(self) -> EventBus: ...


@dataclass(frozen=True)
class Snapshot:
    pod: api_pb2.PodSandboxStatus | None
    containers: tuple[api_pb2.ContainerStatus, ...]


def snapshotter(
    pods: PodStatusSource, containers: ContainerStatusSource
) -> Callable[[ContainerEvent], Snapshot]:
    """The bus hook: statuses of the event's pod and its containers, taken now."""

    def snap(event: ContainerEvent) -> Snapshot:
        return Snapshot(
            pods.pod_sandbox_status(event.pod_sandbox_id),
            tuple(containers.container_statuses(event.pod_sandbox_id)),
        )

    return snap


class NodeStatuses:
    """Both status sources over the node's real stores (``node.sandboxes``/``containers``).

    Records are read as they are (no refresh): a snapshot is taken inside a lifecycle
    change, and refreshing there could start another change.
    """

    def __init__(self, sandboxes: SandboxManager, containers: Containers) -> None:
        self.sandboxes = sandboxes
        self.containers = containers

    def pod_sandbox_status(self, pod_sandbox_id: str) -> api_pb2.PodSandboxStatus | None:
        from sycri.cri.sandbox import status_of

        try:
            return status_of(self.sandboxes.get(pod_sandbox_id))
        except SycriError:
            return None

    def container_statuses(self, pod_sandbox_id: str) -> list[api_pb2.ContainerStatus]:
        """The same list PodSandboxStatus gives (kubelet treats both alike)."""
        from sycri.cri.sandbox import container_statuses

        return container_statuses(self.containers.in_pod(pod_sandbox_id))


def connect(sandboxes: SandboxManager, containers: Containers, bus: EventBus) -> None:
    """Publish the node's container lifecycle on ``bus``, with status snapshots."""
    statuses = NodeStatuses(sandboxes, containers)
    bus.snapshot = snapshotter(statuses, statuses)

    def publish(rec: ContainerRecord, kind: ContainerEventType) -> None:
        bus.publish(ContainerEvent(rec.id, kind, rec.pod_id))

    containers.event_hooks.append(publish)

    def pod_exited(sb: Sandbox) -> None:  # its init exited: NOTREADY, nobody asked
        bus.publish(ContainerEvent(sb.id, ContainerEventType.STOPPED, sb.id))

    sandboxes.on_exit.append(pod_exited)


_CRI_EVENT_TYPES = {
    ContainerEventType.CREATED: api_pb2.CONTAINER_CREATED_EVENT,
    ContainerEventType.STARTED: api_pb2.CONTAINER_STARTED_EVENT,
    ContainerEventType.STOPPED: api_pb2.CONTAINER_STOPPED_EVENT,
    ContainerEventType.DELETED: api_pb2.CONTAINER_DELETED_EVENT,
}


def event_response(event: ContainerEvent) -> api_pb2.ContainerEventResponse:
    out = api_pb2.ContainerEventResponse(
        container_id=event.container_id,
        container_event_type=_CRI_EVENT_TYPES[event.type],
        created_at=event.created_at,
    )
    snap = event.snapshot
    if isinstance(snap, Snapshot):
        if snap.pod is not None:
            out.pod_sandbox_status.CopyFrom(snap.pod)
        out.containers_statuses.extend(snap.containers)
    return out


async def get_container_events(
    node: EventsNode, request: api_pb2.GetEventsRequest
) -> AsyncIterator[api_pb2.ContainerEventResponse]:
    with node.events.subscribe() as sub:
        async for event in sub:
            yield event_response(event)


RPCS = {"GetContainerEvents": get_container_events}
