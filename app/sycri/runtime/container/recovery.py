"""Start-up: the trash emptied, the records read back and reconciled with runc and
conmon, removals a crash cut short finished, leftovers of creates that never got a
record taken away.

A container whose record is quarantined (unreadable, see ``container_store``) is not a
leftover: its conmon, runc state, overlay, exit file and attach socket stay as they are.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import time
from pathlib import Path
from typing import TYPE_CHECKING

from sycri.errors import SycriError
from sycri.runtime.cgroups import conmon_cgroup
from sycri.runtime.container import conmon, launch, lifecycle, rootfs
from sycri.runtime.container.record import CREATED, RUNNING, ContainerRecord
from sycri.runtime.events import ContainerEventType

if TYPE_CHECKING:
    from sycri.runtime.container.containers import Containers

log = logging.getLogger("sycri.containers")


async def recover(c: Containers) -> None:
    """Reload records and reconcile them with runc and conmon, count image mounts,
    finish removals a crash cut short, drop leftovers of unfinished creates. First the
    trash a crash left is emptied."""
    await asyncio.to_thread(c.trash.empty)
    records = await asyncio.to_thread(c.store.load)
    monitored = conmon.monitors(c.paths.exits)
    for rec in records:
        c.image_mounts.adopt(rec.image_id, rec.id)
        c.tell_images(rec.image_id, rec.id, True)
        c.image_volumes.adopt(rec.id)
        if rec.state == CREATED:
            await _reconcile_created(c, rec, monitored.get(rec.id))
        await c.exits.collect(rec)
        if rec.state == RUNNING and rec.id not in monitored:
            await c.exits.unmonitored(rec)
    for rec in records:
        if rec.removing:
            log.warning("finishing the removal of container %s", rec.id)
            try:
                await lifecycle.remove(c, rec.id)
            except Exception:
                log.exception("removing container %s", rec.id)
    # Ours: every container with a record, and those whose record is quarantined.
    ours = {r.id for r in c.store.all()} | c.store.quarantined
    c.image_volumes.forget_unknown(ours)
    for cid, pid in conmon.monitors(c.paths.exits).items():
        if cid not in ours:
            # A remove killed after the record went (or a create of an earlier
            # sycri killed after conmon started): the monitor goes first so it
            # writes no exit file later.
            log.warning("ending conmon %d of unrecorded container %s", pid, cid)
            await conmon.kill(pid)
    for entry in list(c.paths.containers.iterdir()):
        if entry.is_dir() and entry.name not in ours:
            await _remove_leftovers(c, entry)
    _remove_stale_links(c, ours)
    if c.store.quarantined:
        # Which image a quarantined container's overlay stands on is in its record:
        # every image mount stays until the next start.
        log.warning("image mounts kept: %d containers are quarantined", len(c.store.quarantined))
    else:
        await c.image_mounts.sweep()


async def _reconcile_created(c: Containers, rec: ContainerRecord, conmon_pid: int | None) -> None:
    """A record still "created" whose start reached runc before a crash: runc wins.

    sycri saves RUNNING only after ``runc start`` returns; killed in between, the
    record says created while the process runs (or already ran, and conmon wrote
    its exit file, which the exit monitor records next). A status rebuilt because
    its record was unreadable starts here too.

    A record without a pid was created by this version: conmon and runc's container
    are made at StartContainer. If they exist but runc never started the container
    (a start cut short), they are taken back: the container is created, startable.
    One with a pid was created by an earlier sycri (conmon at create): kept as it is.
    """
    runc = c.runtime(rec.runtime_handler)
    fresh = not launch.launched(rec)
    if fresh and conmon_pid is None and not os.path.lexists(Path(runc.root) / rec.id):
        return  # never launched: nothing to ask runc
    try:
        st = await runc.state(rec.id)
    except SycriError as exc:
        log.warning("runc state of %s at recovery: %s", rec.id, exc.message)
        return
    if st is None or st.get("status") not in ("running", "paused", "stopped"):
        if fresh:
            log.warning("container %s: taking back a start cut short", rec.id)
            await launch.undo(c, rec, conmon_pid)
        return
    # The init process was forked at create; runc's state dir says when it started.
    if os.path.isdir(Path(runc.root) / rec.id):
        started = lifecycle.started_ns(runc.root, rec.id)
    else:
        started = _process_start_ns(int(st.get("pid") or 0)) or time.time_ns()
    pid = rec.pid or int(st.get("pid") or 0)
    await c.store.set_status(
        rec, rec.status.but(state=RUNNING, pid=pid, started_at=max(started, rec.created_at))
    )
    log.info("container %s was started before the restart; runc says %s", rec.id, st["status"])
    c.emit(rec, ContainerEventType.STARTED)


async def _remove_leftovers(c: Containers, entry: Path) -> None:
    """A create or remove interrupted by a crash: its runc container (if runc got that
    far) and overlay go; nothing was promised to kubelet."""
    log.warning("removing leftovers of container %s", entry.name)
    for runc in c.runtimes.values():
        with contextlib.suppress(Exception):
            await runc.delete(entry.name)
    await asyncio.to_thread(conmon_cgroup.release, entry / conmon_cgroup.RECORD)
    await rootfs.remove_overlay(entry)
    c.remove_conmon_entries(entry.name)


def _remove_stale_links(c: Containers, ours: set[str]) -> None:
    """conmon's attach-socket links and exit files of containers that are not ours any
    more (a create killed half way, a remove killed after the record went)."""
    for d in (c.paths.sockets, c.paths.exits):
        with contextlib.suppress(FileNotFoundError), os.scandir(d) as it:
            for e in it:
                if e.name not in ours:
                    log.warning("removing stale %s", e.path)
                    with contextlib.suppress(OSError):
                        if e.is_dir(follow_symlinks=False):
                            shutil.rmtree(e.path)
                        else:
                            os.unlink(e.path)


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
