"""The container lifecycle: create (spec, rootfs, conmon + runc create), start, stop,
remove, status, exec-sync, resource updates and log reopening.

Collaborators are small Protocols so this component does not depend on how pods and
images are implemented: ``SandboxLookup`` gives a pod's namespaces and files,
``ImageLookup`` resolves an image reference to its SIF. Every state change is written
to disk before the call returns; one lock per container serialises changes to it.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import logging
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from google.protobuf import json_format

from sycri import command, crashpoint
from sycri.api import api_pb2
from sycri.config import Config
from sycri.errors import (
    DeadlineExceeded,
    FailedPrecondition,
    Internal,
    InvalidArgument,
    NotFound,
    SycriError,
    excerpt,
)
from sycri.fsutil import atomic_write, confined
from sycri.observability import metrics
from sycri.runtime.cgroups import cgroups, conmon_cgroup, oom
from sycri.runtime.container import conmon, hostpath, rootfs
from sycri.runtime.container.container_store import (
    CREATED,
    EXITED,
    RUNNING,
    ContainerRecord,
    ContainerStore,
    new_id,
)
from sycri.runtime.container.runc import Runc
from sycri.runtime.events import ContainerEventType
from sycri.runtime.oci import features, hostfacts, ocispec
from sycri.runtime.pod import userns
from sycri.runtime.stats import statsview
from sycri.runtime.stats.stats import ContainerInfo

log = logging.getLogger("sycri.containers")

MAX_NAME = 253
MAX_IMAGE_FILE = 4 * 1024 * 1024
# Per stream: both must fit one 16 MiB gRPC reply (sycri's and kubelet's message limit).
EXEC_OUTPUT_LIMIT = 8 * 1024 * 1024 - 4096
UNMONITORED = "its monitor (conmon) died: the container runs on, but its log and attach are cut"
LOST_EXIT = (
    "the container and its monitor (conmon) disappeared; conmon recorded no exit code, "
    "so 255 stands for unknown"
)


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


@dataclass(frozen=True)
class ExecResult:
    stdout: bytes
    stderr: bytes
    exit_code: int


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
    containers: Path  # <root_dir>/containers/<id>/{state.json,config.json,rootfs,upper,work}
    image_mounts: Path  # <run_dir>/images/<image id>
    exits: Path  # <run_dir>/exits/<id>
    sockets: Path  # <run_dir>/sockets/<id>/attach


def now_ns() -> int:
    return time.time_ns()


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
        self.image_mounts = rootfs.ImageMounts(
            paths.image_mounts,
            fuse_cgroup=lambda name: conmon_cgroup.mount_placement(
                conmon_placement, cgroup_driver, name
            ),
            cgroup_version=self.cgroup_version,
        )
        self._locks: dict[str, asyncio.Lock] = {}
        # Told (image_id, container_id, in_use) when a container starts/stops using an image.
        self.image_users: list[Callable[[str, str, bool], None]] = []
        # Told (record, event) on every lifecycle change: the GetContainerEvents bus.
        self.event_hooks: list[Callable[[ContainerRecord, ContainerEventType], None]] = []

    # --- helpers ---------------------------------------------------------------------

    def _lock(self, container_id: str) -> asyncio.Lock:
        return self._locks.setdefault(container_id, asyncio.Lock())

    def runtime(self, handler: str) -> Runc:
        name = handler or self.default_runtime
        try:
            return self.runtimes[name]
        except KeyError:
            raise InvalidArgument(f"runtime handler {excerpt(name)} is not configured") from None

    def _exit_file(self, container_id: str) -> Path:
        return self.paths.exits / container_id

    def _tell_images(self, image_id: str, container_id: str, in_use: bool) -> None:
        for hook in self.image_users:
            try:
                hook(image_id, container_id, in_use)
            except Exception:  # a hook must never break the lifecycle
                log.exception("image-use hook failed")

    def _emit(self, rec: ContainerRecord, kind: ContainerEventType) -> None:
        for hook in self.event_hooks:
            try:
                hook(rec, kind)
            except Exception:  # a hook must never break the lifecycle
                log.exception("container event hook failed")

    def refresh(self, rec: ContainerRecord) -> ContainerRecord:
        """Fold conmon's exit file into a running container's record (and persist it)."""
        if rec.state != RUNNING:
            return rec
        exit_file = self._exit_file(rec.id)
        try:
            st = exit_file.stat()
            text = exit_file.read_text().strip()
        except FileNotFoundError:
            return rec
        try:
            code = int(text)
        except ValueError:
            return rec  # conmon is still writing it
        rec.state = EXITED
        rec.exit_code = code
        rec.finished_at = st.st_mtime_ns
        bundle = Path(rec.bundle)
        oom_killed = (bundle / "oom").exists() or (bundle / "persist" / "oom").exists()
        if not oom_killed and code == 137:  # SIGKILL: the OOM killer, if conmon missed it
            oom_killed = oom.killed_since_start(bundle, self._oom_parent(rec))
        if oom_killed:
            rec.reason, rec.message = "OOMKilled", "the container exceeded its memory limit"
        else:
            rec.reason = "Completed" if code == 0 else "Error"
        self.store.save(rec)
        self._emit(rec, ContainerEventType.STOPPED)
        return rec

    def _oom_parent(self, rec: ContainerRecord) -> Path | None:
        return oom.parent_dir(self.cgroup_version, self.cgroup_driver, rec.cgroup_path)

    # --- create ----------------------------------------------------------------------

    async def create(
        self, pod_id: str, cfg: api_pb2.ContainerConfig, sandbox_config: api_pb2.PodSandboxConfig
    ) -> str:
        if not cfg.HasField("metadata") or not cfg.metadata.name:
            raise InvalidArgument("config.metadata.name is required")
        name = cfg.metadata.name
        # As pod names: what kubelet sends (DNS labels) fits; control characters and
        # the like would reach conmon's and runc's command lines.
        if not (
            len(name) <= MAX_NAME
            and name.isascii()
            and all(c.isalnum() or c in "-._" for c in name)
        ):
            raise InvalidArgument(
                f"config.metadata.name {excerpt(name)} is not a valid name: at most "
                f"{MAX_NAME} letters, digits, '-', '.' or '_'"
            )
        if not cfg.image.image:
            raise InvalidArgument("config.image.image is required")
        sandbox = self.sandboxes.sandbox_info(pod_id)
        if not sandbox.ready:
            raise FailedPrecondition(f"pod {sandbox.id} is not ready")
        if not sandbox_config.HasField("metadata"):
            sandbox_config = sandbox.config
        runc = self.runtime(sandbox.runtime_handler)
        cid = new_id()
        self.store.reserve(sandbox.id, name, cfg.metadata.attempt, cid)
        bundle = self.paths.containers / cid
        log_path = self._log_path(sandbox, cfg, bundle)
        acquired: ImageInfo | None = None
        overlay = False
        made: list[Path] = []  # log file and dirs this create made: a failure removes them
        try:
            image = await self.images.image_info(cfg.image.image)
            lower = await self.image_mounts.acquire(image.source, cid)
            crashpoint.reach("container.create.image")
            acquired = image
            self._tell_images(image.id, cid, True)
            passwd = _read_image_file(lower, "etc/passwd")
            group = _read_image_file(lower, "etc/group")
            feats = await features.probe(runc.binary)
            # The spec bind-mounts the host's paths as sycri reaches them (host_root);
            # the record keeps kubelet's.
            spec_cfg = await asyncio.to_thread(
                hostpath.resolve_mounts, cfg, self.host_root, self.own_dirs
            )
            facts = await asyncio.to_thread(
                hostfacts.gather,
                spec_cfg,
                self.cgroup_driver,
                self.cdi_dirs,
                feats.recursive_read_only,
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
                    settings=self.settings,
                )
            )
            ns = sandbox.namespaces
            # In a pod user namespace runc mounts the rootfs as the pod's root, an
            # unmapped stranger to sycri's dirs: it needs search (not read) permission.
            bundle.mkdir(parents=True, exist_ok=True, mode=0o711 if ns.userns else 0o700)
            await rootfs.mount_overlay(lower, bundle, rootfs.idmap_for(ns.userns, ns.userns_maps))
            overlay = True
            if ns.userns:
                volumes = {m.container_path for m in cfg.mounts}
                await asyncio.to_thread(
                    userns.idmap_volumes, built.spec, volumes, bundle, ns.userns
                )
            atomic_write(bundle / "config.json", built.json(), mode=0o600)
            crashpoint.reach("container.create.overlay")
            rec = ContainerRecord(
                id=cid,
                pod_id=sandbox.id,
                name=name,
                attempt=cfg.metadata.attempt,
                image_id=image.id,
                image_ref=image.ref,
                runtime_handler=sandbox.runtime_handler or self.default_runtime,
                bundle=str(bundle),
                log_path=log_path,
                config_b64=ContainerRecord.encode_config(cfg),
                created_at=now_ns(),
                stop_signal=built.stop_signal,
                uid=built.user.uid,
                gid=built.user.gid,
                groups=list(built.user.additional_gids),
                resources=json_format.MessageToDict(cfg.linux.resources),
                cgroup_path=built.cgroup_path,
            )
            made = _new_paths(Path(log_path))
            Path(log_path).parent.mkdir(parents=True, exist_ok=True)
            place = conmon_cgroup.placement(
                self.conmon_placement, self.cgroup_driver, built.cgroup_path, cid
            )
            try:
                leaf = await asyncio.to_thread(
                    conmon_cgroup.prepare, bundle / conmon_cgroup.RECORD, place, self.cgroup_version
                )
            except OSError as exc:
                raise Internal(
                    f"cannot make conmon's cgroup {place.path}: {exc.strerror}"
                ) from None
            rec.pid = await conmon.create(
                conmon.Launch(
                    conmon=self.conmon_binary,
                    runtime=shutil.which(runc.binary) or runc.binary,
                    runtime_root=runc.root,
                    container_id=cid,
                    name=name,
                    bundle=bundle,
                    log_path=log_path,
                    exit_dir=self.paths.exits,
                    socket_dir=self.paths.sockets,
                    persist_dir=bundle / "persist",
                    log_size_max=self.log_size_max,
                    tty=cfg.tty,
                    stdin=cfg.stdin,
                    stdin_once=cfg.stdin_once,
                    systemd_cgroup=self.cgroup_driver == "systemd",
                    prefix=tuple(conmon_cgroup.prefix(place, leaf)),
                )
            )
            crashpoint.reach("container.create.conmon")
            self.store.save(rec)
        except BaseException:
            await self._undo_create(cid, runc, bundle, acquired, overlay)
            _remove_new(made)
            self.store.unreserve(sandbox.id, name, cfg.metadata.attempt, cid)
            raise
        self._emit(rec, ContainerEventType.CREATED)
        log.info("created container %s (%s) in pod %s", cid, name, sandbox.id[:12])
        return cid

    async def _undo_create(
        self, cid: str, runc: Runc, bundle: Path, image: ImageInfo | None, overlay: bool
    ) -> None:
        """Leave nothing behind of a failed create: runc state, overlay, image mount, files."""
        with contextlib.suppress(Exception):
            await runc.delete(cid)
        try:
            await asyncio.to_thread(conmon_cgroup.release, bundle / conmon_cgroup.RECORD)
            if overlay or bundle.exists():
                await rootfs.remove_overlay(bundle)
            if image is not None:
                await self.image_mounts.release(image.id, cid)
                self._tell_images(image.id, cid, False)
        except Exception:
            log.exception("cleaning up failed create of %s", cid)
        with contextlib.suppress(FileNotFoundError):
            self._exit_file(cid).unlink()
        # conmon's attach-socket entry (a link or a dir, by conmon version).
        attach = self.paths.sockets / cid
        with contextlib.suppress(OSError):
            if attach.is_dir() and not attach.is_symlink():
                shutil.rmtree(attach)
            else:
                attach.unlink()

    def _log_path(self, sandbox: SandboxInfo, cfg: api_pb2.ContainerConfig, bundle: Path) -> str:
        if sandbox.log_directory and cfg.log_path:
            if not os.path.isabs(sandbox.log_directory):
                raise InvalidArgument("sandbox log_directory is not an absolute path")
            return str(confined(sandbox.log_directory, cfg.log_path, "log_path"))
        return str(bundle.with_name(bundle.name + ".log"))

    # --- start / stop / remove -------------------------------------------------------

    async def start(self, ref: str) -> None:
        rec = self.store.get(ref)
        async with self._lock(rec.id):
            if rec.state != CREATED:
                raise FailedPrecondition(f"container {rec.id} is {rec.state}, not created")
            runc = self.runtime(rec.runtime_handler)
            oom.record_base(Path(rec.bundle), self._oom_parent(rec))
            try:
                await runc.start(rec.id)
                crashpoint.reach("container.start.runc")
            except SycriError as exc:
                metrics.container_start_failed()
                rec.state, rec.exit_code = EXITED, 128
                rec.reason, rec.message = "ContainerCannotRun", exc.message[-1000:]
                rec.finished_at = now_ns()
                self.store.save(rec)
                self._emit(rec, ContainerEventType.STOPPED)
                raise
            metrics.container_started()
            rec.state, rec.started_at = RUNNING, now_ns()
            self.store.save(rec)
            self._emit(rec, ContainerEventType.STARTED)

    async def stop(self, ref: str, timeout: float, pod_going: bool = False) -> None:
        """StopSignal, wait ``timeout`` seconds, then SIGKILL; already stopped is fine.

        A container never started stays CREATED, as in containerd: kubelet must not
        read a stop as a run that completed. ``pod_going``: its pod stops, so runc's
        init waiting to start it is killed too (no process outlives its pod).
        """
        rec = self.store.get(ref)
        async with self._lock(rec.id):
            await self._stop_locked(rec, timeout, pod_going)

    async def _stop_locked(
        self, rec: ContainerRecord, timeout: float, pod_going: bool = False
    ) -> None:
        self.refresh(rec)
        runc = self.runtime(rec.runtime_handler)
        if rec.state == CREATED:
            if pod_going:
                await runc.kill(rec.id, 9, all_processes=True)
            return
        if rec.state != RUNNING:
            return
        if timeout > 0 and await runc.kill(rec.id, rec.stop_signal):
            crashpoint.reach("container.stop.signal")
            await self._wait_exit(rec, timeout)
        if self.refresh(rec).state == RUNNING:
            killed = await runc.kill(rec.id, 9, all_processes=True)
            if (
                not killed
                and await runc.state(rec.id) is None
                and not await self._wait_exit(rec, 1)
            ):
                # runc has no such container and conmon wrote no exit file (both lost,
                # e.g. to a reboot): it is not running, with an unknown exit code.
                rec.state, rec.exit_code, rec.finished_at = EXITED, 255, now_ns()
                rec.reason, rec.message = "Error", "the container disappeared"
                self.store.save(rec)
                self._emit(rec, ContainerEventType.STOPPED)
                return
            monitored = conmon.monitors_container(Path(rec.bundle), rec.id)
            if not await self._wait_exit(rec, 30 if monitored else 2):
                st = None if monitored else await runc.state(rec.id)
                if not monitored and (st or {}).get("status", "stopped") == "stopped":
                    # Its conmon died (killed while sycri was down): no exit file will
                    # come, but runc saw it die of our SIGKILL.
                    rec.state, rec.exit_code, rec.finished_at = EXITED, 137, now_ns()
                    rec.reason, rec.message = "Error", "killed; its conmon was gone"
                    self.store.save(rec)
                    self._emit(rec, ContainerEventType.STOPPED)
                    return
                raise DeadlineExceeded(f"container {rec.id} did not die after SIGKILL")

    async def _wait_exit(self, rec: ContainerRecord, timeout: float) -> bool:
        """Poll for conmon's exit file: every 5 ms at first (most processes die within
        tens of ms of their signal, and StopContainer waits on this), backing off to 50 ms."""
        deadline = time.monotonic() + timeout
        pause = 0.005
        while self.refresh(rec).state == RUNNING:
            if time.monotonic() >= deadline:
                return False
            await asyncio.sleep(pause)
            pause = min(0.05, pause * 1.5)
        return True

    async def remove(self, ref: str) -> None:
        """Stop if needed, then delete runc state, overlay, bundle; the log stays."""
        rec = self.store.find(ref)
        if rec is None:
            return  # RemoveContainer is idempotent
        async with self._lock(rec.id):
            if self.store.find(rec.id) is None:
                return
            await self._stop_locked(rec, 0)
            if not rec.removing:
                rec.removing = True  # a crash from here on: the next start finishes it
                self.store.save(rec)
            await self.runtime(rec.runtime_handler).delete(rec.id)
            crashpoint.reach("container.remove.runc")
            await rootfs.unmount(Path(rec.bundle) / "rootfs")
            await asyncio.to_thread(conmon_cgroup.release, Path(rec.bundle) / conmon_cgroup.RECORD)
            await self.image_mounts.release(rec.image_id, rec.id)
            self._tell_images(rec.image_id, rec.id, False)
            self.store.delete(rec)
            crashpoint.reach("container.remove.record")
            await rootfs.remove_overlay(Path(rec.bundle))
            with contextlib.suppress(FileNotFoundError):
                self._exit_file(rec.id).unlink()
            with contextlib.suppress(OSError):
                (self.paths.sockets / rec.id).unlink()
            statsview.forget(rec.id)
            self._emit(rec, ContainerEventType.DELETED)
        self._locks.pop(rec.id, None)
        log.info("removed container %s", rec.id)

    # --- queries ---------------------------------------------------------------------

    def get(self, ref: str) -> ContainerRecord:
        return self.refresh(self.store.get(ref))

    def list(self) -> list[ContainerRecord]:
        """Every record, exits conmon reported folded in: one listing of the exit files
        rather than a stat per running container."""
        self.reap_exits()
        return self.store.all()

    def in_pod(self, pod_id: str) -> builtins.list[ContainerRecord]:
        return [r for r in self.store.all() if r.pod_id == pod_id]

    def stats_containers(self) -> builtins.list[ContainerInfo]:
        """Every container as stats see it (the ContainerSource protocol)."""
        return statsview.container_infos(self.list())

    def reap_exits(self) -> int:
        """Fold every exit file conmon wrote into its running container's record.

        One directory listing, then a read only for the containers that have exited:
        cheap enough to run several times a second, so a container that exits on its
        own is reported STOPPED (a GetContainerEvents event) within a fraction of it.
        """
        try:
            with os.scandir(self.paths.exits) as it:
                exited = {e.name for e in it}
        except FileNotFoundError:
            return 0
        n = 0
        for rec in self.store.all():
            if rec.state == RUNNING and rec.id in exited and self.refresh(rec).state != RUNNING:
                n += 1
        return n

    async def check_monitors(self) -> int:
        """Find running containers whose conmon died while sycri runs (killed, OOM).

        A live conmon is one /proc read. For a dead one: its exit file, if it wrote one,
        is the truth (:meth:`refresh`); else runc says whether the container still runs
        (then it stays RUNNING, unmonitored: its log and attach are cut, its message says
        so) or is gone, which makes it EXITED with a STOPPED event. Returns how many
        containers were found exited.
        """
        n = 0
        for rec in self.store.all():
            if rec.state != RUNNING or conmon.monitors_container(Path(rec.bundle), rec.id):
                continue
            lock = self._lock(rec.id)
            if lock.locked():
                continue  # a stop or remove is on it
            async with lock:
                if await self._reconcile_unmonitored(rec):
                    n += 1
        return n

    async def watch_exits(self, interval: float = 0.2, monitor_every: int = 5) -> None:
        """Run :meth:`reap_exits` every ``interval`` seconds, and :meth:`check_monitors`
        every ``monitor_every`` of those, until cancelled."""
        tick = 0
        while True:
            try:
                self.reap_exits()
                tick += 1
                if tick % monitor_every == 0:
                    await self.check_monitors()
            except Exception:
                log.exception("watching conmon exit files failed")
            await asyncio.sleep(interval)

    def stream_target(self, ref: str) -> StreamTarget:
        """For the streaming server: how to exec into / attach to this container."""
        rec = self.get(ref)
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

    def oci_spec(self, rec: ContainerRecord) -> str:
        try:
            return (Path(rec.bundle) / "config.json").read_text()
        except OSError:
            return ""

    # --- exec, update, logs ----------------------------------------------------------

    async def exec_sync(self, ref: str, cmd: builtins.list[str], timeout: float) -> ExecResult:
        """Run ``cmd`` in the container; at ``timeout`` the process is killed (exit 137)."""
        rec = self.get(ref)
        if rec.state != RUNNING:
            raise FailedPrecondition(f"container {rec.id} is not running")
        if not cmd or not cmd[0]:
            raise InvalidArgument("cmd is empty")
        runc = self.runtime(rec.runtime_handler)
        pid_file = Path(rec.bundle) / f"exec-{new_id()[:16]}.pid"
        argv = runc.argv("exec", "--pid-file", str(pid_file), rec.id, *cmd)
        task = asyncio.create_task(
            command.run(
                argv,
                check=False,
                label="runc exec",
                exit_is_answer=True,
                output_limit=EXEC_OUTPUT_LIMIT,
            )
        )
        timed_out = False
        try:
            done, _ = await asyncio.wait({task}, timeout=timeout if timeout > 0 else None)
            if not done:
                timed_out = True
                _kill_pid_file(pid_file)
                try:
                    await asyncio.wait_for(asyncio.shield(task), 10)
                except TimeoutError:
                    task.cancel()
            result = await task
        except asyncio.CancelledError:
            _kill_pid_file(pid_file)
            task.cancel()
            raise
        finally:
            with contextlib.suppress(FileNotFoundError):
                pid_file.unlink()
        if timed_out:
            raise DeadlineExceeded(
                f"command {excerpt(' '.join(cmd))} timed out after {timeout:g}s and was killed"
            )
        code = result.returncode
        if code != 0 and b"exec failed" in result.stderr and not result.stdout:
            why = result.stderr.decode(errors="replace")[-500:]
            if b"unable to start container process" in result.stderr:
                # The command itself cannot start (not found, not executable): the
                # request named it, so it is the request's error, not sycri's.
                raise InvalidArgument(
                    f"cmd: {excerpt(cmd[0])} cannot be started in {rec.id[:12]}: {why}"
                )
            raise Internal(f"exec in {rec.id[:12]} failed: {why}")
        if result.truncated:
            # As containerd (which keeps 16 MiB per stream): the start of each stream is
            # kept; the rest was read and dropped while the command ran, never held.
            log.warning(
                "exec %s in %s: output over %d bytes per stream was dropped",
                excerpt(" ".join(cmd)),
                rec.id[:12],
                EXEC_OUTPUT_LIMIT,
            )
        return ExecResult(result.stdout, result.stderr, code)

    async def update_resources(self, ref: str, resources: api_pb2.LinuxContainerResources) -> None:
        rec = self.store.get(ref)
        async with self._lock(rec.id):
            self.refresh(rec)
            if rec.state not in (CREATED, RUNNING):
                raise FailedPrecondition(f"container {rec.id} is {rec.state}")
            oci = ocispec.cgroup_resources(
                resources,
                hostfacts.cgroup_v2(),
                hostfacts.hugetlb_sizes() if resources.hugepage_limits else frozenset(),
                hostfacts.cgroup_facts(),
            )
            await self.runtime(rec.runtime_handler).update(rec.id, oci)
            merged = api_pb2.LinuxContainerResources()
            json_format.ParseDict(rec.resources, merged)
            merged.MergeFrom(resources)
            rec.resources = json_format.MessageToDict(merged)
            self.store.save(rec)

    async def reopen_log(self, ref: str) -> None:
        rec = self.get(ref)
        if rec.state != RUNNING:
            raise FailedPrecondition(f"container {rec.id} is not running")
        await asyncio.to_thread(conmon.reopen_log, Path(rec.bundle))
        # conmon reopens asynchronously; wait (briefly) for the file to exist again.
        for _ in range(100):
            if os.path.exists(rec.log_path):
                return
            await asyncio.sleep(0.02)
        raise Internal(f"conmon did not reopen {rec.log_path}")

    # --- pods ------------------------------------------------------------------------

    async def stop_pod(self, pod_id: str, timeout: float = 0) -> None:
        await asyncio.gather(
            *(self.stop(r.id, timeout, pod_going=True) for r in self.in_pod(pod_id))
        )

    async def remove_pod(self, pod_id: str) -> None:
        for r in self.in_pod(pod_id):
            await self.remove(r.id)

    def follow_pods(self, manager: Any) -> None:
        """Stop a pod's containers when it stops (SIGKILL: kubelet already stopped them
        gracefully) and remove them when it is removed."""

        async def on_stop(pod_id: str) -> None:
            await self.stop_pod(pod_id, 0)

        manager.on_stop.append(on_stop)
        manager.on_remove.append(self.remove_pod)

    # --- recovery --------------------------------------------------------------------

    async def _reconcile_created(self, rec: ContainerRecord) -> None:
        """A record still "created" whose start reached runc before a crash: runc wins.

        sycri saves RUNNING only after ``runc start`` returns; killed in between, the
        record says created while the process runs (or already ran, and conmon wrote
        its exit file, which :meth:`refresh` folds in next).
        """
        try:
            st = await self.runtime(rec.runtime_handler).state(rec.id)
        except SycriError as exc:
            log.warning("runc state of %s at recovery: %s", rec.id, exc.message)
            return
        if st is None or st.get("status") not in ("running", "paused", "stopped"):
            return
        rec.state = RUNNING
        # The init process was forked at create; ``runc start`` unlinks the exec FIFO
        # from runc's state dir, so that dir's mtime is when the container started.
        runc = self.runtime(rec.runtime_handler)
        try:
            started = os.stat(Path(runc.root) / rec.id).st_mtime_ns
        except OSError:
            started = _process_start_ns(int(st.get("pid") or 0)) or now_ns()
        rec.started_at = max(started, rec.created_at)
        self.store.save(rec)
        log.info("container %s was started before the restart; runc says %s", rec.id, st["status"])
        self._emit(rec, ContainerEventType.STARTED)

    async def _reconcile_unmonitored(self, rec: ContainerRecord) -> bool:
        """A record RUNNING whose conmon is gone (conmon killed, a reboot wiped the run
        dir): its exit file if conmon wrote one, else runc decides. Still running, it
        stays RUNNING (unmonitored); gone, it is EXITED, never RUNNING forever. No process
        of sycri's is the container's parent, so without conmon's exit file its code is
        unknown: 255, and the message says so. True when it is found exited.
        """
        if self.refresh(rec).state != RUNNING:
            return True  # conmon wrote the exit file before it went
        try:
            st = await self.runtime(rec.runtime_handler).state(rec.id)
        except SycriError as exc:
            log.warning("runc state of %s: %s", rec.id, exc.message)
            return False
        if self.refresh(rec).state != RUNNING:
            return True
        with contextlib.suppress(FileNotFoundError):
            if time.time() - self._exit_file(rec.id).stat().st_mtime < 5:
                return False  # conmon is still writing it: the next look reads it
        if st is not None and st.get("status") in ("running", "paused"):
            if rec.message != UNMONITORED:
                log.warning("container %s runs without its conmon", rec.id)
                rec.message = UNMONITORED
                self.store.save(rec)
            return False
        log.warning("container %s is gone with its conmon; recording it as exited", rec.id)
        rec.state, rec.exit_code, rec.finished_at = EXITED, 255, now_ns()
        rec.reason, rec.message = "Error", LOST_EXIT
        self.store.save(rec)
        self._emit(rec, ContainerEventType.STOPPED)
        return True

    async def recover(self) -> None:
        """Start-up: reload records and reconcile them with runc and conmon, count image
        mounts, finish removals a crash cut short, drop leftovers of unfinished creates."""
        records = self.store.load()
        monitored = conmon.monitors(self.paths.exits)
        for rec in records:
            self.image_mounts.adopt(rec.image_id, rec.id)
            self._tell_images(rec.image_id, rec.id, True)
            if rec.state == CREATED:
                await self._reconcile_created(rec)
            self.refresh(rec)
            if rec.state == RUNNING and rec.id not in monitored:
                await self._reconcile_unmonitored(rec)
        for rec in records:
            if rec.removing:
                log.warning("finishing the removal of container %s", rec.id)
                try:
                    await self.remove(rec.id)
                except Exception:
                    log.exception("removing container %s", rec.id)
        records = self.store.all()
        known = {r.id for r in records}
        monitors = conmon.monitors(self.paths.exits)
        for cid, pid in monitors.items():
            if cid not in known:
                # A create killed after conmon started: nothing was promised to
                # kubelet; the monitor goes first so it writes no exit file later.
                log.warning("ending conmon %d of unrecorded container %s", pid, cid)
                await conmon.kill(pid)
        for entry in list(self.paths.containers.iterdir()):
            if entry.is_dir() and entry.name not in known:
                # A create or remove interrupted by a crash: its runc container (if
                # runc got that far) and overlay go; nothing was promised to kubelet.
                log.warning("removing leftovers of container %s", entry.name)
                for runc in self.runtimes.values():
                    with contextlib.suppress(Exception):
                        await runc.delete(entry.name)
                await asyncio.to_thread(conmon_cgroup.release, entry / conmon_cgroup.RECORD)
                await rootfs.remove_overlay(entry)
                with contextlib.suppress(FileNotFoundError):
                    self._exit_file(entry.name).unlink()
        # conmon's attach-socket links and exit files of containers that are not ours
        # any more (a create killed half way, a remove killed after the record went).
        for d in (self.paths.sockets, self.paths.exits):
            with contextlib.suppress(FileNotFoundError), os.scandir(d) as it:
                for e in it:
                    if e.name not in known:
                        log.warning("removing stale %s", e.path)
                        with contextlib.suppress(OSError):
                            if e.is_dir(follow_symlinks=False):
                                shutil.rmtree(e.path)
                            else:
                                os.unlink(e.path)
        await self.image_mounts.sweep()


def _new_paths(log_path: Path) -> list[Path]:
    """The log file and those of its parent dirs that do not exist yet, deepest first:
    what a create that fails after conmon started must take away again."""
    out = []
    p = log_path
    while not os.path.lexists(p) and p != p.parent:
        out.append(p)
        p = p.parent
    return out


def _remove_new(paths: list[Path]) -> None:
    """Remove what :func:`_new_paths` listed; a dir only while empty."""
    for p in paths:
        with contextlib.suppress(OSError):
            if p.is_dir() and not p.is_symlink():
                p.rmdir()
            else:
                p.unlink()


def _process_start_ns(pid: int) -> int:
    """When process ``pid`` started (ns since the epoch), from /proc; 0 if unknown."""
    if pid <= 0:
        return 0
    try:
        with open(f"/proc/{pid}/stat") as f:
            ticks = int(f.read().rsplit(")", 1)[1].split()[19])
        with open("/proc/stat") as f:
            btime = next(int(line.split()[1]) for line in f if line.startswith("btime "))
    except (OSError, ValueError, IndexError, StopIteration):
        return 0
    return btime * 1_000_000_000 + ticks * 1_000_000_000 // os.sysconf("SC_CLK_TCK")


def _read_image_file(root: Path, rel: str) -> str:
    """A small text file of the image (symlinks resolved inside the image), or ''."""
    try:
        path = confined(root, rel)
        with open(path, "rb") as f:
            return f.read(MAX_IMAGE_FILE).decode(errors="replace")
    except (OSError, InvalidArgument):
        return ""


def _kill_pid_file(path: Path) -> None:
    try:
        pid = int(path.read_text().strip())
    except (OSError, ValueError):
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, 9)


class PodSandboxes:
    """SandboxLookup over the pods component (``runtime.sandbox_manager``)."""

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
        from sycri import sif

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


class _NoSandboxes:
    """Until a pods component is attached: every pod is unknown."""

    def sandbox_info(self, pod_id: str) -> SandboxInfo:
        raise NotFound(f"pod sandbox {excerpt(pod_id)} not found")


class _NoImages:
    async def image_info(self, image: str) -> ImageInfo:
        raise NotFound(f"image {excerpt(image)} not found")


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
    component = Containers(
        Paths(
            containers=root / "containers",
            image_mounts=run / "images",
            exits=run / "exits",
            sockets=run / "s",
        ),
        runtimes,
        cfg.default_runtime,
        sandboxes or _NoSandboxes(),
        images or _NoImages(),
        conmon_binary=cfg.conmon,
        cgroup_driver=cgroup_driver,
        settings=ocispec.Settings(
            default_ulimits=cfg.default_ulimits,
            max_ulimits=cfg.max_ulimits,
            apparmor_default_profile=cfg.apparmor_default_profile,
        ),
        log_size_max=cfg.container_log_max_bytes,
        conmon_placement=cfg.conmon_cgroup,
        host_root=cfg.host_root,
        own_dirs=(cfg.root_dir, cfg.run_dir, cfg.pod_log_dir),
    )
    if isinstance(images, StoredImages):
        component.image_users.append(images.track)
    return component
