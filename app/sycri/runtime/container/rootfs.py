"""Container root filesystems: the image SIF's squashfs partition mounted read-only once
per image (in place, by offset: no copy), shared by all its containers, under a
per-container overlay with its own upper and work directories.

The image mount is reference counted by container id (so a retried acquire or release
is harmless). When the last container of an image goes its mount lingers, idle, for
``images.mount_idle_seconds``: a pod's first container of an image that ran a moment ago
(a Job, a restart, critest's create/remove loop) finds it mounted. An idle mount goes
when its time passes, at RemoveImage of its image (it holds the SIF open) and at a clean
shutdown. After a restart the counts are rebuilt from the container store with
``adopt``, and ``sweep`` unmounts what nothing uses.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import shutil
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from sycri import command
from sycri.errors import FailedPrecondition, Internal, SycriError
from sycri.observability import tracing
from sycri.runtime import linux, loopdev
from sycri.runtime.cgroups import conmon_cgroup
from sycri.runtime.pod import userns

log = logging.getLogger("sycri.rootfs")


@dataclass(frozen=True)
class ImageSource:
    """Where an image's root filesystem is: a squashfs at ``offset`` in ``path``."""

    image_id: str
    path: str
    offset: int
    size: int


def mounted_targets() -> set[str]:
    """Every mount point in our mount namespace (octal escapes decoded)."""
    out = set()
    with open("/proc/self/mountinfo") as f:
        for line in f:
            parts = line.split(" ")
            if len(parts) > 4:
                out.add(_unescape(parts[4]))
    return out


def _unescape(text: str) -> str:
    return text.encode().decode("unicode_escape") if "\\" in text else text


def fstype(target: str | os.PathLike[str]) -> str:
    """The file system type of the mount at ``target`` ("" when nothing is mounted there)."""
    found = ""
    with open("/proc/self/mountinfo") as f:
        for line in f:
            left, _, right = line.partition(" - ")
            parts = left.split(" ")
            if len(parts) > 4 and _unescape(parts[4]) == str(target) and right:
                found = right.split(" ")[0]
    return found


def is_mounted(path: str | os.PathLike[str]) -> bool:
    return str(path) in mounted_targets()


def _umount(target: str) -> bool:
    """umount2(2) of ``target``; False when nothing is mounted there. A busy mount is
    detached lazily rather than leaked. A syscall, not ``umount(8)``: no process to
    start and no read of the whole mount table, which grows with every container."""
    try:
        linux.umount(target)
    except OSError as exc:
        if exc.errno in (errno.EINVAL, errno.ENOENT):  # not a mount point, or no such path
            return False
        if exc.errno != errno.EBUSY:
            raise Internal(f"cannot unmount {target}: {exc.strerror}") from None
        try:
            linux.umount(target, linux.MNT_DETACH)
        except OSError as again:
            raise Internal(f"cannot detach {target}: {again.strerror}") from None
    return True


async def unmount(target: str | os.PathLike[str]) -> None:
    """Unmount ``target`` if mounted; a busy mount is detached lazily rather than leaked."""
    await asyncio.to_thread(_umount, str(target))


async def _mount_loop(src: ImageSource, target: Path) -> bool:
    """The kernel's squashfs on a loop device bound here (:mod:`sycri.runtime.loopdev`);
    False where the kernel lacks ``LOOP_CONFIGURE`` (then ``mount(8)`` does it)."""
    with tracing.span("mount squashfs", **{"image.id": src.image_id}):
        try:
            await asyncio.to_thread(
                loopdev.mount_squashfs, src.path, src.offset, src.size, str(target)
            )
        except loopdev.Unsupported:
            return False
        except OSError as exc:
            raise Internal(f"cannot mount image {src.image_id}: {exc.strerror}") from None
    return True


class Timer(Protocol):
    def cancel(self) -> None: ...


# Runs a job after a delay: (seconds, job) -> what cancels it.
Schedule = Callable[[float, Callable[[], Awaitable[None]]], Timer]

_jobs: set[asyncio.Task[None]] = set()  # the loop keeps only weak references to tasks


def call_later(delay: float, job: Callable[[], Awaitable[None]]) -> Timer:
    """:data:`Schedule` on the running event loop."""

    def run() -> None:
        task = asyncio.ensure_future(job())
        _jobs.add(task)
        task.add_done_callback(_jobs.discard)

    return asyncio.get_running_loop().call_later(delay, run)


