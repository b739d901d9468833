"""Where a stream goes: the small interface streaming needs from containers and pods.

The container and pod registries implement :class:`Targets`; streaming needs no more
than the runc invocation, conmon's attach socket and control fifo of a container, and
a pod's network namespace. :class:`RuncTargets` is a stand-in that finds containers by
asking runc directly (no attach socket, no pods) until those registries are wired in.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Any, Protocol

from sycri import command
from sycri.errors import NotFound, excerpt


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
        """The container, or NotFound naming it."""
        ...

    def sandbox_netns(self, sandbox_id: str) -> str:
        """The pod's network namespace path ("" for a host-network pod), or NotFound."""
        ...


async def runc_state(target: ContainerTarget) -> dict:
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


@dataclass
class NodeTargets:
    """Targets from the node's container and sandbox registries once they are attached
    (``node.containers.stream_target(id)``, ``node.sandboxes.get(id).netns_path``);
    ``fallback`` answers while one of them is missing."""

    node: Any
    fallback: Targets

    def container(self, container_id: str) -> ContainerTarget:
        containers = getattr(self.node, "containers", None)
        if containers is None:
            return self.fallback.container(container_id)
        t = containers.stream_target(container_id)  # NotFound for an unknown id
        runtime = t.runtime
        flags = ("--systemd-cgroup",) if getattr(runtime, "systemd_cgroup", False) else ()
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
        sandboxes = getattr(self.node, "sandboxes", None)
        if sandboxes is None:
            return self.fallback.sandbox_netns(sandbox_id)
        return sandboxes.get(sandbox_id).netns_path or ""  # NotFound for an unknown id


@dataclass
class RuncTargets:
    """Containers named by their runc id under one runtime root; pods by netns path.

    ``netns_dir`` maps a sandbox id to ``<netns_dir>/<id>`` (``ip netns`` style); used
    by tests and as a default until the pod registry provides netns paths.
    """

    runtime: str
    runtime_root: str
    netns_dir: str = "/run/netns"

    def container(self, container_id: str) -> ContainerTarget:
        _check_id(container_id, "container")
        if not os.path.isdir(os.path.join(self.runtime_root, container_id)):
            raise NotFound(f"container {excerpt(container_id)} not found")
        return ContainerTarget(container_id, self.runtime, self.runtime_root, container_id)

    def sandbox_netns(self, sandbox_id: str) -> str:
        _check_id(sandbox_id, "pod sandbox")
        path = os.path.join(self.netns_dir, sandbox_id)
        if not os.path.exists(path):
            raise NotFound(f"pod sandbox {excerpt(sandbox_id)} not found")
        return path


def _check_id(value: str, what: str) -> None:
    if not value or len(value) > 128 or "/" in value or value in (".", ".."):
        raise NotFound(f"{what} {excerpt(value)} not found")
