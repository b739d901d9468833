"""Pod namespaces pinned by bind mounts, so no pause process is needed to keep them alive.

A fresh thread unshares the namespaces it was asked for, sets the pod's hostname in
the new UTS namespace, and bind-mounts ``/proc/thread-self/ns/<kind>`` onto files in
the pod's run directory; the thread then exits and the bind mounts keep the
namespaces. Containers join them by path. Removal unmounts and deletes the files.
"""

from __future__ import annotations

import contextlib
import os
import socket
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TypeVar

from sycri.runtime import linux

T = TypeVar("T")

FLAGS = {"net": linux.CLONE_NEWNET, "ipc": linux.CLONE_NEWIPC, "uts": linux.CLONE_NEWUTS}


def _pin_current(kind: str, target: Path) -> None:
    target.touch(mode=0o444, exist_ok=True)
    linux.mount(f"/proc/thread-self/ns/{kind}", target, None, linux.MS_BIND)


def create_pinned(targets: Mapping[str, Path], hostname: str | None) -> None:
    """Blocking: unshare ``targets``' kinds in this (throw-away) thread and pin each one.

    On failure every pin made so far is undone, so nothing is half-created.
    """
    flags = 0
    for kind in targets:
        flags |= FLAGS[kind]
    linux.unshare(flags)
    done: list[Path] = []
    try:
        if hostname is not None and "uts" in targets:
            socket.sethostname(hostname)
        for kind, target in targets.items():
            target.parent.mkdir(parents=True, exist_ok=True)
            _pin_current(kind, target)
            done.append(target)
    except BaseException:
        for target in done:
            release(target)
        raise


def release(target: Path) -> None:
    """Unpin one namespace file; a missing or already unmounted file is fine."""
    for _ in range(8):  # stacked pins (a crash mid-way) each need an unmount
        try:
            linux.umount(target, linux.MNT_DETACH | linux.UMOUNT_NOFOLLOW)
        except OSError:
            break
    with contextlib.suppress(FileNotFoundError):
        target.unlink()


def enter(paths: Mapping[str, str]) -> None:
    """Blocking: move this (throw-away) thread into the namespaces at ``paths``."""
    for kind, path in paths.items():
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            linux.setns(fd, FLAGS[kind])
        finally:
            os.close(fd)


async def call_in(paths: Mapping[str, str], fn: Callable[[], T]) -> T:
    """Run blocking ``fn`` inside the namespaces at ``paths`` (e.g. a pod's netns, for
    port-forward), in a throw-away thread so no pooled thread is left inside."""

    def body() -> T:
        enter(paths)
        return fn()

    return await linux.in_fresh_thread(body)


def pin_process(pid: int, kind: str, target: Path) -> None:
    """Pin namespace ``kind`` of process ``pid`` (the PID namespace of a pod's init)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    target.touch(mode=0o444, exist_ok=True)
    linux.mount(f"/proc/{pid}/ns/{kind}", target, None, linux.MS_BIND)


def ensure_shared(path: Path) -> None:
    """Make ``path`` its own shared mount, so mounts under it propagate to peers.

    sycri runs in a privileged pod whose host directories are mounted with
    Bidirectional propagation; on a host whose ``/`` is private (as here) the pins and
    the pod's ``/dev/shm`` must still be visible to runc's mount namespaces.
    """
    path.mkdir(parents=True, exist_ok=True)
    if not linux.is_mountpoint(path):
        linux.mount(path, path, None, linux.MS_BIND | linux.MS_REC)
    linux.mount(None, path, None, linux.MS_SHARED | linux.MS_REC)
