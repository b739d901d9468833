"""The node: everything a CRI handler may reach, assembled once by ``server.py``."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from sycri.config import Config
from sycri.k8s.agent import NodeAgent

if TYPE_CHECKING:
    from sycri.images.service import Images
    from sycri.runtime.containers import Containers
    from sycri.runtime.sandbox_manager import SandboxManager
    from sycri.streaming.server import StreamingServer


@dataclass
class Node:
    config: Config
    cgroup_driver: str
    # Node labels and pod events in the Kubernetes API; a no-op outside a cluster.
    node_agent: NodeAgent = field(default_factory=NodeAgent.disabled)
    images: Images = None  # type: ignore[assignment]  # set by server.assemble
    sandboxes: SandboxManager | None = None
    containers: Containers | None = None
    streaming: StreamingServer | None = None  # exec/attach/port-forward URLs
