"""The adapters ``server.assemble`` puts between components: the container component
sees pods and images only through its ``SandboxLookup`` and ``ImageLookup`` protocols,
and these are the real ones, over the pod manager and the image store. They live here,
at the assembly, so neither runtime/ nor images/ imports the other."""

from __future__ import annotations

import asyncio
from typing import Any

from sycri import sif
from sycri.errors import FailedPrecondition
from sycri.runtime.container import rootfs
from sycri.runtime.container.lookups import ImageInfo, SandboxInfo
from sycri.runtime.oci import ocispec
from sycri.runtime.pod import userns


class PodSandboxes:
    """SandboxLookup over the pods component (``runtime.pod.sandbox_manager``)."""

    def __init__(self, manager: Any) -> None:
        self.manager = manager

    def sandbox_info(self, pod_id: str) -> SandboxInfo:
        sb = self.manager.get(pod_id)
        driver = getattr(self.manager, "cgroup_driver", "cgroupfs")
        parent = sb.cgroup_parent if driver == "systemd" else sb.cgroup_path
        return SandboxInfo(
            id=sb.id,
            config=sb.config,
            namespaces=ocispec.Sandbox(
                id=sb.id,
                netns=sb.netns_path or "",
                ipcns=sb.ipc_ns_path or "",
                utsns=sb.uts_ns_path or "",
                pidns=(sb.pid_ns_path or "") if sb.pid_mode == "POD" else "",
                hosts=sb.hosts_path,
                resolv=sb.resolv_path,
                hostname_file=sb.hostname_path,
                shm=sb.shm_path,
                cgroup_parent=parent,
                hostname=sb.hostname,
                userns=sb.userns_path or "",
                userns_maps=userns.Mappings.from_json(sb.userns_maps) if sb.userns_maps else None,
            ),
            log_directory=sb.log_directory,
            runtime_handler=sb.runtime_handler,
            ready=sb.ready,
        )


class StoredImages:
    """ImageLookup over the images component (``images.service.Images``); it also tells
    that component which container uses an image, so RemoveImage can refuse."""

    def __init__(self, images: Any) -> None:
        self.images = images
        self.users: dict[str, set[str]] = {}
        images.users.append(self.user_of)

    def user_of(self, image_id: str) -> str | None:
        return next(iter(sorted(self.users.get(image_id, ()))), None)

    def track(self, image_id: str, container_id: str, in_use: bool) -> None:
        users = self.users.setdefault(image_id, set())
        if in_use:
            users.add(container_id)
        else:
            users.discard(container_id)

    async def image_info(self, image: str) -> ImageInfo:
        img = await self.images.resolve(image)
        try:
            loc = await asyncio.to_thread(sif.partition_location, img.sif_path)
        except (OSError, sif.SifError) as exc:
            raise FailedPrecondition(f"image {img.id}: its SIF cannot be used: {exc}") from None
        ref = img.repo_digests[0] if img.repo_digests else img.id
        return ImageInfo(
            id=img.id,
            ref=ref,
            source=rootfs.ImageSource(img.id, loc.path, loc.offset, loc.size),
            oci_config=img.raw_config,
        )
