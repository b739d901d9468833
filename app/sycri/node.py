"""The node: everything a CRI handler may reach, assembled once by ``server.py``."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from sycri.config import Config

if TYPE_CHECKING:
    from sycri.images.service import Images


@dataclass
class Node:
    config: Config
    cgroup_driver: str
    images: Images = None  # type: ignore[assignment]  # set by server.assemble
    # Components are attached by server assembly as they exist.
    components: dict[str, Any] = field(default_factory=dict)