class ImageMounts:
    """One read-only mount per image, shared by reference. ``method_for(image_id)`` says
    whether the kernel (``loop``) or ``squashfuse`` parses it (``images.kernel_mount``).

    ``idle_seconds``: how long a mount nothing uses any more stays (0: it goes with its
    last user). ``schedule`` runs the unmount when that time has passed (tests drive it)."""

    def __init__(
        self,
        base: Path,
        fuse_cgroup: Callable[[str], conmon_cgroup.Placement] | None = None,
        cgroup_version: int = 1,
        idle_seconds: float = 0.0,
        schedule: Schedule = call_later,
    ) -> None:
        self.base = base
        self._users: dict[str, set[str]] = {}
        self._mounted: set[str] = set()  # image ids this sycri mounted (and still counts)
        self._locks: dict[str, asyncio.Lock] = {}
        self.idle_seconds = idle_seconds
        self.schedule = schedule  # a test may drive time
        # Idle mounts: image id -> (the token its unmount job must still hold, its timer).
        self._idle: dict[str, tuple[object, Timer]] = {}
        self.method_for: Callable[[str], str] = lambda image_id: "loop"
        # Where a squashfuse for mount <name> lives (outside sycri's cgroup: it must
        # survive sycri's pod like conmon does); None: left where sycri runs.
        self.fuse_cgroup = fuse_cgroup
        self.cgroup_version = cgroup_version
        self._records = base.with_name(base.name + ".cgroups")  # squashfuse cgroup records

    def _record(self, target: Path) -> Path:
        return self._records / f"{target.name}.json"

    def target(self, image_id: str) -> Path:
        # "sha256:<hex>" -> "<hex>": a colon cannot appear in an overlay lowerdir.
        return self.base / image_id.rsplit(":", 1)[-1]

    def users(self, image_id: str) -> set[str]:
        return set(self._users.get(image_id, ()))

    def idle(self) -> set[str]:
        """The image ids whose mount is kept with no user."""
        return set(self._idle)

    def _lock(self, image_id: str) -> asyncio.Lock:
        return self._locks.setdefault(image_id, asyncio.Lock())

    async def acquire(self, src: ImageSource, container_id: str) -> Path:
        """The image's mount point, mounting it unless it is mounted (used or idle)."""
        async with self._lock(src.image_id):
            self._unpark(src.image_id)
            target = self.target(src.image_id)
            # Mounted by this sycri and counted: no need to read the mount table.
            if src.image_id not in self._mounted and not is_mounted(target):
                target.mkdir(parents=True, exist_ok=True)
                method = self.method_for(src.image_id)
                if method != "loop" or not await _mount_loop(src, target):
                    await self._mount_by_program(src, target, method)
            self._mounted.add(src.image_id)
            self._users.setdefault(src.image_id, set()).add(container_id)
            return target

    async def _mount_by_program(self, src: ImageSource, target: Path, method: str) -> None:
        if method == "squashfuse":
            # allow_other: containers run as any uid; default_permissions: the
            # kernel still checks the image's file modes.
            opts = f"ro,allow_other,default_permissions,offset={src.offset}"
            prefix = await self._confine(target)
            argv = [*prefix, "squashfuse", "-o", opts, src.path, str(target)]
            label = "mount squashfuse"
        else:
            opts = f"ro,loop,offset={src.offset},sizelimit={src.size}"
            argv = ["mount", "-t", "squashfs", "-o", opts, src.path, str(target)]
            label = "mount mount"
        try:
            await command.run(argv, label=label, timeout=60)
        except BaseException:
            await asyncio.to_thread(conmon_cgroup.release, self._record(target))
            raise

    async def release(self, image_id: str, container_id: str, linger: bool = True) -> None:
        """Forget one user. With none left the mount idles for ``idle_seconds``, or goes
        now (``linger`` False: a failed create leaves no mount it made behind)."""
        async with self._lock(image_id):
            users = self._users.get(image_id, set())
            users.discard(container_id)
            if users:
                return
            self._users.pop(image_id, None)
            if linger and self.idle_seconds > 0 and image_id in self._mounted:
                self._park(image_id)
                return
            await self._unmount(image_id)

    def _park(self, image_id: str) -> None:
        """Keep the idle mount; it goes once ``idle_seconds`` pass with no new user."""
        self._unpark(image_id)
        token = object()

        async def expire() -> None:
            try:
                await self._expire(image_id, token)
            except Exception:  # a timer has nobody to tell: the next start sweeps it
                log.exception("unmounting the idle image %s", image_id)

        self._idle[image_id] = (token, self.schedule(self.idle_seconds, expire))

    def _unpark(self, image_id: str) -> None:
        parked = self._idle.pop(image_id, None)
        if parked is not None:
            parked[1].cancel()

    async def _expire(self, image_id: str, token: object) -> None:
        """The idle time passed. Under the image's lock, and only if no acquire came
        (and no release parked it again) since: the timer may fire just before one."""
        async with self._lock(image_id):
            parked = self._idle.get(image_id)
            if parked is None or parked[0] is not token or self._users.get(image_id):
                return
            log.debug("image %s unused for %ss: unmounting it", image_id, self.idle_seconds)
            await self._unmount(image_id)

    async def _unmount(self, image_id: str) -> None:
        """Under the image's lock: the mount, its directory and a squashfuse's cgroup go."""
        self._unpark(image_id)
        self._mounted.discard(image_id)
        target = self.target(image_id)
        await unmount(target)
        with contextlib.suppress(OSError):
            target.rmdir()
        # The squashfuse (if any) exits on unmount; then its cgroup goes.
        await asyncio.to_thread(conmon_cgroup.release, self._record(target))

    async def drop_idle(self, image_id: str) -> None:
        """RemoveImage: unmount the image's idle mount, which holds its SIF open (the
        file's space would not be freed). Refused while a container uses the image."""
        async with self._lock(image_id):
            users = self._users.get(image_id)
            if users:
                who = sorted(users)[0].split("/")[0]  # "<id>/image-volumes": the container
                raise FailedPrecondition(f"image {image_id} is in use by container {who}")
            if image_id in self._idle:
                await self._unmount(image_id)

    async def close(self) -> None:
        """Clean shutdown: idle mounts go now; mounts in use stay for their containers,
        which keep running (the next sycri adopts them)."""
        self.idle_seconds = 0.0  # a release from here on unmounts at once
        for image_id in list(self._idle):
            async with self._lock(image_id):
                if image_id not in self._idle or self._users.get(image_id):
                    continue
                try:
                    await self._unmount(image_id)
                except SycriError as exc:  # the next start sweeps it
                    log.warning("idle image %s stays mounted: %s", image_id, exc.message)

    async def _confine(self, target: Path) -> list[str]:
        """Make the cgroup a squashfuse for ``target`` runs in, and the argv prefix that
        puts it there before it starts (as conmon's)."""
        if self.fuse_cgroup is None:
            return []
        place = self.fuse_cgroup(target.name[:16])
        self._records.mkdir(parents=True, exist_ok=True)
        try:
            dirs = await asyncio.to_thread(
                conmon_cgroup.prepare, self._record(target), place, self.cgroup_version
            )
        except OSError as exc:
            raise Internal(
                f"cannot make squashfuse's cgroup {place.path}: {exc.strerror}"
            ) from None
        return conmon_cgroup.prefix(place, dirs)

    def adopt(self, image_id: str, container_id: str) -> None:
        """Recovery: count a container found on disk as a user of its image's mount."""
        self._users.setdefault(image_id, set()).add(container_id)

    async def sweep(self) -> None:
        """Recovery: unmount image mounts that no container uses any more (an earlier
        sycri's idle ones among them); those in use are known to be mounted from here
        on, so their last user's release leaves them idle."""
        if not self.base.is_dir():
            return
        used = {self.target(i).name: i for i in self._users}
        mounted = await asyncio.to_thread(mounted_targets)
        for entry in self.base.iterdir():
            image_id = used.get(entry.name)
            if image_id is None:
                async with self._lock(entry.name):
                    await self._unmount(entry.name)
            elif str(entry) in mounted:
                self._mounted.add(image_id)


