"""The node: everything a CRI handler may reach, assembled once by ``server.py``."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from sycri.config import Config

if TYPE_CHECKING:
    from sycri.streaming.server import StreamingServer


@dataclass
class Node:
    config: Config
    cgroup_driver: str
    # Components are attached by server assembly as they exist.
    components: dict[str, Any] = field(default_factory=dict)
    streaming: StreamingServer | None = None  # exec/attach/port-forward URLs
