"""StartContainer, StopContainer and RemoveContainer (and a pod's stop and removal),
each under the container's lock; every status they make is on disk before they return.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING

from sycri import crashpoint
from sycri.errors import DeadlineExceeded, FailedPrecondition, SycriError
from sycri.observability import metrics
from sycri.runtime.cgroups import conmon_cgroup, oom
from sycri.runtime.container import conmon, launch, rootfs
from sycri.runtime.container.record import CREATED, RUNNING, ContainerRecord
from sycri.runtime.events import ContainerEventType
from sycri.runtime.stats import statsview

if TYPE_CHECKING:
    from sycri.runtime.container.containers import Containers

log = logging.getLogger("sycri.containers")


async def start(c: Containers, ref: str) -> None:
    rec = c.store.get(ref)
    async with c.lock(rec.id):
        if rec.state != CREATED:
            raise FailedPrecondition(f"container {rec.id} is {rec.state}, not created")
        runc = c.runtime(rec.runtime_handler)
        await asyncio.to_thread(oom.record_base, Path(rec.bundle), c.oom_parent(rec))
        pid = rec.pid
        try:
            if not launch.launched(rec):
                pid = await launch.launch(c, rec)  # conmon + runc create, as containerd's task
            await runc.start(rec.id)
            crashpoint.reach("container.start.runc")
        except SycriError as exc:
            # As containerd: exited, 128; kubelet applies the restart policy.
            metrics.container_start_failed()
            await c.exits.record_exit(rec, 128, exc.message[-1000:], "ContainerCannotRun")
            raise
        metrics.container_started()
        started = max(await asyncio.to_thread(started_ns, runc.root, rec.id), rec.created_at)
        await c.store.set_status(rec, rec.status.but(state=RUNNING, pid=pid, started_at=started))
        c.emit(rec, ContainerEventType.STARTED)


def started_ns(runtime_root: str, container_id: str) -> int:
    """When ``runc start`` let the container's process run: it unlinks the exec FIFO
    from runc's state dir, so that dir's mtime (never after the process's exit, unlike a
    clock read once ``runc start`` returned). Now, if runc's dir cannot be read."""
    try:
        return os.stat(Path(runtime_root) / container_id).st_mtime_ns
    except OSError:
        return time.time_ns()


async def stop(c: Containers, ref: str, timeout: float, pod_going: bool = False) -> None:
    """StopSignal, wait ``timeout`` seconds, then SIGKILL; already stopped is fine.

    A container never started stays CREATED, as in containerd: kubelet must not
    read a stop as a run that completed. ``pod_going``: its pod stops, so runc's
    init waiting to start it is killed too (no process outlives its pod).
    """
    rec = c.store.get(ref)
    async with c.lock(rec.id):
        await _stop_locked(c, rec, timeout, pod_going)
        await c.exits.release(rec)  # exited: runc's container and the rootfs go now


async def _stop_locked(
    c: Containers, rec: ContainerRecord, timeout: float, pod_going: bool = False
) -> None:
    await c.exits.collect(rec)
    runc = c.runtime(rec.runtime_handler)
    if rec.state == CREATED:
        if pod_going and launch.launched(rec):  # else no process exists yet
            await runc.kill(rec.id, 9, all_processes=True)
        return
    if rec.state != RUNNING:
        return
    if timeout > 0 and await runc.kill(rec.id, rec.stop_signal):
        crashpoint.reach("container.stop.signal")
        await c.exits.wait(rec, timeout)
    if await c.exits.collect(rec):
        return
    killed = await runc.kill(rec.id, 9, all_processes=True)
    if not killed and await runc.state(rec.id) is None and not await c.exits.wait(rec, 1):
        # runc has no such container and conmon wrote no exit file (both lost,
        # e.g. to a reboot): it is not running, with an unknown exit code.
        await c.exits.record_exit(rec, 255, "the container disappeared")
        return
    monitored = conmon.monitors_container(Path(rec.bundle), rec.id)
    if await c.exits.wait(rec, 30 if monitored else 2):
        return
    st = None if monitored else await runc.state(rec.id)
    if not monitored and (st or {}).get("status", "stopped") == "stopped":
        # Its conmon died (killed while sycri was down): no exit file will
        # come, but runc saw it die of our SIGKILL.
        await c.exits.record_exit(rec, 137, "killed; its conmon was gone")
        return
    raise DeadlineExceeded(f"container {rec.id} did not die after SIGKILL")


async def remove(c: Containers, ref: str) -> None:
    """Stop if needed, then delete metadata, runc's container (unless the exit released
    it), the mounts, conmon's cgroup and the bundle; the log stays."""
    rec = c.store.find(ref)
    if rec is None:
        return  # RemoveContainer is idempotent
    async with c.lock(rec.id):
        if c.store.find(rec.id) is None:
            return
        await _stop_locked(c, rec, 0)
        # First: a crash from here on leaves a bundle without metadata, which the next
        # start removes with everything it holds (recovery).
        if rec.id in c.exits.released:  # only files are left: one worker thread
            await asyncio.to_thread(_remove_released, c, rec)
        else:
            await c.store.drop_metadata(rec)
            crashpoint.reach("container.remove.record")
            await c.runtime(rec.runtime_handler).delete(rec.id)
            crashpoint.reach("container.remove.runc")
            await asyncio.to_thread(_remove_files, c, rec)
        await c.image_mounts.release(rec.image_id, rec.id)
        c.tell_images(rec.image_id, rec.id, False)
        await c.image_volumes.detach(rec.id)
        c.store.forget(rec)
        c.exits.released.discard(rec.id)
        statsview.forget(rec.id)
        c.emit(rec, ContainerEventType.DELETED)
    c.forget_lock(rec.id)
    log.info("removed container %s", rec.id)


def _remove_released(c: Containers, rec: ContainerRecord) -> None:
    """Blocking: the metadata, then :func:`_remove_files` (runc's container went at
    the exit)."""
    c.store.unlink_metadata(rec)
    crashpoint.reach("container.remove.record")
    crashpoint.reach("container.remove.runc")
    _remove_files(c, rec)


def _remove_files(c: Containers, rec: ContainerRecord) -> None:
    """Blocking, in one worker thread: conmon's cgroup, the bundle's mounts (overlay,
    idmapped lower layer and volumes), the exit file and the attach-socket entry, and
    last the bundle (renamed into the trash, whose worker deletes it after the reply)."""
    bundle = Path(rec.bundle)
    conmon_cgroup.release(bundle / conmon_cgroup.RECORD)
    rootfs.release_mounts(bundle)
    c.remove_conmon_entries(rec.id)
    c.trash.discard(bundle)
    crashpoint.reach("container.remove.trashed")


async def stop_pod(c: Containers, pod_id: str, timeout: float = 0) -> None:
    await asyncio.gather(*(stop(c, r.id, timeout, pod_going=True) for r in c.in_pod(pod_id)))


async def remove_pod(c: Containers, pod_id: str) -> None:
    for r in c.in_pod(pod_id):
        await remove(c, r.id)
