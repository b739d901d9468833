"""Where a stream goes: the small interface streaming needs from containers and pods.

Streaming needs no more than the runc invocation, conmon's attach socket and control
fifo of a container, and a pod's network namespace; :class:`NodeTargets` gets them
from the container and sandbox registries. Tests may pass any other :class:`Targets`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from sycri import command
from sycri.errors import FailedPrecondition
from sycri.runtime.container.record import CREATED

if TYPE_CHECKING:
    from sycri.runtime.container.containers import Containers
    from sycri.runtime.pod.sandbox_manager import SandboxManager


@dataclass(frozen=True)
class ContainerTarget:
    """How to reach one container's processes and stdio."""

    container_id: str  # the CRI id, for messages
    runtime: str  # the OCI runtime binary (runc)
    runtime_root: str  # its --root
    runtime_id: str  # the id runc knows the container by
    attach_socket: str = ""  # conmon's SOCK_SEQPACKET attach socket; "" when none
    ctl_fifo: str = ""  # conmon's control fifo (window resize); "" when none
    runtime_flags: tuple[str, ...] = ()  # global flags after --root (--systemd-cgroup)

    def runtime_argv(self, *args: str) -> list[str]:
        return [self.runtime, "--root", self.runtime_root, *self.runtime_flags, *args]


class Targets(Protocol):
    def container(self, container_id: str) -> ContainerTarget:
        """The container, or NotFound naming it (FailedPrecondition: never started)."""
        ...

    def sandbox_netns(self, sandbox_id: str) -> str:
        """The pod's network namespace path ("" for a host-network pod), or NotFound."""
        ...


async def runc_state(target: ContainerTarget) -> dict[str, Any]:
    """runc's state of the container (status, bundle, ...); {} when runc does not know it."""
    result = await command.run(
        target.runtime_argv("state", target.runtime_id),
        check=False,
        timeout=30,
        label="runc state",
    )
    if not result.ok:
        return {}
    try:
        state = json.loads(result.stdout)
    except ValueError:
        return {}
    return state if isinstance(state, dict) else {}


@dataclass(frozen=True)
class NodeTargets:
    """Targets from the node's container and sandbox registries
    (``containers.stream_target(id)``, ``sandboxes.get(id).netns_path``)."""

    containers: Containers
    sandboxes: SandboxManager

    def container(self, container_id: str) -> ContainerTarget:
        t = self.containers.stream_target(container_id)  # NotFound for an unknown id
        if t.state == CREATED:  # no process and no conmon before StartContainer
            raise FailedPrecondition(f"container {t.container_id} is created, not started")
        runtime = t.runtime
        flags = ("--systemd-cgroup",) if runtime.systemd_cgroup else ()
        return ContainerTarget(
            container_id=t.container_id,
            runtime=runtime.binary,
            runtime_root=runtime.root,
            runtime_id=t.container_id,
            attach_socket=str(t.attach_socket),
            ctl_fifo=str(t.control_fifo),
            runtime_flags=flags,
        )

    def sandbox_netns(self, sandbox_id: str) -> str:
        return self.sandboxes.get(sandbox_id).netns_path or ""  # NotFound for an unknown id
