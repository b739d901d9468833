"""CreateContainer: the spec, the rootfs (image mount + overlay) and the records, as
containerd (snapshot + metadata): conmon and ``runc create`` wait for StartContainer
(``launch``). Everything the request can get wrong is refused here; a failure at any
step takes back everything made before it."""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING

from google.protobuf import json_format

from sycri import crashpoint, fsutil
from sycri.api import api_pb2
from sycri.errors import FailedPrecondition, InvalidArgument, excerpt
from sycri.fsutil import confined
from sycri.runtime.container import executable, hostpath, rootfs
from sycri.runtime.container.container_store import new_id
from sycri.runtime.container.lookups import ImageInfo, SandboxInfo
from sycri.runtime.container.record import ContainerRecord, Metadata, Status, encode_config
from sycri.runtime.events import ContainerEventType
from sycri.runtime.oci import features, hostfacts, ocispec
from sycri.runtime.pod import userns

if TYPE_CHECKING:
    from sycri.runtime.container.containers import Containers

log = logging.getLogger("sycri.containers")

MAX_NAME = 253
MAX_IMAGE_FILE = 4 * 1024 * 1024


def _check_request(cfg: api_pb2.ContainerConfig) -> str:
    """The container's name, once the request is known to name one and an image."""
    if not cfg.HasField("metadata") or not cfg.metadata.name:
        raise InvalidArgument("config.metadata.name is required")
    name = cfg.metadata.name
    # As pod names: what kubelet sends (DNS labels) fits; control characters and
    # the like would reach conmon's and runc's command lines.
    if not (
        len(name) <= MAX_NAME and name.isascii() and all(c.isalnum() or c in "-._" for c in name)
    ):
        raise InvalidArgument(
            f"config.metadata.name {excerpt(name)} is not a valid name: at most "
            f"{MAX_NAME} letters, digits, '-', '.' or '_'"
        )
    if not cfg.image.image:
        raise InvalidArgument("config.image.image is required")
    return name


async def create(
    c: Containers,
    pod_id: str,
    cfg: api_pb2.ContainerConfig,
    sandbox_config: api_pb2.PodSandboxConfig,
) -> str:
    name = _check_request(cfg)
    sandbox = c.sandboxes.sandbox_info(pod_id)
    if not sandbox.ready:
        raise FailedPrecondition(f"pod {sandbox.id} is not ready")
    if not sandbox_config.HasField("metadata"):
        sandbox_config = sandbox.config
    runc = c.runtime(sandbox.runtime_handler)
    cid = new_id()
    c.store.reserve(sandbox.id, name, cfg.metadata.attempt, cid)
    bundle = c.paths.containers / cid
    log_path = _log_path(sandbox, cfg, bundle)
    acquired: ImageInfo | None = None
    overlay = False
    try:
        image = await c.images.image_info(cfg.image.image)
        lower = await c.image_mounts.acquire(image.source, cid)
        crashpoint.reach("container.create.image")
        acquired = image
        c.tell_images(image.id, cid, True)
        passwd = _read_image_file(lower, "/etc/passwd", image.ref)
        group = _read_image_file(lower, "/etc/group", image.ref)
        feats = await features.probe(runc.binary)
        # The spec bind-mounts the host's paths as sycri reaches them (host_root);
        # the record keeps kubelet's.
        spec_cfg = await asyncio.to_thread(hostpath.resolve_mounts, cfg, c.host_root, c.own_dirs)
        spec_cfg = await c.image_volumes.attach(cid, spec_cfg)  # Mount.image
        facts = await asyncio.to_thread(
            hostfacts.gather,
            spec_cfg,
            c.cgroup_driver,
            c.cdi_dirs,
            feats.recursive_read_only,
            # CDI mount sources and hook programs are host paths, as volumes are
            None
            if os.path.realpath(c.host_root) == "/"
            else functools.partial(hostpath.resolve, c.host_root),
        )
        built = ocispec.build(
            ocispec.SpecInput(
                container_id=cid,
                rootfs=str(bundle / "rootfs"),
                config=spec_cfg,
                sandbox_config=sandbox_config,
                sandbox=sandbox.namespaces,
                image=ocispec.ImageConfig.from_oci(image.oci_config),
                passwd=passwd,
                group=group,
                host=facts,
                settings=c.settings,
            )
        )
        # runc would find a missing command only at StartContainer: refuse it now.
        why = await asyncio.to_thread(executable.problem, str(lower), built.spec)
        if why:
            command = built.spec["process"]["args"][0]
            raise InvalidArgument(f"command {excerpt(command)}: {why} in image {image.ref}")
        ns = sandbox.namespaces
        # In a pod user namespace runc mounts the rootfs as the pod's root, an
        # unmapped stranger to sycri's dirs: it needs search (not read) permission.
        bundle.mkdir(parents=True, exist_ok=True, mode=0o711 if ns.userns else 0o700)
        await rootfs.mount_overlay(lower, bundle, rootfs.idmap_for(ns.userns, ns.userns_maps))
        overlay = True
        if ns.userns:
            volumes = {m.container_path for m in cfg.mounts}
            await asyncio.to_thread(userns.idmap_volumes, built.spec, volumes, bundle, ns.userns)
        spec_json = await asyncio.to_thread(_write_spec, bundle / "config.json", built)
        crashpoint.reach("container.create.overlay")
        meta = Metadata(
            id=cid,
            pod_id=sandbox.id,
            name=name,
            attempt=cfg.metadata.attempt,
            image_id=image.id,
            image_ref=image.ref,
            runtime_handler=sandbox.runtime_handler or c.default_runtime,
            bundle=str(bundle),
            log_path=log_path,
            config_b64=encode_config(cfg),
            created_at=time.time_ns(),
            stop_signal=built.stop_signal,
            uid=built.user.uid,
            gid=built.user.gid,
            groups=tuple(built.user.additional_gids),
            cgroup_path=built.cgroup_path,
        )
        # No pid: conmon and runc's container are made at StartContainer (launch.py).
        rec = ContainerRecord(
            meta, Status(resources=json_format.MessageToDict(cfg.linux.resources))
        )
        rec.spec_json = spec_json
        await c.store.add(rec)
    except BaseException:
        await _undo_create(c, cid, bundle, acquired, overlay)
        c.store.unreserve(sandbox.id, name, cfg.metadata.attempt, cid)
        raise
    c.emit(rec, ContainerEventType.CREATED)
    log.info("created container %s (%s) in pod %s", cid, name, sandbox.id[:12])
    return cid


