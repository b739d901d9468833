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
from typing import Protocol

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
        [target.runtime, "--root", target.runtime_root, "state", target.runtime_id],
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
