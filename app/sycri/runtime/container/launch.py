"""The container's processes, made at StartContainer (as containerd makes its task):
conmon's cgroup, conmon, and under it ``runc create``; and their undoing.

CreateContainer only decides (spec, overlay, records); everything here can fail only
inside conmon or runc, so it waits for the start. A launch that fails takes back all
it made, so the container's bundle is as CreateContainer left it. A record CREATED
with a pid was made by an earlier sycri, which launched at create: it needs only
``runc start`` (``launched``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

from sycri import crashpoint
from sycri.errors import Internal
from sycri.runtime.cgroups import conmon_cgroup
from sycri.runtime.container import conmon
from sycri.runtime.container.record import CREATED, ContainerRecord

if TYPE_CHECKING:
    from sycri.runtime.container.containers import Containers

log = logging.getLogger("sycri.containers")

# What conmon and runc leave in a bundle (besides the exit file and attach link).
CONMON_FILES = ("conmon.pid", "pidfile", "conmon.stderr", "attach", "ctl", "winsz", "oom")


def launched(rec: ContainerRecord) -> bool:
    """Whether conmon and runc's container exist: an earlier sycri's created container
    (it recorded conmon's pid at create), or one started since."""
    return rec.state != CREATED or rec.pid > 0


async def launch(c: Containers, rec: ContainerRecord) -> int:
    """conmon + ``runc create`` for ``rec``; the container's pid. On failure nothing
    of it is left (log file and dirs it made included) and the error is raised."""
    runc = c.runtime(rec.runtime_handler)
    cfg = rec.config
    bundle = Path(rec.bundle)
    made = _new_paths(Path(rec.log_path))
    try:
        Path(rec.log_path).parent.mkdir(parents=True, exist_ok=True)
        place = conmon_cgroup.placement(
            c.conmon_placement, c.cgroup_driver, rec.cgroup_path, rec.id
        )
        try:
            leaf = await asyncio.to_thread(
                conmon_cgroup.prepare, bundle / conmon_cgroup.RECORD, place, c.cgroup_version
            )
        except OSError as exc:
            raise Internal(f"cannot make conmon's cgroup {place.path}: {exc.strerror}") from None
        pid = await conmon.create(
            conmon.Launch(
                conmon=c.conmon_binary,
                runtime=shutil.which(runc.binary) or runc.binary,
                runtime_root=runc.root,
                container_id=rec.id,
                name=rec.name,
                bundle=bundle,
                log_path=rec.log_path,
                exit_dir=c.paths.exits,
                socket_dir=c.paths.sockets,
                persist_dir=bundle / "persist",
                log_size_max=c.log_size_max,
                tty=cfg.tty,
                stdin=cfg.stdin,
                stdin_once=cfg.stdin_once,
                systemd_cgroup=c.cgroup_driver == "systemd",
                prefix=tuple(conmon_cgroup.prefix(place, leaf)),
            )
        )
        crashpoint.reach("container.start.conmon")
    except BaseException:
        await undo(c, rec, conmon.pid_of(bundle, rec.id))
        _remove_new(made)
        raise
    return pid


async def undo(c: Containers, rec: ContainerRecord, conmon_pid: int | None) -> None:
    """Take back a launch (failed, or cut short by a crash): conmon first (so it
    writes no exit file later), runc's container, conmon's cgroup and files."""
    if conmon_pid is not None:
        await conmon.kill(conmon_pid)
    with contextlib.suppress(Exception):
        await c.runtime(rec.runtime_handler).delete(rec.id)
    bundle = Path(rec.bundle)
    try:
        await asyncio.to_thread(conmon_cgroup.release, bundle / conmon_cgroup.RECORD)
    except Exception:
        log.exception("releasing conmon's cgroup of %s", rec.id)
    await asyncio.to_thread(_remove_files, c, rec.id, bundle)


def _remove_files(c: Containers, container_id: str, bundle: Path) -> None:
    for name in CONMON_FILES:
        with contextlib.suppress(FileNotFoundError):
            (bundle / name).unlink()
    shutil.rmtree(bundle / "persist", ignore_errors=True)
    c.remove_conmon_entries(container_id)


def _new_paths(log_path: Path) -> list[Path]:
    """The log file and those of its parent dirs that do not exist yet, deepest first:
    what a launch that fails after conmon started must take away again."""
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