async def _undo_create(
    c: Containers, cid: str, bundle: Path, image: ImageInfo | None, overlay: bool
) -> None:
    """Leave nothing behind of a failed create: overlay, image mount (not left idle: a
    create that fails made nothing that stays), files."""
    try:
        if overlay or bundle.exists():
            await rootfs.remove_overlay(bundle)
        if image is not None:
            await c.image_mounts.release(image.id, cid, linger=False)
            c.tell_images(image.id, cid, False)
        await c.image_volumes.detach(cid, linger=False)
    except Exception:
        log.exception("cleaning up failed create of %s", cid)


def _log_path(sandbox: SandboxInfo, cfg: api_pb2.ContainerConfig, bundle: Path) -> str:
    if sandbox.log_directory and cfg.log_path:
        if not os.path.isabs(sandbox.log_directory):
            raise InvalidArgument("sandbox log_directory is not an absolute path")
        return str(confined(sandbox.log_directory, cfg.log_path, "log_path"))
    return str(bundle.with_name(bundle.name + ".log"))


def _write_spec(path: Path, built: ocispec.BuiltSpec) -> str:
    """runc's input, read by ``runc create`` at StartContainer. Not fsynced: until the
    record exists a crash leaves a bundle that recovery removes; a crash of sycri keeps
    it in the page cache; after a power loss the overlay it names is gone anyway.
    Returns the spec as compact JSON (the record keeps it for verbose status)."""
    text = built.json()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(text.encode())
    return text


def _read_image_file(root: Path, rel: str, image: str) -> str:
    """A small text file of the image, its symlinks resolved inside the image as a
    process there would; '' when it is missing. Anything but a regular file there is
    refused: runc reads the image's account files when the container starts, and a FIFO
    would hold it until StartContainer timed out."""
    try:
        data = fsutil.read_in_root(str(root), rel, MAX_IMAGE_FILE)
    except fsutil.NotRegular as exc:
        raise InvalidArgument(f"image {excerpt(image)}: {exc}") from None
    return "" if data is None else data.decode(errors="replace")
