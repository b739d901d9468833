"""The node: everything a CRI handler may reach, assembled once by ``server.py``."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from sycri.config import Config

if TYPE_CHECKING:
    from sycri.images.service import Images
    from sycri.runtime.containers import Containers
    from sycri.runtime.sandbox_manager import SandboxManager


@dataclass
class Node:
    config: Config
    cgroup_driver: str
    images: Images = None  # type: ignore[assignment]  # set by server.assemble
    # Components are attached by server assembly as they exist.
    components: dict[str, Any] = field(default_factory=dict)
    sandboxes: SandboxManager | None = None
    containers: Containers | None = None
