"""The container component: what the CRI adapters call, and where its parts meet.

Each behaviour has one module: ``create`` (CreateContainer), ``launch`` (conmon and
``runc create``, at StartContainer), ``lifecycle`` (start, stop, remove), ``execsync``
(ExecSync), ``update`` (resources, log reopening), ``exits`` (the exit monitor),
``recovery`` (start-up), ``container_store`` and ``record`` (metadata apart from
status, on disk and in memory). This class holds what
they share (paths, runtimes, the store, image mounts, one lock per container, hooks)
and answers the reads: from memory only, never writing, never publishing an event.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sycri.api import api_pb2
from sycri.config import Config
from sycri.errors import InvalidArgument, excerpt
from sycri.runtime.cgroups import cgroups, conmon_cgroup, oom
from sycri.runtime.container import conmon, execsync, lifecycle, recovery, rootfs, update
from sycri.runtime.container import create as _create
from sycri.runtime.container.container_store import ContainerStore
from sycri.runtime.container.execsync import EXEC_OUTPUT_LIMIT, ExecResult
from sycri.runtime.container.exits import LOST_EXIT, UNMONITORED, ExitMonitor
from sycri.runtime.container.image_volumes import ImageVolumes
from sycri.runtime.container.lookups import (
    ImageInfo,
    ImageLookup,
    NoImages,
    NoSandboxes,
    SandboxInfo,
    SandboxLookup,
)
from sycri.runtime.container.record import ContainerRecord
from sycri.runtime.container.runc import Runc
from sycri.runtime.container.trash import Trash
from sycri.runtime.events import ContainerEventType
from sycri.runtime.oci import ocispec
from sycri.runtime.stats import statsview
from sycri.runtime.stats.stats import ContainerInfo

__all__ = [
    "EXEC_OUTPUT_LIMIT",
    "LOST_EXIT",
    "UNMONITORED",
    "Containers",
    "ExecResult",
    "ImageInfo",
    "ImageLookup",
    "Paths",
    "SandboxInfo",
    "SandboxLookup",
    "StreamTarget",
    "from_config",
]

log = logging.getLogger("sycri.containers")


@dataclass(frozen=True)
class StreamTarget:
    """What the streaming server needs to exec into or attach to a container."""

    container_id: str
    pod_id: str
    state: str
    runtime: Runc
    attach_socket: Path  # conmon's attach socket (SOCK_SEQPACKET)
    control_fifo: Path  # conmon's ctl FIFO: "1 H W\n" resizes the tty
    tty: bool
    stdin: bool


@dataclass(frozen=True)
class Paths:
    containers: Path  # <root_dir>/containers/<id>/{meta,status,config}.json, rootfs, ...
    image_mounts: Path  # <run_dir>/images/<image id>
    exits: Path  # <run_dir>/exits/<id>
    sockets: Path  # <run_dir>/sockets/<id>/attach

    @property
    def trash(self) -> Path:
        """<root_dir>/trash/<id>-<random>: removed bundles, beside them (one rename away)."""
        return self.containers.parent / "trash"


class Containers:
    def __init__(
        self,
        paths: Paths,
        runtimes: dict[str, Runc],
        default_runtime: str,
        sandboxes: SandboxLookup,
        images: ImageLookup,
        conmon_binary: str = "conmon",
        cgroup_driver: str = "cgroupfs",
        settings: ocispec.Settings | None = None,
        log_size_max: int = -1,
        cdi_dirs: tuple[str, ...] = ("/etc/cdi", "/var/run/cdi"),
        conmon_placement: str = conmon_cgroup.POD,
        host_root: str = "/",
        own_dirs: tuple[str, ...] = (),
        image_mount_idle: float = 0.0,
    ) -> None:
        self.paths = paths
        self.runtimes = runtimes
        self.default_runtime = default_runtime
        self.sandboxes = sandboxes
        self.images = images
        self.conmon_binary = conmon_binary
        self.cgroup_driver = cgroup_driver
        self.settings = settings or ocispec.Settings()
        self.log_size_max = log_size_max
        self.cdi_dirs = cdi_dirs
        self.conmon_placement = conmon_placement  # the conmon_cgroup setting
        self.cgroup_version = cgroups.detect_version()
        self.host_root = host_root  # volume host paths are resolved under it
        self.own_dirs = own_dirs  # ...except those under sycri's own directories
        self.store = ContainerStore(paths.containers)
        self.trash = Trash(paths.trash, rootfs.remove_bundle)  # RemoveContainer's bundles
        self.exits = ExitMonitor(self)
        self.image_mounts = rootfs.ImageMounts(
            paths.image_mounts,
            fuse_cgroup=lambda name: conmon_cgroup.mount_placement(
                conmon_placement, cgroup_driver, name
            ),
            cgroup_version=self.cgroup_version,
            idle_seconds=image_mount_idle,
        )
        self._locks: dict[str, asyncio.Lock] = {}
        self.image_volumes = ImageVolumes(self.image_mounts, images, paths.containers)
        # Told (image_id, container_id, in_use) when a container starts/stops using an image.
        self.image_users: list[Callable[[str, str, bool], None]] = []
        # Told (record, event) on every lifecycle change: the GetContainerEvents bus.
        self.event_hooks: list[Callable[[ContainerRecord, ContainerEventType], None]] = []

    # --- what the parts share ----------------------------------------------------------

    def lock(self, container_id: str) -> asyncio.Lock:
        """The lock every status change of this container is made under."""
        return self._locks.setdefault(container_id, asyncio.Lock())

    def forget_lock(self, container_id: str) -> None:
        self._locks.pop(container_id, None)

    def runtime(self, handler: str) -> Runc:
        name = handler or self.default_runtime
        try:
            return self.runtimes[name]
        except KeyError:
            raise InvalidArgument(f"runtime handler {excerpt(name)} is not configured") from None

    def exit_file(self, container_id: str) -> Path:
        return self.paths.exits / container_id

    def remove_conmon_entries(self, container_id: str) -> None:
        """Blocking: what conmon left of a container under the run dir (its exit file
        and attach-socket entry), when a launch is taken back or the container goes."""
        with contextlib.suppress(FileNotFoundError):
            self.exit_file(container_id).unlink()
        conmon.remove_attach_entry(self.paths.sockets / container_id)

    def oom_parent(self, rec: ContainerRecord) -> Path | None:
        return oom.parent_dir(self.cgroup_version, self.cgroup_driver, rec.cgroup_path)

    def tell_images(self, image_id: str, container_id: str, in_use: bool) -> None:
        for hook in self.image_users:
            try:
                hook(image_id, container_id, in_use)
            except Exception:  # a hook must never break the lifecycle
                log.exception("image-use hook failed")

    def emit(self, rec: ContainerRecord, kind: ContainerEventType) -> None:
        for hook in self.event_hooks:
            try:
                hook(rec, kind)
            except Exception:  # a hook must never break the lifecycle
                log.exception("container event hook failed")

    # --- lifecycle (each in its module) ------------------------------------------------

    async def create(
        self, pod_id: str, cfg: api_pb2.ContainerConfig, sandbox_config: api_pb2.PodSandboxConfig
    ) -> str:
        return await _create.create(self, pod_id, cfg, sandbox_config)

    async def start(self, ref: str) -> None:
        await lifecycle.start(self, ref)

    async def stop(self, ref: str, timeout: float, pod_going: bool = False) -> None:
        await lifecycle.stop(self, ref, timeout, pod_going)

    async def remove(self, ref: str) -> None:
        await lifecycle.remove(self, ref)

    async def exec_sync(self, ref: str, cmd: builtins.list[str], timeout: float) -> ExecResult:
        return await execsync.exec_sync(self, ref, cmd, timeout)

    async def update_resources(self, ref: str, resources: api_pb2.LinuxContainerResources) -> None:
        await update.update_resources(self, ref, resources)

    async def reopen_log(self, ref: str) -> None:
        await update.reopen_log(self, ref)

    async def recover(self) -> None:
        await recovery.recover(self)

    async def close(self) -> None:
        """Clean shutdown: idle image mounts go; containers and their mounts stay."""
        await self.image_mounts.close()

    async def watch_exits(self, interval: float = 0.2, monitor_every: int = 5) -> None:
        """The exit monitor, until cancelled (``server.serve`` runs it)."""
        await self.exits.watch(interval, monitor_every)

    # --- pods --------------------------------------------------------------------------

    async def stop_pod(self, pod_id: str, timeout: float = 0) -> None:
        await lifecycle.stop_pod(self, pod_id, timeout)

    async def remove_pod(self, pod_id: str) -> None:
        await lifecycle.remove_pod(self, pod_id)

    def follow_pods(self, manager: Any) -> None:
        """Stop a pod's containers when it stops (SIGKILL: kubelet already stopped them
        gracefully) and remove them when it is removed."""

        async def on_stop(pod_id: str) -> None:
            await self.stop_pod(pod_id, 0)

        manager.on_stop.append(on_stop)
        manager.on_remove.append(self.remove_pod)

    # --- reads: memory only --------------------------------------------------------------

    def get(self, ref: str) -> ContainerRecord:
        return self.store.get(ref)

    def list(self) -> list[ContainerRecord]:
        return self.store.all()

    def in_pod(self, pod_id: str) -> builtins.list[ContainerRecord]:
        # r.meta, not the property: this scans every container on each PodSandboxStatus
        return [r for r in self.store.all() if r.meta.pod_id == pod_id]

    def stats_containers(self) -> builtins.list[ContainerInfo]:
        """Every container as stats see it (the ContainerSource protocol)."""
        return statsview.container_infos(self.store.all())

    def stream_target(self, ref: str) -> StreamTarget:
        """For the streaming server: how to exec into / attach to this container."""
        rec = self.store.get(ref)
        cfg = rec.config
        return StreamTarget(
            container_id=rec.id,
            pod_id=rec.pod_id,
            state=rec.state,
            runtime=self.runtime(rec.runtime_handler),
            attach_socket=self.paths.sockets / rec.id / "attach",
            control_fifo=Path(rec.bundle) / "ctl",
            tty=cfg.tty,
            stdin=cfg.stdin,
        )

    async def spec_json(self, rec: ContainerRecord) -> str:
        """The container's OCI spec as compact JSON ("" when its bundle has none). The
        record keeps it from the writes; after a restart it is read once, off the loop."""
        if rec.spec_json is not None:
            return rec.spec_json
        text = await asyncio.to_thread(read_spec, Path(rec.bundle) / "config.json")
        if text and rec.spec_json is None:  # else a write kept a newer one meanwhile
            rec.spec_json = text
        return text


def read_spec(path: Path) -> str:
    """The spec in ``path`` as compact JSON, "" when there is no file (blocking)."""
    try:
        data = path.read_bytes()
    except OSError:
        return ""
    return json.dumps(json.loads(data))


def from_config(
    cfg: Config,
    cgroup_driver: str,
    sandboxes: SandboxLookup | None = None,
    images: ImageLookup | None = None,
) -> Containers:
    """The container component of a node, with its directories under sycri's own."""
    root, run = Path(cfg.root_dir), Path(cfg.run_dir)
    runtimes = {}
    for name in cfg.runtimes:
        runtime_root = cfg.runtime_root(name)
        runtime_root.mkdir(parents=True, exist_ok=True, mode=0o700)
        runtimes[name] = Runc(
            cfg.runtimes[name].binary, str(runtime_root), cgroup_driver == "systemd"
        )
    return Containers(
        Paths(
            containers=root / "containers",
            image_mounts=run / "images",
            exits=run / "exits",
            sockets=run / "s",
        ),
        runtimes,
        cfg.default_runtime,
        sandboxes or NoSandboxes(),
        images or NoImages(),
        conmon_binary=cfg.conmon,
        cgroup_driver=cgroup_driver,
        settings=ocispec.Settings(
            default_ulimits=cfg.default_ulimits,
            max_ulimits=cfg.max_ulimits,
            apparmor_default_profile=cfg.apparmor_default_profile,
            pids_limit=cfg.pids_limit,
        ),
        log_size_max=cfg.container_log_max_bytes,
        conmon_placement=cfg.conmon_cgroup,
        host_root=cfg.host_root,
        own_dirs=(cfg.root_dir, cfg.run_dir, cfg.pod_log_dir),
        cdi_dirs=cfg.cdi_spec_dirs,
        image_mount_idle=cfg.images.mount_idle_seconds,
    )