@dataclass(frozen=True)
class Idmap:
    """Map the image's ids through a pod's user namespace (see :mod:`sycri.runtime.pod.userns`)."""

    userns_path: str
    root_uid: int  # the host ids of the namespace's root, owner of the upper directory
    root_gid: int


def idmap_for(userns_path: str, maps: userns.Mappings | None) -> Idmap | None:
    if not userns_path or maps is None:
        return None
    return Idmap(userns_path, maps.root_uid, maps.root_gid)


async def mount_overlay(lower: Path, bundle: Path, idmap: Idmap | None = None) -> Path:
    """``bundle/rootfs`` = overlay of ``lower`` with ``bundle/upper`` and ``bundle/work``.

    With ``idmap`` the lower layer is ``bundle/lower``, an idmapped clone of ``lower``,
    and the upper directory belongs to the namespace's root, so the container's root
    owns (and can write) its root filesystem."""
    upper, work, rootfs = bundle / "upper", bundle / "work", bundle / "rootfs"
    for d in (upper, work, rootfs):
        d.mkdir(parents=True, exist_ok=True)
    if idmap is not None:
        clone = bundle / "lower"
        clone.mkdir(exist_ok=True)
        try:
            await asyncio.to_thread(userns.mount_idmapped, lower, clone, idmap.userns_path)
        except OSError:
            if fstype(lower).startswith("fuse"):
                raise FailedPrecondition(
                    "the image is mounted with squashfuse (images.kernel_mount), which cannot "
                    "be idmapped for a pod in its own user namespace; sign the SIF with a "
                    "trusted key or set images.kernel_mount=all"
                ) from None
            raise
        os.chown(upper, idmap.root_uid, idmap.root_gid)
        lower = clone
    for p in (lower, upper, work):
        if any(c in str(p) for c in ",:\n"):
            raise Internal(f"overlay path {p} holds a character mount options cannot carry")
    opts = f"lowerdir={lower},upperdir={upper},workdir={work}"
    # mount(2) itself: mount(8) would add a process and a read of the mount table.
    try:
        await asyncio.to_thread(linux.mount, "overlay", rootfs, "overlay", 0, opts)
    except OSError as exc:
        raise Internal(f"cannot mount the overlay on {rootfs}: {exc.strerror}") from None
    return rootfs


