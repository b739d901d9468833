"""The exit monitor: the one place a container's exit becomes its status.

conmon writes ``<exits>/<id>`` (the exit code) when a container's process ends. The
monitor task lists that directory when a file is written there (inotify) and at least
five times a second and, for each running container with a file, records the exit
(status written off the event loop) and publishes CONTAINER_STOPPED; once a second
it checks that each running container's conmon is alive. StopContainer waits on the
same code for the container it stops. Reads never fold exits in: they answer from the
index, which this monitor keeps current.

Once an exit is recorded, the container is *released* as containerd's shim does when
it sees one: runc's container (its state and cgroup) deleted, the root filesystem
unmounted and conmon's cgroup removed once conmon has gone, so RemoveContainer only
removes files. StopContainer releases before it
replies; this monitor releases in the background, a few at a time.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING

from sycri import crashpoint
from sycri.errors import SycriError
from sycri.runtime.cgroups import conmon_cgroup, oom
from sycri.runtime.container import dirwatch, rootfs
from sycri.runtime.container.conmonwatch import ConmonWatch
from sycri.runtime.container.record import EXITED, RUNNING, ContainerRecord, Status
from sycri.runtime.events import ContainerEventType

if TYPE_CHECKING:
    from sycri.runtime.container.containers import Containers

log = logging.getLogger("sycri.containers")

UNMONITORED = "its monitor (conmon) died: the container runs on, but its log and attach are cut"
LOST_EXIT = (
    "the container and its monitor (conmon) disappeared; conmon recorded no exit code, "
    "so 255 stands for unknown"
)


def exited_status(
    status: Status, exit_file: Path, bundle: Path, oom_parent: Path | None
) -> Status | None:
    """The status conmon's exit file says, or None while there is none (blocking: a few
    small reads). A kill by the OOM killer is OOMKilled even if conmon missed it."""
    try:
        st = exit_file.stat()
        text = exit_file.read_text().strip()
    except FileNotFoundError:
        return None
    try:
        code = int(text)
    except ValueError:
        return None  # conmon is still writing it
    oom_killed = (bundle / "oom").exists() or (bundle / "persist" / "oom").exists()
    if not oom_killed and code == 137:  # SIGKILL: the OOM killer, if conmon missed it
        oom_killed = oom.killed_since_start(bundle, oom_parent)
    if oom_killed:
        reason, message = "OOMKilled", "the container exceeded its memory limit"
    else:
        reason, message = ("Completed" if code == 0 else "Error"), status.message
    return status.but(
        state=EXITED,
        exit_code=code,
        finished_at=max(st.st_mtime_ns, status.started_at),  # clocks read apart
        reason=reason,
        message=message,
        oom_killed=oom_killed,
    )


def _release_files(bundle: Path) -> None:
    """Blocking: conmon's cgroup if conmon has gone already (else RemoveContainer waits
    for it), then the rootfs unmounted: the last step, so its mount gone says the
    release is done."""
    conmon_cgroup.release_if_empty(bundle / conmon_cgroup.RECORD)
    rootfs.release_rootfs(bundle)


class ExitMonitor:
    """Exits into statuses, for one container component. Every method that changes a
    status runs with the container's lock held (the lifecycle's, or its own)."""

    def __init__(self, containers: Containers, concurrent_releases: int = 4) -> None:
        self.c = containers
        # Containers this sycri released (runc's container deleted, rootfs unmounted);
        # after a restart it is empty and RemoveContainer deletes runc's container itself.
        self.released: set[str] = set()
        self._releasing = asyncio.Semaphore(concurrent_releases)
        self._tasks: set[asyncio.Task[None]] = set()
        self.conmons = ConmonWatch()

    async def record(self, rec: ContainerRecord, status: Status) -> None:
        """Persist an exit found by anyone (this monitor, a stop) and publish it."""
        await self.c.store.set_status(rec, status)
        self.c.emit(rec, ContainerEventType.STOPPED)

    async def record_exit(
        self, rec: ContainerRecord, code: int, message: str, reason: str = "Error"
    ) -> None:
        """An exit no exit file tells (a failed start, a lost container): now, ``code``."""
        status = rec.status.but(
            state=EXITED, exit_code=code, finished_at=time.time_ns(), reason=reason, message=message
        )
        await self.record(rec, status)

    async def collect(self, rec: ContainerRecord) -> bool:
        """Record the exit conmon wrote for ``rec``, if any. True when it has exited."""
        if rec.state != RUNNING:
            return rec.state == EXITED
        exit_file = self.c.exit_file(rec.id)
        if not os.path.exists(exit_file):
            return False
        status = await asyncio.to_thread(
            exited_status, rec.status, exit_file, Path(rec.bundle), self.c.oom_parent(rec)
        )
        if status is None or rec.state != RUNNING:
            return rec.state == EXITED
        await self.record(rec, status)
        return True

    async def release(self, rec: ContainerRecord) -> None:
        """An exited container: delete runc's container and unmount its root filesystem.
        The caller holds the container's lock. A failure is logged and left to
        RemoveContainer, which deletes whatever this did not."""
        if rec.state != EXITED or rec.id in self.released:
            return
        crashpoint.reach("container.exit.recorded")
        try:
            await self.c.runtime(rec.runtime_handler).delete(rec.id)
            await asyncio.to_thread(_release_files, Path(rec.bundle))
        except SycriError as exc:
            log.warning("releasing exited container %s: %s", rec.id, exc.message)
            return
        self.released.add(rec.id)

    def release_later(self, rec: ContainerRecord) -> None:
        """:meth:`release` in a task of its own (the monitor does not wait for runc)."""
        task = asyncio.get_running_loop().create_task(self._release_locked(rec))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def releases_done(self) -> None:
        """Wait for the releases :meth:`release_later` started (tests, shutdown)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    async def _release_locked(self, rec: ContainerRecord) -> None:
        async with self._releasing, self.c.lock(rec.id):
            if self.c.store.find(rec.id) is rec:  # not removed meanwhile
                await self.release(rec)

    async def wait(self, rec: ContainerRecord, timeout: float) -> bool:
        """Wait for conmon's exit file: every 5 ms at first (most processes die within
        tens of ms of their signal, and StopContainer waits on this), backing off to 50 ms."""
        deadline = time.monotonic() + timeout
        pause = 0.005
        while not await self.collect(rec):
            if rec.state != RUNNING or time.monotonic() >= deadline:
                return False
            await asyncio.sleep(pause)
            pause = min(0.05, pause * 1.5)
        return True

    async def reap(self) -> int:
        """Record every exit conmon wrote: one directory listing, then a read only for
        the containers that have exited. A container a lifecycle call holds is left to
        that call. Returns how many exits were recorded."""
        try:
            with os.scandir(self.c.paths.exits) as it:
                exited = {e.name for e in it}
        except FileNotFoundError:
            return 0
        n = 0
        for rec in self.c.store.all():
            if rec.state != RUNNING or rec.id not in exited:
                continue
            lock = self.c.lock(rec.id)
            if lock.locked():
                continue
            async with lock:
                if await self.collect(rec):
                    n += 1
                    self.release_later(rec)
        return n

    async def check_monitors(self) -> int:
        """Find running containers whose conmon died while sycri runs (killed, OOM);
        see :meth:`unmonitored`. Returns how many were found exited."""
        running = {rec.id: rec for rec in self.c.store.all() if rec.state == RUNNING}
        dead = self.conmons.dead((cid, Path(rec.bundle)) for cid, rec in running.items())
        n = 0
        for cid in dead:
            rec = running[cid]
            if rec.state != RUNNING:
                continue
            lock = self.c.lock(rec.id)
            if lock.locked():
                continue  # a stop or remove is on it
            async with lock:
                n += await self.unmonitored(rec)
        return n

    async def unmonitored(self, rec: ContainerRecord) -> bool:
        """A record RUNNING whose conmon is gone (conmon killed, a reboot wiped the run
        dir): its exit file if conmon wrote one, else runc decides. Still running, it
        stays RUNNING (unmonitored, its message says so); gone, it is EXITED, never
        RUNNING forever. No process of sycri's is the container's parent, so without
        conmon's exit file its code is unknown: 255. True when it is found exited.
        """
        if await self.collect(rec):
            return True  # conmon wrote the exit file before it went
        try:
            st = await self.c.runtime(rec.runtime_handler).state(rec.id)
        except SycriError as exc:
            log.warning("runc state of %s: %s", rec.id, exc.message)
            return False
        if await self.collect(rec):
            return True
        with contextlib.suppress(FileNotFoundError):
            if time.time() - self.c.exit_file(rec.id).stat().st_mtime < 5:
                return False  # conmon is still writing it: the next look reads it
        if st is not None and st.get("status") in ("running", "paused"):
            if rec.message != UNMONITORED:
                log.warning("container %s runs without its conmon", rec.id)
                await self.c.store.set_status(rec, rec.status.but(message=UNMONITORED))
            return False
        log.warning("container %s is gone with its conmon; recording it as exited", rec.id)
        await self.record_exit(rec, 255, LOST_EXIT)
        return True

    async def watch(self, interval: float = 0.2, monitor_every: int = 5) -> None:
        """Until cancelled: :meth:`reap` when conmon writes an exit file (inotify) and
        at least every ``interval`` seconds, and :meth:`check_monitors` every
        ``monitor_every`` intervals."""
        watch = dirwatch.open_watch(self.c.paths.exits)
        next_check = time.monotonic() + interval * monitor_every
        try:
            while True:
                try:
                    await self.reap()
                    if time.monotonic() >= next_check:
                        next_check = time.monotonic() + interval * monitor_every
                        await self.check_monitors()
                except Exception:
                    log.exception("watching conmon exit files failed")
                if watch is None:
                    await asyncio.sleep(interval)
                else:
                    await watch.wait(interval)
        finally:
            if watch is not None:
                watch.close()
            self.conmons.close()
            for task in list(self._tasks):
                task.cancel()
