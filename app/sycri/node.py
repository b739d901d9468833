"""The node: everything a CRI handler may reach, assembled once by ``server.assemble``.

Every part is required: ``assemble`` builds them all before the first RPC, so a handler
uses ``node.containers`` as it is, never checks for ``None`` and never stands in for a
missing part. Handlers that are tested against a smaller rig (stats, events) declare
the parts they read as a Protocol, which this class satisfies.
"""

from __future__ import annotations

from dataclasses import dataclass
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


@dataclass(frozen=True)
class Node:
    config: Config
    cgroup_driver: str
    images: Images
    sandboxes: SandboxManager
    containers: Containers
    events: EventBus  # container lifecycle events (GetContainerEvents)
    stats: StatsCollector  # cgroup/netns/disk usage with CPU baselines
    streaming: StreamingServer  # exec/attach/port-forward URLs
    # Node labels and pod events in the Kubernetes API; disabled outside a cluster.
    node_agent: NodeAgent