def _under(bundle: Path) -> list[Path]:
    """Mount points below ``bundle``, deepest first."""
    prefix = str(bundle) + "/"
    found = [t for t in mounted_targets() if t.startswith(prefix)]
    return [Path(t) for t in sorted(found, key=len, reverse=True)]


def release_rootfs(bundle: Path) -> None:
    """Unmount the container's root filesystem and its idmapped lower layer, if any
    (blocking): once the container has exited nothing needs them, and what stays of
    the container is its files."""
    for mnt in (bundle / "rootfs", bundle / "lower"):
        _umount(str(mnt))


def release_mounts(bundle: Path) -> None:
    """Unmount all that sycri mounts below a bundle (blocking): the root filesystem, its
    idmapped lower layer and the idmapped clones of volumes (``volumes/<n>``, a pod in
    its own user namespace), deepest first. RemoveContainer does it before it replies;
    the bundle's deletion still checks for any other mount below it."""
    release_rootfs(bundle)
    if os.path.isdir(bundle / "volumes"):
        for mnt in _under(bundle / "volumes"):
            _umount(str(mnt))


def _first_mount_in(top: Path) -> Path | bool | None:
    """The first mount found at or below ``top`` (symlinks never followed), False when
    there is none, None when the kernel cannot tell (then the mount table decides)."""
    root = linux.is_mount_root(top)
    if root is None:
        return None
    if root:
        return top
    stack = [top]
    while stack:
        d = stack.pop()
        try:
            with os.scandir(d) as it:
                subdirs = [Path(e.path) for e in it if e.is_dir(follow_symlinks=False)]
        except FileNotFoundError:
            continue
        for sub in subdirs:
            try:
                root = linux.is_mount_root(sub)
            except FileNotFoundError:
                continue
            if root is None:
                return None
            if root:
                return sub
            stack.append(sub)
    return False


def remove_bundle(bundle: Path) -> None:
    """Unmount the container's overlay (and its idmapped lower layer and volumes, if
    any) and delete its upper/work dirs and the bundle (blocking).

    Never deletes through a mount. With nothing mounted below the bundle once its root
    filesystem is unmounted (the usual case: the exit released it), a walk of the
    bundle's directories says so, one ``statx`` per directory, without reading the
    node's whole mount table, which grows with every container."""
    if not bundle.exists():
        return
    release_rootfs(bundle)
    if _first_mount_in(bundle) is False:
        shutil.rmtree(bundle, True)
        return
    for mnt in _under(bundle):
        _umount(str(mnt))
    left = _under(bundle)
    if left:  # never delete through a mount
        raise Internal(f"{left[0]} is still mounted; not deleting the bundle")
    shutil.rmtree(bundle, True)


async def remove_overlay(bundle: Path) -> None:
    """:func:`remove_bundle`, in a worker thread."""
    await asyncio.to_thread(remove_bundle, bundle)
