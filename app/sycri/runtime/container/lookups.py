"""What the container component needs of pods and images, as small Protocols, so it
does not depend on how either is implemented (``sycri.adapters`` wires the real ones)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

from sycri.api import api_pb2
from sycri.errors import NotFound, excerpt
from sycri.runtime.container import rootfs
from sycri.runtime.oci import ocispec


@dataclass(frozen=True)
class SandboxInfo:
    """What a container needs of its pod."""

    id: str
    config: api_pb2.PodSandboxConfig
    namespaces: ocispec.Sandbox
    log_directory: str = ""
    runtime_handler: str = ""
    ready: bool = True


class SandboxLookup(Protocol):
    def sandbox_info(self, pod_id: str) -> SandboxInfo:
        """The pod, or NotFound."""
        ...


@dataclass(frozen=True)
class ImageInfo:
    """A resolved image: its SIF, the squashfs partition in it, and its OCI config."""

    id: str
    ref: str  # the digest reference reported as image_ref
    source: rootfs.ImageSource
    oci_config: dict[str, Any] = field(default_factory=dict)


class ImageLookup(Protocol):
    async def image_info(self, image: str) -> ImageInfo:
        """The image by id or reference, or NotFound."""
        ...


class NoSandboxes:
    """Until a pods component is attached: every pod is unknown."""

    def sandbox_info(self, pod_id: str) -> SandboxInfo:
        raise NotFound(f"pod sandbox {excerpt(pod_id)} not found")


class NoImages:
    async def image_info(self, image: str) -> ImageInfo:
        raise NotFound(f"image {excerpt(image)} not found")
