"""Image volumes (KEP-4639, kubelet's ``ImageVolume`` gate): a container mount whose
source is another image (CRI ``Mount.image``), read-only at ``container_path``.

kubelet pulls the image with PullImage as for any image and sends the id it got back in
``Mount.image.image``; ``Mount.image_sub_path`` (kubelet 1.33) names a directory or file
inside it. The volume is the image's squashfs partition, the same read-only mount its
containers run from (one per image, shared and kept idle a while after its last user,
under ``<run_dir>/images``): a SIF's own
partition, or for an OCI image the partition of the SIF sycri converted it to. Nothing
is copied. The container gets a read-only bind of that mount (or of its sub path).

While a container uses an image as a volume, RemoveImage of that image is refused with
``FAILED_PRECONDITION`` naming the container, as for an image a container runs from.
Which images a container mounts is kept beside its bundle
(``<root>/containers/<id>.image-volumes.json``) so a restarted sycri counts them again.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
from pathlib import Path
from typing import Protocol

from sycri.api import api_pb2
from sycri.errors import InvalidArgument, NotFound, SycriError, excerpt
from sycri.fsutil import atomic_write_json, confined
from sycri.runtime.container import rootfs

log = logging.getLogger("sycri.image_volumes")

SUFFIX = ".image-volumes.json"


class Source(Protocol):
    """What an image lookup gives: the image's id and where its squashfs lies."""

    @property
    def id(self) -> str: ...

    @property
    def source(self) -> rootfs.ImageSource: ...


class Lookup(Protocol):
    async def image_info(self, image: str) -> Source: ...


def requested(cfg: api_pb2.ContainerConfig) -> list[api_pb2.Mount]:
    """The mounts of ``cfg`` that are image volumes."""
    return [m for m in cfg.mounts if m.HasField("image") and m.image.image]


def validate(m: api_pb2.Mount) -> None:
    """As containerd: an image volume has no host path and is read-only."""
    where = excerpt(m.container_path)
    if m.host_path:
        raise InvalidArgument(
            f"mounts: image volume at {where} also names host path {excerpt(m.host_path)}"
        )
    if not m.readonly:
        raise InvalidArgument(f"mounts: image volume at {where} must be readonly")
    if "\x00" in m.image_sub_path or m.image_sub_path.startswith("/"):
        raise InvalidArgument(
            f"mounts: image_sub_path {excerpt(m.image_sub_path)} of the image volume at "
            f"{where} is not a relative path"
        )


def _key(container_id: str) -> str:
    """How a container is counted among an image mount's users for its volumes (apart
    from its root filesystem, which may be the same image)."""
    return f"{container_id}/image-volumes"


class ImageVolumes:
    """The image volumes of every container, counted on the shared image mounts."""

    def __init__(self, mounts: rootfs.ImageMounts, images: Lookup, records: Path) -> None:
        self.mounts = mounts
        self.images = images
        self.records = records  # <root>/containers
        self._users: dict[str, set[str]] = {}  # image id -> container ids

    def user_of(self, image_id: str) -> str | None:
        """For RemoveImage: a container that mounts the image as a volume."""
        users = sorted(self._users.get(image_id, ()))
        return f"{users[0]} (as an image volume)" if users else None

    def _record(self, container_id: str) -> Path:
        return self.records / f"{container_id}{SUFFIX}"

    async def attach(
        self, container_id: str, cfg: api_pb2.ContainerConfig
    ) -> api_pb2.ContainerConfig:
        """Mount the images ``cfg``'s image volumes name and return a copy of ``cfg`` in
        which each is a read-only bind mount of its image's mount (or of the sub path).
        Nothing stays mounted or counted when one fails."""
        wanted = requested(cfg)
        if not wanted:
            return cfg
        for m in wanted:
            validate(m)
        out = api_pb2.ContainerConfig()
        out.CopyFrom(cfg)
        ids: list[str] = []
        try:
            for m in out.mounts:
                if not (m.HasField("image") and m.image.image):
                    continue
                where = excerpt(m.container_path)
                try:
                    info = await self.images.image_info(m.image.image)
                except SycriError as exc:
                    raise type(exc)(f"image volume at {where}: {exc.message}") from None
                if info.id not in ids:
                    ids.append(info.id)
                    # Recorded before it is mounted: a crash in between leaves a count
                    # that recovery drops with the container, never a mount nobody owns.
                    await asyncio.to_thread(
                        atomic_write_json, self._record(container_id), list(ids), 0o600
                    )
                    top = await self.mounts.acquire(info.source, _key(container_id))
                    self._users.setdefault(info.id, set()).add(container_id)
                else:
                    top = self.mounts.target(info.id)
                path = top
                if m.image_sub_path:
                    try:
                        path = confined(top, m.image_sub_path, "image_sub_path")
                    except InvalidArgument as exc:
                        raise InvalidArgument(f"image volume at {where}: {exc.message}") from None
                    if not os.path.lexists(path):
                        raise NotFound(
                            f"image volume at {where}: image_sub_path "
                            f"{excerpt(m.image_sub_path)} does not exist in image {info.id}"
                        )
                m.ClearField("image")
                m.image_sub_path = ""
                m.host_path = str(path)
                m.readonly = True
        except BaseException:
            await self.detach(container_id, linger=False)
            raise
        return out

    async def detach(self, container_id: str, linger: bool = True) -> None:
        """Forget the container's image volumes; an image mount idles once its last user
        went (``linger``: see ``ImageMounts.release``)."""
        for image_id in self._recorded(container_id):
            self._users.get(image_id, set()).discard(container_id)
            if not self._users.get(image_id):
                self._users.pop(image_id, None)
            await self.mounts.release(image_id, _key(container_id), linger)
        with contextlib.suppress(FileNotFoundError):
            self._record(container_id).unlink()

    def adopt(self, container_id: str) -> None:
        """Recovery: count a recorded container's image volumes again."""
        for image_id in self._recorded(container_id):
            self.mounts.adopt(image_id, _key(container_id))
            self._users.setdefault(image_id, set()).add(container_id)

    def forget_unknown(self, known: set[str]) -> None:
        """Recovery: drop the records of containers that are not there any more (a create
        a crash cut short); their image mounts go with the mount sweep."""
        with contextlib.suppress(FileNotFoundError), os.scandir(self.records) as it:
            for e in it:
                if e.name.endswith(SUFFIX) and e.name[: -len(SUFFIX)] not in known:
                    with contextlib.suppress(OSError):
                        os.unlink(e.path)

    def _recorded(self, container_id: str) -> list[str]:
        try:
            ids = json.loads(self._record(container_id).read_text())
        except FileNotFoundError:
            return []
        except (OSError, ValueError) as exc:
            log.warning("image volumes of container %s cannot be read: %s", container_id, exc)
            return []
        return [i for i in ids if isinstance(i, str)] if isinstance(ids, list) else []
