"""The node: everything a CRI handler may reach, assembled once by ``server.py``."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from sycri.config import Config
from sycri.k8s.agent import NodeAgent

if TYPE_CHECKING:
    from sycri.images.service import Images
    from sycri.runtime.container.containers import Containers
    from sycri.runtime.events import EventBus
    from sycri.runtime.pod.sandbox_manager import SandboxManager
    from sycri.runtime.stats.stats import StatsCollector
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
    events: EventBus | None = None  # container lifecycle events (GetContainerEvents)
    stats: StatsCollector | None = None  # cgroup/netns/disk usage with CPU baselines
    streaming: StreamingServer | None = None  # exec/attach/port-forward URLs
